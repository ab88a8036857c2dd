"""`tally bench sim`: how fast the deterministic simulator runs (simulated s per wall s)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from node.bench.pbft import console, emit, machine, number_list
from node.sim.faults import FaultPlan
from node.sim.run import run_sim


def add_sim_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rates", default="1,5,20", type=number_list(float), help="offered tx/s to try")
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds per run")
    p.add_argument("--seeds", type=int, default=3, help="runs per rate (seeds 1..N)")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


def run_sim_bench(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for rate in [float(r) for r in args.rates.split(",")]:
        reports = [
            run_sim(args.nodes, seed, args.duration, FaultPlan(), rate=rate)[0]
            for seed in range(1, args.seeds + 1)
        ]
        assert all(r.ok for r in reports), "a benchmark run failed its own checks"
        virtual = sum(r.virtual_s for r in reports)
        wall = sum(r.wall_s for r in reports)
        rows.append(
            {
                "rate": rate,
                "runs": len(reports),
                "virtual_s": round(virtual, 1),
                "wall_s": round(wall, 2),
                "speed": round(virtual / wall, 1),
                "blocks": sum(r.blocks for r in reports),
                "messages": sum(r.messages_sent for r in reports),
            }
        )
    result = {"bench": "sim", "nodes": args.nodes, "machine": machine(), "runs": rows}
    table = Table(title=f"tally bench sim: {args.nodes} replicas, no faults")
    for col in ("tx/s", "runs", "simulated s", "wall s", "simulated s / wall s", "blocks"):
        table.add_column(col, justify="right")
    for r in rows:
        cells = (r["rate"], r["runs"], r["virtual_s"], r["wall_s"], r["speed"], r["blocks"])
        table.add_row(*map(str, cells))
    console.print(table)
    emit(args, result)
    return 0
