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
from node.replay import replay
from node.replaybench import build_chain, genesis_for, replay_file

ACCOUNTS = 20


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "chain.sqlite"
    build_chain(path, blocks=12, per_block=15, accounts=ACCOUNTS)
    return path


def blocks_of(path: Path) -> list[Block]:
    genesis, _ = genesis_for(ACCOUNTS)
    store = Store(path, genesis)
    try:
        return list(store.iter_blocks())
    finally:
        store.close()


def test_replay_rebuilds_the_stored_state_in_both_modes(chain: Path) -> None:
    for signatures in (False, True):
        result = replay_file(chain, ACCOUNTS, signatures)
        assert (result["blocks"], result["txs"]) == (12, 180)


def test_a_block_without_a_valid_certificate_stops_the_replay(chain: Path) -> None:
    genesis, _ = genesis_for(ACCOUNTS)
    config = PbftConfig(genesis.chain_id, genesis.members)
    blocks = blocks_of(chain)
    blocks[5] = blocks[5].with_proof(b"")
    with pytest.raises(InvalidBlock, match="block 6"):
        replay(genesis, config, blocks)


def test_a_changed_tx_is_caught_by_the_roots_even_without_signature_checks(chain: Path) -> None:
    genesis, keys = genesis_for(ACCOUNTS)
    config = PbftConfig(genesis.chain_id, genesis.members)
    blocks = blocks_of(chain)
    victim = blocks[3]
    forged = transfer(keys[0], genesis.chain_id, 999, keys[1].address, 10**6)
    blocks[3] = replace(victim, txs=(forged, *victim.txs[1:]))
    with pytest.raises(InvalidBlock, match="block 4"):
        replay(genesis, config, blocks)


def test_blocks_out_of_order_are_refused(chain: Path) -> None:
    genesis, _ = genesis_for(ACCOUNTS)
    config = PbftConfig(genesis.chain_id, genesis.members)
    blocks = blocks_of(chain)
    with pytest.raises(InvalidBlock, match="does not follow"):
        replay(genesis, config, [blocks[0], blocks[2]])
