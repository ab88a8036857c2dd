"""The dashboard's pure parts (node/dashboard/model.py): two metrics scrapes into tx/s and
mean latency, and the snapshot the browser draws, from fake statuses with a node down."""

from __future__ import annotations

from collections import deque

import pytest

from node.dashboard import model
from node.dashboard.model import Contracts, Point, Scrape


def metrics_text(txs: int, latency_sum: float, latency_count: int, peers: int = 3) -> str:
    """A node's /metrics text, as prometheus-client writes it (the parts the dashboard reads
    and a neighbour that it must not confuse them with)."""
    return f"""# HELP tally_txs_committed Txs in blocks this process committed
# TYPE tally_txs_committed counter
tally_txs_committed_total {txs}.0
# HELP tally_blocks_committed Blocks this process committed
# TYPE tally_blocks_committed counter
tally_blocks_committed_total 999.0
# HELP tally_peers_connected Peers heard from in the last 5 s
# TYPE tally_peers_connected gauge
tally_peers_connected {peers}.0
# HELP tally_submit_to_commit_seconds From a tx's acceptance to its commit
# TYPE tally_submit_to_commit_seconds histogram
tally_submit_to_commit_seconds_bucket{{le="0.1"}} {latency_count}.0
tally_submit_to_commit_seconds_bucket{{le="+Inf"}} {latency_count}.0
tally_submit_to_commit_seconds_count {latency_count}.0
tally_submit_to_commit_seconds_sum {latency_sum}
"""


def test_two_scrapes_give_tx_per_second_and_mean_latency() -> None:
    before = model.parse_metrics(metrics_text(100, 1.5, 10), at_s=10.0)
    after = model.parse_metrics(metrics_text(300, 3.5, 30, peers=2), at_s=12.0)
    assert after == Scrape(12.0, 300.0, 3.5, 30.0, peers_connected=2)
    step = model.rate(before, after)
    assert step is not None
    point = model.cluster_point(1e9, [step])
    assert point.tx_per_s == pytest.approx(100.0)  # 200 txs in 2 s
    assert point.latency_ms == pytest.approx(100.0)  # 2 s of latency over 20 txs


def test_cluster_rate_is_the_fastest_node_and_latency_pools_every_node() -> None:
    a = model.Rate(seconds=1.0, txs=50, latency_sum_s=0.2, latency_count=10)
    b = model.Rate(seconds=1.0, txs=80, latency_sum_s=0.0, latency_count=0)
    c = model.Rate(seconds=2.0, txs=100, latency_sum_s=1.0, latency_count=10)
    point = model.cluster_point(5.0, [a, b, c])
    assert point.tx_per_s == 80
    assert point.latency_ms == pytest.approx(1000 * 1.2 / 20)


def test_no_commits_is_no_latency_and_a_restart_is_no_rate() -> None:
    idle = model.Rate(seconds=1.0, txs=0, latency_sum_s=0.0, latency_count=0)
    assert model.cluster_point(1.0, [idle]) == Point(1.0, 0.0, None)
    assert model.cluster_point(1.0, []) == Point(1.0, None, None)
    before = Scrape(1.0, 500, 2.0, 40)
    assert model.rate(before, Scrape(2.0, 3, 0.1, 2)) is None  # counters reset
    assert model.rate(before, Scrape(1.0, 600, 2.0, 40)) is None  # no time between


def test_a_snapshot_from_statuses_with_a_node_down() -> None:
    status = {
        "node_id": "n0",
        "role": "primary",
        "height": 7,
        "view": 0,
        "view_active": True,
        "primary": "n0",
        "mempool": 2,
        "txs_committed": 12,
        "last_block_hash": "ab" * 32,
    }
    nodes = [
        model.node_view("n0", status, peers=2, peers_total=3),
        model.node_view("n1", status | {"role": "backup", "height": 6}, 3, 3),
        model.node_view("n2", "cannot reach node at http://127.0.0.1:1/rpc", None, 3),
    ]
    history = deque([Point(1.0, 5.0, 12.5), Point(2.0, None, None)])
    faults: dict[str, dict[str, dict[str, object]]] = {"n0": {}, "n1": {}, "n2": {}}
    model.apply_fault_event(faults["n1"], {"type": "fault_injected", "fault": {"id": "f1"}})
    model.apply_fault_event(faults["n1"], {"type": "fault_injected", "fault": {"id": "f2"}})
    model.apply_fault_event(faults["n1"], {"type": "fault_healed", "ids": ["f1"]})
    snap = model.snapshot(nodes, history, faults, Contracts(error=model.NO_LISTING))

    assert snap["height"] == 7
    rows = {n["id"]: n for n in snap["nodes"]}
    assert rows["n0"]["up"] and rows["n0"]["role"] == "primary" and rows["n0"]["peers"] == 2
    assert rows["n1"]["role"] == "backup" and rows["n1"]["height"] == 6
    down = rows["n2"]
    assert not down["up"] and "cannot reach" in down["error"] and down["height"] is None
    assert snap["series"] == {"t": [1.0, 2.0], "tx_per_s": [5.0, None], "latency_ms": [12.5, None]}
    assert snap["faults"] == {"n0": [], "n1": [{"id": "f2"}], "n2": []}
    assert snap["contracts"] == {"items": [], "error": model.NO_LISTING}


def test_every_node_down_has_no_height() -> None:
    nodes = [model.node_view(n, "timed out", None, 3) for n in ("n0", "n1")]
    snap = model.snapshot(nodes, deque(), {}, Contracts())
    assert snap["height"] is None and all(not n["up"] for n in snap["nodes"])
