"""The risk-sharing contract on a live 4-node cluster: ten periods with the primary killed
midway, a withheld reveal, an audit settled by a member, refusals over RPC, and the CLI."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.design.risk import DEFAULT_PROBLEM, RiskProblem, design_risk
from contracts.risk_sharing import commitment, draw_value
from contracts.risk_sharing.schedule import Schedule, schedule_args, schedule_from_design
from ledger.tx import contract_call
from node.cli.main import main
from node.cluster import launcher
from node.cluster.accounts import account_key, signer_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError
from tests.helpers.livecluster import kill9, live_cluster
from tests.helpers.wait import wait_for

START = 1_000_000
PARTIES = ("villager", "insurer", "villager2", "insurer2", "villager3", "insurer3")
TWO_PERIODS = schedule_from_design(design_risk(DEFAULT_PROBLEM), 100)
AUDITED = schedule_from_design(
    design_risk(RiskProblem(**{**DEFAULT_PROBLEM.__dict__, "periods": 1, "audit_cost": 1.0})), 100
)
PENALTY = 600
FEE = 100
# Windows in seconds of ledger time, for deposit, commit, report, reveal, audit: every stage a
# test moves in gets a long one (a loaded machine only makes the test slower); a window meant to
# pass is short (the primary proposes an empty block once its clock passes the deadline).
LONG = 1000
WINDOWS = [LONG] * 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("risk")
    pbft = {"batch_wait_ms": 5, "status_interval_ms": 200, "view_change_timeout_ms": 500}
    with live_cluster(directory, "risk", dict.fromkeys(PARTIES, START), pbft) as cfg:
        yield cfg


class Parties:
    """Signs the agents' and the auditor's calls and submits them to a live node."""

    def __init__(self, cfg: ClusterConfig, agent1: str, agent2: str, auditor: str) -> None:
        self.cfg, self.chain = cfg, load_genesis(cfg).chain_id
        self.keys = {
            "agent1": account_key(cfg, agent1),
            "agent2": account_key(cfg, agent2),
            "auditor": signer_key(cfg, auditor),
        }
        self.cid = b""
        self.live = list(cfg.node_ids())

    async def rpc(self, method: str, **params: Any) -> Any:
        """Call the first live node; a dead one is skipped from then on."""
        while True:
            try:
                async with RpcClient(self.cfg.node(self.live[0]).rpc_url, timeout=60) as c:
                    return await c.call(method, **params)
            except RpcUnavailable:
                self.live.pop(0)

    def tx(self, who: str, op: str, nonce: int, /, **args: Any) -> Any:
        key = self.keys[who]
        return contract_call(key, self.chain, nonce, "risk_sharing", op, self.cid, args)

    async def move(self, who: str, op: str, /, **args: Any) -> dict[str, Any]:
        key = self.keys[who]
        nonce = (await self.rpc("get_account", address=key.address.hex()))["next_nonce"]
        tx = self.tx(who, op, nonce, **args)
        result: dict[str, Any] = await self.rpc("submit_tx", tx=tx.encode().hex(), wait="commit")
        assert result["status"] == "ok", (op, args, result)
        if op == "create":
            self.cid = tx.tx_id
        return result

    async def open(self, schedule: Schedule, periods: int, windows: list[int]) -> None:
        await self.move(
            "agent2",
            "create",
            role="agent2",
            counterparty=self.keys["agent1"].address,
            auditor=self.keys["auditor"].address,
            schedule=schedule_args(schedule),
            periods=periods,
            windows=windows,
            penalty=PENALTY,
            audit_fee=FEE,
        )
        c = await self.contract()
        for role in ("agent1", "agent2"):
            await self.move(role, "deposit", amount=c["required_collateral"][role])

    async def contract(self, at: str | None = None) -> dict[str, Any]:
        if at is None:
            return await self.rpc("get_contract", id=self.cid.hex())  # type: ignore[no-any-return]
        async with RpcClient(self.cfg.node(at).rpc_url, timeout=30) as c:
            return await c.call("get_contract", id=self.cid.hex())  # type: ignore[no-any-return]

    async def period(self, report: int, s1: bytes, s2: bytes, withhold: str = "") -> None:
        p = (await self.contract())["period"]
        for role, s in (("agent1", s1), ("agent2", s2)):
            await self.move(role, "commit", period=p, commitment=commitment(self.cid, p, role, s))
        await self.move("agent1", "report", period=p, report=report)
        for role, s in (("agent1", s1), ("agent2", s2)):
            if role != withhold:
                await self.move(role, "reveal", period=p, secret=s)

    async def balances(self) -> dict[str, dict[str, int]]:
        """Each node's balance of each party (all nodes must be up)."""
        out = {}
        for node in self.cfg.node_ids():
            async with RpcClient(self.cfg.node(node).rpc_url, timeout=30) as c:
                out[node] = {
                    role: (await c.call("get_account", address=k.address.hex()))["balance"]
                    for role, k in self.keys.items()
                }
        return out


@pytest.mark.slow  # the default lane plays a period through the CLI (test_cli_runs_a_period)
async def test_ten_periods_survive_a_killed_primary_and_end_identical_everywhere(
    cluster: ClusterConfig,
) -> None:
    cfg = cluster
    parties = Parties(cfg, "villager", "insurer", "n3")
    before = (await parties.balances())["n0"]
    # the reveal window is short: the insurer withholds its reveal in period 3 until it passes
    await parties.open(TWO_PERIODS, periods=10, windows=[LONG, LONG, LONG, 10, LONG])
    rng, primary, restart = random.Random(6), "", None
    incomes = [rng.randrange(3) for _ in range(10)]  # the villager's true incomes, reported
    for p in range(1, 11):
        if p == 5:  # midway: kill -9 of the primary; the next moves wait for the view change
            status = await parties.rpc("status")
            primary = status["primary"]
            kill9(cfg, primary)
            if primary in parties.live:
                parties.live.remove(primary)
        if p == 8:  # the old primary comes back, while the periods go on
            restart = asyncio.create_task(asyncio.to_thread(launcher.up, cfg))
        withhold = "agent2" if p == 3 else ""  # the insurer withholds its reveal in period 3
        await parties.period(incomes[p - 1], bytes([p, 1]) * 16, bytes([p, 2]) * 16, withhold)
        if withhold:
            await wait_for(lambda p=p: _past(parties, p), "the reveal window of period 3 to pass")
    assert restart is not None
    await restart

    async def all_closed() -> list[dict[str, Any]] | None:
        views = []
        for node in cfg.node_ids():
            try:
                views.append(await parties.contract(node))
            except RpcUnavailable:
                return None
        return views if all(v["stage"] == "closed" for v in views) else None

    views = await wait_for(all_closed, "every node to close the contract")
    statuses = [await _status(cfg, node) for node in cfg.node_ids()]
    assert {s["view"] for s in statuses} != {0}, "the primary's death forced a view change"
    assert all(s["primary"] != primary for s in statuses)
    for v in views:
        v.pop("height")  # each node's own tip; everything else must be identical
    assert all(v == views[0] for v in views), "nodes disagree on the contract"
    history = views[0]["history"]
    assert [e["income"] for e in history if e["kind"] == "report"] == [
        TWO_PERIODS.incomes[i] for i in incomes
    ]
    assert views[0]["escrow"] == 0 and len([e for e in history if e["kind"] == "draw"]) == 10
    penalties = [e for e in history if e["kind"] == "penalty"]
    assert [(e["period"], e["by"], e["amount"]) for e in penalties] == [(3, "agent2", PENALTY)]
    after = await wait_for(lambda: _agreed(parties), "every node to agree on balances")
    transfers = sum(e["transfer"] for e in history if e["kind"] == "transfer")
    assert after["agent1"] - before["agent1"] == -transfers + PENALTY
    assert after["agent2"] - before["agent2"] == transfers - PENALTY
    assert sum(after.values()) == sum(before.values()), "money is conserved to the unit"


async def _status(cfg: ClusterConfig, node: str) -> dict[str, Any]:
    async with RpcClient(cfg.node(node).rpc_url, timeout=30) as c:
        return await c.call("status")  # type: ignore[no-any-return]


async def _past(parties: Parties, period: int) -> bool:
    return bool((await parties.contract())["period"] > period)


async def _agreed(parties: Parties) -> dict[str, int] | None:
    per_node = await parties.balances()
    first = per_node["n0"]
    return first if all(b == first for b in per_node.values()) else None


async def test_an_audit_is_settled_by_a_member_and_paid_for(cluster: ClusterConfig) -> None:
    parties = Parties(cluster, "villager2", "insurer2", "n2")
    before = (await parties.balances())["n0"]
    await parties.open(AUDITED, periods=1, windows=WINDOWS)
    report, s1 = 0, bytes(32)
    audit = AUDITED.audit_weight(1, (report,))
    s2 = next(
        s
        for s in (i.to_bytes(32, "big") for i in range(1, 100_000))
        if draw_value(parties.cid, 1, report, (s1, s), AUDITED.resolution) < audit
    )
    await parties.period(report, s1, s2)
    assert (await parties.contract())["stage"] == "audit"
    await parties.move("auditor", "audit", period=1, income=0)  # she told the truth
    c = await parties.contract()
    assert c["stage"] == "closed"
    kinds = [e["kind"] for e in c["history"] if e["period"] == 1]
    assert kinds[-6:] == ["draw", "audit", "fee", "transfer", "refund", "refund"]
    u = next(e["u"] for e in c["history"] if e["kind"] == "draw")
    tau = next(e["transfer"] for e in c["history"] if e["kind"] == "transfer")
    assert tau == AUDITED.transfers[AUDITED.audited_outcome(1, (report,), 0, u)]
    after = await wait_for(lambda: _agreed(parties), "every node to agree on balances")
    assert after["auditor"] - before["auditor"] == FEE
    assert sum(after.values()) == sum(before.values())


async def test_refused_moves_get_clear_errors_over_rpc(cluster: ClusterConfig) -> None:
    parties = Parties(cluster, "villager3", "insurer3", "n1")
    await parties.open(TWO_PERIODS, periods=2, windows=WINDOWS)
    before = await parties.contract()

    async def refused(role: str, op: str, reason: str, **args: Any) -> None:
        key = parties.keys[role]
        nonce = (await parties.rpc("get_account", address=key.address.hex()))["next_nonce"]
        tx = parties.tx(role, op, nonce, **args)
        with pytest.raises(RpcError) as info:
            await parties.rpc("submit_tx", tx=tx.encode().hex())
        assert info.value.code == -32019 and info.value.message.startswith(reason), info.value

    await refused("agent1", "report", "out_of_turn", period=1, report=0)
    await refused("auditor", "commit", "wrong_party", period=1, commitment=bytes(32))
    await refused("agent1", "commit", "out_of_turn", period=2, commitment=bytes(32))
    await refused("agent1", "commit", "bad_args", period=1, commitment=b"short")
    c1 = commitment(parties.cid, 1, "agent1", bytes(32))
    await parties.move("agent1", "commit", period=1, commitment=c1)
    await refused("agent1", "commit", "already_moved", period=1, commitment=c1)
    after = await parties.contract()
    assert after["history"][: len(before["history"])] == before["history"]
    assert [e["kind"] for e in after["history"][len(before["history"]) :]] == ["commit"]


def test_cli_runs_a_period(cluster: ClusterConfig, capsys: pytest.CaptureFixture[str]) -> None:
    def tally(*args: str) -> dict[str, Any]:
        """`tally contract risk-sharing ARGS --json`: `create` as its own process (the real
        entry point), every other step in this process (the same `main`, without paying a
        Python start-up per step)."""
        argv = ["-c", str(cluster.path), "contract", "risk-sharing", *args, "--json"]
        if args[0] == "create":
            cmd = [sys.executable, "-m", "node.cli.main", *argv]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout)  # type: ignore[no-any-return]
        code = main(argv)
        printed = capsys.readouterr()
        assert code == 0, printed.err
        return json.loads(printed.out)  # type: ignore[no-any-return]

    # A CLI step's start-up time must not pass a window, so the contract's windows are long.
    windows = ",".join(map(str, WINDOWS))
    made = tally(
        *["create", "--from", "insurer", "--to", "villager", "--auditor", "n3"],
        *["--periods", "1", "--windows", windows],
    )
    cid = made["contract_id"]
    assert made["required_collateral"] == {"agent1": 700, "agent2": 700}
    for who in ("villager", "insurer"):
        assert tally("deposit", "--id", cid, "--from", who)["status"] == "ok"
    for who in ("villager", "insurer"):
        assert tally("commit", "--id", cid, "--from", who)["status"] == "ok"
    assert tally("report", "--id", cid, "--from", "villager", "--income", "300")["status"] == "ok"
    for who in ("villager", "insurer"):
        assert tally("reveal", "--id", cid, "--from", who)["status"] == "ok"
    shown = tally("show", "--id", cid)
    assert shown["stage"] == "closed" and shown["reports"] == [300]
    assert [e["kind"] for e in shown["history"]][-4:] == ["draw", "transfer", "refund", "refund"]
