"""`tally contract risk-sharing create|deposit|commit|report|reveal|audit|show`: run
Townsend's information-constrained insurance on a cluster, period by period.

Secrets for the commit-reveal draw are made here, kept in the cluster's data
directory (mode 0600) until `reveal` sends them, and never leave the machine
before that.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from contracts.design.risk import DEFAULT_PROBLEM, RiskProblem, design_risk
from contracts.risk_sharing import commitment
from contracts.risk_sharing.engine import NAME, WINDOWS
from contracts.risk_sharing.schedule import (
    Schedule,
    scaled_schedule,
    schedule_args,
    schedule_from_design,
)
from node.cli.contractcalls import answer, call, contract_id, show
from node.cli.output import console
from node.cli.secrets import keep, load
from node.cluster.accounts import resolve_address, signer_key
from node.cluster.config import ClusterConfig, ConfigError
from node.rpc.failover import Members

OPS = ("create", "deposit", "commit", "report", "reveal", "audit", "show")


def add_risk_arguments(engines: Any, common: argparse.ArgumentParser) -> None:
    risk = engines.add_parser(
        "risk-sharing",
        help="Townsend's risk sharing: reports, commit-reveal lotteries, audits",
        description="A villager (agent 1) reports her private income each period; the "
        "insurer (agent 2) and she draw the designed lottery by commit-reveal; an auditor "
        "member settles audits; collateral backs every payment.",
    )
    ops = risk.add_subparsers(dest="op", required=True, metavar="OP")
    helps = {
        "create": "create a contract with a designed schedule (the creator is one agent)",
        "deposit": "deposit collateral (default: all that is still required)",
        "commit": "commit to a fresh secret for this period's draw",
        "report": "agent 1 reports this period's income",
        "reveal": "reveal the secret committed this period",
        "audit": "the auditor's verdict on the true income",
        "show": "the contract: terms, collateral, the period under way, its history",
    }
    for op in OPS:
        sp = ops.add_parser(op, parents=[common], help=helps[op], description=helps[op])
        if op != "create":
            sp.add_argument("--id", required=True, help="the contract id (the create tx's id)")
        if op != "show":
            sp.add_argument("--from", dest="sender", required=True, help="account or member")
        if op in ("commit", "report", "reveal", "audit"):
            sp.add_argument("--period", type=int, help="default: the period under way")
        if op in ("report", "audit"):
            sp.add_argument("--income", type=int, required=True, help="in ledger units")
        sp.add_argument("--node", help="node to use (default: the first that answers)")
        sp.add_argument("--json", action="store_true")
        if op == "deposit":
            sp.add_argument("--amount", type=int, help="default: what is still required")
        if op == "create":
            _create_arguments(sp)


def _create_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--to", required=True, help="the other agent: account name or address")
    sp.add_argument(
        "--role", choices=["agent1", "agent2"], default="agent2", help="the creator's role"
    )
    sp.add_argument("--auditor", required=True, help="a member node (or account) that audits")
    sp.add_argument("--design", help="a `tally design risk-sharing --json` file")
    sp.add_argument(
        "--audit-cost", type=float, help="use the built-in one-period design with audits"
    )
    sp.add_argument("--unit", type=int, default=100, help="ledger units per design unit")
    sp.add_argument("--periods", type=int, default=10, help="periods to run (renews the design)")
    sp.add_argument(
        "--windows",
        default="3600,600,600,600,3600",
        help="seconds of ledger time for "
        + ",".join(WINDOWS)
        + " (default: 3600,600,600,600,3600)",
    )
    sp.add_argument("--penalty", type=int, help="for a withheld reveal or a breach")
    sp.add_argument("--audit-fee", type=int, help="agent 2 pays the auditor per audit")


def ledger_time(ms: int) -> str:
    """A deadline (ledger time: block timestamps, ms since the epoch) as UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_risk(args: argparse.Namespace, cfg: ClusterConfig, members: Members) -> int:
    if args.op == "show":
        result = asyncio.run(show(members, args.id))
    elif args.op == "create":
        terms = create_terms(cfg, args)
        result = asyncio.run(call(cfg, members, args.sender, "create", b"", terms, NAME))
        result["contract_id"] = result["tx_id"]
        if result["status"] == "ok":
            view = asyncio.run(show(members, result["tx_id"]))
            result["required_collateral"] = view["required_collateral"]
    else:
        result = asyncio.run(_move(cfg, members, args))
    return answer(result, args.json, args.op, render)


def load_schedule(args: argparse.Namespace) -> tuple[Schedule, float | None]:
    """The schedule to create with, and the audit cost it was designed for."""
    if args.design:
        d = json.loads(Path(args.design).read_text())
        if "schedule" not in d:
            raise ConfigError(f"{args.design} is not a `tally design risk-sharing --json` file")
        s = d["schedule"]
        if d.get("information", "private") != "private" or "utility" not in s:
            raise ConfigError(
                f"{args.design} is a {d.get('information', 'legacy')} design: a contract's "
                "reports are private, so it needs a design of `tally design risk-sharing` "
                "without --public (truth-telling imposed and verified)"
            )
        schedule = scaled_schedule(
            s["incomes"],
            s["transfers"],
            s["resolution"],
            s["horizon"],
            s["lotteries"],
            args.unit,
            s["utility"],
            s["beliefs"],
            s["discount"],
        )
        lies = schedule.truth_telling()  # the contract checks this too: refuse before sending
        if lies:
            raise ConfigError(
                f"{args.design} is not incentive compatible for private reports: " + "; ".join(lies)
            )
        return schedule, d.get("audit_cost")
    problem = DEFAULT_PROBLEM
    if args.audit_cost is not None:
        problem = RiskProblem(
            **{**DEFAULT_PROBLEM.__dict__, "periods": 1, "audit_cost": args.audit_cost}
        )
    return schedule_from_design(design_risk(problem), args.unit), args.audit_cost


def create_terms(cfg: ClusterConfig, args: argparse.Namespace) -> dict[str, Any]:
    try:
        schedule, cost = load_schedule(args)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    fee = args.audit_fee
    if fee is None:
        fee = round((cost or 0) * args.unit) if schedule.audits else 0
    penalty = args.penalty if args.penalty is not None else schedule.spread() + fee + args.unit
    return {
        "role": args.role,
        "counterparty": resolve_address(cfg, args.to),
        "auditor": resolve_address(cfg, args.auditor),
        "schedule": schedule_args(schedule),
        "periods": args.periods,
        "windows": [int(w) for w in args.windows.split(",")],
        "penalty": penalty,
        "audit_fee": fee,
    }


async def _move(cfg: ClusterConfig, members: Members, args: argparse.Namespace) -> dict[str, Any]:
    cid = contract_id(args.id)
    c = await show(members, args.id)
    me = signer_key(cfg, args.sender).address.hex()
    role = {c["agent1"]: "agent1", c["agent2"]: "agent2", c["auditor"]: "auditor"}.get(me, "")
    period = args.period if getattr(args, "period", None) is not None else c["period"]
    op_args: dict[str, Any] = {"period": period}
    if args.op == "deposit":
        if role not in ("agent1", "agent2"):
            raise ConfigError(f"{args.sender} is not an agent of this contract")
        owed = c["required_collateral"][role] - c["collateral"][role]
        op_args = {"amount": args.amount if args.amount is not None else owed}
    elif args.op == "commit":
        secret = _secret_for(cfg, args.id, period, role)
        op_args["commitment"] = commitment(cid, period, role, secret)
    elif args.op == "reveal":
        op_args["secret"] = _load_secret(cfg, args.id, period, role)
    elif args.op == "report":
        op_args["report"] = _income_index(c, args.income)
    elif args.op == "audit":
        op_args["income"] = _income_index(c, args.income)
    return await call(cfg, members, args.sender, args.op, cid, op_args, NAME)


def _secret_for(cfg: ClusterConfig, cid: str, period: int, role: str) -> bytes:
    """This period's secret, kept before its commitment is sent (node/cli/secrets.py)."""
    return bytes.fromhex(keep(cfg, f"{cid}-{period}-{role}.hex", lambda: os.urandom(32).hex()))


def _load_secret(cfg: ClusterConfig, cid: str, period: int, role: str) -> bytes:
    what = f"period {period} as {role or 'this signer'}"
    return bytes.fromhex(load(cfg, f"{cid}-{period}-{role}.hex", what))


def _income_index(c: dict[str, Any], income: int) -> int:
    incomes = c["schedule"]["incomes"]
    if income not in incomes:
        raise ConfigError(f"income {income} is not one of the contract's {incomes}")
    return int(incomes.index(income))


def render(op: str, r: dict[str, Any]) -> None:
    if op == "create" and "required_collateral" in r:
        need = r["required_collateral"]
        console.print(
            f"create: {r['status']} at height {r.get('height')}; contract id {r['contract_id']}"
            f"; collateral required: agent1 {need['agent1']}, agent2 {need['agent2']}"
        )
        return
    if op != "show":
        where = f" at height {r['height']}" if "height" in r else ""
        console.print(f"{op}: {r['status']}{where}")
        return
    console.print(
        f"risk-sharing {r['id'][:16]}: period {r['period']} of {r['periods']}, stage "
        f"{r['stage']}"
        + (f" (due by {ledger_time(r['deadline'])})" if r["deadline"] else "")
        + f"; collateral agent1 {r['collateral']['agent1']}, agent2 {r['collateral']['agent2']}"
    )
    table = Table("height", "period", "by", "event", "detail")
    for e in r["history"]:
        detail = {k: v for k, v in e.items() if k not in ("height", "period", "kind", "by")}
        text = ", ".join(
            f"{k} {str(v)[:16]}" for k, v in detail.items() if v is not None and k != "tx_id"
        )
        table.add_row(str(e["height"]), str(e["period"]), e["by"], e["kind"], text)
    console.print(table)
