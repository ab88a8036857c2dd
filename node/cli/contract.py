"""`tally contract exchange offer|accept|deliver|redeem|refund|complain|no-complaint|
admit-fault|deny-fault|show`: play the core exchange mechanism on a cluster; the other
engines' commands are in node/cli/risk.py and node/cli/sealed.py."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from contracts.design.designer import design
from contracts.design.exchange import STATES, ExchangeParams, exchange_game
from node.cli.contractcalls import answer, call, contract_id, show
from node.cli.output import console
from node.cli.risk import add_risk_arguments, cmd_risk, ledger_time
from node.cli.sealed import MECHANISMS, add_sealed_arguments, cmd_sealed
from node.cluster.accounts import resolve_address
from node.cluster.config import ClusterConfig

MOVES = [
    "accept",
    "deliver",
    "redeem",
    "refund",
    "complain",
    "no-complaint",
    "admit-fault",
    "deny-fault",
]


def add_contract_arguments(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "contract",
        help="contracts on the ledger: exchange, risk-sharing, auction, pivot, agv, bilateral",
    )
    engines = p.add_subparsers(dest="engine", required=True, metavar="ENGINE")
    add_risk_arguments(engines, common)
    add_sealed_arguments(engines, common)
    ex = engines.add_parser("exchange", help="the core exchange mechanism")
    ops = ex.add_subparsers(dest="op", required=True, metavar="OP")
    offer = ops.add_parser("offer", parents=[common], help="offer an exchange (designs its table)")
    offer.add_argument("--from", dest="sender", required=True, help="the offerer's account name")
    offer.add_argument("--to", required=True, help="the counterparty: name or address")
    offer.add_argument(
        "--role",
        choices=["seller", "buyer"],
        default="seller",
        help="the offerer's role (default: seller)",
    )
    offer.add_argument("--item", default="an item", help="what is sold")
    offer.add_argument("--price", type=int, default=ExchangeParams.price)
    offer.add_argument("--design", help="a `tally design exchange --json` file to use instead")
    offer.add_argument(
        "--windows",
        default="3600,3600,3600,3600,3600",
        help="seconds of ledger time allowed to accept,deliver,redeem,complain,admit "
        "(default: an hour each)",
    )
    for name in ("offer", *MOVES, "show"):
        sp = (
            offer
            if name == "offer"
            else ops.add_parser(name, parents=[common], help=f"{name} (a signed move)")
        )
        if name != "offer":
            sp.add_argument("--id", required=True, help="the contract id (the offer's tx id)")
            if name != "show":
                sp.add_argument("--from", dest="sender", required=True, help="account name")
        sp.add_argument("--node", help="node to use (default: the first that answers)")
        sp.add_argument("--json", action="store_true")


def offer_args(cfg: ClusterConfig, args: argparse.Namespace) -> dict[str, Any]:
    if args.design:
        d = json.loads(Path(args.design).read_text())
        price, deposits, rows = d["price"], d["deposits"], d["transfers"]
        by_state = {r["state"]: r for r in rows}
        table = [by_state[s][k] for s in STATES for k in ("seller", "buyer", "burn")]
    else:
        des = design(exchange_game(ExchangeParams(price=args.price)))
        price = args.price
        deposits = {"seller": des.deposit("seller"), "buyer": des.deposit("buyer")}
        table = [
            v
            for s in STATES
            for v in (des.transfer(s, "seller"), des.transfer(s, "buyer"), des.burn(s))
        ]
    windows = [int(w) for w in args.windows.split(",")]
    return {
        "role": args.role,
        "counterparty": resolve_address(cfg, args.to),
        "item": args.item,
        "price": price,
        "deposit_seller": deposits["seller"],
        "deposit_buyer": deposits["buyer"],
        "table": table,
        "windows": windows,
    }


def cmd_contract(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    members = cfg.rpc_members(args.node)
    if args.engine == "risk-sharing":
        return cmd_risk(args, cfg, members)
    if args.engine in MECHANISMS:
        return cmd_sealed(args, cfg, members)
    if args.op == "show":
        result = asyncio.run(show(members, args.id))
    else:
        op = args.op.replace("-", "_")
        cid = b"" if op == "offer" else contract_id(args.id)
        extra = offer_args(cfg, args) if op == "offer" else {}
        result = asyncio.run(call(cfg, members, args.sender, op, cid, extra))
        if op == "offer":
            result["contract_id"] = result["tx_id"]
    return answer(result, args.json, args.op, render)


def render(op: str, r: dict[str, Any]) -> None:
    if op != "show":
        where = f" at height {r['height']}" if "height" in r else ""
        console.print(
            f"{op}: {r['status']}{where}"
            + (f"; contract id {r['contract_id']}" if "contract_id" in r else "")
        )
        return
    console.print(
        f"exchange {r['id'][:16]}: {r['item']!r} for {r['price']}, stage "
        f"{r['stage']}"
        + (f" (due by {ledger_time(r['deadline'])})" if r["deadline"] else "")
        + f", escrow {r['escrow']}"
        + (f", final state {r['final_state']}" if r["final_state"] else "")
    )
    for m in r["history"]:
        console.print(
            f"  height {m['height']}: {m['by']} {m['op']}"
            + (f" (tx {m['tx_id'][:16]})" if m["tx_id"] else "")
        )
