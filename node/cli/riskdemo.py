"""The risk-sharing part of `tally demo`: a designed two-period insurance contract between a
villager and an insurer, renewed for four periods, played honestly on the cluster."""

from __future__ import annotations

import os
import random
from typing import Any

from rich.console import Console

from contracts.design.risk import DEFAULT_PROBLEM, design_risk
from contracts.risk_sharing import commitment
from contracts.risk_sharing.schedule import schedule_args, schedule_from_design
from ledger.crypto import KeyPair
from ledger.tx import contract_call
from node.cluster.accounts import account_key, signer_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient

console = Console()
PERIODS = 4
UNIT = 100


async def risk_sharing(cfg: ClusterConfig) -> bool:
    """alice (agent 1) insures her income with bob (agent 2); the last member audits."""
    if not {"alice", "bob"} <= set(cfg.accounts):
        return True
    design = design_risk(DEFAULT_PROBLEM)
    schedule = schedule_from_design(design, UNIT)
    console.rule("[bold]risk-sharing contract[/]: Townsend's insurance with private income")
    lows = [design.expected_transfer(2, (r, 0)) or 0.0 for r in range(3)]
    console.print(
        f"designed by LP over lotteries, truth-telling verified exactly: {design.verified}; "
        "period 2 depends on period 1 (E\\[transfer] at income 1 after reporting 1/2/3: "
        + " / ".join(f"{UNIT * t:+.0f}" for t in lows)
        + ")"
    )
    keys = {"agent1": account_key(cfg, "alice"), "agent2": account_key(cfg, "bob")}
    auditor = cfg.nodes[-1].id
    chain = load_genesis(cfg).chain_id
    async with RpcClient(cfg.nodes[1].rpc_url, timeout=60) as client:

        async def move(role: str, op: str, cid: bytes, args: dict[str, Any]) -> bytes:
            key: KeyPair = keys[role]
            nonce = (await client.call("get_account", address=key.address.hex()))["next_nonce"]
            tx = contract_call(key, chain, nonce, "risk_sharing", op, cid, args)
            result = await client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
            if result["status"] != "ok":
                raise RuntimeError(f"{op} by {role}: {result['status']}")
            return tx.tx_id

        async def balances() -> dict[str, int]:
            return {
                r: (await client.call("get_account", address=k.address.hex()))["balance"]
                for r, k in keys.items()
            }

        before = await balances()
        terms = {
            "role": "agent2",
            "counterparty": keys["agent1"].address,
            "auditor": signer_key(cfg, auditor).address,
            "schedule": schedule_args(schedule),
            "periods": PERIODS,
            "windows": [30] * 5,  # seconds of ledger time per move
            "penalty": schedule.spread() + UNIT,
            "audit_fee": 0,
        }
        cid = await move("agent2", "create", b"", terms)
        c = await client.call("get_contract", id=cid.hex())
        for role in keys:
            await move(role, "deposit", cid, {"amount": c["required_collateral"][role]})
        rng = random.Random(7)
        for p in range(1, PERIODS + 1):
            income = rng.randrange(3)  # only alice sees it
            secrets = {role: os.urandom(32) for role in keys}
            for role, s in secrets.items():
                await move(
                    role, "commit", cid, {"period": p, "commitment": commitment(cid, p, role, s)}
                )
            await move("agent1", "report", cid, {"period": p, "report": income})
            for role, s in secrets.items():
                await move(role, "reveal", cid, {"period": p, "secret": s})
            c = await client.call("get_contract", id=cid.hex())
            tau = [e["transfer"] for e in c["history"] if e["kind"] == "transfer"][-1]
            u = [e["u"] for e in c["history"] if e["kind"] == "draw"][-1]
            payer = "alice pays bob" if tau > 0 else "bob pays alice" if tau < 0 else "no payment"
            console.print(
                f"period {p}: alice reports income {schedule.incomes[income]}; "
                f"draw u={u}; {payer} {abs(tau)}"
            )
        after = await balances()
    moved = {r: after[r] - before[r] for r in keys}
    console.print(
        f"closed: alice {moved['agent1']:+}, bob {moved['agent2']:+}; escrow {c['escrow']}; "
        f"collateral returned"
    )
    return bool(c["stage"] == "closed" and sum(moved.values()) == 0 and c["escrow"] == 0)
