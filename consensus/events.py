"""The inputs a sans-IO replica consumes and the actions it returns.

A replica never performs I/O, sleeps or reads a clock: the runtime (or the
simulator) feeds it events with the current time and carries out its actions
in order.  Carrying them out in order is what makes "durable before
acknowledged" hold: a `CommitBlock` is stored before any later `Send`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.block import Block
from ledger.encoding import Struct
from ledger.state import Receipt, State
from ledger.tx import Tx


@dataclass(frozen=True)
class MessageReceived:
    """A decoded message from an authenticated peer (`sender` is its node id)."""

    sender: str
    message: Struct


@dataclass(frozen=True)
class ClientTx:
    """A client transaction whose stateless checks (signature, chain id) already passed."""

    tx: Tx


@dataclass(frozen=True)
class TimerFired:
    name: str


@dataclass(frozen=True)
class BlockMined:
    """The miner found `nonce` for mining job `job` (proof of work)."""

    job: int
    nonce: int


Event = MessageReceived | ClientTx | TimerFired | BlockMined


@dataclass(frozen=True)
class Send:
    to: str
    message: Struct


@dataclass(frozen=True)
class Broadcast:
    """Send to every other member."""

    message: Struct


@dataclass(frozen=True)
class SetTimer:
    """Fire `TimerFired(name)` after `delay_ms`; setting a timer again replaces it."""

    name: str
    delay_ms: int


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class CommitBlock:
    """A block is final: store it (with its proof) before doing anything else."""

    block: Block
    receipts: tuple[Receipt, ...]
    state: State


@dataclass(frozen=True)
class Persist:
    """Write this signed message (or proof) durably before any later action is carried out.

    `seq` and `view` key it for pruning: seq >= 0 for per-sequence records, -1 for
    view-change records.
    """

    message: Struct
    seq: int
    view: int


@dataclass(frozen=True)
class PruneLog:
    """Persisted records below a new stable checkpoint or an old view are no longer needed."""

    below_seq: int
    below_view: int


@dataclass(frozen=True)
class Evidence:
    """Member `member` signed two contradicting messages: report them on the ledger."""

    member: str
    a: Struct
    b: Struct


@dataclass(frozen=True)
class Mine:
    """Search nonces for this work prefix until one meets `target`; a new job replaces it."""

    job: int
    prefix: bytes
    target: int


@dataclass(frozen=True)
class SwitchChain:
    """A reorganisation: drop the blocks above `fork_height` and store `blocks` (with their
    receipts) in their place, ending in `state`, atomically."""

    fork_height: int
    blocks: tuple[tuple[Block, tuple[Receipt, ...]], ...]
    state: State


Action = (
    Send
    | Broadcast
    | SetTimer
    | CancelTimer
    | CommitBlock
    | Persist
    | PruneLog
    | Evidence
    | Mine
    | SwitchChain
)
