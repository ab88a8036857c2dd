"""PBFT parameters shared by every replica of a cluster.

`PbftParams` are the tunables, each with its default and its rule, defined here once: a
cluster.toml `[pbft]` table is read straight into one.  `PbftConfig` is what a replica runs
with: the chain id and the members on top of those params.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from consensus.params import ParamError, check, rule
from ledger.block import Member


@dataclass(frozen=True, kw_only=True)
class PbftParams:
    batch_size_max: int = field(default=500, metadata=rule(min=1))  # most txs in one block
    batch_wait_ms: int = field(default=10, metadata=rule(min=0))  # longest a tx waits for it
    # batches in flight beyond the last executed
    window: int = field(default=8, metadata=rule(min=1))
    # A batch that is not full is proposed only while fewer than this many are in flight:
    # under load the batches then grow with the load instead of paying per-block costs on
    # many small ones; when idle, a lone tx still goes out after batch_wait_ms.
    partial_in_flight: int = field(default=1, metadata=rule(min=1))
    checkpoint_interval: int = field(default=32, metadata=rule(min=1))  # K: a checkpoint per K
    # doubles with each view that fails in a row
    view_change_timeout_ms: int = field(default=1000, metadata=rule(min=1))
    status_interval_ms: int = field(default=500, metadata=rule(min=1))  # heartbeat period
    # ask another peer when state transfer stalls this long
    fetch_timeout_ms: int = field(default=1000, metadata=rule(min=1))
    # a proposal stamped further than this ahead of a replica's clock is refused
    max_clock_skew_ms: int = field(default=30_000, metadata=rule(min=0))

    def __post_init__(self) -> None:
        check(self, PbftParams)

    def values(self) -> dict[str, Any]:
        """The params alone (also of a PbftConfig), by name."""
        return {f.name: getattr(self, f.name) for f in fields(PbftParams)}


@dataclass(frozen=True)
class PbftConfig(PbftParams):
    chain_id: str
    members: tuple[Member, ...]

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.members) < 1:
            raise ParamError("members", len(self.members), "PBFT needs at least one member")
        if len({m.node_id for m in self.members}) != len(self.members):
            raise ParamError("members", [m.node_id for m in self.members], "ids must be unique")

    @classmethod
    def of(
        cls, chain_id: str, members: tuple[Member, ...], params: PbftParams | None = None
    ) -> PbftConfig:
        return cls(chain_id, members, **(params or PbftParams()).values())

    @property
    def params(self) -> PbftParams:
        return PbftParams(**self.values())

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
