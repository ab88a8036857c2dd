"""The mempool (consensus/mempool.py): per-sender nonce order, refusals, capacity, removal,
and the read-only views a primary uses (pending, ready, has_ready).  Drawn orders and
operation sequences against a model: tests/property/test_mempool.py."""

from __future__ import annotations

from collections.abc import Iterator

from consensus.mempool import Mempool
from ledger.tx import Tx
from tests.helpers.mempool import SENDERS, nonces_from, nonces_of, pending, tx


def at_zero(sender: bytes) -> int:
    return 0


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
