"""Answer a peer's state-transfer request from the local store (the same for runtime and sim)."""

from __future__ import annotations

from consensus.messages import Blocks, FetchBlocks
from ledger.block import Block
from ledger.store import Store

MAX_BLOCKS = 64
MAX_BYTES = 1 << 20  # keep replies well under the transport's frame limit


def serve_fetch(store: Store, request: FetchBlocks) -> Blocks:
    """Committed blocks `first`..`last` (with their certificates), as many as fit."""
    blocks: list[Block] = []
    size = 0
    last = min(request.last, store.height, request.first + MAX_BLOCKS - 1)
    for height in range(max(1, request.first), last + 1):
        block = store.get_block(height)
        if block is None:
            break
        size += len(block.encode())
        if blocks and size > MAX_BYTES:
            break
        blocks.append(block)
    return Blocks(tuple(blocks))
