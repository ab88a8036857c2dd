"""The simulator runs the node's own driver, so it tests the driver's durability ordering.

A store that acknowledges a write and loses it is what a driver that sent a vote before
persisting it would leave behind after a crash.  With that store under the real driver, a
restarted replica no longer knows what it signed and contradicts itself: the simulator's
checker must see it.  With the real store, the same seeds pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger.block import Genesis
from ledger.store import Store
from node.engines import chain_engines
from node.sim.faults import Crash, FaultPlan
from node.sim.run import run_sim

SEEDS = range(8)
# The primary of view 0 crashes and comes back before its peers time out on it, every 200 ms,
# each time with batches of its own in flight.
PLAN = FaultPlan(crashes=tuple(Crash("n0", at, at + 5) for at in range(300, 2700, 200)))


class ForgetfulStore(Store):
    """Says it persisted the consensus records it was given, and keeps none of them."""

    def persist(self, records: Sequence[tuple[int, int, bytes]]) -> None:
        pass


def forgetful(genesis: Genesis) -> Store:
    return ForgetfulStore(":memory:", genesis, engines=chain_engines())


def failures(seed: int, open_store: Callable[[Genesis], Store] | None = None) -> list[str]:
    report, _ = run_sim(4, seed, 3.0, PLAN, rate=100, open_store=open_store)
    return [v.name for v in report.verdicts if not v.ok]


def test_the_real_store_keeps_every_seed_consistent() -> None:
    assert all(failures(seed) == [] for seed in SEEDS)


def test_a_store_that_loses_acknowledged_writes_fails_the_consistency_verdict() -> None:
    broken = {seed: failures(seed, forgetful) for seed in SEEDS}
    assert any("consistency" in names for names in broken.values()), broken
