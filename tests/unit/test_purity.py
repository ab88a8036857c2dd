"""The pure packages (ledger, consensus, contracts) must not do I/O, read clocks or randomness.

`ledger/store.py` and `ledger/smtstore.py` are the sanctioned exceptions: the ledger owns its
SQLite stores.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE = ("ledger", "consensus", "contracts")
FORBIDDEN_MODULES = {
    "asyncio",
    "socket",
    "time",
    "random",
    "secrets",
    "select",
    "selectors",
    "ssl",
    "http",
    "urllib",
    "aiohttp",
    "aiomqtt",
    "paho",
    "requests",
    "websockets",
    "subprocess",
    "threading",
    "multiprocessing",
    "datetime",
    "uuid",
}
FORBIDDEN_ATTRS = {("os", "environ"), ("os", "getenv"), ("os", "urandom")}


def violations(source: str) -> list[str]:
    """Every forbidden import or use in `source`, as readable strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(node.module)
            found += [f"{top}.{a.name}" for a in node.names if (top, a.name) in FORBIDDEN_ATTRS]
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and (node.value.id, node.attr) in FORBIDDEN_ATTRS
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def pure_files() -> list[Path]:
    files = [p for pkg in PURE for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert files, "no source files found: the test would check nothing"
    return files


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_package_does_no_io(path: Path) -> None:
    assert violations(path.read_text()) == [], f"{path} must stay pure (see DESIGN.md)"


def test_sqlite_only_in_the_store() -> None:
    # the chain's store, its query indexes, and the state tree's node store
    stores = ("store.py", "index.py", "smtstore.py")
    users = [p for p in pure_files() if "sqlite3" in p.read_text() and p.name not in stores]
    assert users == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import asyncio",
        "import socket",
        "from time import monotonic",
        "import random as r",
        "import os\nx = os.environ['HOME']",
        "from os import environ",
        "import urllib.request",
        "from aiohttp import web",
    ],
)
def test_checker_catches(snippet: str) -> None:
    assert violations(snippet), f"checker missed: {snippet!r}"


def test_checker_allows_pure_code() -> None:
    assert violations("import hashlib\nfrom dataclasses import dataclass\nimport os.path") == []
