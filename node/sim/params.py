"""The simulator's consensus parameters: the same PbftParams and PowParams that cluster.toml
is read into, with a few explicit overrides for short simulated runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, TypeVar

from consensus.pbft.config import PbftConfig, PbftParams
from consensus.pow.config import PowConfig, PowParams
from ledger.block import Member

POW_SIM_DIFFICULTY = 16  # expected hashes per block: proofs are real, and cheap to find
SIM_PBFT = PbftParams(batch_size_max=50, batch_wait_ms=5)  # small blocks, short waits
SIM_POW = PowParams(initial_difficulty=POW_SIM_DIFFICULTY)

# What a simulation takes: whole params, or overrides of the simulator's by name.
SimParams = PbftParams | PowParams | Mapping[str, Any] | None
P = TypeVar("P", PbftParams, PowParams)


def sim_params(base: P, config: SimParams) -> P:
    """`config` itself when it is params of `base`'s kind, else `base` with its overrides."""
    if config is None:
        return base
    if isinstance(config, Mapping):
        return replace(base, **config)
    if type(config) is not type(base):
        raise TypeError(f"{type(base).__name__} expected, got {type(config).__name__}")
    return config


def sim_config(
    consensus: str, chain_id: str, members: tuple[Member, ...], config: SimParams
) -> PbftConfig | PowConfig:
    if consensus == "pow":
        return PowConfig.of(chain_id, members, sim_params(SIM_POW, config))
    return PbftConfig.of(chain_id, members, sim_params(SIM_PBFT, config))
