"""Wire messages every consensus kind speaks: tx forwarding and state transfer."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.block import Block
from ledger.encoding import Struct, Tag
from ledger.tx import Tx


@dataclass(frozen=True)
class ForwardTxs(Struct):
    """Client txs a backup passes to the primary.  Each tx carries its own signature."""

    TAG = Tag.FORWARD_TXS
    txs: tuple[Tx, ...]


@dataclass(frozen=True)
class FetchBlocks(Struct):
    """State transfer: ask a peer for committed blocks `first`..`last` with their proofs.

    Answered by the node layer from its store; the blocks prove themselves, so the
    request needs no signature.
    """

    TAG = Tag.FETCH_BLOCKS
    first: int
    last: int


@dataclass(frozen=True)
class Blocks(Struct):
    TAG = Tag.BLOCKS
    blocks: tuple[Block, ...]
