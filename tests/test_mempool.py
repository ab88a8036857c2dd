"""The mempool (consensus/mempool.py): per-sender nonce order, refusals, capacity, removal,
and the read-only views a primary uses (pending, ready, has_ready)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.mempool import Mempool
from ledger.crypto import KeyPair
from ledger.tx import Tx, transfer

CHAIN = "tally-mempool-test"
KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(3)]
SENDERS = [k.address for k in KEYS]
SINK = bytes([0xAA]) * 20
MAX_NONCE = 6

# Every tx the tests use: for each sender and nonce a main tx and a conflicting alternative
# (same sender and nonce, different amount, so a different tx id).
TXS: dict[tuple[int, int, int], Tx] = {
    (s, n, v): transfer(KEYS[s], CHAIN, n, SINK, 1 + v)
    for s in range(len(KEYS))
    for n in range(MAX_NONCE)
    for v in range(2)
}
UNIVERSE = list(TXS.values())


def tx(sender: int, nonce: int, variant: int = 0) -> Tx:
    return TXS[(sender, nonce, variant)]


def nonces_from(chain: dict[bytes, int]) -> Callable[[bytes], int]:
    return lambda sender: chain.get(sender, 0)


def at_zero(sender: bytes) -> int:
    return 0


def pending(pool: Mempool) -> set[bytes]:
    """The ids of the known txs the pool says it holds (every tx used is in UNIVERSE)."""
    return {t.tx_id for t in UNIVERSE if t.tx_id in pool}


def nonces_of(batch: list[Tx], sender: int) -> list[int]:
    return [t.nonce for t in batch if t.sender_address == SENDERS[sender]]


# ---------------------------------------------------------------------------
# Ordering.


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


def test_a_gap_stops_the_sender_until_it_is_filled() -> None:
    pool = Mempool()
    for n in (0, 1, 3, 4):
        assert pool.add(tx(0, n))
    assert pool.add(tx(1, 0))

    batch = pool.take(at_zero, 100)
    assert nonces_of(batch, 0) == [0, 1]
    assert nonces_of(batch, 1) == [0]
    assert len(pool) == 2 and pending(pool) == {tx(0, 3).tx_id, tx(0, 4).tx_id}
    chain = {SENDERS[0]: 2, SENDERS[1]: 1}
    assert pool.take(nonces_from(chain), 100) == []  # still waiting for nonce 2
    assert len(pool) == 2

    assert pool.add(tx(0, 2))
    assert pool.take(nonces_from(chain), 100) == [tx(0, 2), tx(0, 3), tx(0, 4)]
    assert len(pool) == 0 and pending(pool) == set()


def test_next_nonce_skips_pending_txs() -> None:
    pool = Mempool()
    for n in (0, 1, 3):
        pool.add(tx(0, n))
    assert pool.next_nonce(SENDERS[0], 0) == 2
    assert pool.next_nonce(SENDERS[0], 2) == 2
    assert pool.next_nonce(SENDERS[0], 3) == 4
    assert pool.next_nonce(SENDERS[1], 0) == 0


def test_stale_nonces_are_dropped_on_take() -> None:
    pool = Mempool()
    for n in range(4):
        pool.add(tx(0, n))
    pool.add(tx(1, 0))
    chain = {SENDERS[0]: 2, SENDERS[1]: 0}
    batch = pool.take(nonces_from(chain), 100)
    assert nonces_of(batch, 0) == [2, 3]  # 0 and 1 can never apply
    assert nonces_of(batch, 1) == [0]
    assert len(pool) == 0
    assert tx(0, 0).tx_id not in pool and tx(0, 1).tx_id not in pool
    # a stale tx that arrives late is accepted but never handed out
    assert pool.add(tx(0, 1))
    assert pool.take(nonces_from({SENDERS[0]: 4}), 100) == []
    assert len(pool) == 0 and tx(0, 1).tx_id not in pool


def test_take_respects_the_limit_and_senders_take_turns() -> None:
    pool = Mempool()
    for s in range(3):
        for n in range(4):
            pool.add(tx(s, n))
    assert pool.take(at_zero, 0) == []
    assert len(pool) == 12
    chain: dict[bytes, int] = {}
    first = pool.take(nonces_from(chain), 3)
    assert first == [tx(0, 0), tx(0, 1), tx(0, 2)]
    chain[SENDERS[0]] = 3
    # the sender cut off by the limit goes to the back of the line
    second = pool.take(nonces_from(chain), 3)
    assert second == [tx(1, 0), tx(1, 1), tx(1, 2)]
    assert len(pool) == 6


# ---------------------------------------------------------------------------
# Read-only views: pending(), ready(), has_ready().


def test_pending_lists_senders_in_turn_each_in_nonce_order() -> None:
    pool = Mempool()
    assert list(pool.pending()) == []
    # senders first arrive in the order 1, 0, 2; nonces arrive shuffled and with gaps
    for s, n in [(1, 2), (0, 1), (1, 0), (2, 3), (0, 0), (1, 1), (0, 4)]:
        assert pool.add(tx(s, n))
    expected = [tx(1, 0), tx(1, 1), tx(1, 2), tx(0, 0), tx(0, 1), tx(0, 4), tx(2, 3)]
    assert list(pool.pending()) == expected  # gapped and waiting txs included
    assert list(pool.pending()) == expected and len(pool) == 7  # reading removes nothing

    # a sender cut off by take()'s limit goes to the back of the line, in pending() too
    assert pool.take(at_zero, 2) == [tx(1, 0), tx(1, 1)]
    assert list(pool.pending()) == [tx(0, 0), tx(0, 1), tx(0, 4), tx(2, 3), tx(1, 2)]
    # a sender whose txs are all gone is no longer listed
    pool.remove([tx(2, 3, variant=1)], nonces_from({SENDERS[2]: 4}))
    assert list(pool.pending()) == [tx(0, 0), tx(0, 1), tx(0, 4), tx(1, 2)]


def test_ready_returns_the_executable_runs_without_removing_them() -> None:
    pool = Mempool()
    for n in (0, 1, 2, 4):
        pool.add(tx(0, n))
    for n in (1, 2):
        pool.add(tx(1, n))
    pool.add(tx(2, 0))
    before = list(pool.pending())
    chain = {SENDERS[0]: 1}  # sender 0 already used nonce 0; the others are at 0

    # sender 0: from nonce 1 up to the gap at 3 (the stale nonce 0 is not offered);
    # sender 1: waits for its nonce 0; sender 2: its nonce 0
    ready = pool.ready(nonces_from(chain), 100)
    assert ready == [tx(0, 1), tx(0, 2), tx(2, 0)]
    assert pool.ready(nonces_from(chain), 100) == ready  # asking again gives the same
    assert list(pool.pending()) == before and len(pool) == 7  # nothing was removed
    assert tx(0, 0).tx_id in pool  # not even the stale tx

    assert pool.ready(nonces_from(chain), 2) == [tx(0, 1), tx(0, 2)]
    assert pool.ready(nonces_from(chain), 1) == [tx(0, 1)]
    assert pool.ready(nonces_from(chain), 0) == []
    # sender 1 becomes ready once the chain reaches its first pending nonce
    later = {SENDERS[0]: 1, SENDERS[1]: 1}
    assert pool.ready(nonces_from(later), 100) == [tx(0, 1), tx(0, 2), tx(1, 1), tx(1, 2), tx(2, 0)]
    # what ready() offers is exactly what take() then hands out
    assert pool.take(nonces_from(chain), 100) == ready
    assert list(pool.pending()) == [tx(0, 4), tx(1, 1), tx(1, 2)]  # the stale tx(0, 0) dropped
    assert pool.ready(nonces_from({SENDERS[0]: 3}), 100) == []


def test_has_ready() -> None:
    pool = Mempool()
    assert not pool.has_ready(at_zero)
    pool.add(tx(0, 2))
    assert not pool.has_ready(at_zero)  # nonces 0 and 1 are missing
    assert pool.has_ready(nonces_from({SENDERS[0]: 2}))
    assert not pool.has_ready(nonces_from({SENDERS[0]: 3}))  # stale: can never apply
    pool.add(tx(1, 0))
    assert pool.has_ready(at_zero)  # another sender's next tx is here
    assert len(pool) == 2 and list(pool.pending()) == [tx(0, 2), tx(1, 0)]
    pool.take(at_zero, 100)
    assert not pool.has_ready(at_zero)
    assert pool.has_ready(nonces_from({SENDERS[0]: 2}))


# ---------------------------------------------------------------------------
# Refusals and capacity.


def test_duplicates_and_conflicting_nonces_are_refused() -> None:
    pool = Mempool()
    assert pool.add(tx(0, 0))
    assert not pool.add(tx(0, 0))  # the same tx again
    assert not pool.add(tx(0, 0, variant=1))  # another tx for the same (sender, nonce)
    assert len(pool) == 1
    assert tx(0, 0).tx_id in pool and tx(0, 0, 1).tx_id not in pool
    assert pool.add(tx(1, 0, variant=1))  # the same nonce from another sender is fine
    assert pool.take(at_zero, 10) == [tx(0, 0), tx(1, 0, 1)]  # the first one won
    # once taken, the pool no longer remembers it
    assert pool.add(tx(0, 0, variant=1))
    assert len(pool) == 1


def test_capacity_is_enforced() -> None:
    pool = Mempool(capacity=3)
    assert [pool.add(tx(0, n)) for n in range(5)] == [True, True, True, False, False]
    assert not pool.add(tx(1, 0))
    assert len(pool) == 3 and pending(pool) == {tx(0, n).tx_id for n in range(3)}
    assert pool.take(at_zero, 2) == [tx(0, 0), tx(0, 1)]
    assert pool.add(tx(1, 0)) and pool.add(tx(1, 1))
    assert not pool.add(tx(1, 2))
    assert len(pool) == 3


# ---------------------------------------------------------------------------
# remove() after a commit.


def test_remove_forgets_committed_and_stale_txs() -> None:
    pool = Mempool()
    for n in range(5):
        pool.add(tx(0, n))
    pool.add(tx(1, 2))
    pool.add(tx(2, 0))
    # block: sender 0's nonces 0 and 1; sender 1's nonces 0..2 were committed through another
    # node, with a different tx for nonce 2 than the one pending here
    committed = [tx(0, 0), tx(0, 1), tx(1, 0), tx(1, 1), tx(1, 2, variant=1)]
    chain = {SENDERS[0]: 2, SENDERS[1]: 3, SENDERS[2]: 0}
    pool.remove(committed, nonces_from(chain))
    assert pending(pool) == {tx(0, n).tx_id for n in (2, 3, 4)} | {tx(2, 0).tx_id}
    assert len(pool) == 4
    assert pool.take(nonces_from(chain), 100) == [tx(0, 2), tx(0, 3), tx(0, 4), tx(2, 0)]
    assert len(pool) == 0


def test_remove_of_txs_the_pool_never_had_is_harmless() -> None:
    pool = Mempool()
    pool.add(tx(0, 3))
    pool.remove([tx(1, 0), tx(1, 1)], nonces_from({SENDERS[1]: 2}))
    assert pending(pool) == {tx(0, 3).tx_id} and len(pool) == 1
    pool.remove([tx(0, 3, variant=1)], nonces_from({SENDERS[0]: 3}))  # same nonce, other tx
    assert pending(pool) == {tx(0, 3).tx_id}  # nonce 3 is still the next one: keep waiting
    pool.remove([tx(0, 3, variant=1)], nonces_from({SENDERS[0]: 4}))
    assert pending(pool) == set() and len(pool) == 0


def test_remove_accepts_any_iterable() -> None:
    pool = Mempool()
    for n in range(3):
        pool.add(tx(0, n))
    pool.add(tx(1, 0))
    committed = [tx(0, 0), tx(0, 1, variant=1)]  # nonce 1 committed with the other tx
    chain = {SENDERS[0]: 2}

    def one_shot() -> Iterator[Tx]:
        yield from committed

    pool.remove(one_shot(), nonces_from(chain))
    assert tx(0, 1).tx_id not in pool  # stale: nonce 1 is used up
    assert pending(pool) == {tx(0, 2).tx_id, tx(1, 0).tx_id}


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
