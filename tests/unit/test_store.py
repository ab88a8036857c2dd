"""The SQLite store (ledger/store.py): persistence, reopening, refusals, the consensus log,
and crash safety."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.block import Block, Genesis, Member, check_successor
from ledger.crypto import KeyPair
from ledger.errors import InvalidBlock
from ledger.state import OK, Receipt, State, apply_block, apply_txs, build_block, genesis_header
from ledger.store import SQLITE_CACHE_KIB, Store, StoreError, TxRecord
from ledger.tx import Tx, transfer
from node.engines import chain_engines

ROOT = Path(__file__).resolve().parents[2]
CHAIN = "tally-store-test"
ALICE, BOB, CAROL = (KeyPair(bytes([i]) * 32) for i in (1, 2, 3))


def make_genesis(chain_id: str = CHAIN, alice: int = 1_000_000) -> Genesis:
    return Genesis(
        chain_id=chain_id,
        timestamp_ms=1_000,
        members=(Member("n0", ALICE.public_key), Member("n1", BOB.public_key)),
        accounts={ALICE.address.hex(): alice, BOB.address.hex(): 0},
    )


@dataclass
class Appended:
    block: Block
    receipts: tuple[Receipt, ...]
    state: State


def next_block(store: Store, txs: list[Tx], proof: bytes = b"") -> Appended:
    block, state, receipts = build_block(
        store.state, store.last_header, tuple(txs), "n0", store.last_header.timestamp_ms + 10
    )
    return Appended(block.with_proof(proof), receipts, state)


def append(store: Store, txs: list[Tx], proof: bytes = b"") -> Appended:
    item = next_block(store, txs, proof)
    store.append(item.block, item.receipts, item.state)
    return item


def balances(state: State) -> dict[bytes, tuple[int, int]]:
    return {a: (acc.balance, acc.nonce) for a, acc in state.accounts.items()}


def fill(store: Store) -> list[Appended]:
    """Four blocks: plain transfers, one failing tx, an empty block, and a retried tx."""
    poor = transfer(CAROL, CHAIN, 0, ALICE.address, 5)  # CAROL has nothing yet
    return [
        append(
            store,
            [
                transfer(ALICE, CHAIN, 0, BOB.address, 100),
                transfer(ALICE, CHAIN, 1, CAROL.address, 1),
            ],
            b"cert-1",
        ),
        append(store, [poor, transfer(BOB, CHAIN, 0, CAROL.address, 40)], b"cert-2"),
        append(store, [], b"cert-3"),
        append(store, [poor], b"cert-4"),  # the same tx again, now funded
    ]


def check_contents(
    store: Store, genesis: Genesis, chain: list[Appended], want: dict[bytes, tuple[int, int]]
) -> None:
    """`want`: the balances after the chain, read while its states' store was open."""
    last = chain[-1]
    assert store.height == len(chain)
    assert store.last_header == last.block.header
    assert store.state.root() == last.state.root() == store.last_header.state_root
    assert balances(store.state) == want
    assert store.tx_count == sum(len(a.block.txs) for a in chain)

    genesis_block = store.get_block(0)
    assert genesis_block == Block(genesis_header(genesis), (), b"")
    assert store.get_tx_ids(0) == [] and store.get_receipts(0) == ()
    for item in chain:
        h = item.block.height
        assert store.get_block(h) == item.block  # header, txs in order, and proof
        assert store.get_receipts(h) == item.receipts
        assert store.get_tx_ids(h) == [tx.tx_id for tx in item.block.txs]
    assert store.get_block(len(chain) + 1) is None
    assert store.get_tx_ids(len(chain) + 1) == []

    first_tx = chain[0].block.txs[0]
    assert store.get_tx(first_tx.tx_id) == TxRecord(first_tx, 1, 0, OK)
    assert store.get_tx(bytes(32)) is None
    retried = chain[1].block.txs[0]
    assert chain[1].receipts[0].reason == "insufficient_funds"
    assert chain[3].receipts[0].reason == OK
    # the latest inclusion of a retried tx is reported
    assert store.get_tx(retried.tx_id) == TxRecord(retried, 4, 0, OK)


def test_append_close_reopen(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    assert store.height == 0 and store.tx_count == 0
    assert store.last_header == genesis_header(genesis)
    chain = fill(store)
    want = balances(chain[-1].state)
    check_contents(store, genesis, chain, want)
    store.close()

    reopened = Store(path, genesis, engines=chain_engines())
    try:
        check_contents(reopened, genesis, chain, want)
        # and the reopened store keeps going
        more = append(reopened, [transfer(ALICE, CHAIN, 2, BOB.address, 1)])
        assert reopened.height == 5
    finally:
        reopened.close()
    again = Store(path, genesis, engines=chain_engines())
    try:
        assert again.last_header == more.block.header
        assert again.state.root() == more.state.root()
        assert again.tx_count == 6
    finally:
        again.close()


def test_store_uses_wal_full_sync_and_its_page_cache_by_default(tmp_path: Path) -> None:
    store = Store(tmp_path / "chain.db", make_genesis(), engines=chain_engines())
    try:
        db = store._db  # the pragmas the durability promise rests on
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        # and the page cache the node table's interior pages need (negative: in KiB)
        assert db.execute("PRAGMA cache_size").fetchone()[0] == -SQLITE_CACHE_KIB
    finally:
        store.close()


@pytest.mark.parametrize(
    "other",
    [
        make_genesis(chain_id="another-chain"),
        make_genesis(alice=999_999),
        dataclasses.replace(make_genesis(), timestamp_ms=1_001),
        dataclasses.replace(make_genesis(), members=(Member("n0", ALICE.public_key),)),
    ],
    ids=["chain-id", "balances", "timestamp", "members"],
)
def test_reopening_with_a_different_genesis_fails(tmp_path: Path, other: Genesis) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    chain = fill(store)
    want = balances(chain[-1].state)
    store.close()
    with pytest.raises(StoreError):
        Store(path, other, engines=chain_engines())
    # the refusal did not damage anything
    store = Store(path, genesis, engines=chain_engines())
    try:
        check_contents(store, genesis, chain, want)
    finally:
        store.close()


def assert_unchanged(store: Store, chain: list[Appended]) -> None:
    assert store.height == len(chain)
    assert store.last_header == chain[-1].block.header
    assert balances(store.state) == balances(chain[-1].state)
    assert store.tx_count == sum(len(a.block.txs) for a in chain)
    assert store.get_block(len(chain) + 1) is None


def test_append_refuses_blocks_that_do_not_extend_the_chain(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    chain = fill(store)
    good = next_block(store, [transfer(ALICE, CHAIN, 2, BOB.address, 7)])

    # a block on an older parent (a fork at height 1)
    old_state = State.from_genesis(genesis, chain_engines())
    fork, fork_state, fork_receipts = build_block(
        old_state, genesis_header(genesis), (transfer(ALICE, CHAIN, 0, BOB.address, 1),), "n1", 5
    )
    # the same block again
    again = chain[-1]
    # the right block with the wrong state
    wrong_state, _ = apply_txs(good.state, [transfer(BOB, CHAIN, 1, ALICE.address, 1)])
    # a header whose parent field is garbage
    garbage = dataclasses.replace(
        good.block, header=dataclasses.replace(good.block.header, parent=bytes(32))
    )
    attempts: list[tuple[Block, tuple[Receipt, ...], State]] = [
        (fork, fork_receipts, fork_state),
        (again.block, again.receipts, again.state),
        (good.block, good.receipts, wrong_state),
        (good.block, good.receipts, chain[-1].state),
        (garbage, good.receipts, good.state),
    ]
    for block, receipts, state in attempts:
        with pytest.raises(InvalidBlock):
            store.append(block, receipts, state)
        assert_unchanged(store, chain)

    # still usable, and nothing of the refused blocks reached the disk
    store.append(good.block, good.receipts, good.state)
    assert store.height == len(chain) + 1
    store.close()
    store = Store(path, genesis, engines=chain_engines())
    try:
        assert store.last_header == good.block.header
        assert store.tx_count == sum(len(a.block.txs) for a in chain) + 1
        assert [store.get_block(h) for h in range(1, 5)] == [a.block for a in chain]
    finally:
        store.close()


# After fill() the last block is at 1_040; the next is proposed at 1_050, so its time is 1_050.
BAD_HEADERS: dict[str, dict[str, Any]] = {
    "height-skips": {"height": 7},
    "height-repeats": {"height": 4},
    "other-chain-id": {"chain_id": "another-chain"},
    "time-goes-back": {"timestamp_ms": 0},
    "time-is-the-parents": {"timestamp_ms": 1_040},
    "time-behind-proposal": {"timestamp_ms": 1_049},
    "time-ahead-of-proposal": {"timestamp_ms": 1_051},
    "proposal-changed-time-not": {"proposed_ms": 1_060},
    "proposal-behind-parent": {"proposed_ms": 1_000},
}


@pytest.mark.parametrize("changes", list(BAD_HEADERS.values()), ids=list(BAD_HEADERS))
def test_append_refuses_a_header_that_is_not_the_successor(
    tmp_path: Path, changes: dict[str, Any]
) -> None:
    store = Store(tmp_path / "chain.db", make_genesis(), engines=chain_engines())
    try:
        chain = fill(store)
        good = next_block(store, [transfer(ALICE, CHAIN, 2, BOB.address, 7)])
        assert good.block.header.timestamp_ms == good.block.header.proposed_ms == 1_050
        header = dataclasses.replace(good.block.header, **changes)
        with pytest.raises(InvalidBlock):
            check_successor(store.last_header, header)  # the ledger's own rule says: invalid
        with pytest.raises(InvalidBlock):
            store.append(dataclasses.replace(good.block, header=header), good.receipts, good.state)
        assert_unchanged(store, chain)
    finally:
        store.close()


def test_a_block_proposed_behind_the_parent_keeps_the_parents_time(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    fill(store)
    parent = store.last_header
    block, state, receipts = build_block(
        store.state, parent, (transfer(ALICE, CHAIN, 2, BOB.address, 7),), "n1", 3
    )
    assert (block.header.proposed_ms, block.header.timestamp_ms) == (3, parent.timestamp_ms)
    store.append(block, receipts, state)
    # a null batch's block (proposed at 0, no txs)
    null, null_state, _ = build_block(store.state, store.last_header, (), "n0", 0)
    store.append(null, (), null_state)
    store.close()
    store = Store(path, genesis, engines=chain_engines())
    try:
        assert store.height == 6
        assert store.get_block(5) == block
        assert store.get_block(6) == null and store.last_header == null.header
        assert store.last_header.timestamp_ms == parent.timestamp_ms
        verify_chain(store, genesis)
    finally:
        store.close()


def test_block_hash(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    assert store.block_hash(0) == genesis_header(genesis).sha256()
    assert store.block_hash(1) is None
    chain = fill(store)
    store.close()
    store = Store(path, genesis, engines=chain_engines())
    try:
        hashes = [store.block_hash(h) for h in range(len(chain) + 1)]
        assert hashes[1:] == [a.block.hash for a in chain]
        for h, block_hash in enumerate(hashes):
            block = store.get_block(h)
            assert block is not None and block_hash == block.hash == block.header.sha256()
        # each block links to the stored hash of the one below it
        assert [a.block.header.parent for a in chain] == hashes[:-1]
        assert len(set(hashes)) == len(hashes)
        assert store.block_hash(len(chain) + 1) is None
        assert store.block_hash(-1) is None
    finally:
        store.close()


def test_repeated_tx_ids(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    poor = transfer(CAROL, CHAIN, 0, ALICE.address, 5)
    assert store.repeated_tx_ids() == []
    append(store, [poor, transfer(ALICE, CHAIN, 0, CAROL.address, 10)])  # poor fails here
    append(store, [transfer(ALICE, CHAIN, 1, BOB.address, 1)])
    assert store.repeated_tx_ids() == []  # every tx once so far
    append(store, [poor])  # included a second time, now funded
    assert store.repeated_tx_ids() == [poor.tx_id]
    append(store, [poor])  # a third time (bad nonce): still reported once
    assert store.repeated_tx_ids() == [poor.tx_id]
    # twice within one block
    twice = transfer(BOB, CHAIN, 0, ALICE.address, 1)
    append(store, [twice, twice])
    assert sorted(store.repeated_tx_ids()) == sorted([poor.tx_id, twice.tx_id])
    store.close()
    store = Store(path, genesis, engines=chain_engines())
    try:
        assert sorted(store.repeated_tx_ids()) == sorted([poor.tx_id, twice.tx_id])
    finally:
        store.close()


def test_repeated_tx_ids_on_the_filled_chain(tmp_path: Path) -> None:
    store = Store(tmp_path / "chain.db", make_genesis(), engines=chain_engines())
    try:
        chain = fill(store)
        retried = chain[1].block.txs[0]  # fill() includes it at heights 2 and 4
        assert chain[3].block.txs == (retried,)
        assert store.repeated_tx_ids() == [retried.tx_id]
    finally:
        store.close()


# ---------------------------------------------------------------------------
# The consensus log: what a replica signed, so that it never contradicts itself.


def test_consensus_records_keep_their_order_and_survive_reopen(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    assert store.consensus_records() == []
    # the order is the order persisted, not the order of seq or view
    store.persist([(5, 1, b"pp-5"), (2, 1, b"prepare-2")])
    store.persist([])
    store.persist([(-1, 3, b"view-change-3"), (3, 0, b"commit-3"), (2, 1, b"prepare-2")])
    expected = [b"pp-5", b"prepare-2", b"view-change-3", b"commit-3", b"prepare-2"]
    assert store.consensus_records() == expected
    # independent of the chain
    fill(store)
    assert store.consensus_records() == expected
    store.close()

    store = Store(path, genesis, engines=chain_engines())
    try:
        assert store.consensus_records() == expected
        store.persist([(0, 9, b"\x00" * 300)])
        assert store.consensus_records() == [*expected, b"\x00" * 300]
    finally:
        store.close()
    store = Store(path, genesis, engines=chain_engines())
    try:
        assert store.consensus_records() == [*expected, b"\x00" * 300]
    finally:
        store.close()


def test_persist_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "chain.db", make_genesis(), engines=chain_engines())
    try:
        store.persist([(1, 0, b"first")])
        bad = [(2, 0, b"second"), (3, 0, None)]  # the record column is NOT NULL
        with pytest.raises(sqlite3.IntegrityError):
            store.persist(bad)  # type: ignore[arg-type]
        assert store.consensus_records() == [b"first"]  # nothing of the failed call
        store.persist([(2, 0, b"second")])  # and the store is still usable
        assert store.consensus_records() == [b"first", b"second"]
    finally:
        store.close()


def test_a_batch_writes_votes_and_a_block_in_one_transaction(tmp_path: Path) -> None:
    """The runtime's group commit: a turn's votes and blocks are durable together."""
    store = Store(tmp_path / "chain.db", make_genesis(), engines=chain_engines())
    try:
        item = next_block(store, [transfer(ALICE, CHAIN, 0, BOB.address, 5)])
        with store.batch():
            store.persist([(1, 0, b"vote")])
            store.append(item.block, item.receipts, item.state)
            assert store._db.in_transaction  # still open: nothing is durable yet
        assert not store._db.in_transaction
        other = sqlite3.connect(tmp_path / "chain.db")  # what a crash would leave
        assert other.execute("SELECT MAX(height) FROM blocks").fetchone() == (1,)
        assert other.execute("SELECT COUNT(*) FROM consensus_log").fetchone() == (1,)
        other.close()
        with pytest.raises(sqlite3.IntegrityError), store.batch():
            store.persist([(2, 0, b"kept?")])
            store.persist([(3, 0, None)])  # type: ignore[list-item]
        assert store.consensus_records() == [b"vote"]  # the whole batch rolled back
    finally:
        store.close()


def keeps(seq: int, view: int, below_seq: int, below_view: int) -> bool:
    """What prune_consensus keeps: votes (seq >= 0) at or above below_seq, and view-change
    records (seq < 0) of views at or above below_view."""
    return not (0 <= seq < below_seq or (seq < 0 and view < below_view))


def test_prune_consensus(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    store = Store(path, genesis, engines=chain_engines())
    records = [
        (0, 0, b"vote-0"),  # deleted: seq 0 < 5
        (4, 9, b"vote-4-view-9"),  # deleted: a vote's view does not keep it
        (5, 0, b"vote-5"),  # kept: seq 5 is not below 5
        (6, 0, b"vote-6"),  # kept
        (-1, 1, b"vc-1"),  # deleted: view 1 < 2
        (-1, 2, b"vc-2"),  # kept: view 2 is not below 2
        (-2, 0, b"other-0"),  # deleted: any negative seq is a view-change record
        (-2, 7, b"other-7"),  # kept
        (1, 1, b"vote-1"),  # deleted
    ]
    store.persist(records)
    store.prune_consensus(5, 2)
    kept = [b"vote-5", b"vote-6", b"vc-2", b"other-7"]
    assert store.consensus_records() == kept
    assert kept == [r for seq, view, r in records if keeps(seq, view, 5, 2)]
    store.prune_consensus(3, 1)  # lower bounds delete nothing more
    assert store.consensus_records() == kept
    store.close()
    store = Store(path, genesis, engines=chain_engines())
    try:
        assert store.consensus_records() == kept  # the deletion is durable
        store.prune_consensus(6, 0)  # votes only
        assert store.consensus_records() == [b"vote-6", b"vc-2", b"other-7"]
        store.prune_consensus(0, 8)  # view changes only
        assert store.consensus_records() == [b"vote-6"]
    finally:
        store.close()


RECORDS = st.lists(
    st.tuples(st.integers(-3, 8), st.integers(0, 5), st.binary(min_size=1, max_size=8)),
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(RECORDS, max_size=3),
    prunes=st.lists(st.tuples(st.integers(-1, 9), st.integers(-1, 6)), max_size=3),
)
def test_prune_consensus_matches_its_definition(
    batches: list[list[tuple[int, int, bytes]]], prunes: list[tuple[int, int]]
) -> None:
    store = Store(":memory:", make_genesis(), engines=chain_engines())
    try:
        model: list[tuple[int, int, bytes]] = []
        for i, batch in enumerate(batches):
            store.persist(batch)
            model += batch
            if i < len(prunes):
                below_seq, below_view = prunes[i]
                store.prune_consensus(below_seq, below_view)
                model = [m for m in model if keeps(m[0], m[1], below_seq, below_view)]
            assert store.consensus_records() == [r for _, _, r in model]
    finally:
        store.close()


# ---------------------------------------------------------------------------
# Crash safety: a real process is SIGKILLed while appending.

CHILD = """
import sys
from ledger.block import Genesis
from ledger.crypto import KeyPair
from ledger.state import build_block
from ledger.store import Store
from ledger.tx import transfer
from node.engines import chain_engines

path, genesis = sys.argv[1], Genesis.decode(bytes.fromhex(sys.argv[2]))
alice, bob = KeyPair(bytes([1]) * 32), KeyPair(bytes([2]) * 32)
store = Store(path, genesis, engines=chain_engines())
print("open", store.height, flush=True)
while True:
    state, parent = store.state, store.last_header
    nonce = state.account(alice.address).nonce
    txs = tuple(
        transfer(alice, genesis.chain_id, nonce + i, bob.address, 1 + i) for i in range(3)
    )
    block, new_state, receipts = build_block(state, parent, txs, "n0", parent.timestamp_ms + 1)
    store.append(block, receipts, new_state)
    print(store.height, flush=True)
"""


def run_and_kill(path: Path, genesis: Genesis, acknowledged: int) -> tuple[int, list[int]]:
    """Run the child until it has acknowledged `acknowledged` appends, then SIGKILL it.

    Returns the height it opened at and every height it printed (including lines
    still in the pipe when it died)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), genesis.encode().hex()],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline().split()
        assert first[:1] == ["open"], proc.stderr.read()
        heights: list[int] = []
        while len(heights) < acknowledged:
            line = proc.stdout.readline()
            assert line, f"child stopped early: {proc.stderr.read()}"
            heights.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        heights += [int(line) for line in proc.stdout.read().split()]
        return int(first[1]), heights
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def verify_chain(store: Store, genesis: Genesis) -> None:
    """Replay every stored block from genesis: linkage, roots and the stored state agree."""
    state, parent = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
    assert store.get_block(0) == Block(parent, (), b"")
    n_txs = 0
    for h in range(1, store.height + 1):
        block = store.get_block(h)
        assert block is not None, f"block {h} missing below height {store.height}"
        check_successor(parent, block.header)
        state, receipts = apply_block(state, block)
        assert store.get_receipts(h) == receipts
        parent, n_txs = block.header, n_txs + len(block.txs)
    assert store.get_block(store.height + 1) is None
    assert parent == store.last_header
    assert state.root() == store.state.root() == store.last_header.state_root
    assert balances(state) == balances(store.state)
    assert store.tx_count == n_txs


def test_sigkill_while_appending_loses_nothing_acknowledged(tmp_path: Path) -> None:
    genesis, path = make_genesis(), tmp_path / "chain.db"
    supply = State.from_genesis(genesis, chain_engines()).total_supply()
    height = 0
    for acknowledged in (3, 17, 40):
        opened_at, printed = run_and_kill(path, genesis, acknowledged)
        assert opened_at == height  # the child resumed from what the last reopen saw
        assert printed == list(range(height + 1, height + 1 + len(printed)))
        # reopening after the crash must succeed
        store = Store(path, genesis, engines=chain_engines())
        try:
            assert store.state.root() == store.last_header.state_root
            assert store.height >= printed[-1]  # durable before acknowledged
            assert store.height <= printed[-1] + 1  # at most the one in flight
            assert store.state.total_supply() == supply
            verify_chain(store, genesis)
            height = store.height
        finally:
            store.close()
    # the database is an ordinary, intact SQLite file
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0] == height + 1
    finally:
        db.close()
