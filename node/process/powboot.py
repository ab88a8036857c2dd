"""What a proof-of-work member loads at start: the recent best chain with its states."""

from __future__ import annotations

from collections import deque

from consensus.pow.config import PowConfig
from consensus.pow.difficulty import work
from consensus.pow.replica import Recent
from consensus.pow.seal import PowSeal
from ledger.state import State
from ledger.store import Store


def recent_chain(store: Store, config: PowConfig) -> list[Recent]:
    """The last blocks within the reorg horizon, with the states a reorganisation can roll
    back to: each opened at its block's state root (the store keeps their trees), so a
    restart executes nothing.  The chain's total work sums every stored block's seal."""
    keep = config.kept_blocks
    recent: deque[Recent] = deque(maxlen=keep)
    total, first_kept = 0, max(0, store.height - keep + 1)
    for height in range(store.height + 1):
        block = store.get_block(height)
        assert block is not None, f"stored chain has no block {height}"
        bits = PowSeal.decode(block.proof).bits if height else config.initial_bits
        total += work(bits) if height else 0
        if height >= first_kept:
            state = State.at(store.nodes, block.header.state_root, store.engines)
            receipts = store.get_receipts(height)
            recent.append(Recent(block, receipts, state, bits, total))
    return list(recent)
