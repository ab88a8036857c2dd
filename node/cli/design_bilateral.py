"""`tally design bilateral`: Myerson-Satterthwaite on numbers, and the second best.

Seed: /work/shared/seeds/002_73efa823a2277c74.txt (Holmstrom, Lecture 11,
"Myerson-Satterthwaite Theorem", slides 47-54 of 65).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from rich.markup import escape
from rich.table import Table

from contracts.design.bilateral import (
    DEFAULT_BUYER,
    DEFAULT_SELLER,
    BilateralDesign,
    BilateralInfeasible,
    BilateralProblem,
    design_bilateral,
)
from node.cli.output import console, err


def _csv(values: Sequence[int]) -> str:
    return ",".join(str(v) for v in values)


def add_parser(kinds: Any) -> None:
    p = kinds.add_parser(
        "bilateral",
        help="bilateral trade: the second best, or the Myerson-Satterthwaite impossibility",
        description="A buyer and a seller with independent finite value distributions. The LP "
        "searches direct mechanisms (trade probability and payment per report pair) under "
        "Bayesian IC, interim IR and budget balance, maximising the expected gains from trade.",
    )
    p.add_argument(
        "--buyer",
        default=_csv(DEFAULT_BUYER),
        help=f"the buyer's possible values, increasing (default: {_csv(DEFAULT_BUYER)})",
    )
    p.add_argument(
        "--buyer-probs",
        default=None,
        help="their probabilities, e.g. 1/4,1/4,1/2 (default: equally likely)",
    )
    p.add_argument(
        "--seller",
        default=_csv(DEFAULT_SELLER),
        help=f"the seller's possible costs, increasing (default: {_csv(DEFAULT_SELLER)})",
    )
    p.add_argument(
        "--seller-probs",
        default=None,
        help="their probabilities (default: equally likely)",
    )
    p.add_argument(
        "--efficient",
        action="store_true",
        default=False,
        help="impose efficient trade (p = 1 where b > s, 0 where b < s); with overlapping "
        "supports this shows the infeasibility and its certificate (default: off)",
    )
    p.add_argument("--json", action="store_true", default=False, help="print JSON (default: off)")


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise ValueError(f"{what} must be integers separated by commas, got {text!r}") from e


def _probs(text: str | None, n: int, what: str) -> tuple[Fraction, ...]:
    if text is None:
        return tuple(Fraction(1, n) for _ in range(n))
    try:
        return tuple(Fraction(x.strip()) for x in text.split(",") if x.strip())
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"{what} must be fractions like 1/4 separated by commas") from e


def problem_from(args: argparse.Namespace) -> BilateralProblem:
    buyer = _ints(args.buyer, "--buyer")
    seller = _ints(args.seller, "--seller")
    problem = BilateralProblem(
        buyer,
        _probs(args.buyer_probs, len(buyer), "--buyer-probs"),
        seller,
        _probs(args.seller_probs, len(seller), "--seller-probs"),
    )
    problem.validate()
    return problem


def cmd(args: argparse.Namespace) -> int:
    try:
        problem = problem_from(args)
    except ValueError as e:
        if args.json:
            print(json.dumps({"error": "bad_problem", "message": str(e)}, indent=2))
        else:
            err.print(f"[red]bad problem[/]: {e}")
        return 1
    result = design_bilateral(problem, efficient=args.efficient)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    elif isinstance(result, BilateralInfeasible):
        _show_infeasible(result)
    else:
        _show_design(result)
    if isinstance(result, BilateralInfeasible):
        return 1
    return 0 if result.verified else 1


def _table(d: BilateralDesign, title: str, cells: Sequence[Sequence[Fraction]]) -> Table:
    table = Table(title=title)
    table.add_column("buyer \\ seller", justify="right")
    for s in d.problem.seller_values:
        table.add_column(str(s), justify="right")
    for b, row in zip(d.problem.buyer_values, cells, strict=True):
        table.add_row(str(b), *(str(x) for x in row))
    return table


def _show_design(d: BilateralDesign) -> None:
    kind = "efficient" if d.efficient else "second best"
    if d.posted_price is not None:
        console.print(
            f"the supports do not overlap: a posted price of {d.posted_price} is efficient"
        )
    console.print(_table(d, f"bilateral trade ({kind}): probability of trade", d.schedule.trade))
    console.print(
        _table(
            d,
            "payment from buyer to seller (paid whether or not trade happens)",
            d.schedule.payment,
        )
    )
    first = d.problem.first_best()
    out = d.to_json()
    console.print(
        f"expected gains {d.gains} = {float(d.gains):.6g} of first best {first} = "
        f"{float(first):.6g} ({100 * out['share_of_first_best']:.2f}%)"
    )
    console.print(
        f"LP optimum {d.lp_optimum:.6g} (ex ante budget: {d.lp_optimum_ex_ante:.6g}), gap "
        f"{out['gap']:.3g}; deposits: buyer {out['deposits']['buyer']}, seller "
        f"{out['deposits']['seller']}"
    )
    if d.margins:
        console.print(escape(f"rows re-solved with a margin: {', '.join(sorted(d.margins))}"))
    failed = [name for name, ok in d.checks.items() if not ok]
    if failed:
        console.print(f"[red]not verified[/]: fails {', '.join(failed)}")
    else:
        console.print(
            "[green]verified[/] exactly: "
            + ", ".join(d.checks)
            + " (the checks `tally contract bilateral create` runs)"
        )


def _show_infeasible(r: BilateralInfeasible) -> None:
    console.print(
        "[red]no efficient mechanism[/]: Bayesian IC, interim IR, "
        f"{r.budget.replace('_', ' ')} budget balance and efficiency cannot all hold "
        "(Myerson-Satterthwaite)"
    )
    table = Table(title="drop one family: is the LP feasible then?")
    table.add_column("family")
    table.add_column("feasible without it")
    for family, ok in r.conflicts.items():
        table.add_row(family, "yes" if ok else "no")
    console.print(table)
    if all(r.conflicts.values()):
        console.print("every family is needed: dropping any one makes the LP feasible")
    cert = r.certificate
    if cert is None:
        console.print("[yellow]no exact certificate found[/] (the LP solver says infeasible)")
        return
    rows = Table(title="Farkas certificate: these rows, weighted, sum to 0 >= 1")
    rows.add_column("row")
    rows.add_column("weight", justify="right")
    for name, w in cert.weights:
        rows.add_row(escape(name), str(w))  # row names hold [...]
    console.print(rows)
    status = "[green]verified exactly[/]" if cert.verified else "[red]not verified[/]"
    console.print(
        f"certificate {status}: every coefficient cancels, the constant is {cert.constant}"
    )
