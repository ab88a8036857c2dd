"""The mempool against drawn inputs: txs added in any order are taken in nonce order, and any
sequence of adds, takes and commits keeps the pool consistent with a model of it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.mempool import Mempool
from ledger.tx import Tx, transfer
from tests.helpers.mempool import (
    CHAIN,
    KEYS,
    MAX_NONCE,
    SENDERS,
    SINK,
    nonces_from,
    nonces_of,
    pending,
    tx,
)


@settings(max_examples=50, deadline=None)
@given(
    orders=st.lists(st.permutations(range(MAX_NONCE)), min_size=3, max_size=3),
    interleave=st.randoms(use_true_random=False),
    limit=st.integers(1, 7),
)
def test_txs_added_in_random_order_are_taken_in_nonce_order(
    orders: list[list[int]], interleave: random.Random, limit: int
) -> None:
    pool = Mempool()
    arrivals = [(s, n) for s, order in enumerate(orders) for n in order]
    interleave.shuffle(arrivals)
    for s, n in arrivals:
        assert pool.add(tx(s, n))
    assert len(pool) == 3 * MAX_NONCE

    chain: dict[bytes, int] = {}
    taken: list[Tx] = []
    while len(pool):
        batch = pool.take(nonces_from(chain), limit)
        assert 0 < len(batch) <= limit
        for t in batch:
            assert t.nonce == chain.get(t.sender_address, 0)  # exactly the next nonce
            chain[t.sender_address] = t.nonce + 1
        taken += batch
    for s in range(len(KEYS)):
        assert nonces_of(taken, s) == list(range(MAX_NONCE))
    assert len({t.tx_id for t in taken}) == len(taken)


# ---------------------------------------------------------------------------
# Random operation sequences against a model.


@dataclass
class Model:
    capacity: int
    chain: dict[bytes, int] = field(default_factory=dict)  # next nonce per sender
    pending: dict[tuple[bytes, int], Tx] = field(default_factory=dict)

    def ids(self) -> set[bytes]:
        return {t.tx_id for t in self.pending.values()}

    def nonce_of(self, sender: bytes) -> int:
        return self.chain.get(sender, 0)

    def drop_stale(self, senders: set[bytes]) -> None:
        for key in [k for k in self.pending if k[0] in senders and k[1] < self.nonce_of(k[0])]:
            del self.pending[key]

    def run(self, sender: bytes) -> list[Tx]:
        """The txs of `sender` that can execute next, in order."""
        out, n = [], self.nonce_of(sender)
        while (sender, n) in self.pending:
            out.append(self.pending[(sender, n)])
            n += 1
        return out


def check(pool: Mempool, model: Model) -> None:
    held = pending(pool)
    assert len(pool) == len(held)  # len agrees with membership
    assert held == model.ids()
    assert len(pool) == len(model.pending)
    # pending() lists every held tx once: senders in turn, each in increasing nonce order
    listed = list(pool.pending())
    assert len(listed) == len(pool) and {t.tx_id for t in listed} == held
    senders = [t.sender_address for t in listed]
    turns = [a for i, a in enumerate(senders) if i == 0 or senders[i - 1] != a]
    assert len(turns) == len(set(turns))  # one contiguous run per sender
    for a in turns:
        mine = [t.nonce for t in listed if t.sender_address == a]
        assert mine == sorted(mine)
    # ready() and has_ready() agree with the model, whatever the limit
    runs = [t for s in SENDERS for t in model.run(s)]
    assert pool.has_ready(model.nonce_of) == bool(runs)
    everything = pool.ready(model.nonce_of, len(model.pending) + 1)
    assert sorted(t.tx_id for t in everything) == sorted(t.tx_id for t in runs)


ADD = st.tuples(
    st.just("add"),
    st.integers(0, len(KEYS) - 1),
    st.integers(0, MAX_NONCE - 1),
    st.integers(0, 1),
)
TAKE = st.tuples(st.just("take"), st.integers(0, 8), st.booleans(), st.just(0))
EXTERNAL = st.tuples(
    st.just("external"), st.integers(0, len(KEYS) - 1), st.integers(1, 3), st.integers(0, 1)
)
OPERATIONS = st.lists(st.one_of(ADD, ADD, ADD, TAKE, EXTERNAL), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ops=OPERATIONS, capacity=st.integers(1, 20))
def test_random_operations_keep_the_pool_consistent(
    ops: list[tuple[str, int, int | bool, int]], capacity: int
) -> None:
    pool, model = Mempool(capacity), Model(capacity)
    for op, a, b, c in ops:
        if op == "add":
            t = tx(a, int(b), c)
            key = (t.sender_address, t.nonce)
            expected = (
                t.tx_id not in model.ids()
                and key not in model.pending
                and len(model.pending) < capacity
            )
            assert pool.add(t) == expected
            if expected:
                model.pending[key] = t

        elif op == "take":
            limit, commit = a, bool(b)
            retrievable = sum(len(model.run(s)) for s in SENDERS)
            offered = pool.ready(model.nonce_of, limit)
            batch = pool.take(model.nonce_of, limit)
            assert batch == offered  # take() hands out exactly what ready() offered
            assert len(batch) == min(limit, retrievable)
            assert len({t.tx_id for t in batch}) == len(batch)
            for s in range(len(KEYS)):
                run = model.run(SENDERS[s])
                mine = [t for t in batch if t.sender_address == SENDERS[s]]
                assert mine == run[: len(mine)]  # a prefix of the executable run, in order
            for t in batch:
                del model.pending[(t.sender_address, t.nonce)]
            # stale txs of visited senders may have been dropped: they could never apply
            for key, stale in list(model.pending.items()):
                if key[1] < model.nonce_of(key[0]) and stale.tx_id not in pool:
                    del model.pending[key]
            check(pool, model)
            if commit and batch:
                for t in batch:
                    model.chain[t.sender_address] = t.nonce + 1
                pool.remove(batch, model.nonce_of)
                model.drop_stale({t.sender_address for t in batch})

        else:  # txs of one sender committed through another node
            sender, count, variant = SENDERS[a], int(b), c
            start = model.nonce_of(sender)
            committed = [
                tx(a, n, variant) if n < MAX_NONCE else transfer(KEYS[a], CHAIN, n, SINK, 9)
                for n in range(start, start + count)
            ]
            model.chain[sender] = start + count
            for t in committed:
                if model.pending.get((sender, t.nonce)) == t:
                    del model.pending[(sender, t.nonce)]
            pool.remove(committed, model.nonce_of)
            model.drop_stale({sender})
        check(pool, model)

    # Everything the pool counts can still be retrieved: drain it from the lowest nonces.
    count, drained = len(pool), []
    for _ in range(count + 1):
        if not len(pool):
            break
        lowest: dict[bytes, int] = {}
        for address, n in model.pending:
            lowest[address] = min(n, lowest.get(address, n))
        batch = pool.take(nonces_from(lowest), count)
        assert batch, "the pool counts txs that take() never returns"
        for t in batch:
            del model.pending[(t.sender_address, t.nonce)]
        drained += batch
    assert len(drained) == count
    assert len(pool) == 0 and pending(pool) == set()
