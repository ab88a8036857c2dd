"""Rebuild a node's state from its stored blocks, trusting commit certificates.

A PBFT block is final once 2f+1 members signed COMMIT for its batch, and each of them
checked every tx signature before voting.  So a replay checks each block's certificate
(2f+1 signatures per block, not one per tx), its link to the parent, and re-executes it:
every root in the header must come out the same.  `signatures=True` also re-checks every
tx signature, as `tally verify` does for a chain it does not trust.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from consensus.pbft.config import PbftConfig
from consensus.pbft.proofs import verify_certificate
from ledger.block import Block, BlockHeader, Genesis, check_successor
from ledger.state import State, apply_block, genesis_header
from node.engines import chain_engines


@dataclass(frozen=True)
class Replayed:
    state: State
    header: BlockHeader
    blocks: int
    txs: int
    seconds: float

    @property
    def txs_per_s(self) -> float:
        return self.txs / self.seconds if self.seconds else 0.0


def replay(
    genesis: Genesis, config: PbftConfig, blocks: Iterable[Block], *, signatures: bool = False
) -> Replayed:
    """Execute `blocks` from genesis; raise InvalidBlock (or LedgerError) at the first bad one."""
    start = time.perf_counter()
    state, parent = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
    count = txs = 0
    for block in blocks:
        check_successor(parent, block.header)
        verify_certificate(block, config)
        if signatures:
            for tx in block.txs:
                tx.check_stateless(genesis.chain_id)
        state, _ = apply_block(state, block)
        parent = block.header
        count, txs = count + 1, txs + len(block.txs)
    return Replayed(state, parent, count, txs, time.perf_counter() - start)
