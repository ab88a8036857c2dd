"""`tally bench contracts`: signed contract calls on a live local cluster.

Each run makes its own 4-node PBFT cluster in a temporary directory on free
loopback ports.  `--pairs` independent pairs of accounts play at once, pair i
talking to node i % 4; each pair sends its next call once the previous one has
committed (submit_tx with wait="commit").  Phases:

- exchange: the honest path of the LP-designed exchange (offer, accept,
  deliver, redeem, no complaint, deny fault), ending settled;
- risk_sharing: a designed risk-sharing contract (create, both deposits, then
  per period both commit, the villager reports, both reveal), ending closed;
- auction: one sealed-bid second-price auction with `--bidders` bidders (seed 001's
  escrowed bids): every bidder deposits and commits at once, then every bidder reveals
  at once; the last reveal settles it.  Besides calls/s it reports the time from the
  last reveal sent to the settlement committed.

Per phase: calls committed, wall time, calls/s and submit-to-commit latency
percentiles.  Results print as a table and, with --json/--out, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from contracts.design.designer import design
from contracts.design.exchange import STATES, ExchangeParams, exchange_game
from contracts.design.risk import DEFAULT_PROBLEM, design_risk
from contracts.kernel.engine import commitment as seal
from contracts.risk_sharing import commitment
from contracts.risk_sharing.schedule import schedule_args, schedule_from_design
from ledger.crypto import KeyPair
from ledger.tx import contract_call
from node.bench.pbft import free_ports, machine
from node.cluster import launcher
from node.cluster.accounts import account_key, signer_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig, load_config, local_cluster_toml
from node.rpc.client import RpcClient
from node.rpc.jsonrpc import RpcError

console = Console(stderr=True, width=110)
NODES = 4
BALANCE = 10**12
PBFT = {"batch_wait_ms": 5, "status_interval_ms": 200}
# The honest path of node.cli.demo PLAYS["honest"], after offer (seller) and accept (buyer).
HONEST = (
    ("deliver", "seller"),
    ("redeem", "buyer"),
    ("no_complaint", "buyer"),
    ("deny_fault", "seller"),
)
WINDOW = 600  # seconds per move: generous, so a loaded cluster never takes a default
UNIT = 100  # ledger units per unit of the risk design's grid, as in node.cli.riskdemo
SEED = 7
RESERVE = 10
AUCTION = {"format": "second", "units": 1, "reserve": RESERVE}  # the auction phase's terms
PENALTY = 5  # what a bidder who never reveals would forfeit


class BenchFailure(RuntimeError):
    """A call was refused or failed, or a contract did not end as honest play must."""


@dataclass
class Signer:
    """An account's key and the next nonce to sign with (each account has one pair)."""

    key: KeyPair
    nonce: int = 0


@dataclass
class Pair:
    """Two accounts on one node: the seller is the insurer (agent 2), the buyer the villager."""

    url: str
    seller: Signer
    buyer: Signer


@dataclass
class Caller:
    """Signs and submits one pair's calls to one engine, recording each call's latency."""

    client: RpcClient
    chain: str
    engine: str
    latencies_ms: list[float]

    async def __call__(self, who: Signer, op: str, cid: bytes, args: dict[str, Any]) -> bytes:
        tx = contract_call(who.key, self.chain, who.nonce, self.engine, op, cid, args)
        t0 = time.perf_counter()
        result = await self.client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
        self.latencies_ms.append(1000 * (time.perf_counter() - t0))
        if result["status"] != "ok":
            raise BenchFailure(f"{self.engine} {op}: {result['status']}")
        who.nonce += 1
        return tx.tx_id

    async def contract(self, cid: bytes) -> dict[str, Any]:
        c: dict[str, Any] = await self.client.call("get_contract", id=cid.hex())
        return c


@dataclass
class Plan:
    """What every pair plays: the designed offer and risk-sharing terms, fixed incomes."""

    chain: str
    periods: int
    offer: dict[str, Any]
    terms: dict[str, Any]
    incomes: list[list[int]]  # per pair, per period: agent 1's income index


def add_contract_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pairs", type=int, default=16, help="pairs of accounts playing at once (default: 16)"
    )
    p.add_argument(
        "--periods", type=int, default=2, help="risk-sharing periods per contract (default: 2)"
    )
    p.add_argument(
        "--bidders", type=int, default=100, help="bidders in the auction phase (default: 100)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory")


def run_contract_bench(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="tally-bench-contracts-"))
    cfg = write_cluster(workdir, args.pairs, args.bidders)
    console.print(
        f"bench contracts: {NODES} nodes, {args.pairs} pairs, {args.bidders} bidders in {workdir}"
    )
    launcher.up(cfg, log_level="WARNING")
    try:
        phases = asyncio.run(_phases(cfg, args))
    except (BenchFailure, RpcError) as e:
        console.print(f"[red]bench contracts failed[/]: {e}")
        return 1
    finally:
        launcher.down(cfg)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "bench": "contracts",
        "nodes": NODES,
        "pairs": args.pairs,
        "bidders": args.bidders,
        "machine": machine(),
        "phases": phases,
    }
    render(result)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    return 0


def write_cluster(workdir: Path, pairs: int, bidders: int) -> ClusterConfig:
    accounts = {name: BALANCE for i in range(pairs) for name in _names(i)}
    accounts |= {_bidder(i): BALANCE for i in range(bidders)}
    path = workdir / "cluster.toml"
    path.write_text(local_cluster_toml("bench-contracts", free_ports(2 * NODES), accounts, PBFT))
    return load_config(path)


def _names(i: int) -> tuple[str, str]:
    return f"seller{i:03d}", f"buyer{i:03d}"


def _bidder(i: int) -> str:
    return f"bidder{i:03d}"


async def _phases(cfg: ClusterConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    plan = make_plan(cfg, args.pairs, args.periods)
    pairs = await make_pairs(cfg, args.pairs)
    phases = []
    for name, play in (("exchange", play_exchange), ("risk_sharing", play_risk_sharing)):
        console.print(f"phase {name}: {args.pairs} contracts at once")
        phases.append(await run_phase(name, play, plan, pairs))
    if args.bidders:
        console.print(f"phase auction: {args.bidders} bidders at once")
        phases.append(await run_auction(cfg, plan.chain, pairs[0].seller, args.bidders))
    return phases


def make_plan(cfg: ClusterConfig, pairs: int, periods: int) -> Plan:
    """The designs (by LP, outside the timed phases) as call arguments, and the incomes."""
    d = design(exchange_game(ExchangeParams()))
    table = [
        v for s in STATES for v in (d.transfer(s, "seller"), d.transfer(s, "buyer"), d.burn(s))
    ]
    offer = {
        "role": "seller",
        "item": "a lamp",
        "price": 100,
        "deposit_seller": d.deposit("seller"),
        "deposit_buyer": d.deposit("buyer"),
        "table": table,
        "windows": [WINDOW] * 5,
    }
    schedule = schedule_from_design(design_risk(DEFAULT_PROBLEM), UNIT)
    terms = {
        "role": "agent2",
        "auditor": signer_key(cfg, cfg.nodes[-1].id).address,
        "schedule": schedule_args(schedule),
        "periods": periods,
        "windows": [WINDOW] * 5,
        "penalty": schedule.spread() + UNIT,
        "audit_fee": 0,
    }
    rng = random.Random(SEED)  # drawn up front, so concurrency cannot reorder the draws
    incomes = [[rng.randrange(len(schedule.incomes)) for _ in range(periods)] for _ in range(pairs)]
    return Plan(load_genesis(cfg).chain_id, periods, offer, terms, incomes)


async def make_pairs(cfg: ClusterConfig, count: int) -> list[Pair]:
    pairs = []
    async with RpcClient(cfg.nodes[0].rpc_url) as client:
        for i in range(count):
            seller, buyer = [await _signer(client, account_key(cfg, n)) for n in _names(i)]
            pairs.append(Pair(cfg.nodes[i % len(cfg.nodes)].rpc_url, seller, buyer))
    return pairs


async def _signer(client: RpcClient, key: KeyPair) -> Signer:
    account = await client.call("get_account", address=key.address.hex())
    return Signer(key, account["next_nonce"])


Play = Callable[[Caller, Plan, Pair, int], Awaitable[None]]


async def run_phase(name: str, play: Play, plan: Plan, pairs: list[Pair]) -> dict[str, Any]:
    """Every pair plays at once, each on its own connection to its node."""
    latencies: list[float] = []
    clients = [RpcClient(p.url, timeout=60) for p in pairs]
    try:
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                play(Caller(c, plan.chain, name, latencies), plan, p, i)
                for i, (c, p) in enumerate(zip(clients, pairs, strict=True))
            )
        )
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            await c.close()
    return summarize(name, len(pairs), latencies, wall)


async def play_exchange(call: Caller, plan: Plan, pair: Pair, _: int) -> None:
    """Honest play, seller first; the contract must end settled."""
    roles = {"seller": pair.seller, "buyer": pair.buyer}
    offer = plan.offer | {"counterparty": pair.buyer.key.address}
    cid = await call(pair.seller, "offer", b"", offer)
    await call(pair.buyer, "accept", cid, {})
    for op, role in HONEST:
        await call(roles[role], op, cid, {})
    stage = (await call.contract(cid))["stage"]
    if stage != "settled":
        raise BenchFailure(f"exchange {cid.hex()} ended {stage}, not settled")


async def play_risk_sharing(call: Caller, plan: Plan, pair: Pair, i: int) -> None:
    """The insurer (agent 2) creates; both deposit; every period is played truthfully."""
    agents = {"agent1": pair.buyer, "agent2": pair.seller}
    terms = plan.terms | {"counterparty": pair.buyer.key.address}
    cid = await call(pair.seller, "create", b"", terms)
    required = (await call.contract(cid))["required_collateral"]
    for role, who in agents.items():
        await call(who, "deposit", cid, {"amount": required[role]})
    for p, income in enumerate(plan.incomes[i], start=1):
        secrets = {role: os.urandom(32) for role in agents}
        for role, s in secrets.items():
            args = {"period": p, "commitment": commitment(cid, p, role, s)}
            await call(agents[role], "commit", cid, args)
        await call(pair.buyer, "report", cid, {"period": p, "report": income})
        for role, s in secrets.items():
            await call(agents[role], "reveal", cid, {"period": p, "secret": s})
    c = await call.contract(cid)
    if c["stage"] != "closed" or c["escrow"] != 0:
        raise BenchFailure(f"risk sharing {cid.hex()}: stage {c['stage']}, escrow {c['escrow']}")


async def run_auction(cfg: ClusterConfig, chain: str, seller: Signer, n: int) -> dict[str, Any]:
    """One second-price auction: `n` bidders deposit, commit and reveal concurrently, each
    on its own connection (bidder i to node i % 4); the last reveal settles it."""
    rng = random.Random(SEED)
    bids = [rng.randrange(RESERVE, 10_000) for _ in range(n)]
    salts = [rng.randbytes(32) for _ in range(n)]
    latencies: list[float] = []
    urls = [cfg.nodes[i % len(cfg.nodes)].rpc_url for i in range(n)]
    clients = [RpcClient(u, timeout=120) for u in urls]
    try:
        bidders = [await _signer(clients[i], account_key(cfg, _bidder(i))) for i in range(n)]
        calls = [Caller(c, chain, "auction", latencies) for c in clients]
        t0 = time.perf_counter()
        create = {
            "parties": [b.key.address for b in bidders],
            "windows": [WINDOW, WINDOW],
            "penalty": PENALTY,
            "terms": AUCTION,
        }
        cid = await calls[0](seller, "create", b"", create)

        async def bid(i: int) -> None:
            me = bidders[i]
            await calls[i](me, "deposit", cid, {"amount": bids[i] + PENALTY})
            await calls[i](
                me, "commit", cid, {"commitment": seal(cid, me.key.address, bids[i], salts[i])}
            )

        await asyncio.gather(*(bid(i) for i in range(n)))
        sent: list[float] = []

        async def reveal(i: int) -> None:
            sent.append(time.perf_counter())
            await calls[i](bidders[i], "reveal", cid, {"message": bids[i], "salt": salts[i]})

        await asyncio.gather(*(reveal(i) for i in range(n)))
        settled = time.perf_counter()
        wall = settled - t0
        c = await calls[0].contract(cid)
    finally:
        for client in clients:
            await client.close()
    if c["phase"] != "settled" or c["escrow"] != 0:
        raise BenchFailure(f"auction {cid.hex()}: phase {c['phase']}, escrow {c['escrow']}")
    top = sorted(bids, reverse=True)
    if c["outcome"].get("payments") and max(c["outcome"]["payments"]) != top[1]:
        raise BenchFailure(f"auction {cid.hex()}: price {c['outcome']}, second bid {top[1]}")
    result = summarize("auction", 1, latencies, wall)
    result["last_reveal_to_settled_ms"] = round(1000 * (settled - max(sent)), 1)
    return result


def summarize(name: str, contracts: int, latencies: list[float], wall: float) -> dict[str, Any]:
    """The figures of one phase; percentiles by node.bench.loadgen's rule."""
    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

    return {
        "phase": name,
        "contracts": contracts,
        "calls": len(lat),
        "wall_s": round(wall, 3),
        "calls_per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
        "latency_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "mean": round(statistics.fmean(lat), 1) if lat else None,
        },
    }


def render(result: dict[str, Any]) -> None:
    title = f"tally bench contracts: {result['nodes']} nodes, {result['pairs']} pairs at once"
    table = Table(title=title)
    for col in ("phase", "contracts", "calls", "wall s", "calls/s", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for p in result["phases"]:
        lat = p["latency_ms"]
        table.add_row(
            p["phase"],
            str(p["contracts"]),
            str(p["calls"]),
            f"{p['wall_s']:.2f}",
            str(p["calls_per_s"]),
            str(lat["p50"]),
            str(lat["p90"]),
            str(lat["p99"]),
        )
    console.print(table)
    for p in result["phases"]:
        if "last_reveal_to_settled_ms" in p:
            console.print(
                f"auction: {p['last_reveal_to_settled_ms']} ms from the last reveal sent to the "
                "settlement committed"
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m node.bench.contracts", description=__doc__)
    add_contract_bench_arguments(p)
    return run_contract_bench(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
