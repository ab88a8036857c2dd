"""The contract engines this software can run, by name: the one table a chain's engines are
chosen from (by `node.engines.chain_engines`).  Importing a module registers nothing: a
State executes only the engines it is explicitly given.

The exchange and risk sharing are engines of their own; every other mechanism is a rule
run by the one kernel engine (contracts/kernel/)."""

from __future__ import annotations

from contracts.exchange import ExchangeEngine
from contracts.kernel.engine import KernelEngine
from contracts.mechanisms.agv import AgvRule
from contracts.mechanisms.auction import AuctionRule
from contracts.mechanisms.bilateral import BilateralRule
from contracts.mechanisms.pivot import PivotRule
from contracts.risk_sharing.engine import RiskSharingEngine
from ledger.contract import Engines, engine_table

RULES = (AuctionRule(), PivotRule(), AgvRule(), BilateralRule())  # the kernel's mechanisms
ENGINES: Engines = engine_table(
    ExchangeEngine(), RiskSharingEngine(), *(KernelEngine(rule) for rule in RULES)
)  # read-only


def engines(*names: str) -> Engines:
    """The engines named (all of them when none is named); an unknown name is an error."""
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise KeyError(
            f"no contract engine {', '.join(map(repr, unknown))}; known: {list(ENGINES)}"
        )
    return engine_table(*(ENGINES[n] for n in names)) if names else ENGINES
