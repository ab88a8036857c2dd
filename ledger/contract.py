"""The ledger's side of contracts: records in the state, and the engine interface.

Contract engines live in `contracts/`; the ledger never imports them (imports point
node -> contracts -> ledger).  Whoever builds a State hands it the engines, by name,
that the chain runs (`Engines`); nothing registers itself at import, so what a block
does never depends on what happened to be imported.  An engine is a deterministic
state machine: given its encoded state, an operation and the context, it returns an
Effect (its new state and the money to move), or raises ContractError, which fails
the tx with that reason and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from ledger.encoding import Struct, Tag, hash_bytes

BURN_ADDRESS = hash_bytes(b"tally/burn")[:20]  # the protocol account that burnt money goes to
MAX_WINDOW = 10_000_000  # the longest a contract may give a move: seconds of ledger time (115 days)


class ContractError(Exception):
    """A contract refused an operation; `reason` becomes the tx's receipt."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ContractRecord(Struct):
    """One contract in the state: its engine, its encoded state, the money it holds."""

    TAG = Tag.CONTRACT
    contract_id: bytes
    engine: str
    data: bytes
    escrow: int
    active: bool


def _no_balance(address: bytes) -> int:
    return 0


@dataclass(frozen=True)
class Context:
    height: int
    sender: bytes  # address; empty for a deadline passing
    tx_id: bytes
    # Read-only view of the balances before this call, for engines that pay from a balance
    # when it suffices (a debit the balance cannot cover fails the whole tx).
    balance: Callable[[bytes], int] = _no_balance
    # Ledger time: the timestamp (ms) of the block being executed, chosen by its proposer
    # and bounded by the replicas; never a node's clock.  Contract deadlines are in it.
    time_ms: int = 0

    def due(self, window_s: int) -> int:
        """The deadline of a move allowed `window_s` seconds of ledger time from this block."""
        return self.time_ms + 1000 * window_s


@dataclass(frozen=True)
class Effect:
    data: bytes
    active: bool
    debits: Mapping[bytes, int] = field(default_factory=dict)  # into escrow
    credits: Mapping[bytes, int] = field(default_factory=dict)  # out of escrow
    burn: int = 0  # out of escrow, to BURN_ADDRESS


@dataclass(frozen=True)
class ContractSummary:
    """What a contract listing is searched by: where the contract stands, in its engine's
    own words (a stage or phase), and every address taking part in it."""

    phase: str
    parties: tuple[bytes, ...]


class Engine(Protocol):
    name: str

    def apply(
        self, record: ContractRecord | None, op: str, args: Mapping[str, Any], ctx: Context
    ) -> Effect: ...

    def deadline(self, record: ContractRecord) -> int | None:
        """The ledger time (ms) after which `on_deadline` must run, or None: it runs at the
        end of the first block whose timestamp is at or past it."""

    def on_deadline(self, record: ContractRecord, ctx: Context) -> Effect: ...

    def describe(self, record: ContractRecord) -> ContractSummary:
        """Its phase and parties, for the store's contract index (ledger/store.py)."""


Engines = Mapping[str, Engine]  # engine name -> engine: what a State can execute
NO_ENGINES: Engines = MappingProxyType({})


def engine_table(*engines: Engine) -> Engines:
    """An immutable name -> engine table; two engines with one name are an error."""
    table: dict[str, Engine] = {}
    for engine in engines:
        if engine.name in table:
            raise ValueError(f"two contract engines are named {engine.name!r}")
        table[engine.name] = engine
    return MappingProxyType(table)
