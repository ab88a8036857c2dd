"""The contract engines a chain runs: the one choice every State and Store in node/ is built
with (the node process, the simulators, the audit and benchmark replays).  Every replica
must make the same choice, or their blocks diverge; making it here, once, guarantees it."""

from __future__ import annotations

from contracts import registry
from ledger.contract import Engines


def chain_engines() -> Engines:
    """The engines that execute a chain's contract txs: every engine of this release."""
    return registry.engines()
