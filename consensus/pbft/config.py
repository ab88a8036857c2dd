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
    window: int = 8  # batches in flight beyond the last executed
    # A batch that is not full is proposed only while fewer than this many are in flight:
    # under load the batches then grow with the load instead of paying per-block costs on
    # many small ones; when idle, a lone tx still goes out after batch_wait_ms.
    partial_in_flight: int = 1
    checkpoint_interval: int = 32  # K: a checkpoint every K blocks
    view_change_timeout_ms: int = 1000  # doubles with each view that fails in a row
    status_interval_ms: int = 500  # heartbeat period
    fetch_timeout_ms: int = 1000  # ask another peer when state transfer stalls this long
    max_clock_skew_ms: int = 30_000

    def __post_init__(self) -> None:
        if len(self.members) < 1:
            raise ValueError("PBFT needs at least one member")
        if len({m.node_id for m in self.members}) != len(self.members):
            raise ValueError("member node ids must be unique")
        if self.batch_size_max < 1 or self.batch_wait_ms < 0 or self.window < 1:
            raise ValueError("batch_size_max and window must be >= 1, batch_wait_ms >= 0")
        if self.partial_in_flight < 1:
            raise ValueError("partial_in_flight must be >= 1")
        if self.checkpoint_interval < 1:
            raise ValueError("checkpoint_interval must be >= 1")

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def f(self) -> int:
        """Faults tolerated: n >= 3f + 1."""
        return (self.n - 1) // 3

    @property
    def quorum(self) -> int:
        """2f+1: any two quorums share an honest replica."""
        return 2 * self.f + 1

    @property
    def weak(self) -> int:
        """f+1: at least one of them is honest."""
        return self.f + 1

    @property
    def log_size(self) -> int:
        """L: the high watermark is the stable checkpoint plus L."""
        return max(2 * self.checkpoint_interval, 2 * self.window)

    def primary(self, view: int) -> int:
        return view % self.n

    def index_of(self, node_id: str) -> int:
        for i, m in enumerate(self.members):
            if m.node_id == node_id:
                return i
        raise ValueError(f"{node_id!r} is not a member")
