"""The dashboard's pure parts: metrics scrapes into rates, node statuses into the snapshot
the browser draws.  No I/O here; node/dashboard/server.py fetches and pushes."""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

# One source of truth for the dashboard's defaults (the CLI's options read them too)
HOST = "127.0.0.1"
PORT = 8090
TICK_S = 1.0  # each node's status and metrics, and the snapshot pushed to browsers
CONTRACTS_EVERY_TICKS = 2  # list_contracts is a heavier read: every other tick
RPC_TIMEOUT_S = 2.0  # a node slower than this to answer a tick's calls is shown down
BLOCKS_KEPT = 50  # the recent blocks shown
HISTORY_POINTS = 300  # chart points kept: five minutes at one tick a second
BROWSER_QUEUE = 256  # messages waiting for one browser before it is dropped
NO_LISTING = "no contract listing on this node"

TXS_COMMITTED = "tally_txs_committed_total"
PEERS = "tally_peers_connected"
LATENCY = "tally_submit_to_commit_seconds"


@dataclass(frozen=True)
class Scrape:
    """The cumulative counters one /metrics read gives, at `at_s` (monotonic seconds)."""

    at_s: float
    txs: float
    latency_sum_s: float
    latency_count: float
    peers_connected: int | None = None


@dataclass(frozen=True)
class Rate:
    """One interval between two scrapes of one node."""

    seconds: float
    txs: float  # committed by the node in the interval
    latency_sum_s: float  # of the txs submitted to this node that it committed
    latency_count: float


@dataclass(frozen=True)
class Point:
    """One chart point for the cluster."""

    t_s: float  # Unix time
    tx_per_s: float | None
    latency_ms: float | None  # mean submit-to-commit over the interval; None: no commits


def parse_metrics(text: str, at_s: float) -> Scrape:
    """The committed-tx counter and the latency histogram's _sum and _count of one scrape."""
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in (TXS_COMMITTED, PEERS, f"{LATENCY}_sum", f"{LATENCY}_count")
    }
    peers = samples.get(PEERS)
    return Scrape(
        at_s,
        samples.get(TXS_COMMITTED, 0.0),
        samples.get(f"{LATENCY}_sum", 0.0),
        samples.get(f"{LATENCY}_count", 0.0),
        None if peers is None else int(peers),
    )


def rate(before: Scrape, after: Scrape) -> Rate | None:
    """What happened between two scrapes; None if they cannot be compared (no time between
    them, or counters that went down: the node restarted)."""
    seconds = after.at_s - before.at_s
    deltas = (
        after.txs - before.txs,
        after.latency_sum_s - before.latency_sum_s,
        after.latency_count - before.latency_count,
    )
    if seconds <= 0 or min(deltas) < 0:
        return None
    return Rate(seconds, *deltas)


def cluster_point(t_s: float, rates: list[Rate]) -> Point:
    """Every node commits every tx, so the cluster's tx/s is the fastest node's (a node
    behind catches up in bursts); each tx's latency is measured by the node it was submitted
    to, so the mean latency pools every node's histogram."""
    if not rates:
        return Point(t_s, None, None)
    tx_per_s = max(r.txs / r.seconds for r in rates)
    count = sum(r.latency_count for r in rates)
    latency = 1000 * sum(r.latency_sum_s for r in rates) / count if count else None
    return Point(t_s, tx_per_s, latency)


@dataclass(frozen=True)
class NodeView:
    """One node's row: what its status says, or why it is down."""

    id: str
    up: bool
    error: str | None = None
    role: str | None = None  # primary, backup or miner
    height: int | None = None
    view: int | None = None
    view_active: bool | None = None
    primary: str | None = None
    peers: int | None = None  # connected (tally_peers_connected)
    peers_total: int = 0
    mempool: int | None = None
    txs_committed: int | None = None
    last_block_hash: str | None = None


def node_view(
    node_id: str, status: dict[str, Any] | str, peers: int | None, peers_total: int
) -> NodeView:
    """A node's row from its `status` answer, or from the error text it failed with."""
    if isinstance(status, str):
        return NodeView(node_id, up=False, error=status, peers_total=peers_total)
    return NodeView(
        node_id,
        up=True,
        role=status.get("role"),
        height=status.get("height"),
        view=status.get("view"),
        view_active=status.get("view_active"),
        primary=status.get("primary"),
        peers=peers,
        peers_total=peers_total,
        mempool=status.get("mempool"),
        txs_committed=status.get("txs_committed"),
        last_block_hash=status.get("last_block_hash"),
    )


@dataclass(frozen=True)
class Contracts:
    """The open contracts, or why there is no listing."""

    items: tuple[dict[str, Any], ...] = ()
    error: str | None = None


def snapshot(
    nodes: list[NodeView],
    history: deque[Point],
    faults: dict[str, dict[str, dict[str, Any]]],
    contracts: Contracts,
) -> dict[str, Any]:
    """The JSON document pushed to browsers each tick."""
    heights = [n.height for n in nodes if n.height is not None]
    return {
        "nodes": [asdict(n) for n in nodes],
        "height": max(heights, default=None),
        "series": {
            "t": [p.t_s for p in history],
            "tx_per_s": [p.tx_per_s for p in history],
            "latency_ms": [p.latency_ms for p in history],
        },
        "faults": {nid: list(by_id.values()) for nid, by_id in faults.items()},
        "contracts": {"items": list(contracts.items), "error": contracts.error},
    }


def apply_fault_event(active: dict[str, dict[str, Any]], event: dict[str, Any]) -> None:
    """Keep one node's active faults from its `events` stream's fault notices."""
    if event.get("type") == "fault_injected":
        fault = event["fault"]
        active[str(fault.get("id"))] = fault
    elif event.get("type") == "fault_healed":
        for fault_id in event.get("ids", []):
            active.pop(str(fault_id), None)


def block_row(event: dict[str, Any]) -> dict[str, Any]:
    """A `blocks` event, as the recent-blocks table shows it."""
    keys = ("height", "hash", "timestamp_ms", "proposer", "txs")
    return {k: event.get(k) for k in keys}
