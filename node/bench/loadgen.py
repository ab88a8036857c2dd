"""The benchmark's load generator, run as its own OS process by `tally bench pbft`.

It pre-signs transfers, submits them open-loop at a fixed rate (or, with
--rate 0, as fast as the cluster takes them with a bounded number in flight)
with `submit_txs`, --submit-batch txs per call, watches blocks commit on every
node (the first node to show a block is when the cluster committed it), and writes
throughput and submit-to-commit latency as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
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

Work = tuple[int, bytes, str]  # (node index, tx id, signed tx as hex): lean, for millions


async def presign(cfg: ClusterConfig, count: int) -> list[Work]:
    """`count` transfers, signed before the clock starts: each sender sticks to one node,
    in nonce order."""
    genesis = load_genesis(cfg)
    names = sorted(cfg.accounts)
    keys = [account_key(cfg, n) for n in names]
    async with RpcClient(cfg.nodes[0].rpc_url) as client:
        calls = [("get_account", {"address": k.address.hex()}) for k in keys]
        nonces = [a["next_nonce"] for a in await client.batch(calls)]  # type: ignore[index]
    out = []
    for i in range(count):
        s = i % len(keys)
        to = keys[(s + 1) % len(keys)].address
        tx = transfer(keys[s], genesis.chain_id, nonces[s], to, 1)
        out.append((s % len(cfg.nodes), tx.tx_id, tx.encode().hex()))
        nonces[s] += 1
    return out


class Run:
    def __init__(
        self, cfg: ClusterConfig, rate: int, duration: float, batch: int = SUBMIT_BATCH
    ) -> None:
        self.cfg, self.rate, self.duration, self.batch = cfg, rate, duration, batch
        self.clients = [RpcClient(n.rpc_url, timeout=30.0) for n in cfg.nodes]
        self.submitted: dict[bytes, float] = {}
        self.committed: dict[bytes, float] = {}
        self.rejected = 0
        self.pending: set[asyncio.Task[None]] = set()

    async def submit(self, node: int, txs: list[tuple[bytes, str]]) -> None:
        now = time.monotonic()
        for tx_id, _ in txs:
            self.submitted[tx_id] = now
        results = await self.clients[node].submit_txs([raw for _, raw in txs], size=self.batch)
        self.rejected += sum(isinstance(r, RpcError) for r in results)

    async def watch(self, stop: asyncio.Event) -> None:
        """Record when each tx is first seen in a committed block on any node.  A block that
        one node executed carries a commit certificate: it is committed for the cluster.
        Watching the first node alone under-counted whenever that node lagged (issue 18: a
        lone view changer, following by state transfer, reported 466 tx/s).  One node is
        asked per tick, in turn, so watching costs the same whatever n is."""
        height = max([await self._height(c) for c in self.clients], default=0)
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
                task.add_done_callback(self.pending.discard)
            await asyncio.sleep(TICK_S)
        return start, time.monotonic()


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
    work = await presign(cfg, count)
    r = Run(cfg, rate, duration, batch)
    stop = asyncio.Event()
    watcher = asyncio.create_task(r.watch(stop))
    start, end = await r.drive(work)
    deadline = time.monotonic() + drain_s
    while len(r.committed) < len(r.submitted) - r.rejected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await watcher
    await asyncio.gather(*r.pending)
    for c in r.clients:
        await c.close()
    return summarize(r, start, end)


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
    }


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
