"""The store keeps the state trees of its last `keep_states` blocks, and nothing else
(ledger/store.py, `_retire`): every kept state reads back whole, an older one is gone, and
the stored nodes are exactly those the kept roots reach and those whose deletion waits for
their slice's turn (`_write_state`), also when a record returns to an earlier value (its
node, named by its content, is written again) and across a reorganisation.  The state the
store says is whole on disk is, and a crash at any block loses none of the chain's state."""

from __future__ import annotations

import dataclasses
import sqlite3
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import smt
from ledger import store as store_module
from ledger.block import Block, Genesis, Member
from ledger.crypto import KeyPair
from ledger.smt import MissingNode
from ledger.smtstore import SqliteNodeStore
from ledger.state import Account, State, build_block
from ledger.store import Store
from ledger.tx import transfer
from node.engines import chain_engines

KEY = KeyPair(bytes([1]) * 32)
GENESIS = Genesis("tally-prune", 1_000, (Member("n0", KEY.public_key),), {})
ADDRESSES = [bytes([i]) * 20 for i in range(1, 5)]

# each block sets one or two accounts to a value from a small set, so values come back
STEPS = st.lists(
    st.dictionaries(st.sampled_from(ADDRESSES), st.integers(0, 2), min_size=1, max_size=2),
    min_size=1,
    max_size=14,
)


def advance(store: Store, changes: dict[bytes, int]) -> State:
    """Append a block whose state is the head's with `changes` (balances) applied."""
    state = store.state.evolve({a: Account(a, v, 0) for a, v in changes.items()}, {})
    return append(store, state)


def append(store: Store, state: State) -> State:
    empty, _, receipts = build_block(
        store.state, store.last_header, (), "n0", store.last_header.timestamp_ms + 1
    )
    header = dataclasses.replace(empty.header, state_root=state.root())
    store.append(Block(header, (), b""), receipts, state)
    return state


def stored(store: Store) -> set[bytes]:
    return set(store.nodes.hashes())


def kept_roots(store: Store) -> list[bytes]:
    first = max(0, store.height - store.keep_states)
    return [store.header(h).state_root for h in range(first, store.height + 1)]


def stale_rows(store: Store) -> list[tuple[int, bytes]]:
    return store._db.execute("SELECT height, hashes FROM smt_stale").fetchall()


def awaiting_deletion(store: Store) -> set[bytes]:
    return {
        hashes[i : i + 32] for _, hashes in stale_rows(store) for i in range(0, len(hashes), 32)
    }


def check_layout(store: Store) -> None:
    """Stored: exactly the kept states' nodes and those awaiting deletion, each deleted at
    most `parts` blocks after its time; and the state said to be whole is."""
    assert stored(store) == smt.reachable(store.nodes, kept_roots(store)) | awaiting_deletion(store)
    assert all(h > store.height - store.keep_states - store.parts for h, _ in stale_rows(store))
    check_whole(store)


def check_whole(store: Store) -> None:
    """The state the store says is whole on disk is in the table, at most `parts - 1`
    blocks behind the head."""
    table_only = SqliteNodeStore(store._db, cache_nodes=0)  # no buffer: what a crash leaves
    whole = store._state_height
    assert store.height - store.parts < whole <= store.height
    smt.reachable(table_only, [store.header(whole).state_root])  # MissingNode if not whole


@settings(max_examples=60, deadline=None)
@given(STEPS, st.integers(1, 4))
def test_the_stored_nodes_are_exactly_those_of_the_kept_states(
    steps: list[dict[bytes, int]], keep: int
) -> None:
    store = Store(":memory:", GENESIS, engines=chain_engines(), keep_states=keep)
    balances: list[dict[bytes, int]] = [{}]
    for changes in steps:
        advance(store, changes)
        balances.append(balances[-1] | changes)
        check_layout(store)
    for height in range(store.height + 1):
        if height >= store.height - keep:
            state = store.state_at(height)
            assert {a: state.balance(a) for a in ADDRESSES} == {
                a: balances[height].get(a, 0) for a in ADDRESSES
            }
        else:
            with pytest.raises(MissingNode):
                store.state_at(height)
    store.close()


def test_a_reorganisation_keeps_the_fork_and_the_new_branch_and_drops_the_rest() -> None:
    store = Store(":memory:", GENESIS, engines=chain_engines(), keep_states=3)
    for v in range(1, 5):
        advance(store, {ADDRESSES[0]: v, ADDRESSES[1]: v})
    fork = store.height - 2
    old_head = smt.reachable(store.nodes, [store.state.root()])
    base, parent = store.state_at(fork), store.header(fork)
    branch = []
    for v in (7, 8, 9):
        state = base.evolve({ADDRESSES[0]: Account(ADDRESSES[0], v, 0)}, {})
        empty, _, receipts = build_block(base, parent, (), "n0", parent.timestamp_ms + 2)
        block = Block(dataclasses.replace(empty.header, state_root=state.root()), (), b"")
        branch.append((block, receipts))
        base, parent = state, block.header
    store.switch(fork, branch, base)
    assert store.height == fork + 3
    assert store.state.balance(ADDRESSES[0]) == 9 and store.state.balance(ADDRESSES[1]) == 2
    assert smt.reachable(store.nodes, kept_roots(store)) <= stored(store)  # all readable
    for v in range(store.keep_states + store.parts):
        advance(store, {ADDRESSES[2]: v})
        assert smt.reachable(store.nodes, kept_roots(store)) <= stored(store)
        check_whole(store)  # (what abandoned blocks made and replaced is not tracked)
    # Once the fork is behind the kept states (and each slice has had its turn), what the
    # abandoned head alone held is gone.
    alone = old_head - smt.reachable(store.nodes, kept_roots(store))
    assert alone and not alone & stored(store)
    store.close()


def test_append_takes_the_transitions_delta_once_and_then_drops_it() -> None:
    """A State evolved from the head carries what it made and retired; the append uses it
    (the stored nodes stay exactly the kept ones) and releases it, so a kept State does not
    hold its block's node hashes; a State whose delta is gone is compared tree to tree."""
    store = Store(":memory:", GENESIS, engines=chain_engines(), keep_states=1)
    advance(store, {ADDRESSES[0]: 1, ADDRESSES[1]: 1})
    parent = store.state
    state = parent.evolve({ADDRESSES[0]: Account(ADDRESSES[0], 2, 0)}, {})
    delta = state.delta_from(parent)
    assert delta is not None and parent.root() in delta.retired and state.root() in delta.made
    assert store.state.delta_from(state) is None  # not its parent
    append(store, state)
    assert state.delta_from(parent) is None
    assert stored(store) == smt.reachable(store.nodes, kept_roots(store))
    store.close()


PAYERS = [KeyPair(bytes([i]) * 32) for i in range(2, 6)]
FUNDED = dataclasses.replace(GENESIS, accounts={k.address.hex(): 50 for k in PAYERS})
# each block: transfers (payer, payee, amount), real txs, so that a block executes again
TRANSFERS = st.lists(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(1, 9)), max_size=3),
    min_size=1,
    max_size=12,
)


def pay(store: Store, transfers: list[tuple[int, int, int]]) -> None:
    nonces = {k.address: store.state.account(k.address).nonce for k in PAYERS}
    txs = []
    for payer, payee, amount in transfers:
        key = PAYERS[payer]
        txs.append(
            transfer(key, FUNDED.chain_id, nonces[key.address], PAYERS[payee].address, amount)
        )
        nonces[key.address] += 1
    parent = store.last_header
    block, state, receipts = build_block(
        store.state, parent, tuple(txs), "n0", parent.timestamp_ms + 1
    )
    store.append(block, receipts, state)


@settings(max_examples=40, deadline=None)
@given(TRANSFERS, st.integers(1, 5), st.data())
def test_a_crash_at_any_block_loses_no_state(
    blocks: list[list[tuple[int, int, int]]], keep: int, data: st.DataObject
) -> None:
    """The blocks are durable at once, the state a slice a block: a store that is never
    closed opens again at the same head with the same state (its last blocks executed
    again), and goes on; the layout holds throughout, and a clean close writes it whole."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chain.db"
        store = Store(path, FUNDED, engines=chain_engines(), keep_states=keep)
        for transfers in blocks:
            pay(store, transfers)
            if data.draw(st.booleans(), label="crash"):
                head, root = store.height, store.state.root()
                store._db.close()  # killed: nothing of the buffer reaches the file
                store = Store(path, FUNDED, engines=chain_engines(), keep_states=keep)
                assert (store.height, store.state.root()) == (head, root)
                assert store._meta_int("state_height", -1) == head  # written whole on open
            check_layout(store)
        head, root = store.height, store.state.root()
        store.close()
        reopened = Store(path, FUNDED, engines=chain_engines(), keep_states=keep)
        assert reopened._meta_int("state_height", -1) == head
        assert reopened.state.root() == root
        reopened.close()


@pytest.mark.parametrize("layout", ["one row a block", "other slices"])
def test_stale_rows_of_an_older_layout_are_resliced_on_open(tmp_path: Path, layout: str) -> None:
    """A store written with one stale row a block (`smt_retired`, before slices), or with
    another number of slices (another `keep_states`), opens with its rows in this store's
    slices, and its deletions stay exact."""
    path = tmp_path / "chain.db"
    store = Store(path, GENESIS, engines=chain_engines(), keep_states=3)
    for v in range(5):
        advance(store, {ADDRESSES[v % 2]: v, ADDRESSES[2]: v % 3})
    store.close()
    keep = 3 if layout == "one row a block" else 2
    if layout == "one row a block":
        db = sqlite3.connect(path, isolation_level=None)
        rows = db.execute("SELECT height, hashes FROM smt_stale ORDER BY height, part").fetchall()
        joined: dict[int, bytes] = {}
        for height, hashes in rows:
            joined[height] = joined.get(height, b"") + bytes(hashes)
        db.execute("CREATE TABLE smt_retired(height INTEGER PRIMARY KEY, hashes BLOB NOT NULL)")
        db.executemany("INSERT INTO smt_retired VALUES (?, ?)", joined.items())
        for table in ("smt_stale", "smt_stale_leaves"):
            db.execute(f"DROP TABLE {table}")
        db.execute("DELETE FROM meta WHERE key IN ('state_parts', 'state_height')")
        db.close()
    store = Store(path, GENESIS, engines=chain_engines(), keep_states=keep)
    assert store.parts == keep and store._meta_int("state_parts", 0) == keep
    assert not store._db.execute("SELECT 1 FROM sqlite_master WHERE name='smt_retired'").fetchall()
    check_layout(store)
    for v in range(8):  # values come back: the leaves named again are found (see _revive)
        advance(store, {ADDRESSES[v % 2]: v % 3})
        check_layout(store)
    store.close()


def test_a_full_buffer_writes_the_fullest_slices_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past STATE_BUFFER_NODES a block writes more slices than its own, the fullest first,
    until the buffer is back under the bound; the layout stays exact."""
    monkeypatch.setattr(store_module, "STATE_BUFFER_NODES", 12)
    store = Store(":memory:", GENESIS, engines=chain_engines(), keep_states=8)
    addresses = [bytes([i]) * 20 for i in range(1, 40)]
    for v in range(10):
        advance(store, {a: v for a in addresses[v : v + 12]})
        assert store.nodes.pending <= 12
        check_layout(store)
    store.close()
