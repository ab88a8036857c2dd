"""The state on its trees (ledger/state.py over ledger/smt.py): a transition that rewrites
only the changed paths gives the root of the state built whole; a state reopened from its
root alone reads the same; every account's proof checks, and a wrong one does not."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.contract import NO_ENGINES
from ledger.crypto import KeyPair
from ledger.smt import MemoryNodeStore
from ledger.state import Account, State, apply_txs, verify_account
from ledger.tx import transfer

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(6)]
CHAIN = "tally-state-tree"

# (sender, receiver, amount) per transfer; a few blocks of a few transfers
BLOCKS = st.lists(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 40)), max_size=6),
    min_size=1,
    max_size=5,
)
BALANCES = st.lists(st.integers(0, 100), min_size=6, max_size=6)


def run(balances: list[int], blocks: list[list[tuple[int, int, int]]]) -> list[State]:
    nodes = MemoryNodeStore()
    start = {k.address: Account(k.address, b, 0) for k, b in zip(KEYS, balances, strict=True)}
    states = [State(start, engines=NO_ENGINES, nodes=nodes)]
    nonces = [0] * len(KEYS)
    for height, moves in enumerate(blocks, 1):
        txs = []
        for s, r, amount in moves:
            txs.append(transfer(KEYS[s], CHAIN, nonces[s], KEYS[r].address, amount))
            nonces[s] += 1  # a refused transfer leaves later ones with a bad nonce: fine
        state, _ = apply_txs(states[-1], txs, height)
        states.append(state)
    return states


@settings(max_examples=60, deadline=None)
@given(BALANCES, BLOCKS)
def test_a_transition_gives_the_root_of_the_state_built_whole(
    balances: list[int], blocks: list[list[tuple[int, int, int]]]
) -> None:
    for state in run(balances, blocks):
        whole = State(dict(state.accounts), dict(state.contracts), engines=NO_ENGINES)
        assert whole.root() == state.root()
        reopened = State.at(state.nodes, state.root(), NO_ENGINES)  # older states stay readable
        assert {a: reopened.account(a) for a in state.accounts} == dict(state.accounts)
        assert state.total_supply() == sum(balances)


@settings(max_examples=40, deadline=None)
@given(BALANCES, BLOCKS, st.integers(1, 5))
def test_every_account_is_proved_and_a_wrong_balance_is_not(
    balances: list[int], blocks: list[list[tuple[int, int, int]]], lie: int
) -> None:
    states = run(balances, blocks)
    last, first = states[-1], states[0]
    stranger = KeyPair(bytes([0x66]) * 32).address
    for address in [k.address for k in KEYS] + [stranger]:
        account, proof = last.account(address), last.prove_account(address)
        assert verify_account(last.root(), account, proof)
        wrong = Account(address, account.balance + lie, account.nonce)
        assert not verify_account(last.root(), wrong, proof)
        if first.root() != last.root():
            assert not verify_account(first.root(), account, proof)
