"""The test lanes.

Every test under tests/e2e/ is marked `e2e` here.  Tests marked `slow` (the long simulator
sweeps) are left out unless the -m expression names them, or they are asked for by node id:

    pytest                          the default lane (everything but slow)
    pytest -m slow                  the slow lane
    pytest -m "slow or not slow"    both
    pytest -m "not e2e"             the default lane without real processes
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent / "e2e"


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)
    if "slow" in (config.option.markexpr or ""):
        return
    named = {_node_id(config, arg) for arg in config.args if "::" in arg}
    skipped = [i for i in items if i.get_closest_marker("slow") and not _named(i, named)]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [i for i in items if i not in skipped]


def _node_id(config: pytest.Config, arg: str) -> str:
    path, _, rest = arg.partition("::")
    with contextlib.suppress(ValueError):  # outside the rootdir: leave it as given
        path = Path(path).resolve().relative_to(config.rootpath).as_posix()
    return f"{path}::{rest}"


def _named(item: pytest.Item, named: set[str]) -> bool:
    return any(item.nodeid == n or item.nodeid.startswith((n + "::", n + "[")) for n in named)
