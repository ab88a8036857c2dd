"""Pending transactions, released in nonce order per sender.

A client may submit a sender's txs to different nodes, so they can reach the
primary out of order.  A tx waits here until every lower nonce of its sender
has been taken, so it never fails just for arriving early.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ledger.tx import Tx


class Mempool:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        # sender address -> nonce -> tx; dict order is the round-robin order of senders
        self._by_sender: dict[bytes, dict[int, Tx]] = {}
        self._ids: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._ids

    def next_nonce(self, sender: bytes, nonce: int) -> int:
        """The first nonce at or after `nonce` that has no pending tx from `sender`."""
        queue = self._by_sender.get(sender, {})
        while nonce in queue:
            nonce += 1
        return nonce

    def pending(self) -> Iterator[Tx]:
        """Every pending tx, senders in turn, each sender's in nonce order."""
        for queue in self._by_sender.values():
            yield from (queue[n] for n in sorted(queue))

    def ready(self, nonce_of: Callable[[bytes], int], limit: int) -> list[Tx]:
        """Up to `limit` txs that could execute next, without removing them."""
        out: list[Tx] = []
        for sender, queue in self._by_sender.items():
            nonce = nonce_of(sender)
            while nonce in queue and len(out) < limit:
                out.append(queue[nonce])
                nonce += 1
        return out

    def has_ready(self, nonce_of: Callable[[bytes], int]) -> bool:
        """Whether some sender's next tx is here, so a primary could propose it now."""
        return any(nonce_of(sender) in queue for sender, queue in self._by_sender.items())

    def add(self, tx: Tx) -> bool:
        """Add `tx`; False if a duplicate, its (sender, nonce) is taken, or the pool is full."""
        if tx.tx_id in self._ids or len(self._ids) >= self.capacity:
            return False
        queue = self._by_sender.setdefault(tx.sender_address, {})
        if tx.nonce in queue:
            return False
        queue[tx.nonce] = tx
        self._ids.add(tx.tx_id)
        return True

    def take(self, nonce_of: Callable[[bytes], int], limit: int) -> list[Tx]:
        """Remove and return up to `limit` txs that execute in order from the given nonces.

        Txs below a sender's current nonce can never apply and are dropped.
        """
        batch: list[Tx] = []
        for sender in list(self._by_sender):
            if len(batch) >= limit:
                break
            queue = self._by_sender.pop(sender)
            nonce = nonce_of(sender)
            for stale in [n for n in queue if n < nonce]:
                self._ids.discard(queue.pop(stale).tx_id)
            while nonce in queue and len(batch) < limit:
                tx = queue.pop(nonce)
                self._ids.discard(tx.tx_id)
                batch.append(tx)
                nonce += 1
            if queue:
                self._by_sender[sender] = queue  # re-inserted last: senders take turns
        return batch

    def remove(self, txs: Iterable[Tx], nonce_of: Callable[[bytes], int]) -> None:
        """Forget committed txs, and every pending tx of their senders that can no longer apply."""
        txs = tuple(txs)
        for tx in txs:
            queue = self._by_sender.get(tx.sender_address, {})
            if queue.get(tx.nonce) == tx:
                self._ids.discard(queue.pop(tx.nonce).tx_id)
        for sender in {tx.sender_address for tx in txs}:
            queue = self._by_sender.get(sender, {})
            nonce = nonce_of(sender)
            for stale in [n for n in queue if n < nonce]:
                self._ids.discard(queue.pop(stale).tx_id)
            if not queue:
                self._by_sender.pop(sender, None)
