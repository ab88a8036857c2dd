"""What a proof-of-work member loads at start: the recent best chain with its states."""

from __future__ import annotations

from collections import deque

from consensus.pow.config import PowConfig
from consensus.pow.difficulty import work
from consensus.pow.replica import Recent
from consensus.pow.seal import PowSeal
from ledger.block import Block
from ledger.state import State, apply_block, genesis_header
from ledger.store import Store


def recent_chain(store: Store, config: PowConfig) -> list[Recent]:
    """Replay the stored chain from genesis (checking every root) and keep the last blocks
    within the reorg horizon, with the states a reorganisation can roll back to."""
    genesis = store.genesis
    state = State.from_genesis(genesis, store.engines)
    total = 0
    keep = config.reorg_horizon + config.retarget_interval + 2
    recent: deque[Recent] = deque(maxlen=keep)
    recent.append(
        Recent(Block(genesis_header(genesis), (), b""), (), state, config.initial_bits, 0)
    )
    for height in range(1, store.height + 1):
        block = store.get_block(height)
        assert block is not None, f"stored chain has no block {height}"
        state, receipts = apply_block(state, block)
        bits = PowSeal.decode(block.proof).bits
        total += work(bits)
        recent.append(Recent(block, receipts, state, bits, total))
    return list(recent)
