"""`tally design exchange|risk-sharing|auction|pivot|agv|bilateral` and `tally design check
moore-repullo`; the kernel mechanisms' commands are in node/cli/design_<mechanism>.py."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from fractions import Fraction
from typing import Any

from rich.table import Table

from contracts.design.designer import Design, DesignError, design
from contracts.design.exchange import (
    BUYER,
    KEEP_COST_ON,
    SELLER,
    STATES,
    ExchangeParams,
    exchange_game,
    moore_repullo_game,
    tree_json,
)
from contracts.design.game import spe_outcome, subgame_perfect
from contracts.design.risk import InfeasibleDesign, RiskProblem, Utility, design_risk
from node.cli import design_agv, design_auction, design_bilateral
from node.cli.output import console

# `tally design KIND` for the kernel's mechanisms: KIND -> the module that runs it
MECHANISM_DESIGNERS = {
    "auction": design_auction,
    "pivot": design_auction,
    "agv": design_agv,
    "bilateral": design_bilateral,
}


def add_design_arguments(sub: Any) -> None:
    p = sub.add_parser("design", help="design mechanisms by linear programming, or check them")
    kinds = p.add_subparsers(dest="design_kind", required=True, metavar="KIND")
    ex = kinds.add_parser(
        "exchange",
        help="transfers for the core exchange mechanism",
        description="Every parameter is in integer units of money.",
    )
    for f in fields(ExchangeParams):
        if f.name == "keep_cost_on":
            ex.add_argument(
                "--keep-cost-on",
                choices=KEEP_COST_ON,
                default=f.default,
                help="the seller bears --keep-cost on every delivery, or only when the buyer "
                f"does not redeem (default: {f.default})",
            )
            continue
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
    risk = kinds.add_parser("risk-sharing", help="Townsend's information-constrained insurance")
    risk.add_argument("--incomes", default="1,2,3", help="agent 1's possible incomes")
    risk.add_argument("--probs", default="1/3,1/3,1/3", help="their probabilities")
    risk.add_argument(
        "--transfers",
        default="-2:2:0.5",
        help="the grid LOW:HIGH:STEP of transfers from agent 1 to agent 2",
    )
    risk.add_argument("--utility", default="crra:1.5", help="crra:GAMMA, cara:A or table:c=u,...")
    risk.add_argument("--utility2", help="agent 2's utility (default: the same)")
    risk.add_argument("--endowment", type=float, default=3.0, help="agent 2's endowment W")
    risk.add_argument("--periods", type=int, default=1)
    risk.add_argument("--markov", help="rows of p(next|now): 'a,b,c;d,e,f;g,h,i' (default iid)")
    risk.add_argument("--beta", type=float, default=0.95)
    risk.add_argument("--weights", default="1,1", help="Pareto weights lambda1,lambda2")
    risk.add_argument("--audit-cost", type=float, help="Program 9: audits at this cost")
    risk.add_argument("--participation", action="store_true", help="limited commitment")
    risk.add_argument("--public", action="store_true", help="incomes observed (benchmark)")
    risk.add_argument("--json", action="store_true")
    for module in dict.fromkeys(MECHANISM_DESIGNERS.values()):
        module.add_parser(kinds)
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
    if args.design_kind == "risk-sharing":
        return design_risk_sharing(args)
    if args.design_kind in MECHANISM_DESIGNERS:
        return int(MECHANISM_DESIGNERS[args.design_kind].cmd(args))
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


def design_risk_sharing(args: argparse.Namespace) -> int:
    problem = RiskProblem(
        incomes=_floats(args.incomes),
        probs=_floats(args.probs),
        transfers=_grid(args.transfers),
        u1=Utility.parse(args.utility),
        u2=Utility.parse(args.utility2 or args.utility),
        endowment=args.endowment,
        periods=args.periods,
        beta=args.beta,
        markov=tuple(_floats(r) for r in args.markov.split(";")) if args.markov else None,
        weights=tuple(_floats(args.weights)),  # type: ignore[arg-type]
        audit_cost=args.audit_cost,
        participation=args.participation,
        public=args.public,
    )
    try:
        d = design_risk(problem)
    except InfeasibleDesign as e:
        print(json.dumps({"error": str(e)}) if args.json else f"no design: {e}")
        return 1
    lotteries = [
        {
            "period": t,
            "reports": [problem.incomes[i] for i in h],
            "audit": None if not a else ("truthful" if a == 1 + h[-1] else problem.incomes[a - 1]),
            "weights": w,
            "expected_transfer": _rounded(d.expected_transfer(t, h, a)),
        }
        for (t, h, a), w in sorted(d.weights.items())
    ]
    second = {k: v for k, v in d.weights.items() if k[0] == 2 and k[2] == 0}
    dependent = any(
        d.expected_transfer(2, (a, now)) != d.expected_transfer(2, (b, now))
        for (_, (a, now), _) in second
        for (_, (b, n2), _) in second
        if n2 == now and a != b
    )
    out = {
        "periods": problem.periods,
        "incomes": problem.incomes,
        "transfers": problem.transfers,
        "resolution": d.resolution,
        "lotteries": lotteries,
        "objective": d.objective,
        "expected_utility": {"agent1": d.utility1, "agent2": d.utility2},
        "audit_probability": {
            str(problem.incomes[i]): float(p) for i, p in d.audit_probability.items()
        },
        "lp_optimum": d.lp_optimum,  # the exact LP, before rounding
        "optimality_gap": d.optimality_gap,  # lp_optimum - objective
        "margins": d.margins,  # rows re-solved with a margin because rounding broke them
        "unrepairable": d.unrepairable,  # broken rows that hold with equality everywhere
        "binding": d.binding,
        "history_dependent": dependent,
        # the information regime, what the LP imposed (and the exact re-check verified), and
        # the truth-telling constraints the schedule breaks (a public design's temptations)
        "information": d.information,
        "constraints": {
            "imposed": d.imposed,
            "verified": d.imposed if d.verified else [],
            "truth_telling_violated": d.truth_telling,
        },
        "incentive_compatible": not d.truth_telling,
        "verified": d.verified,
        # what `tally contract risk-sharing create --design FILE` reads (in design units); the
        # contract re-checks truth-telling from utility, beliefs and discount
        "schedule": {
            "incomes": problem.incomes,
            "transfers": problem.transfers,
            "resolution": d.resolution,
            "horizon": problem.periods,
            "lotteries": [[t, list(h), a, w] for (t, h, a), w in sorted(d.weights.items())],
            "utility": [list(row) for row in d.utility_table],
            "beliefs": [list(row) for row in d.beliefs()],
            "discount": list(d.discount()),
        },
        "audit_cost": problem.audit_cost,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for lot in lotteries:
            console.print(
                f"period {lot['period']} reports {lot['reports']}"
                + (f" audit {lot['audit']}" if lot["audit"] else "")
                + (
                    f": E[transfer] {lot['expected_transfer']:+.3f}"
                    if lot["expected_transfer"] is not None
                    else ": never happens"
                )
            )
        table = Table(title=f"welfare ({d.information} incomes)")
        for col in ("rounded schedule", "exact LP optimum", "gap"):
            table.add_column(col, justify="right")
        table.add_row(f"{d.objective:.7f}", f"{d.lp_optimum:.7f}", f"{d.optimality_gap:.2e}")
        console.print(table)
        console.print(
            f"binding: {'; '.join(d.binding) or 'none'}; history dependent: {dependent}; "
            f"verified exactly: {d.verified} ({', '.join(d.imposed)})"
        )
        if d.truth_telling:
            console.print(
                f"[yellow]not incentive compatible[/] for private reports "
                f"({len(d.truth_telling)} lies pay): a contract refuses this schedule"
            )
        if d.unrepairable:
            console.print(
                "[red]not verified[/]: rounding to 1/"
                f"{d.resolution} breaks {'; '.join(d.unrepairable)}, which holds with "
                "equality at every feasible point, so no margin can absorb it"
            )
    return 0 if d.verified else 1


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(Fraction(x)) for x in text.split(",") if x)


def _grid(text: str) -> tuple[float, ...]:
    if ":" not in text:
        return _floats(text)
    low, high, step = (float(x) for x in text.split(":"))
    return tuple(round(low + k * step, 9) for k in range(round((high - low) / step) + 1))


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
