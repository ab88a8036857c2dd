"""`tally sim`: run the deterministic simulator from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import random
import tomllib
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from rich.console import Console
from rich.table import Table

from consensus.params import ParamError, describe
from consensus.pbft.config import PbftParams
from node.cluster.config import load_config
from node.faults.spec import FaultSpec
from node.sim.faults import FaultPlan, parse_crash, parse_partition, random_plan
from node.sim.params import POW_SIM_DIFFICULTY
from node.sim.powrun import PowSimReport, run_pow_sim
from node.sim.run import SIM_PARAMS, SimReport, run_sim

console = Console()


def add_sim_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", type=int, default=4, help="replicas (default: 4)")
    p.add_argument("--seed", type=int, default=1, help="the seed that reproduces a run")
    p.add_argument("--seeds", help="run a range of seeds instead, e.g. 0-999")
    p.add_argument("--duration", type=float, default=5.0, help="simulated seconds of faults")
    p.add_argument("--rate", type=float, default=20.0, help="client tx/s (default: 20)")
    p.add_argument("--drop", type=float, default=0.0, help="message loss probability")
    p.add_argument("--duplicate", type=float, default=0.0, help="duplication probability")
    p.add_argument("--delay", type=int, default=2, help="one-way delay in ms")
    p.add_argument("--jitter", type=int, default=3, help="extra random delay in ms (reorders)")
    p.add_argument(
        "--partition",
        action="append",
        default=[],
        metavar="SPEC",
        help="'n0,n1|n2,n3@1-3': groups, then the window in seconds (repeatable)",
    )
    p.add_argument(
        "--crash",
        action="append",
        default=[],
        metavar="SPEC",
        help="'n2@1-4' crash at 1 s, restart at 4 s; 'n2@1' stays down (repeatable)",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="'kind=equivocate,node=n0,at=1,duration=3' (see the README's fault catalogue)",
    )
    p.add_argument("--scenario", help="a TOML file of [[fault]] entries, as in cluster.toml")
    p.add_argument(
        "--random-faults",
        action="store_true",
        help="draw loss, delay, a partition and crashes of up to f nodes from the seed",
    )
    for f in fields(PbftParams):  # the [pbft] settings of cluster.toml, with sim defaults
        value = getattr(SIM_PARAMS, f.name)
        p.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=_param(f.name),
            default=value,
            metavar="N",
            help=f"PBFT: {describe(PbftParams, f.name)} (default: {value})",
        )
    p.add_argument("--consensus", choices=["pbft", "pow"], default="pbft", help="(default: pbft)")
    p.add_argument(
        "--hash-share",
        help="PoW: 'n0=0.4,n1=0.2,...' shares of the hash rate (default: equal, or the "
        "[[node]] hash_share entries of --cluster)",
    )
    p.add_argument("--cluster", help="PoW: take [pow] settings and hash shares from this file")
    p.add_argument("--json", action="store_true", help="print the report(s) as JSON")


def plan_from(args: argparse.Namespace, seed: int) -> FaultPlan:
    if args.random_faults:
        nodes = [f"n{i}" for i in range(args.nodes)]
        return random_plan(
            random.Random(seed), nodes, (args.nodes - 1) // 3, int(args.duration * 1000)
        )
    return FaultPlan(
        drop=args.drop,
        duplicate=args.duplicate,
        delay_ms=args.delay,
        jitter_ms=args.jitter,
        partitions=tuple(parse_partition(s) for s in args.partition),
        crashes=tuple(parse_crash(s) for s in args.crash),
    )


def faults_from(args: argparse.Namespace) -> tuple[FaultSpec, ...]:
    specs = [FaultSpec.parse(text) for text in args.fault]
    if args.scenario:
        with open(args.scenario, "rb") as f:
            specs += [FaultSpec.from_dict(d) for d in tomllib.load(f).get("fault", [])]
    return tuple(specs)


def run_sim_command(args: argparse.Namespace) -> int:
    logging.getLogger("tally").setLevel(logging.ERROR)  # the report says what matters
    seeds = _seed_range(args.seeds) if args.seeds else [args.seed]
    if args.consensus == "pow":
        return run_pow_command(args, seeds)
    params = replace(SIM_PARAMS, **{f.name: getattr(args, f.name) for f in fields(PbftParams)})
    reports = []
    faults = faults_from(args)
    for seed in seeds:
        plan = plan_from(args, seed)
        report, _ = run_sim(
            args.nodes, seed, args.duration, plan, rate=args.rate, config=params, faults=faults
        )
        reports.append(report)
        if not args.json and (len(seeds) == 1 or not report.ok):
            render(report)
    return finish(args, reports)


def finish(args: argparse.Namespace, reports: list[Any]) -> int:
    """Print the JSON (one report or a list) or a summary of many seeds; exit 1 on a
    violation."""
    if args.json:
        out = [r.to_json() for r in reports]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2, default=str))
    elif len(reports) > 1:
        failed = [r.seed for r in reports if not r.ok]
        console.print(
            f"{len(reports)} seeds, {len(failed)} with a violation"
            + (f": {failed}" if failed else "")
        )
    return 0 if all(r.ok for r in reports) else 1


def render(r: SimReport) -> None:
    table = Table(title=f"tally sim: {r.nodes} replicas, seed {r.seed}", show_header=False)
    rows = [
        ("blocks committed", str(r.blocks)),
        ("txs committed", str(r.txs)),
        ("highest view", str(r.max_view)),
        ("views entered (all replicas)", str(r.views_entered)),
        (
            "messages sent / dropped / duplicated",
            f"{r.messages_sent} / {r.messages_dropped} / {r.messages_duplicated}",
        ),
        ("virtual time / wall time", f"{r.virtual_s:.2f}s / {r.wall_s:.2f}s ({r.speed:.0f}x)"),
    ]
    rows += [
        (f"check: {v.name}", ("[green]ok[/] " if v.ok else "[red]VIOLATED[/] ") + v.detail)
        for v in r.verdicts
    ]
    rows.append(("Byzantine (not judged)", ", ".join(r.byzantine) or "none"))
    rows.append(("evidence on the ledger against", ", ".join(r.evidence) or "nobody"))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if not r.ok:
        console.print(f"[red]seed {r.seed} failed[/]; reproduce with:\n  {r.command}")


def _seed_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def pow_setup(args: argparse.Namespace) -> tuple[dict[str, float] | None, dict[str, int]]:
    """Hash shares and [pow] settings: from --cluster (but the simulator's cheap difficulty),
    then --hash-share on top."""
    shares: dict[str, float] = {}
    settings: dict[str, int] = {}
    if args.cluster:
        cfg = load_config(args.cluster)
        shares = {n.id: n.hash_share for n in cfg.nodes if n.hash_share is not None}
        settings = replace(cfg.pow, initial_difficulty=POW_SIM_DIFFICULTY).values()
        args.nodes = len(cfg.nodes)
    for item in filter(None, (args.hash_share or "").split(",")):
        node, _, share = item.partition("=")
        shares[node.strip()] = float(share)
    return shares or None, settings


def run_pow_command(args: argparse.Namespace, seeds: list[int]) -> int:
    shares, settings = pow_setup(args)
    reports: list[PowSimReport] = []
    for seed in seeds:
        report = run_pow_sim(
            args.nodes,
            seed,
            args.duration,
            plan_from(args, seed),
            shares=shares,
            settings=settings,
            faults=faults_from(args),
            rate=args.rate,
        )
        reports.append(report)
        if not args.json and (len(seeds) == 1 or not report.ok):
            render_pow(report)
    return finish(args, reports)


def render_pow(r: PowSimReport) -> None:
    table = Table(title=f"tally sim: {r.nodes} miners, seed {r.seed}", show_header=False)
    rows = [
        ("heights", ", ".join(f"{n} {h}" for n, h in r.heights.items())),
        ("blocks by miner", ", ".join(f"{n} {c}" for n, c in sorted(r.blocks_by_miner.items()))),
        ("reorganisations (deepest)", f"{r.reorgs} ({r.deepest_reorg})"),
        ("txs sent", str(r.txs)),
        ("virtual time / wall time", f"{r.virtual_s:.1f}s / {r.wall_s:.2f}s"),
    ]
    rows += [
        (f"check: {v.name}", ("[green]ok[/] " if v.ok else "[red]VIOLATED[/] ") + v.detail)
        for v in r.verdicts
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)


def _param(name: str) -> Callable[[str], int]:
    """An argparse type for one PBFT parameter: an int that keeps the parameter's rule."""

    def parse(text: str) -> int:
        try:
            value = int(text)
            replace(SIM_PARAMS, **{name: value})
        except ValueError as e:
            rule = e.rule if isinstance(e, ParamError) else "must be an integer"
            raise argparse.ArgumentTypeError(f"{text}: {rule}") from None
        return value

    return parse
