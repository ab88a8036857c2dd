"""`tally bench risk-design`: how long Townsend's multiperiod program takes to design.

Builds the LP (history-dependent lotteries, one-shot-lie constraints at every
history), solves it with HiGHS, rounds it and re-checks every constraint in
exact fractions, several times; prints the figures and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from contracts.design.risk import RiskProblem, Utility, build, design_risk

console = Console(stderr=True, width=110)


def add_design_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--periods", type=int, default=3)
    p.add_argument("--incomes", type=int, default=3, help="how many incomes (1, 2, 3, ...)")
    p.add_argument("--transfers", type=int, default=9, help="grid points from -2 to 2")
    p.add_argument("--audit-cost", type=float, help="Program 9 instead (one period)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


def problem_for(args: argparse.Namespace) -> RiskProblem:
    n, m = args.incomes, args.transfers
    u = Utility.parse("crra:1.5")
    return RiskProblem(
        incomes=tuple(float(i + 1) for i in range(n)),
        probs=tuple(1 / n for _ in range(n)),
        transfers=tuple(-2 + 4 * k / (m - 1) for k in range(m)),
        u1=u,
        u2=u,
        endowment=3.0,
        periods=1 if args.audit_cost is not None else args.periods,
        audit_cost=args.audit_cost,
    )


def run_design_bench(args: argparse.Namespace) -> int:
    problem = problem_for(args)
    prog, _ = build(problem)
    times, verified = [], True
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        d = design_risk(problem)
        times.append(time.perf_counter() - t0)
        verified &= d.verified
    result: dict[str, Any] = {
        "scenario": "risk-design",
        "periods": problem.periods,
        "incomes": len(problem.incomes),
        "transfers": len(problem.transfers),
        "audit_cost": problem.audit_cost,
        "lp_columns": len(prog.cols),
        "lp_constraints": len(prog.eq) + len(prog.ge),
        "lotteries": len(d.weights),
        "seconds_median": statistics.median(times),
        "seconds_max": max(times),
        "repeat": args.repeat,
        "verified": verified,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    console.print(
        f"risk design: {result['periods']} periods, {result['incomes']} incomes, "
        f"{result['transfers']} transfers -> {result['lotteries']} lotteries, LP "
        f"{result['lp_columns']} columns x {result['lp_constraints']} constraints; "
        f"median {result['seconds_median']:.3f} s, max {result['seconds_max']:.3f} s "
        f"over {args.repeat} runs (build, solve, round, exact check); verified {verified}"
    )
    text = json.dumps(result, indent=2)
    if args.json:
        print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if verified else 1
