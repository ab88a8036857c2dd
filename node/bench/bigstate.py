"""The live half of `tally bench state`: a 4-node PBFT cluster whose state holds N accounts.

For each size it fills the state with real transfers (1 unit each to N fresh addresses, at
saturation), then measures saturation on the usual load (transfers among the keyed bench
accounts) and every node's peak RSS, then restarts one node and reads the RSS it needs to
rejoin: it opens the state at its root, so that figure should not grow with N.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from ledger.encoding import hash_bytes
from ledger.tx import transfer
from node.bench import loadgen
from node.bench.pbft import console, peak_rss_mb, run_phase, write_cluster
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig, load_config
from node.rpc.client import RpcClient

FILL_ROUND = 50_000  # fill txs presigned at once: bounds the bench process's own memory
FILL_DRAIN_S = 120.0
KEYED_ACCOUNTS = 16  # senders of the fill and of the measured load
NODES = 4  # the cluster each size is measured on


def fill_address(i: int) -> bytes:
    return hash_bytes(b"tally-bench-fill" + i.to_bytes(8, "big"))[:20]


async def fill(cfg: ClusterConfig, first: int, count: int) -> int:
    """Pay 1 unit to the fill addresses [first, first + count); how many committed."""
    genesis = load_genesis(cfg)
    keys = [account_key(cfg, n) for n in sorted(cfg.accounts)]
    nonces = await loadgen.next_nonces(cfg, [k.address.hex() for k in keys])
    work: list[loadgen.Work] = []
    for i in range(first, first + count):
        s = i % len(keys)
        tx = transfer(keys[s], genesis.chain_id, nonces[s], fill_address(i), 1)
        work.append((s % len(cfg.nodes), tx.tx_id, tx.encode().hex()))
        nonces[s] += 1
    result = await loadgen.run_work(cfg, work, 0, float("inf"), FILL_DRAIN_S)
    return int(result["committed"])


def measure_size(args: argparse.Namespace, accounts: int) -> dict[str, Any]:
    """Fill a fresh cluster to `accounts` accounts, then saturate it and restart a node."""
    workdir = Path(tempfile.mkdtemp(prefix=f"tally-bench-state-{accounts}-"))
    cluster_args = argparse.Namespace(
        accounts=KEYED_ACCOUNTS, batch_size=500, batch_wait_ms=20, partial_in_flight=1
    )
    config = write_cluster(workdir, cluster_args, nodes=NODES)
    cfg = load_config(config)
    launcher.up(cfg, log_level="WARNING")
    try:
        start = time.monotonic()
        filled = 0
        target = max(0, accounts - KEYED_ACCOUNTS)
        while filled < target:
            n = min(FILL_ROUND, target - filled)
            committed = asyncio.run(fill(cfg, filled, n))
            if committed != n:
                raise RuntimeError(f"fill: {committed} of {n} transfers committed")
            filled += n
            console.print(
                f"  {accounts:,} accounts: filled {filled:,} in {time.monotonic() - start:.0f}s"
            )
        fill_s = time.monotonic() - start
        phase = run_phase(config, 0, args.live_duration, workdir / "saturation.json")
        restart_rss = restart_and_rejoin(cfg)
    finally:
        launcher.down(cfg)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "accounts": accounts,
        "fill_s": round(fill_s, 1),
        "committed_tps": phase["committed_tps"],
        "latency_ms": phase["latency_ms"],
        "peak_rss_mb": phase["peak_rss_mb"],
        "restart_rss_mb": restart_rss,
    }


def restart_and_rejoin(cfg: ClusterConfig) -> float:
    """Restart the last node and wait until it is at the cluster's height; its peak RSS."""
    node = cfg.nodes[-1]
    _, pid = launcher.restart(cfg, node.id, log_level="WARNING")
    asyncio.run(_caught_up(cfg))
    return round(peak_rss_mb(pid), 1)


async def _caught_up(cfg: ClusterConfig, timeout_s: float = 120.0) -> None:
    async with RpcClient(cfg.nodes[0].rpc_url) as first, RpcClient(cfg.nodes[-1].rpc_url) as last:
        target = (await first.call("status"))["height"]
        deadline = time.monotonic() + timeout_s
        while (await last.call("status"))["height"] < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cfg.nodes[-1].id} did not rejoin within {timeout_s:.0f}s")
            await asyncio.sleep(0.2)
