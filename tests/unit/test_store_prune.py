"""The store keeps the state trees of its last `keep_states` blocks, and nothing else
(ledger/store.py, `_retire`): every kept state reads back whole, an older one is gone, and
the stored nodes are exactly those the kept roots reach, also when a record returns to an
earlier value (its node, named by its content, is written again) and across a
reorganisation."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import smt
from ledger.block import Block, Genesis, Member
from ledger.crypto import KeyPair
from ledger.smt import MissingNode
from ledger.state import Account, State, build_block
from ledger.store import Store
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
        assert stored(store) == smt.reachable(store.nodes, kept_roots(store))
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
    for v in range(4):
        advance(store, {ADDRESSES[2]: v})
        assert smt.reachable(store.nodes, kept_roots(store)) <= stored(store)
    # Once the fork is behind the kept states, what the abandoned head alone held is gone.
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
