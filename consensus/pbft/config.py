"""PBFT parameters shared by every replica of a cluster."""

from __future__ import annotations

from dataclasses import dataclass

from ledger.block import Member


@dataclass(frozen=True)
class PbftConfig:
    chain_id: str
    members: tuple[Member, ...]
    batch_size_max: int = 500
    batch_wait_ms: int = 10
    window: int = 8  # sequence numbers in flight beyond the last executed
    max_clock_skew_ms: int = 30_000

    def __post_init__(self) -> None:
        if len(self.members) < 1:
            raise ValueError("PBFT needs at least one member")
        if len({m.node_id for m in self.members}) != len(self.members):
            raise ValueError("member node ids must be unique")
        if self.batch_size_max < 1 or self.batch_wait_ms < 0 or self.window < 1:
            raise ValueError("batch_size_max and window must be >= 1, batch_wait_ms >= 0")

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        """Faults tolerated: n >= 3f + 1."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1

    def index_of(self, node_id: str) -> int:
        for i, m in enumerate(self.members):
            if m.node_id == node_id:
                return i
        raise ValueError(f"{node_id!r} is not a member")
