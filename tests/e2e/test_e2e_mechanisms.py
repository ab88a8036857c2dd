"""The kernel's mechanisms on a live 4-node cluster: a 20-bidder second-price auction settles
identically on every node; every mechanism is designed, created, played and settled
through the CLI; and an auction settles with the primary killed during the reveals,
after which `tally verify` passes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.kernel.engine import commitment
from ledger.crypto import KeyPair
from ledger.tx import contract_call
from node.cli.main import main
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient, RpcUnavailable
from tests.helpers.livecluster import kill9, live_cluster, node_status
from tests.helpers.wait import wait_for

START = 1_000_000
BIDDERS = [f"bidder{i:02d}" for i in range(20)]
PEOPLE = ["seller", "alice", "bob", "dave", *BIDDERS]
LONG = 1000  # seconds of ledger time: no phase ends by its deadline in these tests
PENALTY = 7


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("mechanisms")
    pbft = {"batch_wait_ms": 5, "status_interval_ms": 200, "view_change_timeout_ms": 500}
    with live_cluster(directory, "mechanisms", dict.fromkeys(PEOPLE, START), pbft) as cfg:
        yield cfg


class Player:
    """Signs one account's calls to one contract and submits them to the live nodes."""

    def __init__(self, cfg: ClusterConfig, name: str, engine: str, node: int) -> None:
        self.key: KeyPair = account_key(cfg, name)
        self.cfg, self.engine, self.chain = cfg, engine, load_genesis(cfg).chain_id
        self.nodes = [cfg.nodes[(node + k) % len(cfg.nodes)].rpc_url for k in range(4)]

    async def rpc(self, method: str, **params: Any) -> Any:
        """Ask this player's node; a dead one is skipped."""
        for url in self.nodes:
            try:
                async with RpcClient(url, timeout=60) as c:
                    return await c.call(method, **params)
            except RpcUnavailable:
                continue
        raise RpcUnavailable("no node answers")

    async def __call__(self, op: str, cid: bytes, **args: Any) -> bytes:
        nonce = (await self.rpc("get_account", address=self.key.address.hex()))["next_nonce"]
        tx = contract_call(self.key, self.chain, nonce, self.engine, op, cid, args)
        result = await self.rpc("submit_tx", tx=tx.encode().hex(), wait="commit")
        assert result["status"] == "ok", f"{op}: {result['status']}"
        return tx.tx_id


async def contract_on(cfg: ClusterConfig, node: str, cid: bytes) -> dict[str, Any] | None:
    try:
        async with RpcClient(cfg.node(node).rpc_url, timeout=10) as c:
            view: dict[str, Any] = await c.call("get_contract", id=cid.hex())
            return view
    except RpcUnavailable:
        return None


async def settled_everywhere(cfg: ClusterConfig, cid: bytes, nodes: list[str]) -> list[Any]:
    async def views() -> list[Any] | None:
        got = [await contract_on(cfg, n, cid) for n in nodes]
        return got if all(v and v["phase"] == "settled" for v in got) else None

    result: list[Any] = await wait_for(views, f"contract {cid.hex()[:12]} settled on {nodes}")
    return result


async def auction(cfg: ClusterConfig, names: list[str], bids: list[int]) -> bytes:
    """Create a second-price auction (reserve 5); every bidder deposits and commits at once."""
    seller = Player(cfg, "seller", "auction", 0)
    bidders = [Player(cfg, n, "auction", i) for i, n in enumerate(names)]
    terms = {"format": "second", "units": 1, "reserve": 5}
    cid = await seller(
        "create",
        b"",
        parties=[b.key.address for b in bidders],
        windows=[LONG, LONG],
        penalty=PENALTY,
        terms=terms,
    )

    async def seal(b: Player, bid: int) -> None:
        await b("deposit", cid, amount=bid + PENALTY + 100)  # more than the bid: hides it
        await b("commit", cid, commitment=commitment(cid, b.key.address, bid, salt(b)))

    await asyncio.gather(*(seal(b, v) for b, v in zip(bidders, bids, strict=True)))
    return cid


def salt(player: Player) -> bytes:
    return player.key.address + b"\0" * 12


async def reveal_all(cfg: ClusterConfig, cid: bytes, names: list[str], bids: list[int]) -> None:
    bidders = [Player(cfg, n, "auction", i) for i, n in enumerate(names)]
    await asyncio.gather(
        *(b("reveal", cid, message=v, salt=salt(b)) for b, v in zip(bidders, bids, strict=True))
    )


def test_twenty_bidders_settle_identically_on_every_node(cluster: ClusterConfig) -> None:
    bids = [(37 * i) % 101 + 10 for i in range(len(BIDDERS))]

    async def run() -> list[Any]:
        cid = await auction(cluster, BIDDERS, bids)
        await reveal_all(cluster, cid, BIDDERS, bids)
        return await settled_everywhere(cluster, cid, list(cluster.node_ids()))

    views = asyncio.run(run())
    assert all(v["outcome"] == views[0]["outcome"] for v in views), "nodes disagree"
    assert all(v["escrow"] == 0 for v in views)
    winner = bids.index(max(bids))
    second = sorted(bids)[-2]
    outcome = views[0]["outcome"]
    assert outcome["transfers"][winner] == -second
    assert outcome["receipts"] == {account_key(cluster, "seller").address.hex(): second}
    assert sum(outcome["transfers"]) == -second


def cli(cfg: ClusterConfig, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run `tally ARGV --json` in this process and return its JSON (exit code 0 required)."""
    code = main(["-c", str(cfg.path), *argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


@pytest.mark.parametrize(
    ("mech", "parties", "messages", "design"),
    [
        ("auction", ["alice", "bob", "dave"], ["40", "[25]", "31"], ["--format", "vcg"]),
        ("pivot", ["alice", "bob", "dave"], ["60", "10", "40"], []),
        ("agv", ["alice", "bob", "dave"], ["2", "0", "1"], []),
        ("bilateral", ["alice", "bob"], ["1", "0"], []),
    ],
)
def test_every_mechanism_designs_deploys_and_settles_through_the_cli(
    cluster: ClusterConfig,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    mech: str,
    parties: list[str],
    messages: list[str],
    design: list[str],
) -> None:
    d = cli(cluster, capsys, "design", mech, *design)
    promised = d.get("promised", d["checks"])  # pivot reports IR, which it does not promise
    assert d["mechanism"] == mech and all(d["checks"][c] for c in promised), d["checks"]
    path = tmp_path / f"{mech}.json"
    path.write_text(json.dumps(d))
    created = cli(
        cluster, capsys, "contract", mech, "create", "--from", "seller",
        "--parties", ",".join(parties), "--design", str(path), "--windows", f"{LONG},{LONG}",
    )  # fmt: skip
    cid = created["contract_id"]
    for name, message in zip(parties, messages, strict=True):
        base = ["contract", mech]
        assert cli(cluster, capsys, *base, "deposit", "--id", cid, "--from", name)["status"] == "ok"
        if mech == "auction":  # a bidder's deposit must cover its bid
            extra = ["--amount", "100"]
            cli(cluster, capsys, *base, "deposit", "--id", cid, "--from", name, *extra)
        c = cli(cluster, capsys, *base, "commit", "--id", cid, "--from", name, "--message", message)
        assert c["status"] == "ok"
        if name == parties[0]:  # too early to reveal: a clear error, and nothing changes
            code = main(["-c", str(cluster.path), *base, "reveal", "--id", cid, "--from", name])
            err = capsys.readouterr().err
            assert code == 1 and "out_of_phase" in err and "commit phase" in err, err
    shown = cli(cluster, capsys, "contract", mech, "show", "--id", cid)
    assert shown["phase"] == "reveal" and not any(p["revealed"] for p in shown["parties"])
    assert all(p["message"] is None for p in shown["parties"])  # sealed until revealed
    for name in parties:
        r = cli(cluster, capsys, "contract", mech, "reveal", "--id", cid, "--from", name)
        assert r["status"] == "ok"
    shown = cli(cluster, capsys, "contract", mech, "show", "--id", cid)
    assert shown["phase"] == "settled" and shown["escrow"] == 0
    out = shown["outcome"]
    assert -sum(out["transfers"]) == sum(out["receipts"].values()) + out["burn"]


def test_an_auction_settles_with_the_primary_killed_during_the_reveals(
    cluster: ClusterConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    names, bids = BIDDERS[:5], [30, 70, 50, 20, 60]

    async def run() -> tuple[bytes, str]:
        cid = await auction(cluster, names, bids)
        status = await node_status(cluster, "n1")
        assert status is not None
        primary = status["primary"]
        await reveal_all(cluster, cid, names[:2], bids[:2])
        kill9(cluster, primary)
        rest = [n for n in cluster.node_ids() if n != primary]
        others = [Player(cluster, n, "auction", i) for i, n in enumerate(names)][2:]
        await asyncio.gather(
            *(
                p("reveal", cid, message=v, salt=salt(p))
                for p, v in zip(others, bids[2:], strict=True)
            )
        )
        views = await settled_everywhere(cluster, cid, rest)
        assert all(v["outcome"] == views[0]["outcome"] for v in views)
        assert views[0]["outcome"]["transfers"][1] == -60
        return cid, rest[0]

    _, live = asyncio.run(run())
    assert main(["-c", str(cluster.path), "verify", "--node", live]) == 0
    capsys.readouterr()
