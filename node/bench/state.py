"""`tally bench state`: what a block costs as the number of accounts grows.

The tree part: for each size and node store it builds a sparse Merkle tree (ledger/smt.py,
the state's accounts tree) of that many accounts, then times `update` for blocks that each
touch `--changes` random accounts (1000 = a 500-transfer block: a sender and a receiver
each).  The live part (node/bench/bigstate.py, unless --tree-only): a 4-node cluster filled
to each size, its saturation as a ratio of the smallest size's, every node's peak RSS, and
the RSS of a node restarted on the full state.  The SQLite store is write-back, as in a node: the
update only buffers its new nodes, and then `flush` and COMMIT make them durable, timed apart
("commit ms"), in one BEGIN IMMEDIATE transaction with the chain store's pragmas.  The
"chain" store is a node's own `ledger.store.Store`: the update is `State.evolve`, the commit
`Store.append` (the block, its stale-node rows and deletions, and one slice of the buffered
nodes), timed once the fill's own deletions are done and the buffer is as full as a node's
(`WARM`).  Each
(size, store) runs in a fresh process, so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

from rich.table import Table

from ledger import smt
from ledger.block import Block, Genesis
from ledger.contract import NO_ENGINES
from ledger.smtstore import CACHE_NODES, SqliteNodeStore
from ledger.state import Account, build_block
from ledger.store import SQLITE_CACHE_KIB, STATE_HISTORY, STATE_PARTS, Store
from node.bench import bigstate, siglimit
from node.bench.pbft import console, emit, machine, number_list, tps_cell
from node.bench.siglimit import SignatureLimit

STORES = ("sqlite", "memory", "chain")
# Blocks appended untimed after the chain store's fill: the fill's own retired nodes (~4M at
# 1M accounts) are deleted `keep_states` blocks later, slice by slice, and timing among
# those deletions measured the fill (a 1M append looked 1.7x its steady cost).  By then the
# buffer also holds `STATE_PARTS` blocks' nodes, as in a running node.
WARM = STATE_HISTORY + STATE_PARTS
# Accounts per build update: bounds the new nodes the build buffers (~6 a change at 1M: 25k
# keeps the build's peak RSS, buffer and cache together, under the 400 MB a node may use)
BUILD_CHUNK = 25_000


def add_state_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accounts",
        default="1000,100000,1000000",
        type=number_list(int),
        help="accounts in the state, or a list (default: 1000,100000,1000000)",
    )
    p.add_argument("--changes", type=int, default=1000, help="accounts a block touches")
    p.add_argument("--reps", type=int, default=9, help="blocks timed per size")
    p.add_argument(
        "--stores",
        default="sqlite,memory,chain",
        help="node stores: sqlite, memory, chain (a node's whole Store.append)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the accounts a block touches")
    p.add_argument("--tree-only", action="store_true", help="skip the live cluster part")
    p.add_argument(
        "--live-duration", type=float, default=20.0, help="seconds of live saturation per size"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


@dataclass(frozen=True)
class Case:
    accounts: int
    store: str
    changes: int
    reps: int
    seed: int


class _Counted:
    """A node store that counts the nodes each update writes (reads go straight through)."""

    def __init__(self, inner: smt.MemoryNodeStore | SqliteNodeStore) -> None:
        self.inner = inner
        self.get = inner.get
        if isinstance(inner, SqliteNodeStore):  # so that update reads it level by level
            self.get_many = inner.get_many
        self.written = 0

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self.written += len(nodes)
        self.inner.put_many(nodes)


def address(i: int) -> bytes:
    return i.to_bytes(20, "big")


def account(i: int, block: int) -> Account:
    return Account(address(i), 10**12 - block, block)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def durable(store: _Counted, db: sqlite3.Connection | None) -> None:
    """What a node's Store.append does after the update: flush the nodes, commit the block."""
    if isinstance(store.inner, SqliteNodeStore) and db is not None:
        db.execute("BEGIN IMMEDIATE")
        store.inner.flush()
        db.execute("COMMIT")


def build(store: _Counted, n: int, db: sqlite3.Connection | None) -> tuple[bytes, float]:
    """The tree of accounts 0..n-1, and the seconds it took (commits included)."""
    start = time.perf_counter()
    root = smt.EMPTY
    for lo in range(0, n, BUILD_CHUNK):
        chunk = range(lo, min(n, lo + BUILD_CHUNK))
        root = smt.update(
            store, root, {smt.account_key(address(i)): account(i, 0).encode() for i in chunk}
        )
        durable(store, db)
    return root, time.perf_counter() - start


def time_updates(
    case: Case, store: _Counted, root: bytes, db: sqlite3.Connection | None
) -> dict[str, Any]:
    """Chained blocks, each touching `case.changes` random accounts: update, then flush and
    commit."""
    rng = Random(case.seed)
    updates, commits, written = [], [], []
    for block in range(1, case.reps + 1):
        touched = rng.sample(range(case.accounts), min(case.changes, case.accounts))
        changes = {smt.account_key(address(i)): account(i, block).encode() for i in touched}
        before = store.written
        start = time.perf_counter()
        root = smt.update(store, root, changes)
        updates.append(time.perf_counter() - start)
        written.append(store.written - before)
        start = time.perf_counter()
        durable(store, db)
        commits.append(time.perf_counter() - start)
    return {
        "update_ms_median": ms(statistics.median(updates)),
        "update_ms_p90": ms(percentile(updates, 0.9)),
        "commit_ms_median": ms(statistics.median(commits)),
        "nodes_written": round(statistics.median(written)),
        "prove_us": time_proofs(store, root, case),
    }


def time_proofs(store: _Counted, root: bytes, case: Case) -> float:
    """The mean µs of one inclusion proof of a random account."""
    sample = Random(case.seed + 1).sample(range(case.accounts), min(200, case.accounts))
    keys = [smt.account_key(address(i)) for i in sample]
    start = time.perf_counter()
    for k in keys:
        smt.prove(store, root, k)
    return round((time.perf_counter() - start) / len(keys) * 1e6, 1)


def run_case(case: Case) -> dict[str, Any]:
    """One size on one store, in this process (see `main`)."""
    if case.store == "chain":
        return run_chain_case(case)
    with tempfile.TemporaryDirectory(prefix="tally-state-") as tmp:
        db = None
        if case.store == "sqlite":
            # As ledger/store.py opens the chain: autocommit mode, its own BEGIN IMMEDIATE
            db = sqlite3.connect(Path(tmp) / "nodes.sqlite", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")  # the chain store's default
            db.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            inner: smt.MemoryNodeStore | SqliteNodeStore = SqliteNodeStore(db)
        else:
            inner = smt.MemoryNodeStore()
        store = _Counted(inner)
        root, build_s = build(store, case.accounts, db)
        if db is not None:  # the build's WAL into the file: time blocks, not the build's tail
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        result: dict[str, Any] = {
            "accounts": case.accounts,
            "store": case.store,
            "build_s": round(build_s, 2),
            "nodes": store.written,
            **time_updates(case, store, root, db),
        }
        if db is not None:
            db.close()
    result["rss_mb"] = rss_mb()  # after the blocks: what a running node holds
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def run_chain_case(case: Case) -> dict[str, Any]:
    """The size on a node's Store: filled by appends of BUILD_CHUNK accounts, then `WARM`
    blocks untimed, then `reps` timed."""
    with tempfile.TemporaryDirectory(prefix="tally-state-") as tmp:
        store = Store(Path(tmp) / "chain.db", Genesis("bench-state", 0, (), {}), engines=NO_ENGINES)
        start = time.perf_counter()
        for lo in range(0, case.accounts, BUILD_CHUNK):
            chunk = range(lo, min(case.accounts, lo + BUILD_CHUNK))
            append_block(store, {address(i): account(i, 0) for i in chunk})
        build_s = time.perf_counter() - start
        rng = Random(case.seed)
        updates, commits, written = [], [], []
        for block in range(1, WARM + case.reps + 1):
            touched = rng.sample(range(case.accounts), min(case.changes, case.accounts))
            update_s, commit_s, made = append_block(
                store, {address(i): account(i, block) for i in touched}
            )
            if block > WARM:
                updates.append(update_s)
                commits.append(commit_s)
                written.append(made)
        sample = rng.sample(range(case.accounts), min(200, case.accounts))
        start = time.perf_counter()
        for i in sample:
            store.state.prove_account(address(i))
        prove_us = round((time.perf_counter() - start) / len(sample) * 1e6, 1)
        store.close()
    return {
        "accounts": case.accounts,
        "store": case.store,
        "build_s": round(build_s, 2),
        "update_ms_median": ms(statistics.median(updates)),
        "update_ms_p90": ms(percentile(updates, 0.9)),
        "commit_ms_median": ms(statistics.median(commits)),
        "commit_ms_max": ms(max(commits)),
        "nodes_written": round(statistics.median(written)),
        "prove_us": prove_us,
        "rss_mb": rss_mb(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def append_block(store: Store, accounts: dict[bytes, Account]) -> tuple[float, float, int]:
    """A block that sets `accounts` (no txs: the state's own cost), appended: the seconds of
    the transition and of the append, and the nodes the transition made."""
    start = time.perf_counter()
    state = store.state.evolve(accounts, {})
    evolved = time.perf_counter()
    delta = state.delta_from(store.state)
    made = len(delta.made) if delta is not None else 0
    parent = store.last_header
    empty, _, receipts = build_block(store.state, parent, (), "", parent.timestamp_ms)
    header = dataclasses.replace(empty.header, state_root=state.root())
    store.append(Block(header, (), b""), receipts, state)
    return evolved - start, time.perf_counter() - evolved, made


def rss_mb() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * resource.getpagesize() / 2**20)


def run_state_bench(args: argparse.Namespace) -> int:
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not stores or any(s not in STORES for s in stores):
        console.print(f"--stores: expected some of {', '.join(STORES)}, got {args.stores!r}")
        return 2
    sizes = [int(x) for x in args.accounts.split(",") if x.strip()]
    rows = []
    for n in sizes:
        for store in stores:
            console.print(f"state: {n:,} accounts, {store} store")
            rows.append(run_in_process(Case(n, store, args.changes, args.reps, args.seed)))
    # measured before any cluster starts, so no node competes for the cores
    limit = siglimit.measure(bigstate.NODES)
    live = [] if args.tree_only else live_rows(args, sizes, limit)
    result = {
        "bench": "state",
        "machine": machine(),
        "changes": args.changes,
        "reps": args.reps,
        "cache_nodes": CACHE_NODES,
        "signature_limit": {str(limit.nodes): limit.as_dict()},
        "results": rows,
        "live": live,
    }
    console.print(table(args, rows))
    if live:
        console.print(live_table(live))
    emit(args, result)
    return 0


def live_rows(
    args: argparse.Namespace, sizes: list[int], limit: SignatureLimit
) -> list[dict[str, Any]]:
    """One live cluster per size, smallest first: saturation as a ratio of the smallest
    size's and as a share of the machine's signature limit."""
    rows = []
    for n in sorted(sizes):
        console.print(f"state, live: a cluster filled to {n:,} accounts")
        rows.append(bigstate.measure_size(args, n))
    base = rows[0]["committed_tps"] if rows else 0
    return [
        r
        | {
            "tps_ratio": round(r["committed_tps"] / base, 2) if base else None,
            "share_of_limit": limit.share(r["committed_tps"]),
        }
        for r in rows
    ]


def live_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="tally bench state, live: n = 4 saturation with N accounts in the state")
    cols = ("accounts", "fill s", "committed tx/s (share of limit)", "ratio", "p50 ms")
    for col in (*cols, "peak RSS MB/node"):
        t.add_column(col, justify="right")
    t.add_column("restarted node RSS MB", justify="right")
    for r in rows:
        t.add_row(
            f"{r['accounts']:,}",
            str(r["fill_s"]),
            tps_cell(r),
            str(r["tps_ratio"]),
            str(r["latency_ms"]["p50"]),
            str(max(r["peak_rss_mb"].values(), default=0)),
            str(r["restart_rss_mb"]),
        )
    return t


def run_in_process(case: Case) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "node.bench.state", json.dumps(case.__dict__)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row: dict[str, Any] = json.loads(out)
    return row


def table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> Table:
    t = Table(
        title=f"tally bench state: the state root of a block touching {args.changes} accounts"
    )
    columns = (
        ("accounts", "accounts"),
        ("store", "store"),
        ("build s", "build_s"),
        ("update ms p50", "update_ms_median"),
        ("p90", "update_ms_p90"),
        ("flush+commit ms", "commit_ms_median"),
        ("max", "commit_ms_max"),
        ("nodes/update", "nodes_written"),
        ("prove µs", "prove_us"),
        ("RSS MB", "rss_mb"),
        ("peak RSS MB", "peak_rss_mb"),
    )
    for title, _ in columns:
        t.add_column(title, justify="right")
    for r in rows:
        t.add_row(*(cell(r.get(k)) for _, k in columns))
    return t


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


if __name__ == "__main__":
    print(json.dumps(run_case(Case(**json.loads(sys.argv[1])))))
