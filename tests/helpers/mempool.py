"""A fixed universe of signed transfers for the mempool's tests: for each of three senders and
each nonce, a main tx and a conflicting alternative (same sender and nonce, another amount,
so another tx id)."""

from __future__ import annotations

from collections.abc import Callable

from consensus.mempool import Mempool
from ledger.crypto import KeyPair
from ledger.tx import Tx, transfer

CHAIN = "tally-mempool-test"
KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(3)]
SENDERS = [k.address for k in KEYS]
SINK = bytes([0xAA]) * 20
MAX_NONCE = 6

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


def pending(pool: Mempool) -> set[bytes]:
    """The ids of the known txs the pool says it holds (every tx used is in UNIVERSE)."""
    return {t.tx_id for t in UNIVERSE if t.tx_id in pool}


def nonces_of(batch: list[Tx], sender: int) -> list[int]:
    return [t.nonce for t in batch if t.sender_address == SENDERS[sender]]
