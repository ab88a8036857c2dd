"""The submit path (issue 18 item 3): `submit_txs` answers each tx as `submit_tx` would, and
asks the store once per call, not once per tx.  An in-process node: a real runtime, store and
replica, no network, and RPC calls handed straight to its dispatcher."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from consensus.pbft.config import PbftConfig
from consensus.pbft.replica import Replica
from ledger.block import Genesis, Member
from ledger.crypto import KeyPair
from ledger.state import build_block
from ledger.store import IDS_PER_QUERY, Store
from ledger.tx import Tx, transfer
from node.engines import chain_engines
from node.faults.byzantine import Byzantine
from node.faults.controller import FaultController
from node.faults.network import NetworkRules
from node.process import methods
from node.process.runtime import NodeRuntime
from node.rpc.jsonrpc import Dispatcher
from node.transport.base import FrameHandler, TransportStats

CHAIN = "submit-path-test"
NODE_KEY = KeyPair(bytes([9]) * 32)
ALICE, BOB, CAROL = (KeyPair(bytes([i]) * 32) for i in (1, 2, 3))
GENESIS = Genesis(
    chain_id=CHAIN,
    timestamp_ms=1_000,
    members=(Member("n0", NODE_KEY.public_key),),
    accounts={ALICE.address.hex(): 1_000, BOB.address.hex(): 0, CAROL.address.hex(): 0},
)


class NoNetwork:
    """A transport that is never started: this node only answers RPC calls."""

    stats = TransportStats()

    async def start(self, on_frame: FrameHandler) -> None: ...

    def send(self, peer_id: str, payload: bytes) -> None: ...

    def broadcast(self, payload: bytes) -> None: ...

    async def stop(self) -> None: ...


class Node:
    """A node's runtime and dispatcher, with the store's lookups of txs counted."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        replica = Replica(
            PbftConfig.of(CHAIN, GENESIS.members), "n0", NODE_KEY, store.state, store.last_header
        )
        faults = FaultController("n0", NetworkRules("n0"), Byzantine("n0", ["n0"], seed=0))
        self.runtime = NodeRuntime("n0", GENESIS, replica, store, NoNetwork(), NODE_KEY, faults)
        self.dispatcher = Dispatcher()
        methods.register(self.dispatcher, self.runtime, ())
        self.lookups: Counter[str] = Counter()
        for name in ("get_tx", "get_txs"):
            monkeypatch.setattr(store, name, self.counted(name, getattr(store, name)))

    def counted(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            self.lookups[name] += 1
            return fn(*args)

        return wrapper

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """The JSON-RPC response object (`result` or `error`)."""
        request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
        body = await self.dispatcher.handle(json.dumps(request).encode(), {})
        assert body is not None
        response: dict[str, Any] = json.loads(body)
        return response


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store(":memory:", GENESIS, engines=chain_engines())
    yield store
    store.close()


def commit(store: Store, *txs: Tx) -> None:
    block, state, receipts = build_block(
        store.state, store.last_header, txs, "n0", store.last_header.timestamp_ms + 10
    )
    store.append(block, receipts, state)


def forged(tx: Tx) -> Tx:
    fields = ("chain_id", "sender", "nonce", "kind", "payload")
    return Tx(*[getattr(tx, f) for f in fields], signature=bytes(64))


async def test_a_batch_asks_the_store_once_not_once_per_tx(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(store, monkeypatch)
    txs = [transfer(ALICE, CHAIN, n, BOB.address, 1) for n in range(200)]
    response = await node.call("submit_txs", txs=[t.encode().hex() for t in txs])
    assert response["result"] == [{"tx_id": t.tx_id.hex(), "status": "pending"} for t in txs]
    assert node.lookups == Counter(get_txs=1)  # one query for the call: no get_tx per tx
    assert node.runtime.queue.qsize() == len(txs)  # all queued for ordering, in order
    queued = [node.runtime.queue.get_nowait() for _ in txs]
    assert [getattr(e, "tx", None) for e in queued] == txs


async def test_each_tx_is_answered_as_submit_tx_answers_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    poor = transfer(CAROL, CHAIN, 0, ALICE.address, 5)  # fails in block 1: CAROL has nothing
    paid = transfer(ALICE, CHAIN, 0, CAROL.address, 10)  # then CAROL has 10: poor would pass
    commit(store, poor, paid)
    good = transfer(ALICE, CHAIN, 1, BOB.address, 1)
    cases: dict[str, Any] = {
        "fresh": good.encode().hex(),
        "committed, failed": poor.encode().hex(),  # its nonce is unused: only the store knows
        "committed, stale nonce": paid.encode().hex(),
        "bad signature": forged(good).encode().hex(),
        "wrong chain": transfer(ALICE, "another", 1, BOB.address, 1).encode().hex(),
        "too much": transfer(ALICE, CHAIN, 2, BOB.address, 10**9).encode().hex(),
        "trailing byte": good.encode().hex() + "00",
        "not hex": "not hex",
        "not a string": 7,
    }
    node = Node(store, monkeypatch)
    errors, rpc_errors = Counter(node.runtime.errors), Counter(node.dispatcher.errors)
    singly = [await node.call("submit_tx", tx=raw) for raw in cases.values()]
    single_counts = (node.runtime.errors - errors, node.dispatcher.errors - rpc_errors)
    errors, rpc_errors = Counter(node.runtime.errors), Counter(node.dispatcher.errors)
    node.lookups.clear()
    batch = (await node.call("submit_txs", txs=list(cases.values())))["result"]
    assert node.lookups == Counter(get_txs=1)
    assert (node.runtime.errors - errors, node.dispatcher.errors - rpc_errors) == single_counts
    for case, one, answer in zip(cases, singly, batch, strict=True):
        if "result" in one:
            assert answer == one["result"], case
        elif "data" in one["error"]:  # a ledger error: the very same error object
            assert answer == {"status": "refused", "error": one["error"]}, case
        else:  # invalid params: the same code, a message naming the entry (txs[7])
            assert answer["error"]["code"] == one["error"]["code"], case
    names = [a.get("error", {}).get("data", {}).get("error") for a in batch]
    refusals = ["bad_nonce", "bad_signature", "wrong_chain_id", "insufficient_funds"]
    assert names == [None, None, *refusals, "malformed_tx", None, None]
    assert batch[1] == {"tx_id": poor.tx_id.hex(), "height": 1, "status": "insufficient_funds"}
    assert [a["error"]["code"] for a in batch[-2:]] == [-32602, -32602]


async def test_more_txs_than_max_batch_are_refused_whole(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(store, monkeypatch)
    node.dispatcher.max_batch = 3
    txs = [transfer(ALICE, CHAIN, n, BOB.address, 1).encode().hex() for n in range(4)]
    error = (await node.call("submit_txs", txs=txs))["error"]
    assert error["code"] == -32602 and error["data"] == {"max_batch": 3}
    assert node.runtime.queue.qsize() == 0 and not node.lookups
    assert len((await node.call("submit_txs", txs=txs[:3]))["result"]) == 3
    assert (await node.call("submit_txs", txs=[]))["result"] == []
    assert (await node.call("submit_txs", txs="00"))["error"]["code"] == -32602


async def test_a_full_input_queue_refuses_only_the_txs_it_cannot_take(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = Node(store, monkeypatch)
    node.runtime.queue = asyncio.Queue(2)
    txs = [transfer(ALICE, CHAIN, n, BOB.address, 1) for n in range(3)]
    batch = (await node.call("submit_txs", txs=[t.encode().hex() for t in txs]))["result"]
    assert [a["status"] for a in batch] == ["pending", "pending", "refused"]
    assert batch[2]["error"]["code"] == -32017
    assert batch[2]["error"]["data"] == {"error": "overloaded"}
    assert node.runtime.errors["overloaded"] == 1


def test_the_stores_batched_lookup_finds_the_latest_inclusion(store: Store) -> None:
    poor = transfer(CAROL, CHAIN, 0, ALICE.address, 5)
    commit(store, poor)  # fails: CAROL has nothing
    commit(store, transfer(ALICE, CHAIN, 0, CAROL.address, 10))
    commit(store, poor)  # included again, now paid for
    unknown = [bytes([i % 256, i // 256]) * 16 for i in range(2 * IDS_PER_QUERY + 1)]
    found = store.get_txs([*unknown, poor.tx_id])  # past one query's worth of ids
    assert list(found) == [poor.tx_id]
    assert (found[poor.tx_id].height, found[poor.tx_id].reason) == (3, "ok")
    assert found[poor.tx_id] == store.get_tx(poor.tx_id)
    assert store.get_txs([]) == {}
