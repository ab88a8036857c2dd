"""`tally demo`: the main job.  A 4-node cluster commits signed transfers and agrees."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.design.designer import design
from contracts.design.exchange import STATES, ExchangeParams, exchange_game
from ledger.tx import Tx, contract_call, transfer
from node.audit.verify import verify_node
from node.cli.mechdemo import sealed_mechanisms
from node.cli.riskdemo import risk_sharing
from node.cli.status import all_status, render_status
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from node.rpc.jsonrpc import RpcError

console = Console()
BATCH = 50


def run_demo(cfg: ClusterConfig, txs_per_account: int, keep_up: bool) -> int:
    console.rule(f"[bold]Tally demo[/]: {len(cfg.nodes)} PBFT nodes over TCP on loopback")
    launcher.up(cfg)
    console.print(f"cluster up: {', '.join(n.id for n in cfg.nodes)}; data in {cfg.data_dir}")
    try:
        ok = asyncio.run(_demo(cfg, txs_per_account))
    finally:
        if not keep_up:
            for s in launcher.down(cfg):
                console.print(f"stopped {s.node_id} (pid {s.pid}, {s.how})")
    return 0 if ok else 1


async def _demo(cfg: ClusterConfig, per_account: int) -> bool:
    txs = await make_workload(cfg, per_account)
    first = await all_status(cfg)
    start_count = first[0]["txs_committed"]
    t0 = time.monotonic()
    await drive(cfg, txs, start_count)
    elapsed = time.monotonic() - t0
    console.print(
        f"{len(txs)} transfers committed in {elapsed:.1f}s ({len(txs) / elapsed:.0f} tx/s)"
    )
    rows = await settle(cfg)
    render_status(rows)
    hashes = {r.get("last_block_hash") for r in rows}
    agree = len(hashes) == 1 and all("error" not in r for r in rows)
    console.print("[green]all nodes agree[/]" if agree else "[red]nodes disagree[/]")
    genesis = load_genesis(cfg)
    reports = await asyncio.gather(*(verify_node(n.id, n.rpc_url, genesis) for n in cfg.nodes))
    for r in reports:
        mark = "[green]valid[/]" if r.ok else f"[red]INVALID: {r.error}[/]"
        console.print(f"verify {r.node_id}: {mark} to height {r.height}, supply {r.total_supply}")
    supply_ok = all(r.total_supply == sum(cfg.accounts.values()) for r in reports)
    exchanges_ok = await exchanges(cfg)
    risk_ok = await risk_sharing(cfg)
    sealed_ok = await sealed_mechanisms(cfg)
    verified = all(r.ok for r in reports)
    return agree and supply_ok and verified and exchanges_ok and risk_ok and sealed_ok


PLAYS = {
    "honest": ("alice", "bob", ["deliver:S", "redeem:B", "no_complaint:B", "deny_fault:S"]),
    # the seller ships low quality; the buyer refuses it and complains; the seller lies
    "dishonest seller": ("carol", "bob", ["deliver:S", "refund:B", "complain:B", "deny_fault:S"]),
}


async def exchanges(cfg: ClusterConfig) -> bool:
    """The core exchange mechanism: designed by LP, offered, played honestly and dishonestly."""
    if not {"alice", "bob", "carol"} <= set(cfg.accounts):
        return True
    d = design(exchange_game(ExchangeParams()))
    console.rule("[bold]exchange contract[/]: transfers designed by linear programming")
    console.print(
        f"price 100, deposits: seller {d.deposit('seller')}, buyer "
        f"{d.deposit('buyer')}; honest play is the unique subgame-perfect equilibrium "
        f"(verified exactly)"
    )
    table = [
        v for s in STATES for v in (d.transfer(s, "seller"), d.transfer(s, "buyer"), d.burn(s))
    ]
    genesis = load_genesis(cfg)
    ok = True
    async with RpcClient(cfg.nodes[1].rpc_url, timeout=60) as client:
        for name, (seller, buyer, steps) in PLAYS.items():
            keys = {"S": account_key(cfg, seller), "B": account_key(cfg, buyer)}
            before = {
                r: (await client.call("get_account", address=k.address.hex()))["balance"]
                for r, k in keys.items()
            }

            async def play(
                role: str, op: str, cid: bytes, args: dict[str, Any], keys: dict[str, Any] = keys
            ) -> bytes:
                key = keys[role]
                acct = await client.call("get_account", address=key.address.hex())
                tx = contract_call(
                    key, genesis.chain_id, acct["next_nonce"], "exchange", op, cid, args
                )
                await client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
                return tx.tx_id

            cid = await play(
                "S",
                "offer",
                b"",
                {
                    "role": "seller",
                    "counterparty": keys["B"].address,
                    "item": "a lamp",
                    "price": 100,
                    "deposit_seller": d.deposit("seller"),
                    "deposit_buyer": d.deposit("buyer"),
                    "table": table,
                    "windows": [30] * 5,  # seconds of ledger time per move
                },
            )
            await play("B", "accept", cid, {})
            for step in steps:
                op, role = step.split(":")
                await play(role, op, cid, {})
            c = await client.call("get_contract", id=cid.hex())
            after = {
                r: (await client.call("get_account", address=k.address.hex()))["balance"]
                for r, k in keys.items()
            }
            row = next(r for r in c["table"] if r["state"] == c["final_state"])
            moves = ", ".join(s.split(":")[0] for s in steps)
            console.print(
                f"{name}: {seller} sells to {buyer}; moves {moves}"
                f" -> state {c['final_state']}: seller {after['S'] - before['S']:+}, buyer "
                f"{after['B'] - before['B']:+}, burnt {row['burn']}"
            )
            ok &= c["stage"] == "settled" and after["S"] - before["S"] == (
                row["seller"] - d.deposit("seller")
            )
    return ok


async def make_workload(cfg: ClusterConfig, per_account: int) -> list[Tx]:
    """Transfers from every account to random others, in nonce order per sender."""
    genesis = load_genesis(cfg)
    rng = random.Random(42)
    names = sorted(cfg.accounts)
    keys = {name: account_key(cfg, name) for name in names}
    txs: list[Tx] = []
    async with RpcClient(cfg.nodes[0].rpc_url) as client:
        for name in names:
            key = keys[name]
            nonce = (await client.call("get_account", address=key.address.hex()))["next_nonce"]
            for i in range(per_account):
                to = keys[rng.choice([n for n in names if n != name])].address
                txs.append(transfer(key, genesis.chain_id, nonce + i, to, rng.randint(1, 100)))
    return txs


async def drive(cfg: ClusterConfig, txs: list[Tx], start_count: int) -> None:
    """Submit round-robin to every node (a sender's nonces arrive at different nodes)."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        sub = progress.add_task("submitted", total=len(txs))
        com = progress.add_task("committed", total=len(txs))
        clients = [RpcClient(n.rpc_url, timeout=30.0) for n in cfg.nodes]
        try:
            for i in range(0, len(txs), BATCH):
                chunk = txs[i : i + BATCH]
                calls: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in clients]
                for j, tx in enumerate(chunk):
                    calls[(i + j) % len(clients)].append(("submit_tx", {"tx": tx.encode().hex()}))
                results = await asyncio.gather(
                    *(c.batch(b) for c, b in zip(clients, calls, strict=True) if b)
                )
                for r in (r for rs in results for r in rs):
                    if isinstance(r, RpcError):
                        console.print(f"[red]rejected[/]: {r.message}")
                progress.update(sub, advance=len(chunk))
                await _update_committed(clients[0], progress, com, start_count)
            while not progress.finished:
                await _update_committed(clients[0], progress, com, start_count)
                await asyncio.sleep(0.1)
        finally:
            for c in clients:
                await c.close()


async def _update_committed(client: RpcClient, progress: Progress, task: Any, start: int) -> None:
    status = await client.call("status")
    progress.update(task, completed=status["txs_committed"] - start)


async def settle(cfg: ClusterConfig, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Status of every node once they report the same height (or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await all_status(cfg)
        if len({r.get("height") for r in rows}) == 1 or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.1)
