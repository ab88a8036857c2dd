"""The one interface every consensus kind implements, and what it shows of itself.

The node drives a replica only through `ConsensusReplica`: it feeds events, carries
out actions, and reads the typed `status()` (and the free-form `inspect()` for
debugging). The kinds differ in their status: a PBFT replica has a view and
watermarks, a PoW miner a tip and its work.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from consensus.events import Action, Event
from consensus.mempool import Mempool


@dataclass(frozen=True)
class PbftStatus:
    role: str  # "primary" or "backup"
    view: int
    view_active: bool
    primary: str
    stable_checkpoint: int
    low_watermark: int
    high_watermark: int
    kind: str = "pbft"
    final_depth: int = 1  # a block is final once it is stored


@dataclass(frozen=True)
class PowStatus:
    bits: str
    difficulty: int  # expected hashes per block at the tip
    total_work: str  # decimal: it outgrows JSON's safe integers
    orphans: int
    final_depth: int  # confirmations that make a block final
    role: str = "miner"
    kind: str = "pow"


ReplicaStatus = PbftStatus | PowStatus


class ConsensusReplica(Protocol):
    """A sans-IO replica: events in, actions out, never a clock or a socket."""

    node_id: str
    stats: Counter[str]
    mempool: Mempool

    @property
    def height(self) -> int: ...

    def start(self, now_ms: int) -> list[Action]: ...

    def step(self, event: Event, now_ms: int) -> list[Action]: ...

    def next_nonce(self, address: bytes) -> int:
        """The nonce a sender's next tx should carry, counting txs pending here."""
        ...

    def status(self) -> ReplicaStatus: ...

    def inspect(self) -> dict[str, Any]:
        """The in-flight state, for debugging (JSON-ready)."""
        ...

    def footprint(self) -> dict[str, int]:
        """Entries held per in-memory structure."""
        ...

    def evidence_refused(self, payload: dict[str, Any]) -> str | None:
        """Why an evidence tx's payload does not prove equivocation here; None if it does."""
        ...
