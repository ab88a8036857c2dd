"""The request timer adapts to the pace of progress, and waits on while votes keep coming:
a slow but working primary is kept, a silent one is still replaced (tests/test_sim.py)."""

from __future__ import annotations

import pytest

import consensus.pbft.replica as replica_module
from node.sim.faults import FaultPlan
from node.sim.run import run_sim

# Every message takes 100 ms and one batch is in flight at a time, so blocks come every
# ~300 ms or more: slower than the 250 ms base timeout, yet the primary is working.
SLOW_NETWORK = FaultPlan(delay_ms=100, jitter_ms=0)
CONFIG = {"view_change_timeout_ms": 250, "window": 1, "status_interval_ms": 200}


def test_a_slow_but_working_primary_is_not_replaced_over_and_over() -> None:
    report, _ = run_sim(4, 3, 30.0, SLOW_NETWORK, rate=50, config=CONFIG)
    assert report.ok, report.verdicts
    assert report.max_view <= 2  # at most the changes before the pace was learned
    assert report.txs >= 1400


def test_without_pacing_the_same_run_changes_views_all_the_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The test above can fail: with a fixed timer (no pacing, no waiting on a slow quorum)
    the same run is a view-change storm."""
    monkeypatch.setattr(replica_module, "MAX_PACE", 1)
    report, _ = run_sim(4, 3, 30.0, SLOW_NETWORK, rate=50, config=CONFIG)
    assert report.max_view >= 10
