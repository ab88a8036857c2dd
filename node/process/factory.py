"""The one place that chooses a consensus kind: a replica for a store, by its config."""

from __future__ import annotations

from consensus.pbft.config import PbftConfig
from consensus.pbft.replica import Replica
from consensus.pow.config import PowConfig
from consensus.pow.replica import PowReplica
from consensus.replica import ConsensusReplica
from ledger.block import Genesis
from ledger.crypto import KeyPair
from ledger.encoding import decode_any
from ledger.store import Store
from node.cluster.bootstrap import pbft_config, pow_config
from node.cluster.config import ClusterConfig
from node.process.powboot import recent_chain

ConsensusConfig = PbftConfig | PowConfig


def consensus_config(cfg: ClusterConfig, genesis: Genesis) -> ConsensusConfig:
    """The consensus parameters cluster.toml asks for, for this chain's members."""
    return pow_config(cfg, genesis) if cfg.consensus == "pow" else pbft_config(cfg, genesis)


def open_replica(
    config: ConsensusConfig, member: str, key: KeyPair, store: Store
) -> ConsensusReplica:
    """The replica of `member`, resumed from what its store holds (after a crash too)."""
    if isinstance(config, PowConfig):
        return PowReplica(config, member, key, recent_chain(store, config))
    records = [decode_any(r) for r in store.consensus_records()]
    return Replica(config, member, key, store.state, store.last_header, records)


def mines(config: ConsensusConfig) -> bool:
    """Whether this kind's replicas need a miner beside them."""
    return isinstance(config, PowConfig)
