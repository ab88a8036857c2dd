"""Imports point one way (DESIGN.md): node -> consensus -> ledger, node -> contracts -> ledger.

Every import inside the project counts, a lazy one inside a function too: a cycle through a
deferred import is still a cycle in the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "consensus", "contracts", "node")
# What each top-level package may import of the others.
ALLOWED = {
    "ledger": set(),
    "consensus": {"ledger"},
    "contracts": {"ledger"},
    "node": {"ledger", "consensus", "contracts"},
}


def modules(root: Path) -> dict[str, Path]:
    """Every project module by dotted name (a package by its `__init__`)."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> Iterator[str]:
    """The project modules that `path` imports, anywhere in the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from node.cluster import launcher` imports the module node.cluster.launcher
            names = [f"{node.module}.{a.name}" for a in node.names]
            names = [n if n in known else node.module for n in names]
        else:
            continue
        yield from (n for n in names if n in known)


def graph(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: set(imports(path, known)) - {name} for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def against_layering(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for source, targets in sorted(edges.items()):
        top = source.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != top and other not in ALLOWED[top]:
                bad.append(f"{source} imports {target}")
    return bad


def test_the_project_has_no_import_cycle() -> None:
    edges = graph(ROOT)
    assert len(edges) > 50, "too few modules found: the test would check nothing"
    assert cycles(edges) == []


def test_imports_follow_the_layering() -> None:
    assert against_layering(graph(ROOT)) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir(exist_ok=True)
    return tmp_path


def test_a_cycle_through_a_lazy_import_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "node/__init__.py": "",
            "node/a.py": "from node.b import x\n",
            "node/b.py": "def f():\n    from node import a\n",
            "node/c.py": "import node.a\n",
        },
    )
    assert cycles(graph(root)) == [["node.a", "node.b"]]


def test_an_import_against_the_layering_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "ledger/state.py": "from consensus.pbft import replica\n",
            "consensus/pbft/replica.py": "from node.cluster.config import X\n",
            "node/cluster/config.py": "",
            "contracts/kernel.py": "import ledger.state\n",
        },
    )
    assert against_layering(graph(root)) == [
        "consensus.pbft.replica imports node.cluster.config",
        "ledger.state imports consensus.pbft.replica",
    ]
