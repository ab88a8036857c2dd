"""Proof-of-work parameters shared by every member of a cluster.

`PowParams` are the tunables, each with its default and its rule, defined here once: a
cluster.toml `[pow]` table is read straight into one.  `PowConfig` is what a miner runs
with: the chain id and the members on top of those params.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from consensus.params import ParamError, check, rule
from consensus.pow.difficulty import BadBits, bits_to_target, target_to_bits
from ledger.block import Member

REGTEST_LIMIT_BITS = 0x207FFFFF  # the easiest target allowed (about 2**255), as Bitcoin regtest


@dataclass(frozen=True, kw_only=True)
class PowParams:
    target_block_ms: int = field(default=1000, metadata=rule(min=1))
    retarget_interval: int = field(default=10, metadata=rule(min=1))  # blocks
    confirmations: int = field(default=6, metadata=rule(min=1))  # depth at which a block is final
    # expected hashes per block before the first retarget
    initial_difficulty: int = field(default=200_000, metadata=rule(min=1))
    # compact bits of the easiest target
    limit_bits: int = REGTEST_LIMIT_BITS
    max_block_txs: int = field(default=2000, metadata=rule(min=1))
    max_block_bytes: int = field(default=1 << 20, metadata=rule(min=1))
    # a block time this far ahead of a node's clock is refused
    max_future_ms: int = field(default=15_000, metadata=rule(min=0))
    # tip beacons, and how often a stale template is refreshed
    tip_interval_ms: int = field(default=500, metadata=rule(min=1))
    max_orphans: int = field(default=256, metadata=rule(min=0))
    # blocks of recent states kept for rolling back
    reorg_horizon: int = field(default=512, metadata=rule(min=1))

    def __post_init__(self) -> None:
        check(self, PowParams)
        try:
            bits_to_target(self.limit_bits)
        except BadBits as e:
            raise ParamError(
                "limit_bits", self.limit_bits, f"must be a valid target: {e}"
            ) from None

    @property
    def kept_blocks(self) -> int:
        """Blocks behind the tip whose states a node keeps: a reorganisation may roll back
        `reorg_horizon` of them, and retargeting looks back one interval more."""
        return self.reorg_horizon + self.retarget_interval + 2

    def values(self) -> dict[str, Any]:
        """The params alone (also of a PowConfig), by name."""
        return {f.name: getattr(self, f.name) for f in fields(PowParams)}


@dataclass(frozen=True)
class PowConfig(PowParams):
    chain_id: str
    members: tuple[Member, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.members or len({m.node_id for m in self.members}) != len(self.members):
            ids = [m.node_id for m in self.members]
            raise ParamError("members", ids, "proof of work needs members with unique node ids")

    @classmethod
    def of(
        cls, chain_id: str, members: tuple[Member, ...], params: PowParams | None = None
    ) -> PowConfig:
        return cls(chain_id, members, **(params or PowParams()).values())

    @property
    def params(self) -> PowParams:
        return PowParams(**self.values())

    @property
    def initial_bits(self) -> int:
        target = min(2**256 // self.initial_difficulty, bits_to_target(self.limit_bits))
        return target_to_bits(target)

    def member_key(self, node_id: str) -> bytes | None:
        return next((m.public_key for m in self.members if m.node_id == node_id), None)
