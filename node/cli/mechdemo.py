"""The kernel part of `tally demo`: a sealed-bid second-price auction with escrow in which
one bidder commits and never reveals, then a public good decided by the pivot scheme."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from rich.console import Console

from contracts.kernel.engine import commitment
from ledger.crypto import KeyPair
from ledger.tx import contract_call
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient

console = Console()
PENALTY = 10
# Bids sealed by alice, bob and dave; erin seals 200 and never reveals it.
BIDS = {"alice": 120, "bob": 150, "dave": 90, "erin": 200}
SILENT = "erin"
DEPOSIT = 300  # the same for every bidder, so the deposits say nothing about the bids
RESERVE = 50
WTP = {"alice": 60, "bob": 10, "dave": 40}  # willingness to pay for the public good
COST = 90  # of the public good; 30 for each of the three


class Signed:
    """Signs calls to one kernel contract and waits for each to commit."""

    def __init__(self, cfg: ClusterConfig, client: RpcClient, engine: str) -> None:
        self.cfg, self.client, self.engine = cfg, client, engine
        self.chain = load_genesis(cfg).chain_id
        self.cid = b""

    def key(self, name: str) -> KeyPair:
        return account_key(self.cfg, name)

    async def __call__(self, name: str, op: str, **args: Any) -> None:
        key = self.key(name)
        nonce = (await self.client.call("get_account", address=key.address.hex()))["next_nonce"]
        tx = contract_call(key, self.chain, nonce, self.engine, op, self.cid, args)
        result = await self.client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
        if result["status"] != "ok":
            raise RuntimeError(f"{self.engine} {op} by {name}: {result['status']}")
        if op == "create":
            self.cid = tx.tx_id

    async def sealed(
        self, parties: dict[str, Any], deposit: dict[str, int], quiet: str = ""
    ) -> None:
        """Every party deposits and commits; then every party but `quiet` reveals."""
        salts = {name: os.urandom(32) for name in parties}
        for name, message in parties.items():
            await self(name, "deposit", amount=deposit[name])
            seal = commitment(self.cid, self.key(name).address, message, salts[name])
            await self(name, "commit", commitment=seal)
        for name, message in parties.items():
            if name != quiet:
                await self(name, "reveal", message=message, salt=salts[name])

    async def balances(self, names: list[str]) -> dict[str, int]:
        return {
            n: (await self.client.call("get_account", address=self.key(n).address.hex()))["balance"]
            for n in names
        }

    async def contract(self) -> dict[str, Any]:
        c: dict[str, Any] = await self.client.call("get_contract", id=self.cid.hex())
        return c


async def sealed_mechanisms(cfg: ClusterConfig) -> bool:
    if not {"alice", "bob", "carol", "dave", "erin"} <= set(cfg.accounts):
        return True
    async with RpcClient(cfg.nodes[2].rpc_url, timeout=60) as client:
        return await auction(cfg, client) and await pivot(cfg, client)


async def auction(cfg: ClusterConfig, client: RpcClient) -> bool:
    console.rule("[bold]sealed-bid auction[/]: second price, bids escrowed, commit-reveal")
    call = Signed(cfg, client, "auction")
    names = ["carol", *BIDS]
    before = await call.balances(names)
    terms = {"format": "second", "units": 1, "reserve": RESERVE}
    parties = [call.key(n).address for n in BIDS]
    # erin's silence ends the reveal phase only at its deadline: 5 s, many times what the
    # three reveals take, so a slow machine changes nothing but the wait
    await call("carol", "create", parties=parties, windows=[30, 5], penalty=PENALTY, terms=terms)
    await call.sealed(BIDS, dict.fromkeys(BIDS, DEPOSIT), quiet=SILENT)
    console.print(
        f"carol sells one lamp, reserve {RESERVE}; sealed bids "
        + ", ".join(f"{n} {b}" for n, b in BIDS.items())
        + f"; {SILENT} never reveals"
    )
    c = await _settled(call)
    moved = {n: v - before[n] for n, v in (await call.balances(names)).items()}
    console.print(
        "settled: "
        + ", ".join(f"{n} {d:+}" for n, d in moved.items())
        + f" ({SILENT} forfeits {PENALTY}, burnt; escrow {c['escrow']})"
    )
    winner = max((b, n) for n, b in BIDS.items() if n != SILENT)[1]
    second = sorted(b for n, b in BIDS.items() if n != SILENT)[-2]
    return (
        c["phase"] == "settled"
        and moved["carol"] == second
        and moved[winner] == -second
        and moved[SILENT] == -PENALTY
    )


async def pivot(cfg: ClusterConfig, client: RpcClient) -> bool:
    console.rule("[bold]public good[/]: the pivot (Clarke) scheme")
    call = Signed(cfg, client, "pivot")
    names = ["carol", *WTP]
    before = await call.balances(names)
    share = COST // len(WTP)
    terms = {"cost": COST, "shares": [share] * len(WTP), "cap": 100, "surplus_to": b""}
    parties = [call.key(n).address for n in WTP]
    await call("carol", "create", parties=parties, windows=[30, 30], penalty=PENALTY, terms=terms)
    deposits = {n: 2 * share + max(share, 100 - share) for n in WTP}  # ample for any report
    await call.sealed(WTP, deposits)
    c = await _settled(call)
    moved = {n: v - before[n] for n, v in (await call.balances(names)).items()}
    console.print(
        f"carol builds at cost {COST} if the reports cover it; sealed willingness to pay "
        + ", ".join(f"{n} {w}" for n, w in WTP.items())
    )
    console.print(
        f"decision: {'build' if c['outcome'].get('build') else 'do not build'}; "
        + ", ".join(f"{n} {d:+}" for n, d in moved.items())
        + f"; Clarke taxes burnt: {c['outcome'].get('burn', 0)}"
    )
    return bool(c["phase"] == "settled" and sum(moved.values()) == -c["outcome"]["burn"])


async def _settled(call: Signed) -> dict[str, Any]:
    """The contract once settled: a withheld reveal ends at the reveal deadline, when the
    primary proposes a block for it."""
    for _ in range(600):
        c = await call.contract()
        if c["phase"] in ("settled", "cancelled"):
            return c
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{call.engine} contract did not settle: {c['phase']}")
