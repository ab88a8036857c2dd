"""`tally design agv`: the AGV expected-externality mechanism for Holmstrom's public good."""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from typing import Any

from rich.markup import escape
from rich.table import Table

from contracts.design.agv import (
    DEFAULT_PROBS,
    DEFAULT_VALUES,
    AgvDesign,
    AgvDesignError,
    design_agv,
    public_good,
)
from node.cli.output import console

AGENTS = 3


def add_parser(kinds: Any) -> None:
    p = kinds.add_parser(
        "agv",
        help="AGV (expected externality): efficient, budget balanced at every profile, BIC",
        description="The public good of Holmstrom's slides: build iff the reported "
        "willingness to pay exceeds the cost, shared equally; AGV transfers sum to zero at "
        "every report profile and make truth-telling a Bayesian-Nash equilibrium under the "
        "common prior.  Every agent's value is drawn independently from --values/--probs.  "
        "--json prints the design, its exact checks, and under 'terms' what "
        "`tally contract agv create` takes.",
    )
    p.add_argument(
        "--agents", type=int, default=AGENTS, help=f"how many agents, 2..8 (default: {AGENTS})"
    )
    p.add_argument(
        "--values",
        default=",".join(str(v) for v in DEFAULT_VALUES),
        help="each agent's possible willingness to pay, integers or fractions like 5/2 "
        f"(default: {','.join(str(v) for v in DEFAULT_VALUES)})",
    )
    p.add_argument(
        "--probs",
        default=",".join(str(q) for q in DEFAULT_PROBS),
        help="their probabilities, summing to 1 (default: "
        f"{','.join(str(q) for q in DEFAULT_PROBS)})",
    )
    p.add_argument(
        "--cost",
        type=Fraction,
        default=None,
        help="the cost of building (default: agents x the mean value, 120 at the defaults)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")


def cmd(args: argparse.Namespace) -> int:
    try:
        values = _fractions(args.values, "--values")
        probs = _fractions(args.probs, "--probs")
        d = design_agv(public_good(values, probs, args.cost, args.agents))
    except (AgvDesignError, ValueError, ZeroDivisionError) as e:
        _fail(args, str(e))
        return 1
    if not d.verified:
        _fail(args, "; ".join(d.failures))
        return 1
    if args.json:
        print(json.dumps(d.to_json(), indent=2))
    else:
        _render(d)
    return 0


def _fractions(text: str, what: str) -> tuple[Fraction, ...]:
    try:
        return tuple(Fraction(x.strip()) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from e


def _fail(args: argparse.Namespace, why: str) -> None:
    if args.json:
        print(json.dumps({"error": "no_design", "message": why}, indent=2))
    else:
        print(f"no AGV design: {why}")


def _render(d: AgvDesign) -> None:
    out = d.to_json()
    n = len(d.problem.types)
    table = Table(title=f"AGV public good, {n} agents: transfers t_i per report profile")
    table.add_column("reports", justify="right")
    table.add_column("decision")
    for i in range(n):
        table.add_column(f"t{i + 1}", justify="right")
    for row in out["profiles"]:
        table.add_row(",".join(row["reports"]), row["decision"], *row["transfers"])
    console.print(table)
    interim = Table(title="interim expectations (others truthful): transfer and utility")
    for col in ("agent", "type", "E[t AGV]", "E[t VCG]", "E[t pivot]", "E[utility]"):
        interim.add_column(escape(col), justify="right")
    for i, rows in enumerate(out["interim"]):
        for r in rows:
            interim.add_row(str(i + 1), r["type"], r["agv"], r["vcg"], r["pivot"], r["utility"])
    console.print(interim)
    ranges = {k: f"[{lo}, {hi}]" for k, (lo, hi) in out["budget"].items()}
    console.print(
        escape(
            f"sum of transfers over profiles: AGV {ranges['agv']}, VCG {ranges['vcg']}, pivot "
            f"{ranges['pivot']}; AGV - VCG per agent {', '.join(out['agv_minus_vcg'])} "
            "(a constant: the same incentives)"
        )
    )
    passed = ", ".join(k for k, ok in out["checks"].items() if ok)
    console.print(f"[green]verified exactly[/]: {passed}; least BIC slack {out['bic_slack']}")
    if not out["interim_ir"]:
        console.print("not interim IR: some type expects to lose (AGV does not promise it)")
