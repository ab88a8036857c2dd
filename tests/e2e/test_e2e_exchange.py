"""The exchange contract on a live 4-node cluster: the honest play and every off-path ending
pay exactly the designed table, the same on every node, and money is conserved."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from contracts.design.designer import design
from contracts.design.exchange import STATES, ExchangeParams, exchange_game
from ledger.contract import BURN_ADDRESS
from ledger.tx import contract_call
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from node.rpc.jsonrpc import RpcError
from tests.helpers.livecluster import live_cluster
from tests.helpers.wait import wait_for

START = 1_000_000
PARTIES = (
    "seller1",
    "buyer1",
    "seller2",
    "buyer2",
    "seller3",
    "buyer3",
    "seller4",
    "buyer4",
    "seller5",
    "buyer5",
)
# Windows in seconds of ledger time, for accept, deliver, redeem, complain, admit: the stages a
# test moves in get LONG ones (a loaded machine only makes the test slower), the ones it lets
# expire SHORT (the primary proposes an empty block once its clock passes the deadline).
LONG, SHORT = 1000, 2
DESIGN = design(exchange_game(ExchangeParams()))
TABLE = [
    v
    for s in STATES
    for v in (DESIGN.transfer(s, "seller"), DESIGN.transfer(s, "buyer"), DESIGN.burn(s))
]


# Over MQTT with TLS in the slow lane; tests/e2e/test_e2e.py runs a cluster over MQTT and
# tests/e2e/test_mqtt_transport.py the TLS broker in the default lane.
@pytest.fixture(scope="module", params=["tcp", pytest.param("mqtt-tls", marks=pytest.mark.slow)])
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("exchange")
    with live_cluster(
        directory,
        "exchange",
        dict.fromkeys(PARTIES, START),
        {"batch_wait_ms": 5, "status_interval_ms": 200},
        transport=request.param,
    ) as cfg:
        yield cfg


async def rpc(cfg: ClusterConfig, at: str, method: str, **params: Any) -> Any:
    async with RpcClient(cfg.node(at).rpc_url, timeout=60) as client:
        return await client.call(method, **params)


async def move(
    cfg: ClusterConfig, who: str, op: str, cid: bytes, at: str = "n1", **args: Any
) -> dict[str, Any]:
    key = account_key(cfg, who)
    nonce = (await rpc(cfg, at, "get_account", address=key.address.hex()))["next_nonce"]
    tx = contract_call(key, load_genesis(cfg).chain_id, nonce, "exchange", op, cid, args)
    result: dict[str, Any] = await rpc(cfg, at, "submit_tx", tx=tx.encode().hex(), wait="commit")
    assert result["status"] == "ok", (op, result)
    result["tx_id_bytes"] = tx.tx_id
    return result


async def open_exchange(cfg: ClusterConfig, seller: str, buyer: str, moves: int = 5) -> bytes:
    """An accepted offer; the windows of the first `moves` stages (accept included) are long,
    the later ones short, so that they expire."""
    offer = await move(
        cfg,
        seller,
        "offer",
        b"",
        role="seller",
        counterparty=account_key(cfg, buyer).address,
        item="a lamp",
        price=100,
        deposit_seller=DESIGN.deposit("seller"),
        deposit_buyer=DESIGN.deposit("buyer"),
        table=TABLE,
        windows=[LONG] * moves + [SHORT] * (5 - moves),
    )
    cid: bytes = offer["tx_id_bytes"]
    await move(cfg, buyer, "accept", cid, at="n2")
    return cid


async def settled(cfg: ClusterConfig, cid: bytes) -> dict[str, Any]:
    async def closed() -> dict[str, Any] | None:
        c: dict[str, Any] = await rpc(cfg, "n0", "get_contract", id=cid.hex())
        return c if c["stage"] in ("settled", "cancelled") else None

    result: dict[str, Any] = await wait_for(closed, "the contract to settle")
    return result


async def balances_everywhere(cfg: ClusterConfig, names: tuple[str, ...]) -> dict[str, int]:
    """Each party's balance, which must be identical on every node (waits for them to agree)."""
    addresses = [account_key(cfg, n).address.hex() for n in names] + [BURN_ADDRESS.hex()]

    async def agreed() -> dict[str, int] | None:
        per_node = [
            [(await rpc(cfg, node, "get_account", address=a))["balance"] for a in addresses]
            for node in cfg.node_ids()
        ]
        if any(b != per_node[0] for b in per_node):
            return None
        return dict(zip([*names, "burn"], per_node[0], strict=True))

    result: dict[str, int] = await wait_for(agreed, "every node to agree on balances")
    return result


ENDINGS = {
    "honest": (
        ["deliver:seller", "redeem:buyer", "no_complaint:buyer", "deny_fault:seller"],
        "RNN",
    ),
    "low quality, complaint admitted": (
        ["deliver:seller", "refund:buyer", "complain:buyer", "admit_fault:seller"],
        "XCF",
    ),
    "unjustified complaint not admitted": (
        ["deliver:seller", "redeem:buyer", "complain:buyer"],
        "RCN",
    ),  # admission expires
    "expiry": (["deliver:seller"], "XNN"),
    "seller never delivers": ([], "XNN"),
}


# The two endings that wait for windows to pass run in the slow lane; the default lane keeps
# the others (and test_exchange_tree.py walks every ending in process).
SLOW_ENDINGS = {"seller never delivers", "expiry"}


@pytest.mark.parametrize(
    "ending",
    [pytest.param(e, marks=[pytest.mark.slow] if e in SLOW_ENDINGS else []) for e in ENDINGS],
    ids=list(ENDINGS),
)
async def test_every_ending_pays_exactly_the_table(cluster: ClusterConfig, ending: str) -> None:
    cfg = cluster
    index = list(ENDINGS).index(ending)
    seller, buyer = PARTIES[2 * index], PARTIES[2 * index + 1]
    before = await balances_everywhere(cfg, (seller, buyer))
    steps, final = ENDINGS[ending]
    cid = await open_exchange(cfg, seller, buyer, moves=1 + len(steps))
    for step in steps:
        op, who = step.split(":")
        await move(cfg, seller if who == "seller" else buyer, op, cid, at=f"n{index % 4}")
    contract = await settled(cfg, cid)
    assert contract["final_state"] == final and contract["escrow"] == 0
    row = next(r for r in contract["table"] if r["state"] == final)
    after = await balances_everywhere(cfg, (seller, buyer))
    assert after[seller] - before[seller] == row["seller"] - DESIGN.deposit("seller")
    assert after[buyer] - before[buyer] == row["buyer"] - 100 - DESIGN.deposit("buyer")
    assert after["burn"] - before["burn"] == row["burn"]
    moved = sum(after[k] - before[k] for k in after)
    assert moved == 0, "money must be conserved: escrow and burn accounted"
    assert [m["by"] for m in contract["history"]][:2] == ["seller", "buyer"]


async def test_bad_moves_get_clear_errors_and_change_nothing(cluster: ClusterConfig) -> None:
    cfg = cluster
    seller, buyer = "seller5", "buyer5"
    cid = await open_exchange(cfg, seller, buyer, moves=1)
    before = await rpc(cfg, "n0", "get_contract", id=cid.hex())
    key = account_key(cfg, buyer)
    chain = load_genesis(cfg).chain_id

    async def refused(who: str, op: str, reason: str) -> None:
        k = account_key(cfg, who)
        nonce = (await rpc(cfg, "n0", "get_account", address=k.address.hex()))["next_nonce"]
        tx = contract_call(k, chain, nonce, "exchange", op, cid, {})
        with pytest.raises(RpcError) as info:
            await rpc(cfg, "n0", "submit_tx", tx=tx.encode().hex())
        assert info.value.code == -32019 and info.value.message.startswith(reason), info.value

    await refused(buyer, "redeem", "out_of_turn")  # before delivery
    await refused(buyer, "deliver", "wrong_party")
    await refused(buyer, "accept", "already_moved")  # twice
    nonce = (await rpc(cfg, "n0", "get_account", address=key.address.hex()))["next_nonce"]
    unknown = contract_call(key, chain, nonce, "exchange", "redeem", b"\x01" * 32, {})
    with pytest.raises(RpcError) as info:
        await rpc(cfg, "n0", "submit_tx", tx=unknown.encode().hex())
    assert "unknown_contract" in info.value.message
    after = await rpc(cfg, "n0", "get_contract", id=cid.hex())
    assert after["history"] == before["history"]
    await settled(cfg, cid)  # the windows pass: the default ending
    await refused(seller, "deliver", "contract_closed")


def cli_json(cluster: ClusterConfig, *args: str) -> Any:
    """`tally -c <cluster> ARGS --json`, which must succeed; its JSON."""
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cluster.path), *args, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cli_show(cluster: ClusterConfig) -> None:
    # long windows: the CLI's start-up time must not expire the offer
    windows = ",".join([str(LONG)] * 5)
    offer = ["offer", "--from", "seller1", "--to", "buyer1", "--windows", windows]
    cid = cli_json(cluster, "contract", "exchange", *offer)["contract_id"]
    view = cli_json(cluster, "contract", "exchange", "show", "--id", cid)
    assert view["stage"] == "await_accept" and view["price"] == 100 and len(view["table"]) == 8
