"""The state transition (ledger/state.py), batch execution, block linkage and tx checks."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.block import Batch, BatchHeader, Block, BlockHeader, Genesis, Member, check_successor
from ledger.crypto import KeyPair
from ledger.encoding import MAX_INT
from ledger.errors import BadSignature, InvalidBlock, MalformedTx, WrongChain
from ledger.merkle import EMPTY_ROOT
from ledger.state import (
    BAD_NONCE,
    INSUFFICIENT_FUNDS,
    MALFORMED,
    OK,
    Account,
    Receipt,
    State,
    apply_block,
    apply_txs,
    build_block,
    execute_batch,
    genesis_header,
    receipts_root,
)
from ledger.tx import Tx, transfer
from node.engines import chain_engines

CHAIN = "tally-test"
KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(4)]
ALICE, BOB, CAROL, DAVE = KEYS
STRANGER = bytes([0xEE]) * 20  # an address with no genesis account
BALANCES = {ALICE.address: 1_000, BOB.address: 500, CAROL.address: 200, DAVE.address: 10}


def make_genesis(balances: dict[bytes, int] | None = None, chain_id: str = CHAIN) -> Genesis:
    balances = BALANCES if balances is None else balances
    return Genesis(
        chain_id=chain_id,
        timestamp_ms=1_000,
        members=(Member("n0", ALICE.public_key),),
        accounts={a.hex(): b for a, b in balances.items()},
    )


def snapshot(state: State) -> dict[bytes, tuple[int, int]]:
    return {a: (acc.balance, acc.nonce) for a, acc in state.accounts.items()}


def build(
    state: State, parent: BlockHeader, txs: list[Tx], ts: int = 2_000
) -> tuple[Block, State, tuple[Receipt, ...]]:
    return build_block(state, parent, tuple(txs), "n0", ts)


# ---------------------------------------------------------------------------
# Purity and determinism.


def test_apply_block_is_pure() -> None:
    genesis = make_genesis()
    state = State.from_genesis(genesis, chain_engines())
    before, root_before = snapshot(state), state.root()
    txs = [transfer(ALICE, CHAIN, 0, BOB.address, 100), transfer(BOB, CHAIN, 0, STRANGER, 7)]
    block, built_state, built_receipts = build(state, genesis_header(genesis), txs)
    assert snapshot(state) == before

    first, receipts1 = apply_block(state, block)
    second, receipts2 = apply_block(state, block)

    # the input is untouched, and its root recomputed from scratch is the same
    assert snapshot(state) == before
    assert state.root() == root_before
    assert State(dict(state.accounts), engines=chain_engines()).root() == root_before
    # the same (state, block) gives the same result every time
    assert first.root() == second.root() == built_state.root() == block.header.state_root
    assert receipts1 == receipts2 == built_receipts
    assert [r.reason for r in receipts1] == [OK, OK]
    assert snapshot(first) == snapshot(second)
    assert first.account(ALICE.address).balance == 900
    assert first.account(STRANGER) == Account(STRANGER, 7, 0)
    assert STRANGER not in state.accounts
    # the state's mapping cannot be mutated through the public view
    with pytest.raises(TypeError):
        state.accounts[ALICE.address] = Account(ALICE.address, 0, 0)  # type: ignore[index]


def test_independent_states_from_the_same_genesis_agree() -> None:
    genesis_a = make_genesis()
    # same genesis built separately, accounts listed in the opposite order
    genesis_b = make_genesis(dict(reversed(list(BALANCES.items()))))
    assert genesis_a.encode() == genesis_b.encode()
    state_a, state_b = (
        State.from_genesis(genesis_a, chain_engines()),
        State.from_genesis(genesis_b, chain_engines()),
    )
    parent_a, parent_b = genesis_header(genesis_a), genesis_header(genesis_b)
    assert parent_a == parent_b and state_a.root() == state_b.root()

    blocks: list[Block] = []
    state, parent = State.from_genesis(genesis_a, chain_engines()), parent_a
    for height, (key, to, amount) in enumerate(
        [(ALICE, BOB.address, 10), (BOB, CAROL.address, 20), (CAROL, STRANGER, 30)], start=1
    ):
        nonce = state.account(key.address).nonce
        block, state, _ = build(state, parent, [transfer(key, CHAIN, nonce, to, amount)], height)
        blocks.append(block)
        parent = block.header

    for block in blocks:
        state_a, _ = apply_block(state_a, block)
        state_b, _ = apply_block(state_b, block)
        assert state_a.root() == state_b.root() == block.header.state_root
    assert snapshot(state_a) == snapshot(state_b) == snapshot(state)
    assert state_a.total_supply() == sum(BALANCES.values())


def test_root_does_not_depend_on_account_insertion_order() -> None:
    accounts = [Account(k.address, 5 * i, i) for i, k in enumerate(KEYS)]
    assert State({a.address: a for a in accounts}, engines=chain_engines()).root() == (
        State({a.address: a for a in reversed(accounts)}, engines=chain_engines()).root()
    )
    changed = State(
        {a.address: a for a in accounts[:-1]} | {DAVE.address: Account(DAVE.address, 15, 4)},
        engines=chain_engines(),
    )
    assert changed.root() != State({a.address: a for a in accounts}, engines=chain_engines()).root()


# ---------------------------------------------------------------------------
# Failing txs are recorded and change nothing.


def test_failing_txs_get_receipts_and_change_nothing() -> None:
    genesis = make_genesis()
    state = State.from_genesis(genesis, chain_engines())
    ok_1 = transfer(ALICE, CHAIN, 0, BOB.address, 100)
    bad_nonce = transfer(CAROL, CHAIN, 5, BOB.address, 1)
    poor = transfer(DAVE, CHAIN, 0, BOB.address, 11)  # DAVE holds 10
    replay = transfer(ALICE, CHAIN, 0, CAROL.address, 1)  # nonce 0 was used by ok_1
    zero = Tx.create(BOB, CHAIN, 0, "transfer", {"to": CAROL.address, "amount": 0})
    ok_2 = transfer(BOB, CHAIN, 0, CAROL.address, 50)
    nobody = transfer(KeyPair(bytes([77]) * 32), CHAIN, 0, BOB.address, 1)
    txs = [ok_1, bad_nonce, poor, replay, zero, ok_2, nobody]

    block, after, receipts = build(state, genesis_header(genesis), txs)
    assert [r.reason for r in receipts] == [
        OK,
        BAD_NONCE,
        INSUFFICIENT_FUNDS,
        BAD_NONCE,
        MALFORMED,
        OK,
        INSUFFICIENT_FUNDS,
    ]
    assert [r.tx_id for r in receipts] == [tx.tx_id for tx in txs]
    assert [r.ok for r in receipts] == [True, False, False, False, False, True, False]

    # exactly what applying only the successful txs gives
    only_ok, _ = apply_txs(state, [ok_1, ok_2])
    assert snapshot(after) == snapshot(only_ok)
    assert after.root() == only_ok.root()
    assert snapshot(after) == {
        ALICE.address: (900, 1),
        BOB.address: (550, 1),
        CAROL.address: (250, 0),
        DAVE.address: (10, 0),
    }
    # the failed block still verifies: failures are part of the agreed outcome
    applied, applied_receipts = apply_block(state, block)
    assert applied.root() == after.root() and applied_receipts == receipts


def test_self_transfer_keeps_balance_and_bumps_nonce() -> None:
    state = State.from_genesis(make_genesis(), chain_engines())
    after, (receipt,) = apply_txs(state, [transfer(ALICE, CHAIN, 0, ALICE.address, 400)])
    assert receipt.reason == OK
    assert after.account(ALICE.address) == Account(ALICE.address, 1_000, 1)
    assert after.total_supply() == state.total_supply()
    # all of it, and a second one with the next nonce
    after, receipts = apply_txs(
        after,
        [
            transfer(ALICE, CHAIN, 1, ALICE.address, 1_000),
            transfer(ALICE, CHAIN, 2, ALICE.address, 1_001),
        ],
    )
    assert [r.reason for r in receipts] == [OK, INSUFFICIENT_FUNDS]
    assert after.account(ALICE.address) == Account(ALICE.address, 1_000, 2)


def test_genesis_supply_is_bounded_so_no_balance_can_overflow() -> None:
    with pytest.raises(ValueError, match="total supply"):
        make_genesis({ALICE.address: MAX_INT, BOB.address: 1})
    ok = make_genesis({ALICE.address: MAX_INT - 1, BOB.address: 1})
    state = State.from_genesis(ok, chain_engines())
    tx = transfer(ALICE, CHAIN, 0, BOB.address, MAX_INT - 1)
    _, after, (receipt,) = build(state, genesis_header(ok), [tx])
    assert receipt.ok and after.account(BOB.address).balance == MAX_INT
    assert after.total_supply() == MAX_INT


# ---------------------------------------------------------------------------
# Blocks that do not match their roots, or do not link to their parent.


def _one_block() -> tuple[State, BlockHeader, Block]:
    genesis = make_genesis()
    state = State.from_genesis(genesis, chain_engines())
    parent = genesis_header(genesis)
    txs = [transfer(ALICE, CHAIN, 0, BOB.address, 5), transfer(BOB, CHAIN, 0, CAROL.address, 5)]
    block, _, _ = build(state, parent, txs)
    return state, parent, block


def _with_header(block: Block, **changes: Any) -> Block:
    return dataclasses.replace(block, header=dataclasses.replace(block.header, **changes))


@pytest.mark.parametrize("field", ["state_root", "tx_root", "receipts_root"])
def test_apply_block_rejects_a_wrong_root(field: str) -> None:
    state, _, block = _one_block()
    before = snapshot(state)
    apply_block(state, block)  # the untampered block applies
    wrong = _with_header(block, **{field: bytes(32)})
    with pytest.raises(InvalidBlock, match=field.replace("_", " ")):
        apply_block(state, wrong)
    assert snapshot(state) == before


@pytest.mark.parametrize(
    "tamper",
    [
        lambda txs: txs[::-1],
        lambda txs: txs[:1],
        lambda txs: (*txs, txs[0]),
        lambda txs: (),
    ],
    ids=["reordered", "dropped", "duplicated", "emptied"],
)
def test_apply_block_rejects_txs_that_do_not_match_the_header(tamper: Any) -> None:
    state, _, block = _one_block()
    with pytest.raises(InvalidBlock, match="tx root"):
        apply_block(state, dataclasses.replace(block, txs=tamper(block.txs)))


def test_apply_block_rejects_a_consistent_header_on_a_different_state() -> None:
    state, _, block = _one_block()
    richer, _ = apply_txs(state, [transfer(CAROL, CHAIN, 0, DAVE.address, 1)])
    with pytest.raises(InvalidBlock, match="state root"):
        apply_block(richer, block)


def test_check_successor_accepts_the_real_successor() -> None:
    state, parent, block = _one_block()
    assert parent.timestamp_ms == 1_000
    assert block.header.proposed_ms == block.header.timestamp_ms == 2_000
    check_successor(parent, block.header)
    # a proposer whose clock is behind the parent's: the block keeps the parent's time
    for proposed in (0, 999, 1_000):
        behind, _, _ = build(state, parent, list(block.txs), ts=proposed)
        assert behind.header.proposed_ms == proposed
        assert behind.header.timestamp_ms == 1_000
        check_successor(parent, behind.header)


BAD_LINKS: dict[str, dict[str, Any]] = {
    "height skips": {"height": 2},
    "height repeats": {"height": 0},
    "parent zero": {"parent": bytes(32)},
    "parent is genesis digest": {"parent": genesis_header(make_genesis()).parent},
    "chain id": {"chain_id": "other-chain"},
    "time goes back": {"timestamp_ms": make_genesis().timestamp_ms - 1},
    # the block was proposed at 2_000 on a parent at 1_000: its time must be exactly 2_000
    "time behind the proposal": {"timestamp_ms": 1_999},
    "time ahead of the proposal": {"timestamp_ms": 2_001},
    "time is the parent's": {"timestamp_ms": 1_000},
    "proposal changed, time not": {"proposed_ms": 2_500},
    "proposal moved behind the parent": {"proposed_ms": 500},
}


@pytest.mark.parametrize("changes", list(BAD_LINKS.values()), ids=list(BAD_LINKS))
def test_check_successor_rejects(changes: dict[str, Any]) -> None:
    _, parent, block = _one_block()
    with pytest.raises(InvalidBlock):
        check_successor(parent, _with_header(block, **changes).header)


@settings(max_examples=100, deadline=None)
@given(
    parent_ms=st.integers(0, 3_000),
    proposed_ms=st.integers(0, 3_000),
    timestamp_ms=st.integers(0, 3_000),
)
def test_block_time_rule(parent_ms: int, proposed_ms: int, timestamp_ms: int) -> None:
    """A header links iff its time is exactly max(its proposal time, its parent's time)."""
    _, genesis_parent, block = _one_block()
    parent = dataclasses.replace(genesis_parent, timestamp_ms=parent_ms)
    header = dataclasses.replace(
        block.header, parent=parent.sha256(), proposed_ms=proposed_ms, timestamp_ms=timestamp_ms
    )
    if timestamp_ms == max(proposed_ms, parent_ms):
        check_successor(parent, header)
    else:
        with pytest.raises(InvalidBlock, match="time"):
            check_successor(parent, header)


def test_genesis_header_binds_the_genesis() -> None:
    a, b = make_genesis(), make_genesis({**BALANCES, DAVE.address: 11})
    header_a, header_b = genesis_header(a), genesis_header(b)
    assert header_a.height == 0 and header_a.parent == a.sha256()
    assert header_a.timestamp_ms == header_a.proposed_ms == a.timestamp_ms
    assert header_a.state_root == State.from_genesis(a, chain_engines()).root()
    assert header_a.sha256() != header_b.sha256()
    assert genesis_header(make_genesis(chain_id="x")).chain_id == "x"


# ---------------------------------------------------------------------------
# execute_batch: the block every replica derives from a committed batch.


def _batch_txs() -> tuple[Tx, ...]:
    return (
        transfer(ALICE, CHAIN, 0, BOB.address, 100),
        transfer(DAVE, CHAIN, 0, CAROL.address, 11),  # DAVE holds 10: fails, still included
        transfer(BOB, CHAIN, 0, STRANGER, 7),
    )


def test_replicas_executing_the_same_batch_derive_the_same_block() -> None:
    batch = Batch(CHAIN, 1, "n2", 5_000, _batch_txs())
    # Two replicas: genesis built separately (accounts in another order), and the batch
    # as each received it off the wire.
    genesis_a = make_genesis()
    genesis_b = make_genesis(dict(reversed(list(BALANCES.items()))))
    received = Batch.decode(batch.encode())
    block_a, state_a, receipts_a = execute_batch(
        State.from_genesis(genesis_a, chain_engines()), genesis_header(genesis_a), batch
    )
    block_b, state_b, receipts_b = execute_batch(
        State.from_genesis(genesis_b, chain_engines()), genesis_header(genesis_b), received
    )
    assert block_a.hash == block_b.hash
    assert block_a.encode() == block_b.encode()
    assert receipts_a == receipts_b
    assert state_a.root() == state_b.root() == block_a.header.state_root
    assert snapshot(state_a) == snapshot(state_b)

    # What the block is made of.
    parent = genesis_header(genesis_a)
    header = block_a.header
    assert (header.chain_id, header.height, header.parent) == (CHAIN, 1, parent.sha256())
    assert (header.proposer, header.proposed_ms, header.timestamp_ms) == ("n2", 5_000, 5_000)
    assert block_a.txs == batch.txs and block_a.proof == b""
    assert [r.reason for r in receipts_a] == [OK, INSUFFICIENT_FUNDS, OK]
    assert header.receipts_root == receipts_root(receipts_a)
    check_successor(parent, header)
    # Any replica can re-check the block with the plain state transition.
    replayed, replayed_receipts = apply_block(
        State.from_genesis(genesis_a, chain_engines()), block_a
    )
    assert replayed.root() == state_a.root() and replayed_receipts == receipts_a
    # build_block is execute_batch of the batch it describes.
    built, built_state, built_receipts = build_block(
        State.from_genesis(genesis_a, chain_engines()), parent, batch.txs, "n2", 5_000
    )
    assert built == block_a and built.hash == block_a.hash
    assert built_state.root() == state_a.root() and built_receipts == receipts_a


def test_the_block_hash_covers_who_proposed_the_batch_and_when() -> None:
    genesis = make_genesis()
    state, parent = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
    base = Batch(CHAIN, 1, "n2", 5_000, _batch_txs())
    block, after, _ = execute_batch(state, parent, base)
    for change in ({"proposer": "n3"}, {"proposed_ms": 5_001}):
        other, other_state, _ = execute_batch(state, parent, dataclasses.replace(base, **change))
        assert other.hash != block.hash
        assert other_state.root() == after.root()  # same txs, same outcome


@pytest.mark.parametrize("proposed_ms", [0, 4_999, 5_000, 5_001, 9_000])
def test_block_time_is_the_later_of_proposal_and_parent(proposed_ms: int) -> None:
    genesis = make_genesis()
    state = State.from_genesis(genesis, chain_engines())
    first, state, _ = execute_batch(
        state, genesis_header(genesis), Batch(CHAIN, 1, "n0", 5_000, ())
    )
    parent = first.header
    assert parent.timestamp_ms == 5_000
    batch = Batch(CHAIN, 2, "n1", proposed_ms, (transfer(ALICE, CHAIN, 0, BOB.address, 1),))
    block, _, (receipt,) = execute_batch(state, parent, batch)
    assert receipt.ok
    assert block.header.timestamp_ms == max(proposed_ms, 5_000)
    assert block.header.proposed_ms == proposed_ms  # the proposer's clock is kept as ordered
    check_successor(parent, block.header)


@settings(max_examples=50, deadline=None)
@given(clocks=st.lists(st.integers(0, 10_000), max_size=8))
def test_block_times_never_go_back_whatever_the_proposers_clocks(clocks: list[int]) -> None:
    genesis = make_genesis()
    state, parent = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
    expected = genesis.timestamp_ms
    for height, clock in enumerate(clocks, start=1):
        block, state, _ = execute_batch(state, parent, Batch(CHAIN, height, "n0", clock, ()))
        expected = max(expected, clock)
        assert block.header.timestamp_ms == expected
        check_successor(parent, block.header)
        parent = block.header


def test_a_null_batch_gives_an_empty_block_at_the_parent_time() -> None:
    genesis = make_genesis()
    state0 = State.from_genesis(genesis, chain_engines())
    first, state, _ = execute_batch(
        state0, genesis_header(genesis), Batch(CHAIN, 1, "n0", 7_000, _batch_txs())
    )
    parent = first.header
    null = Batch(CHAIN, 2, "n1", 0, ())  # what a new primary proposes for an unfilled height
    block, after, receipts = execute_batch(state, parent, null)
    assert block.txs == () and receipts == ()
    header = block.header
    assert header.timestamp_ms == parent.timestamp_ms == 7_000
    assert header.proposed_ms == 0
    assert (header.height, header.parent, header.proposer) == (2, parent.sha256(), "n1")
    assert header.tx_root == header.receipts_root == EMPTY_ROOT
    # the state is unchanged
    assert header.state_root == state.root() == after.root() == parent.state_root
    assert snapshot(after) == snapshot(state)
    check_successor(parent, header)
    applied, applied_receipts = apply_block(state, block)
    assert applied.root() == state.root() and applied_receipts == ()
    assert header.batch_digest() == null.digest


BATCHES: dict[str, Batch] = {
    "with txs": Batch(CHAIN, 1, "n2", 5_000, _batch_txs()),
    "empty": Batch(CHAIN, 1, "n0", 5_000, ()),
    "null": Batch(CHAIN, 1, "n1", 0, ()),
    "clock behind": Batch(CHAIN, 1, "n3", 3, _batch_txs()[:1]),
}


@pytest.mark.parametrize("batch", list(BATCHES.values()), ids=list(BATCHES))
def test_the_header_yields_the_digest_of_its_batch(batch: Batch) -> None:
    """The commit certificate signs the batch digest; a block must lead back to it."""
    genesis = make_genesis()
    state, parent = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
    block, _, _ = execute_batch(state, parent, batch)
    assert block.header.batch_digest() == batch.digest
    h = block.header
    assert batch.digest == BatchHeader(CHAIN, 1, h.proposer, h.proposed_ms, h.tx_root).sha256()
    # The digest is fixed before execution: on another state the same batch gives another
    # block (other roots), but the same batch digest.
    other_state, _ = apply_txs(state, [transfer(ALICE, CHAIN, 0, DAVE.address, 990)])
    other, _, _ = execute_batch(other_state, parent, batch)
    assert other.header.batch_digest() == batch.digest
    if batch.txs:
        assert other.hash != block.hash
    # and batches differing in anything proposed have different digests
    assert len({b.digest for b in BATCHES.values()}) == len(BATCHES)


# ---------------------------------------------------------------------------
# Random transfer sequences keep the books balanced.

OPS = st.lists(
    st.tuples(
        st.integers(0, len(KEYS) - 1),  # sender
        st.integers(0, len(KEYS)),  # recipient; len(KEYS) means STRANGER
        st.integers(0, 1_200),  # amount: 0 is malformed, large ones exceed balances
        st.sampled_from([0, 0, 0, 0, -1, 1, 5]),  # nonce offset from the right one
    ),
    max_size=20,
)


@settings(max_examples=100, deadline=None)
@given(ops=OPS, block_size=st.integers(1, 6))
def test_random_transfers_conserve_supply(
    ops: list[tuple[int, int, int, int]], block_size: int
) -> None:
    genesis = make_genesis()
    state = State.from_genesis(genesis, chain_engines())
    supply = state.total_supply()
    txs: list[Tx] = []
    for sender_i, to_i, amount, offset in ops:
        key = KEYS[sender_i]
        to = STRANGER if to_i == len(KEYS) else KEYS[to_i].address
        sender = state.account(key.address)
        nonce = sender.nonce + offset
        tx = Tx.create(key, CHAIN, nonce, "transfer", {"to": to, "amount": amount})
        txs.append(tx)

        after, (receipt,) = apply_txs(state, [tx])
        expected = (
            BAD_NONCE
            if offset
            else MALFORMED
            if amount == 0
            else INSUFFICIENT_FUNDS
            if amount > sender.balance
            else OK
        )
        assert receipt.reason == expected
        assert after.total_supply() == supply
        assert all(a.balance >= 0 for a in after.accounts.values())
        for address, account in after.accounts.items():
            old_nonce = state.account(address).nonce
            bump = 1 if receipt.ok and address == key.address else 0
            assert account.nonce == old_nonce + bump
        if receipt.ok:
            delta = 0 if to == key.address else amount
            assert after.account(key.address).balance == sender.balance - delta
            assert after.account(to).balance == state.account(to).balance + delta
        else:
            assert snapshot(after) == snapshot(state)
            assert after.root() == state.root()
        state = after

    # The same txs in blocks give the same final state, and every block re-applies.
    block_state, parent = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
    for i in range(0, len(txs), block_size):
        block, next_state, receipts = build(block_state, parent, txs[i : i + block_size])
        replayed, replay_receipts = apply_block(block_state, block)
        assert replayed.root() == next_state.root() == block.header.state_root
        assert replay_receipts == receipts
        block_state, parent = next_state, block.header
    assert block_state.root() == state.root()
    assert snapshot(block_state) == snapshot(state)


# ---------------------------------------------------------------------------
# Tx.check_stateless.


def test_a_valid_tx_passes_the_stateless_check() -> None:
    transfer(ALICE, CHAIN, 0, BOB.address, 1).check_stateless(CHAIN)
    transfer(ALICE, CHAIN, MAX_INT, BOB.address, MAX_INT).check_stateless(CHAIN)


def test_bad_signatures_are_refused() -> None:
    tx = transfer(ALICE, CHAIN, 0, BOB.address, 5)
    flipped = bytes([tx.signature[0] ^ 1]) + tx.signature[1:]
    forged = [
        dataclasses.replace(tx, signature=flipped),
        dataclasses.replace(tx, signature=b""),
        dataclasses.replace(tx, signature=bytes(64)),
        dataclasses.replace(tx, signature=tx.signature + b"\x00"),
        dataclasses.replace(tx, nonce=1),  # signed fields changed after signing
        dataclasses.replace(tx, payload={"to": BOB.address, "amount": 6}),
        dataclasses.replace(tx, sender=BOB.public_key),  # someone else's key
        Tx(CHAIN, ALICE.public_key, 0, "transfer", tx.payload, BOB.sign(tx.signing_bytes())),
    ]
    for bad in forged:
        with pytest.raises(BadSignature):
            bad.check_stateless(CHAIN)


def test_wrong_chain_is_refused() -> None:
    tx = transfer(ALICE, "other-chain", 0, BOB.address, 5)
    tx.check_stateless("other-chain")
    with pytest.raises(WrongChain):
        tx.check_stateless(CHAIN)


MALFORMED_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "missing amount": ("transfer", {"to": BOB.address}),
    "missing to": ("transfer", {"amount": 5}),
    "empty payload": ("transfer", {}),
    "extra key": ("transfer", {"to": BOB.address, "amount": 5, "memo": "hi"}),
    "zero amount": ("transfer", {"to": BOB.address, "amount": 0}),
    "negative amount": ("transfer", {"to": BOB.address, "amount": -5}),
    "bool amount true": ("transfer", {"to": BOB.address, "amount": True}),
    "bool amount false": ("transfer", {"to": BOB.address, "amount": False}),
    "str amount": ("transfer", {"to": BOB.address, "amount": "5"}),
    "nil amount": ("transfer", {"to": BOB.address, "amount": None}),
    "short address": ("transfer", {"to": BOB.address[:19], "amount": 5}),
    "long address": ("transfer", {"to": BOB.address + b"\x00", "amount": 5}),
    "public key as address": ("transfer", {"to": BOB.public_key, "amount": 5}),
    "str address": ("transfer", {"to": BOB.address.hex(), "amount": 5}),
    "unknown kind": ("mint", {"to": BOB.address, "amount": 5}),
    "empty kind": ("", {"to": BOB.address, "amount": 5}),
}


@pytest.mark.parametrize("case", list(MALFORMED_CASES.values()), ids=list(MALFORMED_CASES))
def test_malformed_payloads_are_refused(case: tuple[str, dict[str, Any]]) -> None:
    kind, payload = case
    tx = Tx.create(ALICE, CHAIN, 0, kind, payload)  # correctly signed, still malformed
    with pytest.raises(MalformedTx):
        tx.check_stateless(CHAIN)
    # and executing it changes nothing
    state = State.from_genesis(make_genesis(), chain_engines())
    after, (receipt,) = apply_txs(state, [tx])
    assert receipt.reason == MALFORMED
    assert snapshot(after) == snapshot(state)


def test_malformed_envelopes_are_refused() -> None:
    short_sender = Tx(
        CHAIN, ALICE.public_key[:31], 0, "transfer", {"to": BOB.address, "amount": 1}, b""
    )
    negative_nonce = Tx.create(ALICE, CHAIN, -1, "transfer", {"to": BOB.address, "amount": 1})
    huge = Tx.create(
        ALICE, CHAIN, 0, "transfer", {"to": BOB.address, "amount": 1, "x": "y" * 17_000}
    )
    for tx in (short_sender, negative_nonce, huge):
        with pytest.raises(MalformedTx):
            tx.check_stateless(CHAIN)
