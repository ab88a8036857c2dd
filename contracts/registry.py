"""The contract engines this software can run, by name: the one table a chain's engines are
chosen from (by `node.engines.chain_engines`).  Importing a module registers nothing: a
State executes only the engines it is explicitly given."""

from __future__ import annotations

from contracts.exchange import ExchangeEngine
from contracts.risk_sharing.engine import RiskSharingEngine
from ledger.contract import Engines, engine_table

ENGINES: Engines = engine_table(ExchangeEngine(), RiskSharingEngine())  # read-only


def engines(*names: str) -> Engines:
    """The engines named (all of them when none is named); an unknown name is an error."""
    unknown = [n for n in names if n not in ENGINES]
    if unknown:
        raise KeyError(
            f"no contract engine {', '.join(map(repr, unknown))}; known: {list(ENGINES)}"
        )
    return engine_table(*(ENGINES[n] for n in names)) if names else ENGINES
