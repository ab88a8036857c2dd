"""`tally design exchange` and `tally design check moore-repullo`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

from rich.console import Console
from rich.table import Table

from contracts.design.designer import Design, DesignError, design
from contracts.design.exchange import (
    BUYER,
    SELLER,
    STATES,
    ExchangeParams,
    exchange_game,
    moore_repullo_game,
    tree_json,
)
from contracts.design.game import spe_outcome, subgame_perfect

console = Console() if sys.stdout.isatty() else Console(width=120)


def add_design_arguments(sub: Any) -> None:
    p = sub.add_parser("design", help="design mechanisms by linear programming, or check them")
    kinds = p.add_subparsers(dest="design_kind", required=True, metavar="KIND")
    ex = kinds.add_parser(
        "exchange",
        help="transfers for the core exchange mechanism",
        description="Every parameter is in integer units of money.",
    )
    for f in fields(ExchangeParams):
        ex.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=int,
            default=f.default,
            help=f"(default: {f.default})",
        )
    ex.add_argument(
        "--objective",
        choices=["deposits", "burn"],
        default="deposits",
        help="minimise deposits, or also burn the most off the honest path",
    )
    ex.add_argument(
        "--margin",
        type=int,
        default=1,
        help="how much better the honest move must be at every node (default: 1)",
    )
    ex.add_argument("--json", action="store_true")
    check = kinds.add_parser("check", help="solve a built-in game by backward induction")
    check.add_argument("game", choices=["moore-repullo"])
    check.add_argument("--json", action="store_true")


def design_json(params: ExchangeParams, d: Design) -> dict[str, Any]:
    return {
        "price": params.price,
        "parameters": vars(params),
        "deposits": {"seller": d.deposit(SELLER), "buyer": d.deposit(BUYER)},
        "transfers": [
            {
                "state": s,
                "redeem": s[0] == "R",
                "complain": s[1] == "C",
                "fault": s[2] == "F",
                "seller": d.transfer(s, SELLER),
                "buyer": d.transfer(s, BUYER),
                "burn": d.burn(s),
            }
            for s in STATES
        ],
        "game": tree_json(d.game.root),
        "objective": d.objective,
        "margin": d.margin,
        "verified": d.verified,
    }


def cmd_design(args: argparse.Namespace, cfg: object) -> int:
    if args.design_kind == "check":
        return check_moore_repullo(args.json)
    params = ExchangeParams(**{f.name: getattr(args, f.name) for f in fields(ExchangeParams)})
    try:
        d = design(exchange_game(params), args.objective, args.margin)
    except DesignError as e:
        if args.json:
            print(json.dumps({"error": "infeasible", "conflict": e.conflict}, indent=2))
        else:
            console.print(f"[red]no design[/]: {e}")
        return 1
    out = design_json(params, d)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    table = Table(
        title=f"core exchange: price {params.price}, deposits seller "
        f"{out['deposits']['seller']} buyer {out['deposits']['buyer']}"
    )
    for col in ("redeem", "complain", "admit fault", "to seller", "to buyer", "burn"):
        table.add_column(col, justify="right")
    for t in out["transfers"]:
        table.add_row(
            *("yes" if t[k] else "no" for k in ("redeem", "complain", "fault")),
            str(t["seller"]),
            str(t["buyer"]),
            str(t["burn"]),
        )
    console.print(table)
    console.print(
        "[green]verified[/]: honest play is the unique subgame-perfect equilibrium "
        "(exact backward induction); budget and IR hold to the unit"
    )
    return 0


def check_moore_repullo(as_json: bool) -> int:
    out: dict[str, Any] = {}
    for quality in ("high", "low"):
        game = moore_repullo_game(quality)
        spe = subgame_perfect(game, {})
        path, payoffs = spe_outcome(game, {})
        out[quality] = {
            "play": path,
            "subgame_perfect": {k or "root": v[0] for k, v in spe.items()},
            "payoffs": {p: int(u) for p, u in payoffs.items()},
            "truthful": path == [quality, "no challenge"],
        }
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        for quality, r in out.items():
            console.print(
                f"quality {quality}: play {' -> '.join(r['play'])}; payoffs "
                f"buyer {r['payoffs']['buyer']}, seller {r['payoffs']['seller']}"
            )
    return 0 if all(r["truthful"] for r in out.values()) else 1
