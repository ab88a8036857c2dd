"""The benchmark's load generator, run as its own OS process by `tally bench pbft`.

It pre-signs transfers, submits them open-loop at a fixed rate (or, with
--rate 0, as fast as the cluster takes them with a bounded number in flight)
with `submit_txs`, --submit-batch txs per call, watches blocks commit on every
node (the first node to show a block is when the cluster committed it), and writes
throughput and submit-to-commit latency as JSON; when txs went missing, also why (refused,
undeliverable calls, and what every node says of a few never seen committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from typing import Any

from ledger.tx import transfer
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig, load_config
from node.rpc.client import SUBMIT_BATCH, RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError

TICK_S = 0.005
SATURATION_IN_FLIGHT = 4000
SATURATION_RATE_CAP = 10_000  # presigned txs per second of a saturation run
SUBMIT_ATTEMPTS = 3  # tries of one submit_txs call that fails to reach its node
RETRY_PAUSE_S = 0.5
MISSING_SAMPLE = 5  # uncommitted txs looked up on every node at the end, to explain them

Work = tuple[int, bytes, str]  # (node index, tx id, signed tx as hex): lean, for millions


async def presign(cfg: ClusterConfig, count: int) -> list[Work]:
    """`count` transfers, signed before the clock starts: each sender sticks to one node,
    in nonce order."""
    genesis = load_genesis(cfg)
    names = sorted(cfg.accounts)
    keys = [account_key(cfg, n) for n in names]
    nonces = await next_nonces(cfg, [k.address.hex() for k in keys])
    out = []
    for i in range(count):
        s = i % len(keys)
        to = keys[(s + 1) % len(keys)].address
        tx = transfer(keys[s], genesis.chain_id, nonces[s], to, 1)
        out.append((s % len(cfg.nodes), tx.tx_id, tx.encode().hex()))
        nonces[s] += 1
    return out


async def next_nonces(cfg: ClusterConfig, addresses: list[str]) -> list[int]:
    """Each account's next nonce, the highest any node knows: a node lagging after the
    previous phase would hand out nonces the cluster has already used."""
    calls = [("get_account", {"address": a}) for a in addresses]
    best = [0] * len(addresses)
    for node in cfg.nodes:
        async with RpcClient(node.rpc_url) as client:
            try:
                answers = await client.batch(calls)
            except (RpcUnavailable, RpcError):
                continue  # a dead node is not the cluster
        for i, a in enumerate(answers):
            if isinstance(a, dict):
                best[i] = max(best[i], a["next_nonce"])
    return best


class Run:
    def __init__(
        self, cfg: ClusterConfig, rate: int, duration: float, batch: int = SUBMIT_BATCH
    ) -> None:
        self.cfg, self.rate, self.duration, self.batch = cfg, rate, duration, batch
        self.clients = [RpcClient(n.rpc_url, timeout=30.0) for n in cfg.nodes]
        self.submitted: dict[bytes, float] = {}
        self.committed: dict[bytes, float] = {}
        self.refused: set[bytes] = set()  # txs a node answered with an error
        self.refusals: Counter[str] = Counter()  # why, by error message
        self.unsent: set[bytes] = set()  # txs whose call never reached its node
        self.submit_errors: Counter[str] = Counter()  # why, by error
        self.pending: set[asyncio.Task[None]] = set()

    @property
    def rejected(self) -> int:
        return len(self.refused)

    def expected(self) -> int:
        """How many submitted txs can commit: not those refused or never delivered."""
        return len(self.submitted) - len(self.refused) - len(self.unsent)

    async def submit(self, node: int, txs: list[tuple[bytes, str]]) -> None:
        """One submit_txs call, tried again if it fails to reach the node: submitting is
        idempotent (a tx already there is answered pending or committed).  A call that
        fails every time is counted (`unsent`), never lost silently."""
        now = time.monotonic()
        for tx_id, _ in txs:
            self.submitted[tx_id] = now
        raws = [raw for _, raw in txs]
        for attempt in range(1, SUBMIT_ATTEMPTS + 1):
            try:
                results = await self.clients[node].submit_txs(raws, size=self.batch)
                break
            except (RpcUnavailable, RpcError) as e:
                self.submit_errors[f"n{node}: {e}"] += 1
                if attempt == SUBMIT_ATTEMPTS or isinstance(e, RpcError):
                    self.unsent.update(tx_id for tx_id, _ in txs)
                    return
                await asyncio.sleep(RETRY_PAUSE_S)
        for (tx_id, _), r in zip(txs, results, strict=True):
            if isinstance(r, RpcError):
                self.refused.add(tx_id)
                self.refusals[r.message] += 1

    def _done(self, task: asyncio.Task[None]) -> None:
        """A submit task ended: one that crashed is reported, not dropped with its error."""
        self.pending.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self.submit_errors[f"crashed: {e!r}"] += 1

    async def cluster_height(self) -> int:
        """The highest height any node shows (0 if none answers)."""
        return max([await self._height(c) for c in self.clients] + [0])

    async def watch(self, stop: asyncio.Event, height: int) -> None:
        """Record when each tx is first seen in a committed block above `height` on any
        node.  `height` must be taken before the first tx is submitted: a block committed
        while the nodes were still being asked for their heights would be skipped with all
        its txs (issue 18: 500 txs, the first batch, never counted).  A block that one node
        executed carries a commit certificate: it is committed for the cluster.  Watching
        the first node alone under-counted whenever that node lagged (issue 18: a lone view
        changer, following by state transfer, reported 466 tx/s).  One node is asked per
        tick, in turn, so watching costs the same whatever n is."""
        turn = 0
        while not stop.is_set():
            client = self.clients[turn % len(self.clients)]
            turn += 1
            top = await self._height(client)
            while height < top and await self._record(client, height + 1):
                height += 1
            await asyncio.sleep(TICK_S)

    async def _record(self, client: Any, height: int) -> bool:
        """Note the txs of the block at `height` as committed now; False if the node fails."""
        try:
            block = await client.call("get_block", height=height, txs="ids")
        except (RpcUnavailable, RpcError):
            return False
        now = time.monotonic()
        for tx_id in block["tx_ids"]:
            self.committed.setdefault(bytes.fromhex(tx_id), now)
        return True

    @staticmethod
    async def _height(client: Any) -> int:
        """A node's height, or -1 while it does not answer (a dead node is not the cluster)."""
        try:
            return int((await client.call("status"))["height"])
        except (RpcUnavailable, RpcError):
            return -1

    async def drive(self, work: list[Work]) -> tuple[float, float]:
        start, i = time.monotonic(), 0
        end = start + self.duration
        while (now := time.monotonic()) < end and i < len(work):
            if self.rate:
                due = min(len(work), int((now - start) * self.rate)) - i
            else:
                due = SATURATION_IN_FLIGHT - (len(self.submitted) - len(self.committed))
            by_node: dict[int, list[tuple[bytes, str]]] = {}
            for node, tx_id, raw in work[i : i + max(0, due)]:
                by_node.setdefault(node, []).append((tx_id, raw))
            i += max(0, due)
            for node, txs in by_node.items():
                task = asyncio.create_task(self.submit(node, txs))
                self.pending.add(task)
                task.add_done_callback(self._done)
            await asyncio.sleep(TICK_S)
        return start, time.monotonic()

    async def explain_missing(self) -> list[dict[str, Any]]:
        """What every node says of a few txs submitted and accepted but never seen
        committed: a height (the watcher missed its block), pending, or unknown."""
        lost = self.refused | self.unsent
        missing = [t for t in self.submitted if t not in self.committed and t not in lost]
        out = []
        for tx_id in missing[:MISSING_SAMPLE]:
            seen = {}
            for node, client in zip(self.cfg.nodes, self.clients, strict=True):
                try:
                    answer = await client.call("get_tx", tx_id=tx_id.hex())
                    seen[node.id] = answer.get("height", answer.get("status"))
                except (RpcUnavailable, RpcError) as e:
                    seen[node.id] = str(e)
            out.append({"tx_id": tx_id.hex(), "nodes": seen})
        return out


async def run(
    cfg: ClusterConfig,
    rate: int,
    duration: float,
    drain_s: float,
    total: int | None = None,
    batch: int = SUBMIT_BATCH,
) -> dict[str, Any]:
    count = int(rate * duration) if rate else int(SATURATION_RATE_CAP * duration)
    count = min(count, total) if total else count
    return await run_work(cfg, await presign(cfg, count), rate, duration, drain_s, batch)


async def run_work(
    cfg: ClusterConfig,
    work: list[Work],
    rate: int,
    duration: float,
    drain_s: float,
    batch: int = SUBMIT_BATCH,
) -> dict[str, Any]:
    """Submit presigned `work` (at `rate`, or 0: saturation) for at most `duration` s, wait
    up to `drain_s` for the rest to commit, and summarize."""
    r = Run(cfg, rate, duration, batch)
    stop = asyncio.Event()
    first = await r.cluster_height()  # before any tx is submitted (see Run.watch)
    watcher = asyncio.create_task(r.watch(stop, first))
    start, end = await r.drive(work)
    deadline = time.monotonic() + drain_s
    while len(r.committed) < r.expected() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await watcher
    await asyncio.gather(*r.pending)
    missing = await r.explain_missing()
    for c in r.clients:
        await c.close()
    return summarize(r, start, end) | ({"missing_sample": missing} if missing else {})


def summarize(r: Run, start: float, end: float) -> dict[str, Any]:
    in_window = sum(1 for t in r.committed.values() if start <= t <= end)
    lat = sorted(1000 * (r.committed[t] - s) for t, s in r.submitted.items() if t in r.committed)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {
        "mode": "fixed" if r.rate else "saturation",
        "offered_tps": r.rate or None,
        "duration_s": round(end - start, 2),
        "submitted": len(r.submitted),
        "rejected": r.rejected,
        "committed": len(r.committed),
        "committed_tps": round(in_window / (end - start), 1),
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "mean": round(statistics.fmean(lat), 1) if lat else None,
        },
    } | problems(r)


def problems(r: Run) -> dict[str, Any]:
    """Why txs went missing, only when some did: a healthy run reports as before."""
    out: dict[str, Any] = {}
    if r.refusals:
        out["refusals"] = dict(r.refusals)
    if r.submit_errors:
        out["unsent"] = len(r.unsent)
        out["submit_errors"] = dict(r.submit_errors.most_common(5))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m node.bench.loadgen", description=__doc__)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--rate", type=int, required=True, help="offered tx/s; 0 = saturation")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for stragglers")
    p.add_argument("--out", required=True, help="JSON result file")
    p.add_argument("--total", type=int, help="stop after submitting this many txs")
    p.add_argument("--submit-batch", type=int, default=SUBMIT_BATCH, help="txs per call")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    run_ = run(cfg, args.rate, args.duration, args.drain, args.total, args.submit_batch)
    result = asyncio.run(run_)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
