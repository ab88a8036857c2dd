"""Proof-of-work benchmarks.

- `tally bench pow`: a live cluster of miners (OS processes, a worker process
  each) in a temporary directory; once retargeting has settled, the mean block
  interval over the next `--blocks` blocks against the target.
- `tally bench double-spend`: the private-fork double spend in the simulator,
  the measured success rate for each attacker share and confirmation depth,
  beside Nakamoto's (2008) figure and the exact one for the simulated attack.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node.bench.pbft import free_ports, machine
from node.cluster import launcher
from node.cluster.config import ClusterConfig, load_config, local_cluster_toml
from node.rpc.client import RpcClient
from node.sim.doublespend import exact, nakamoto, success_rate

console = Console(stderr=True, width=110)


def add_pow_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=4, help="miners (default: 4)")
    p.add_argument("--target-ms", type=int, default=1000, help="target block time")
    p.add_argument("--retarget", type=int, default=10, help="blocks between retargets")
    p.add_argument("--warmup", type=int, default=40, help="blocks before measuring")
    p.add_argument("--blocks", type=int, default=100, help="blocks measured")
    p.add_argument(
        "--initial-difficulty", type=int, default=500_000, help="expected hashes per block at first"
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory")


def add_double_spend_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shares", default="0.1,0.3,0.6", help="attacker hash shares")
    p.add_argument("--confirmations", default="1-6", help="k values, e.g. 1-6 or 1,2,6")
    p.add_argument("--trials", type=int, default=200, help="trials per (share, k)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also write the JSON result to this file")


def run_pow_bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-pow-"))
    settings = {
        "target_block_ms": args.target_ms,
        "retarget_interval": args.retarget,
        "initial_difficulty": args.initial_difficulty,
        "confirmations": 6,
    }
    path = workdir / "cluster.toml"
    accounts = {"bench": 10**9}
    path.write_text(
        local_cluster_toml("bench-pow", free_ports(2 * args.nodes), accounts, pow=settings)
    )
    cfg = load_config(path)
    console.print(f"bench pow: {args.nodes} miners in {workdir}; target {args.target_ms} ms")
    launcher.up(cfg, log_level="WARNING")
    try:
        result = asyncio.run(_measure(cfg, args))
    finally:
        launcher.down(cfg)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result |= {"bench": "pow", "nodes": args.nodes, "machine": machine(), "settings": settings}
    _emit(args, result)
    table = Table(title=f"tally bench pow: {args.nodes} miners")
    for col in ("target ms", "blocks", "mean ms", "median ms", "within", "difficulty"):
        table.add_column(col, justify="right")
    table.add_row(
        str(args.target_ms),
        f"{result['from_height']}..{result['to_height']}",
        f"{result['mean_interval_ms']:.0f}",
        f"{result['median_interval_ms']:.0f}",
        f"{100 * result['deviation']:+.1f}%",
        str(result["final_difficulty"]),
    )
    console.print(table)
    return 0


async def _measure(cfg: ClusterConfig, args: argparse.Namespace) -> dict[str, Any]:
    url = cfg.nodes[0].rpc_url
    first, last = args.warmup, args.warmup + args.blocks
    async with RpcClient(url, timeout=30) as client:
        started = time.monotonic()
        while (await client.call("status"))["height"] < last:
            await asyncio.sleep(1)
            if time.monotonic() - started > 60 + 20 * last * args.target_ms / 1000:
                raise RuntimeError("the miners are far slower than the target; gave up")
        blocks = [await client.call("get_block", height=h) for h in range(first, last + 1)]
        status = await client.call("status")
    times = [b["timestamp_ms"] for b in blocks]
    intervals = [b - a for a, b in itertools.pairwise(times)]
    mean = (times[-1] - times[0]) / args.blocks
    return {
        "from_height": first,
        "to_height": last,
        "mean_interval_ms": mean,
        "median_interval_ms": statistics.median(intervals),
        "deviation": mean / args.target_ms - 1,
        "final_difficulty": status["difficulty"],
        "bits_by_height": {str(b["height"]): b["pow"]["bits"] for b in blocks[:: args.retarget]},
    }


def run_double_spend_bench(args: argparse.Namespace) -> int:
    shares = [float(s) for s in args.shares.split(",")]
    ks = _ks(args.confirmations)
    rows = []
    for q in shares:
        for k in ks:
            t0 = time.perf_counter()
            measured = success_rate(q, k, args.trials, args.seed)
            rows.append(
                {
                    "share": q,
                    "confirmations": k,
                    "trials": args.trials,
                    "measured": measured,
                    "exact": exact(q, k),
                    "nakamoto": nakamoto(q, k),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            console.print(f"q={q} k={k}: {measured:.3f}")
    result = {"bench": "double-spend", "rows": rows, "machine": machine()}
    _emit(args, result)
    table = Table(title="private-fork double spend: success rate")
    for col in ("attacker share", "k", "measured", "exact (this attack)", "Nakamoto 2008"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            f"{r['share']:.2f}",
            str(r["confirmations"]),
            f"{r['measured']:.3f}",
            f"{r['exact']:.4f}",
            f"{r['nakamoto']:.4f}",
        )
    console.print(table)
    return 0


def _ks(text: str) -> list[int]:
    if "-" in text:
        low, high = (int(x) for x in text.split("-"))
        return list(range(low, high + 1))
    return [int(x) for x in text.split(",")]


def _emit(args: argparse.Namespace, result: dict[str, Any]) -> None:
    text = json.dumps(result, indent=2)
    if args.json:
        print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
