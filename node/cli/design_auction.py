"""`tally design auction` (sealed bids: first, second price, VCG) and `tally design pivot`
(a public good by the Clarke pivot scheme): terms and their exact, exhaustive checks."""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from typing import Any

from rich.markup import escape
from rich.table import Table

from contracts.design import auction, pivot
from contracts.mechanisms.auction import FORMATS
from node.cli.output import console


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas: {text!r}") from e


def add_parser(kinds: Any) -> None:
    a = kinds.add_parser(
        "auction",
        help="sealed-bid auctions (first, second price, multi-unit VCG), exactly checked",
        description="Checks the auction exhaustively on a grid of values (every profile, "
        "bidder and misreport) by running the contract's own settlement: dominant-strategy "
        "IC, ex post IR, the seller's budget, payments within the bid, and (second price, "
        "VCG) that the payments are the pivot payments.  First price is not DSIC: the "
        "design shows a profitable shaded bid.  --json prints, under 'terms', what "
        "`tally contract auction create` takes.",
    )
    a.add_argument("--format", choices=FORMATS, default="second", help="(default: second)")
    a.add_argument("--bidders", type=int, default=3, help="bidders in the check (default: 3)")
    a.add_argument(
        "--values",
        type=_ints,
        default=list(auction.DEFAULT_VALUES),
        help=f"the grid of marginal values (default: {','.join(map(str, auction.DEFAULT_VALUES))})",
    )
    a.add_argument("--units", type=int, default=1, help="units for sale, 1..3 (default: 1)")
    a.add_argument("--reserve", type=int, default=0, help="the reserve price (default: 0)")
    a.add_argument("--json", action="store_true", help="print JSON instead of tables")
    a.set_defaults(design_mech="auction")
    p = kinds.add_parser(
        "pivot",
        help="a public good by the pivot (Clarke) scheme, exactly checked",
        description="Build iff the reported willingness to pay covers --cost; pivotal agents "
        "pay Clarke taxes, which are burnt (or go to --surplus-to), never back to the agents. "
        "Checks DSIC, the budget, a non-negative surplus and the deposits exhaustively on "
        "the --values grid.  --json prints, under 'terms', what `tally contract pivot "
        "create` takes.",
    )
    p.add_argument("--agents", type=int, default=3, help="how many agents (default: 3)")
    p.add_argument(
        "--values",
        type=_ints,
        default=list(pivot.DEFAULT_VALUES),
        help="the grid of willingness to pay (default: "
        f"{','.join(map(str, pivot.DEFAULT_VALUES))})",
    )
    p.add_argument("--cost", type=int, default=90, help="the cost K (default: 90)")
    p.add_argument(
        "--shares",
        type=_ints,
        default=None,
        help="cost shares summing to the cost (default: equal whole shares)",
    )
    p.add_argument(
        "--cap", type=int, default=None, help="the largest report (default: the top value)"
    )
    p.add_argument(
        "--surplus-to",
        default="",
        help="40-hex-digit account that receives the taxes (default: burn them)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(design_mech="pivot")


def cmd(args: argparse.Namespace) -> int:
    try:
        if args.design_mech == "pivot":
            to = bytes.fromhex(args.surplus_to)
            d: Any = pivot.design_pivot(
                args.cost, args.shares, args.agents, args.cap, args.values, to
            )
        else:
            d = auction.design_auction(
                args.format, args.units, args.reserve, args.bidders, args.values
            )
    except (auction.DesignError, pivot.DesignError, ValueError) as e:
        if args.json:
            print(json.dumps({"error": "no_design", "message": str(e)}, indent=2))
        else:
            console.print(f"[red]no design[/]: {escape(str(e))}")
        return 1
    out = d.to_json()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    _render(out)
    return 0


def _frac(x: list[int]) -> str:
    f = Fraction(x[0], x[1])
    return str(f) if f.denominator == 1 else f"{f} (~{float(f):.2f})"


def _render(out: dict[str, Any]) -> None:
    t = out["terms"]
    if out["mechanism"] == "auction":
        title = (
            f"{t['format']}-price auction" if t["format"] != "vcg" else "VCG auction"
        ) + f": {t['units']} unit(s), reserve {t['reserve']}, {out['bidders']} bidders, "
        title += f"values {out['values']} ({out['profiles']} profiles)"
        figures = [
            ("mean revenue", _frac(out["mean_revenue"])),
            ("example bids", str(out["example"]["bids"])),
            ("  units won", str(out["example"]["units"])),
            ("  payments", str(out["example"]["payments"])),
        ]
    else:
        title = f"pivot public good: cost {t['cost']}, shares {t['shares']}, cap {t['cap']}"
        title += f", values {out['values']}"
        figures = [
            ("deposits", str(out["deposits"])),
            ("build rate", _frac(out["build_rate"])),
            ("mean surplus", _frac(out["mean_surplus"])),
            ("max surplus", str(out["max_surplus"])),
            ("surplus goes to", out["surplus_goes_to"]),
        ]
        for e in out["examples"]:
            label = "built" if e["build"] else "not built"
            figures.append((f"{label}: reports {e['reports']}", f"taxes {e['taxes']}"))
    table = Table(title=escape(title))
    table.add_column("check")
    table.add_column("holds", justify="center")
    table.add_column("witness (a profile where it fails)")
    for name, ok in out["checks"].items():
        mark = "[green]yes[/]" if ok else ("[red]no[/]" if name in out["promised"] else "no")
        table.add_row(name, mark, escape(str(out["witnesses"].get(name, ""))))
    console.print(table)
    facts = Table(show_header=False)
    for k, v in figures:
        facts.add_row(escape(k), escape(v))
    console.print(facts)
    console.print(
        "[green]verified[/]: every promised check holds exactly on the grid, through the "
        "contract's own settlement; create re-runs the claimed checks"
    )
