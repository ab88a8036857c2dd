"""`tally contract auction|pivot|agv|bilateral create|deposit|commit|reveal|show`: run a
kernel mechanism (contracts/kernel/) on a cluster.

`commit` keeps the message and a fresh salt in the cluster's data directory (mode 0600)
before the commitment is sent; `reveal` reads them back.  Before committing, the message
is checked against the rule and the party's deposit here, so a bid the contract would
refuse at reveal (and so forfeit the penalty) is never sealed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
from pathlib import Path
from typing import Any

from rich.table import Table

from contracts.kernel.engine import commitment
from contracts.kernel.rule import Rule
from ledger.contract import ContractError
from node.cli.contractcalls import answer, call, contract_id, show
from node.cli.output import console
from node.cli.risk import ledger_time
from node.cli.secrets import keep, load
from node.cluster.accounts import known_names, resolve_address, signer_key
from node.cluster.config import ClusterConfig, ConfigError
from node.engines import chain_engines
from node.rpc.failover import Members

MECHANISMS = {
    "auction": "sealed-bid auctions with escrow: first price, second price, multi-unit VCG",
    "pivot": "a public good decided by the pivot (Clarke) scheme",
    "agv": "the AGV budget-balanced expected-externality mechanism",
    "bilateral": "bilateral trade: the second-best direct mechanism (Myerson-Satterthwaite)",
}
MESSAGES = {
    "auction": "the bid: an amount, or marginal values for several units as [30,20]",
    "pivot": "the willingness to pay for the public good",
    "agv": "the reported type: its index in the contract's types",
    "bilateral": "the reported value: its index in the contract's values for this party",
}
HELPS = {
    "create": "create a contract (the creator is the seller or builder, not a party)",
    "deposit": "deposit into escrow (default: what committing needs)",
    "commit": "commit to a sealed message (kept here until reveal)",
    "reveal": "reveal the committed message",
    "show": "the contract: phase, deadlines, deposits, commitments, reveals, outcome",
}
DEFAULT_PENALTY = 10  # forfeited (burnt) by a party that commits and never reveals
DEFAULT_WINDOWS = "600,600"  # seconds of ledger time for the commit and the reveal phase


def add_sealed_arguments(engines: Any, common: argparse.ArgumentParser) -> None:
    for mech, text in MECHANISMS.items():
        p = engines.add_parser(mech, help=text, description=text)
        ops = p.add_subparsers(dest="op", required=True, metavar="OP")
        for op, helptext in HELPS.items():
            sp = ops.add_parser(op, parents=[common], help=helptext, description=helptext)
            if op != "create":
                sp.add_argument("--id", required=True, help="the contract id (the create tx's id)")
            if op != "show":
                sp.add_argument("--from", dest="sender", required=True, help="account or member")
            if op == "create":
                sp.add_argument(
                    "--parties", required=True, help="comma-separated names or addresses"
                )
                sp.add_argument(
                    "--design",
                    help=f"a `tally design {mech} --json` file (default: "
                    "the designer's default for this many parties)",
                )
                sp.add_argument(
                    "--penalty",
                    type=int,
                    default=DEFAULT_PENALTY,
                    help=f"forfeited for a missing reveal (default {DEFAULT_PENALTY})",
                )
                sp.add_argument(
                    "--windows",
                    default=DEFAULT_WINDOWS,
                    help=f"seconds for commit,reveal (default {DEFAULT_WINDOWS})",
                )
            if op == "deposit":
                sp.add_argument("--amount", type=int, help="default: what committing still needs")
            if op == "commit":
                sp.add_argument("--message", required=True, help=MESSAGES[mech] + " (JSON)")
            sp.add_argument("--node", help="node to use (default: the first that answers)")
            sp.add_argument("--json", action="store_true")


def cmd_sealed(args: argparse.Namespace, cfg: ClusterConfig, members: Members) -> int:
    if args.op == "show":
        result = asyncio.run(show(members, args.id))
    elif args.op == "create":
        result = asyncio.run(
            call(cfg, members, args.sender, "create", b"", create_args(cfg, args), args.engine)
        )
        result["contract_id"] = result["tx_id"]
    else:
        result = asyncio.run(_move(cfg, members, args))
    names = known_names(cfg) if args.op == "show" and not args.json else {}
    return answer(result, args.json, args.op, functools.partial(render, names=names))


def create_args(cfg: ClusterConfig, args: argparse.Namespace) -> dict[str, Any]:
    parties = [resolve_address(cfg, p.strip()) for p in args.parties.split(",") if p.strip()]
    if args.design:
        design = json.loads(Path(args.design).read_text())
        if design.get("mechanism") != args.engine or "terms" not in design:
            raise ConfigError(f"{args.design} is not a `tally design {args.engine} --json` file")
        terms = design["terms"]
    else:
        terms = importlib.import_module(f"contracts.design.{args.engine}").default_terms(
            len(parties)
        )
    terms = _bytes_back(terms)
    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        raise ConfigError(
            f"--windows must be two whole numbers of seconds, got {args.windows!r}"
        ) from None
    return {"parties": parties, "windows": windows, "penalty": args.penalty, "terms": terms}


def _bytes_back(terms: dict[str, Any]) -> dict[str, Any]:
    """A design file's terms as the contract takes them (JSON has no bytes: addresses are hex)."""
    out = dict(terms)
    if isinstance(out.get("surplus_to"), str):
        out["surplus_to"] = bytes.fromhex(out["surplus_to"])
    return out


async def _move(cfg: ClusterConfig, members: Members, args: argparse.Namespace) -> dict[str, Any]:
    cid = contract_id(args.id)
    view = await show(members, args.id)
    if view.get("engine") != args.engine:
        raise ConfigError(
            f"contract {args.id[:16]} is a {view.get('engine')} contract, not {args.engine}"
        )
    me = signer_key(cfg, args.sender).address
    index = next((i for i, p in enumerate(view["parties"]) if p["address"] == me.hex()), None)
    if index is None:
        raise ConfigError(f"{args.sender} is not a party of this contract")
    party = view["parties"][index]
    name = f"{args.id}-{me.hex()}.json"
    if args.op == "deposit":
        amount = args.amount if args.amount is not None else party["required"] - party["deposit"]
        if amount <= 0:
            raise ConfigError(
                f"{args.sender} already holds the {party['required']} committing needs; "
                "give --amount to deposit more"
            )
        op_args: dict[str, Any] = {"amount": amount}
    elif args.op == "commit":
        message = _message(args.message)
        _check_message(args.engine, view, index, message, party["deposit"])
        sealed = json.loads(
            keep(cfg, name, lambda: json.dumps({"message": message, "salt": os.urandom(32).hex()}))
        )
        if sealed["message"] != message:
            raise ConfigError(
                f"{args.sender} already sealed {sealed['message']!r} for this contract"
            )
        op_args = {"commitment": commitment(cid, me, message, bytes.fromhex(sealed["salt"]))}
    else:
        sealed = json.loads(load(cfg, name, f"{args.sender}'s message"))
        op_args = {"message": sealed["message"], "salt": bytes.fromhex(sealed["salt"])}
    return await call(cfg, members, args.sender, args.op, cid, op_args, args.engine)


def _message(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise ConfigError(
            f"--message must be JSON (a number, or a list such as [30,20]), got {text!r}"
        ) from None
    return value


def _check_message(
    engine: str, view: dict[str, Any], index: int, message: Any, deposit: int
) -> None:
    """The rule's own check, run here: a message it would refuse is never sealed."""
    rule: Rule = chain_engines()[engine].rule  # type: ignore[attr-defined]
    try:
        rule.message(_bytes_back(view["terms"]), index, message, deposit)
    except ContractError as e:
        raise ConfigError(f"the contract would refuse this message at reveal: {e}") from None


def render(op: str, r: dict[str, Any], names: dict[str, str] | None = None) -> None:
    if op != "show":
        where = f" at height {r['height']}" if "height" in r else ""
        extra = f"; contract id {r['contract_id']}" if "contract_id" in r else ""
        console.print(f"{op}: {r['status']}{where}{extra}")
        return
    due = f" until {ledger_time(r['deadline'])}" if r.get("deadline") else ""
    console.print(
        f"{r['engine']} {r['id'][:16]}: {r['phase']}{due}, escrow {r['escrow']}, "
        f"penalty {r['penalty']}"
    )
    table = Table("party", "deposit", "required", "committed", "message")
    for p in r["parties"]:
        table.add_row(
            (names or {}).get(p["address"], p["address"][:16]),
            str(p["deposit"]),
            str(p["required"]),
            "yes" if p["committed"] else "no",
            json.dumps(p["message"]) if p["revealed"] else "sealed" if p["committed"] else "",
        )
    console.print(table)
    if r.get("outcome"):
        console.print("outcome: " + json.dumps(r["outcome"]))
