"""`tally bench integrity`: what the start-up checks of a store cost on a long chain.

Builds a store of N one-transfer blocks once (kept at --path for the next run), then
times each check a node runs before it serves anything, each on a fresh connection:
SQLite's `quick_check` and `integrity_check`, the head check (the header chain down to
genesis, the last blocks' txs and receipts, the state root), and a whole checked open.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from ledger.block import Genesis, Member
from ledger.crypto import KeyPair
from ledger.state import build_block
from ledger.store import Store
from ledger.tx import transfer
from node.bench.pbft import console, emit, machine
from node.engines import chain_engines

ALICE, BOB = KeyPair(bytes([1]) * 32), KeyPair(bytes([2]) * 32)
GENESIS = Genesis(
    chain_id="integrity-bench",
    timestamp_ms=1_000,
    members=(Member("n0", ALICE.public_key), Member("n1", BOB.public_key)),
    accounts={ALICE.address.hex(): 10**12, BOB.address.hex(): 0},
)
CHUNK = 1000  # blocks per SQL transaction while building


def add_integrity_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", type=int, default=100_000, help="chain length (default 100000)")
    p.add_argument("--path", help="the store to build or reuse (default: a file in /tmp)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


def build(path: Path, blocks: int) -> float:
    """Append one-transfer blocks until the store at `path` holds `blocks`; seconds taken."""
    store = Store(path, GENESIS, engines=chain_engines(), synchronous="OFF")
    start = time.perf_counter()
    while store.height < blocks:
        with store.batch():
            for _ in range(min(CHUNK, blocks - store.height)):
                tx = transfer(ALICE, GENESIS.chain_id, store.height, BOB.address, 1)
                at = store.last_header.timestamp_ms + 10
                block, state, receipts = build_block(
                    store.state, store.last_header, (tx,), "n0", at
                )
                store.append(block.with_proof(b"x" * 200), receipts, state)
    store.close()
    return time.perf_counter() - start


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 3)


def _pragma(path: Path, name: str) -> Callable[[], None]:
    def run() -> None:
        db = sqlite3.connect(path)
        try:
            assert db.execute(f"PRAGMA {name}").fetchall() == [("ok",)], name
        finally:
            db.close()

    return run


def _open(path: Path, verify: str | None) -> Callable[[], None]:
    def run() -> None:
        extra: dict[str, Any] = {"verify": verify} if verify else {}
        Store(path, GENESIS, engines=chain_engines(), **extra).close()

    return run


def run_integrity_bench(args: argparse.Namespace) -> int:
    path = Path(args.path or f"/tmp/tally-integrity-{args.blocks}.sqlite")
    built = build(path, args.blocks) if not path.exists() else None
    checks = {
        "PRAGMA quick_check": _pragma(path, "quick_check"),
        "PRAGMA integrity_check": _pragma(path, "integrity_check"),
        "open, no checks": _open(path, None),
        'open, verify="quick"': _open(path, "quick"),
        'open, verify="full" (what a node runs)': _open(path, "full"),
    }
    timings = {name: _timed(fn) for name, fn in checks.items()}
    result = {
        "bench": "integrity",
        "blocks": args.blocks,
        "store_mb": round(path.stat().st_size / 1e6, 1),
        "built_s": None if built is None else round(built, 1),
        "machine": machine(),
        "checks": [{"check": name, "seconds": s} for name, s in timings.items()],
    }
    table = Table(title=f"tally bench integrity: {args.blocks} blocks, {result['store_mb']} MB")
    table.add_column("check")
    table.add_column("seconds", justify="right")
    for name, seconds in timings.items():
        table.add_row(name, f"{seconds:.3f}")
    console.print(table)
    emit(args, result)
    return 0
