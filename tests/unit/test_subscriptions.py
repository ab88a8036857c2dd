"""Subscriptions (node/process/subscriptions.py) on a real Store: replay then live, resume
after a place, exactly once in order under any interleaving of commits and a slow reader,
and an explicit overflow that never hands a subscriber part of a block."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from ledger.contract import engine_table
from ledger.store import Store
from ledger.tx import Tx, transfer
from node.engines import chain_engines
from node.process.streaming import _answer, pump, subscription
from node.process.subscriptions import Filter, Hub, SubscribeError, Subscriber, parse_place
from tests.helpers.toyengine import ToyEngine, toy_call
from tests.unit.test_store import ALICE, BOB, CAROL, CHAIN, append, make_genesis

Got = list[tuple[str, dict[str, object]]]


def open_store(tmp_path: Path) -> Store:
    return Store(tmp_path / "chain.db", make_genesis(), engines=chain_engines())


class Chain:
    """A store and a hub, and blocks of transfers from alice committed one at a time."""

    def __init__(self, store: Store, limit: int = 1000) -> None:
        self.store, self.hub, self.nonce = store, Hub(store, make_genesis().members, limit), 0

    def commit(self, txs: int = 2, to: bytes = BOB.address) -> list[Tx]:
        made = [transfer(ALICE, CHAIN, self.nonce + i, to, 1) for i in range(txs)]
        self.nonce += txs
        item = append(self.store, made)
        self.hub.on_commit(item.block, item.receipts)  # what the driver's hook does
        return made


def reader(sub: Subscriber, got: Got) -> asyncio.Task[object]:
    async def send(batch: list[tuple[str, dict[str, object]]]) -> None:
        got.extend(batch)

    return asyncio.create_task(pump(sub, send))


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_replay_from_a_height_then_live_in_order(tmp_path: Path) -> None:
    chain = Chain(open_store(tmp_path))
    first = chain.commit(3) + chain.commit(2)  # heights 1 and 2
    sub = chain.hub.subscribe(Filter("txs"), (2, -1))  # from height 2
    got: Got = []
    task = reader(sub, got)
    await settle()
    later = chain.commit(1)  # height 3, live
    await settle()
    assert [p for p, _ in got] == ["2.0", "2.1", "3.0"]
    assert [e["tx_id"] for _, e in got] == [t.tx_id.hex() for t in first[3:] + later]
    chain.hub.unsubscribe(sub)
    assert await task is None  # ended by unsubscribing: no overflow notice
    chain.store.close()


async def test_resume_after_a_place_skips_exactly_what_was_seen(tmp_path: Path) -> None:
    chain = Chain(open_store(tmp_path))
    txs = chain.commit(3)
    sub = chain.hub.subscribe(Filter("txs"), parse_place("1.0"))
    got: Got = []
    task = reader(sub, got)
    await settle()
    assert [e["tx_id"] for _, e in got] == [t.tx_id.hex() for t in txs[1:]]
    chain.hub.unsubscribe(sub)
    await task
    chain.store.close()


@pytest.mark.parametrize("seed", range(40))
async def test_exactly_once_in_order_whatever_the_interleaving(tmp_path: Path, seed: int) -> None:
    """Commits, a reader that stalls, and reconnects that resume after the last event seen,
    in a random order: the events read are every tx of the chain, once, in chain order."""
    rng = random.Random(seed)
    chain = Chain(open_store(tmp_path), limit=rng.choice([1, 3, 8, 1000]))
    expected: list[Tx] = chain.commit(rng.randint(0, 3))
    got: Got = []
    sub = chain.hub.subscribe(Filter("txs"), (0, -1))
    task: asyncio.Task[object] | None = reader(sub, got)
    for _ in range(30):
        step = rng.random()
        if step < 0.4:
            expected += chain.commit(rng.randint(0, 4))
        elif step < 0.6 and task is not None:  # the reader stalls: events wait in its queue
            chain.hub.unsubscribe(sub)
            await task
            task = None
        elif task is None or sub.overflowed:  # reconnect after the last event read
            if task is not None:
                await task
            chain.hub.unsubscribe(sub)
            after = parse_place(got[-1][0]) if got else (0, -1)
            sub = chain.hub.subscribe(Filter("txs"), after)
            task = reader(sub, got)
        await settle()
    chain.hub.unsubscribe(sub)
    sub = chain.hub.subscribe(Filter("txs"), parse_place(got[-1][0]) if got else (0, -1))
    task = reader(sub, got)
    await settle()
    assert [e["tx_id"] for _, e in got] == [t.tx_id.hex() for t in expected]
    assert len({p for p, _ in got}) == len(got)
    chain.hub.unsubscribe(sub)
    chain.store.close()


async def test_an_overflow_is_explicit_whole_blocks_only_and_spares_the_others(
    tmp_path: Path,
) -> None:
    chain = Chain(open_store(tmp_path), limit=3)
    slow = chain.hub.subscribe(Filter("txs"), None)  # never read until the end
    await settle()
    healthy = chain.hub.subscribe(Filter("blocks"), None)
    got: Got = []
    task = reader(healthy, got)
    await settle()
    chain.commit(2)  # height 1: fits (2 of 3)
    chain.commit(2)  # height 2: does not fit whole, so none of it is queued
    chain.commit(1)  # height 3: not offered any more
    await settle()
    assert slow.overflowed and slow not in chain.hub.live and chain.hub.overflows == 1
    assert [p for p, _ in slow.queue] == ["1.0", "1.1"]
    slow_got: Got = []
    notice = await reader(slow, slow_got)
    assert [p for p, _ in slow_got] == ["1.0", "1.1"]
    assert notice is not None and notice["type"] == "overflow"
    assert notice["last_id"] == "1.1" and notice["last_height"] == 1
    assert [e["height"] for _, e in got] == [1, 2, 3]  # the other subscriber got every block
    chain.hub.unsubscribe(healthy)
    await task
    chain.store.close()


async def test_filters_and_consensus_notices(tmp_path: Path) -> None:
    chain = Chain(open_store(tmp_path))
    to_bob = chain.commit(1)
    to_carol = chain.commit(1, to=CAROL.address)
    carol = chain.hub.subscribe(Filter("txs", account=CAROL.address), (0, -1))
    events = chain.hub.subscribe(Filter("events"), None)
    got: Got = []
    notes: Got = []
    tasks = [reader(carol, got), reader(events, notes)]
    await settle()
    chain.hub.notice({"type": "view_change", "view": 1, "active": True})
    await settle()
    assert [e["tx_id"] for _, e in got] == [t.tx_id.hex() for t in to_carol]
    assert to_bob[0].tx_id.hex() not in {e["tx_id"] for _, e in got}
    assert notes == [("2.0", {"type": "view_change", "view": 1, "active": True})]
    again: Got = []  # the notice replays from memory, at its place
    replay = chain.hub.subscribe(Filter("events"), (2, -1))
    tasks.append(reader(replay, again))
    await settle()
    assert again == notes
    for sub in (carol, events, replay):
        chain.hub.unsubscribe(sub)
    await asyncio.gather(*tasks)
    chain.store.close()


def test_a_bad_subscription_is_refused_with_why() -> None:
    with pytest.raises(SubscribeError, match="unknown stream 'nope'"):
        Filter("nope")
    with pytest.raises(SubscribeError, match="account filter is for the txs stream"):
        Filter("blocks", account=bytes(20))
    with pytest.raises(SubscribeError, match=r"HEIGHT\.INDEX"):
        parse_place("7")


def test_garbage_on_the_websocket_gets_a_json_rpc_error_and_changes_nothing() -> None:
    calls: list[object] = []

    def call(request: object) -> dict[str, object]:
        calls.append(request)
        method = request["method"] if isinstance(request, dict) else None
        if method != "subscribe":
            raise LookupError(f"method not found: {method!r}")
        subscription(request["params"])
        return {"subscription": "s1"}

    assert _answer("{not json", call)["error"]["code"] == -32700
    assert _answer("[1, 2]", call)["error"]["code"] == -32600
    assert _answer('{"id": 3, "method": "nope"}', call) == {
        "jsonrpc": "2.0",
        "id": 3,
        "error": {"code": -32601, "message": "method not found: 'nope'"},
    }
    bad = _answer(
        '{"id": 4, "method": "subscribe", "params": {"stream": "blocks", "after": "x"}}', call
    )
    assert bad["error"]["code"] == -32602 and "HEIGHT.INDEX" in bad["error"]["message"]
    assert len(calls) == 2  # parse errors and non-objects never reach a method


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({}, "stream is required"),
        ({"stream": "txs", "account": "zz"}, "account must be 40 hex digits"),
        ({"stream": "contract", "contract": "ab" * 20}, "contract must be 64 hex digits"),
        ({"stream": "blocks", "from_height": -1}, "from_height must be a height"),
        ({"stream": "blocks", "from_height": True}, "from_height must be a height"),
        ({"stream": "blocks", "from_height": "x"}, "from_height must be a height"),
    ],
)
def test_a_subscribe_call_names_what_is_wrong(params: dict[str, object], why: str) -> None:
    with pytest.raises(SubscribeError, match=why):
        subscription(params)


def test_a_subscribe_call_reads_its_place_from_after_a_header_or_a_height() -> None:
    assert subscription({"stream": "txs", "after": "5.2"}) == (Filter("txs"), (5, 2))
    assert subscription({"stream": "txs"}, last_event_id="7.0") == (Filter("txs"), (7, 0))
    assert subscription({"stream": "blocks", "from_height": "3"}) == (Filter("blocks"), (3, -1))
    assert subscription({"stream": "blocks"}) == (Filter("blocks"), None)


async def test_a_notice_at_the_head_while_the_replay_waits_is_not_lost(tmp_path: Path) -> None:
    chain = Chain(open_store(tmp_path), limit=1)
    chain.commit(1)
    chain.hub.notice({"n": 1})  # at height 1
    chain.commit(1)
    chain.hub.notice({"n": 2})  # at height 2, the head
    sub = chain.hub.subscribe(Filter("events"), (0, -1))
    await settle()  # no reader: the replay queued n1 and waits with n2
    assert sub not in chain.hub.live
    chain.hub.notice({"n": 3})  # not live yet, so not offered: the replay must find it
    got: Got = []
    task = reader(sub, got)
    await settle()
    chain.hub.notice({"n": 4})  # live now
    await settle()
    assert got == [("1.0", {"n": 1}), ("2.0", {"n": 2}), ("2.1", {"n": 3}), ("2.2", {"n": 4})]
    chain.hub.unsubscribe(sub)
    await task
    chain.store.close()


async def test_a_contract_stream_follows_one_contract_from_its_creation(tmp_path: Path) -> None:
    """Both a creation (whose id is its tx's) and a later call naming the contract by id."""
    store = Store(tmp_path / "chain.db", make_genesis(), engines=engine_table(ToyEngine()))
    hub = Hub(store, make_genesis().members, 100)
    create = toy_call(ALICE, CHAIN, 0, "create", b"", {"phase": "a", "parties": [BOB.address]})
    other = toy_call(ALICE, CHAIN, 1, "create", b"", {"phase": "a", "parties": []})
    move = toy_call(ALICE, CHAIN, 2, "move", create.tx_id, {"phase": "b"})
    for txs in ([create, other], [move]):
        item = append(store, txs)
        hub.on_commit(item.block, item.receipts)
    sub = hub.subscribe(Filter("contract", contract=create.tx_id), (0, -1))
    got: Got = []
    task = reader(sub, got)
    await settle()
    assert [(e["op"], e["tx_id"], e["status"]) for _, e in got] == [
        ("create", create.tx_id.hex(), "ok"),
        ("move", move.tx_id.hex(), "ok"),
    ]
    assert {e["contract_id"] for _, e in got} == {create.tx_id.hex()}
    hub.unsubscribe(sub)
    await task
    store.close()
