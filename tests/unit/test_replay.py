"""Replay from genesis trusts commit certificates but checks everything else."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from consensus.pbft.config import PbftConfig
from ledger.block import Block
from ledger.errors import InvalidBlock
from ledger.store import Store
from ledger.tx import transfer
from node.audit.replay import replay
from node.bench.replay import build_chain, genesis_for, replay_file
from node.engines import chain_engines

ACCOUNTS = 20


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "chain.sqlite"
    build_chain(path, blocks=12, per_block=15, accounts=ACCOUNTS)
    return path


GENESIS, KEYS = genesis_for(ACCOUNTS)
CONFIG = PbftConfig(GENESIS.chain_id, GENESIS.members)


def blocks_of(path: Path) -> list[Block]:
    store = Store(path, GENESIS, engines=chain_engines())
    try:
        return list(store.iter_blocks())
    finally:
        store.close()


def test_replay_rebuilds_the_stored_state_in_both_modes(chain: Path) -> None:
    for signatures in (False, True):
        result = replay_file(chain, ACCOUNTS, signatures)
        assert (result["blocks"], result["txs"]) == (12, 180)


def test_a_block_without_a_valid_certificate_stops_the_replay(chain: Path) -> None:
    blocks = blocks_of(chain)
    blocks[5] = blocks[5].with_proof(b"")
    with pytest.raises(InvalidBlock, match="block 6"):
        replay(GENESIS, CONFIG, blocks)


def test_a_changed_tx_is_caught_by_the_roots_even_without_signature_checks(chain: Path) -> None:
    blocks = blocks_of(chain)
    victim = blocks[3]
    forged = transfer(KEYS[0], GENESIS.chain_id, 999, KEYS[1].address, 10**6)
    blocks[3] = replace(victim, txs=(forged, *victim.txs[1:]))
    with pytest.raises(InvalidBlock, match="block 4"):
        replay(GENESIS, CONFIG, blocks)


def test_blocks_out_of_order_are_refused(chain: Path) -> None:
    blocks = blocks_of(chain)
    with pytest.raises(InvalidBlock, match="does not follow"):
        replay(GENESIS, CONFIG, [blocks[0], blocks[2]])
