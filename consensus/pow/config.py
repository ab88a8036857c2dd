"""Proof-of-work parameters shared by every member of a cluster."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.pow.difficulty import bits_to_target, target_to_bits
from ledger.block import Member

REGTEST_LIMIT_BITS = 0x207FFFFF  # the easiest target allowed (about 2**255), as Bitcoin regtest


@dataclass(frozen=True)
class PowConfig:
    chain_id: str
    members: tuple[Member, ...]
    target_block_ms: int = 1000
    retarget_interval: int = 10  # blocks
    confirmations: int = 6  # depth at which a block counts as final
    initial_difficulty: int = 200_000  # expected hashes per block before the first retarget
    limit_bits: int = REGTEST_LIMIT_BITS
    max_block_txs: int = 2000
    max_block_bytes: int = 1 << 20
    max_future_ms: int = 15_000  # a block time this far ahead of a node's clock is refused
    tip_interval_ms: int = 500  # tip beacons, and how often a stale template is refreshed
    max_orphans: int = 256
    reorg_horizon: int = 512  # blocks of recent states kept for rolling back

    def __post_init__(self) -> None:
        if not self.members or len({m.node_id for m in self.members}) != len(self.members):
            raise ValueError("proof of work needs members with unique node ids")
        if self.target_block_ms < 1 or self.retarget_interval < 1 or self.confirmations < 1:
            raise ValueError("target_block_ms, retarget_interval and confirmations must be >= 1")
        if self.initial_difficulty < 1:
            raise ValueError("initial_difficulty must be >= 1 (expected hashes per block)")
        bits_to_target(self.limit_bits)

    @property
    def initial_bits(self) -> int:
        target = min(2**256 // self.initial_difficulty, bits_to_target(self.limit_bits))
        return target_to_bits(target)

    def member_key(self, node_id: str) -> bytes | None:
        return next((m.public_key for m in self.members if m.node_id == node_id), None)
