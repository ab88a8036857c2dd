"""A node's Prometheus metrics, served at `GET /metrics` (prometheus-client's text format).

Every metric exists from the node's start, at zero, so none is missing before its first
use (a dashboard or an alert on a fresh node sees 0, not "no data"): the histograms are
made at start-up, and the rest are read from the node at each scrape by one collector,
which writes every known label (each tx refusal reason, each consensus message kind, each
peer) whether or not it has happened yet.  Reading at scrape time keeps the hot path free:
the counters are the ones the node already keeps (`Driver.sent`, `Driver.errors`, the
replica's `stats`, the transport's `stats`), so a scrape costs the node nothing until it
happens.  The registry is the node's own, not prometheus-client's global one.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from consensus.messages import Blocks, FetchBlocks, ForwardTxs
from consensus.pbft.messages import (
    Checkpoint,
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    Status,
    ViewChange,
)
from consensus.pow.seal import PowTip
from consensus.replica import PbftStatus
from ledger.block import Block
from ledger.errors import LedgerError

if TYPE_CHECKING:  # what the collector reads of a node (a NodeRuntime), named by its parts
    import asyncio

    from consensus.events import Event
    from consensus.replica import ConsensusReplica
    from ledger.store import Store
    from node.process.driver import Driver
    from node.process.subscriptions import Hub
    from node.transport.base import Transport


class Node(Protocol):
    node_id: str
    peers: list[str]
    last_heard: dict[str, float]
    commits: Commits
    store: Store
    replica: ConsensusReplica
    queue: asyncio.Queue[Event]
    driver: Driver
    errors: Counter[str]
    transport: Transport
    hub: Hub


__all__ = ["CONTENT_TYPE_LATEST", "NodeMetrics"]

# The kinds a replica sends, labelled at zero from the start (others appear when seen)
MESSAGE_KINDS = tuple(
    c.__name__
    for c in (
        PrePrepare,
        Prepare,
        Commit,
        Checkpoint,
        ViewChange,
        NewView,
        Status,
        ForwardTxs,
        FetchBlocks,
        Blocks,
        PowTip,
    )
)
# A peer heard from within this long is connected: the same for TCP and MQTT, and a peer
# sends at least a status heartbeat every `status_interval_ms` (500 ms by default)
PEER_SILENT_S = 5.0
# Seconds; from a fast fsync to a view change's worth of waiting
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _reasons(cls: type[LedgerError]) -> list[str]:
    """Every reason a tx can be refused for: the names of LedgerError's subclasses."""
    out = []
    for sub in cls.__subclasses__():
        out += [sub.name, *_reasons(sub)]
    return sorted(set(out))


class NodeMetrics:
    """The node's registry, its histograms, and what the node reports into them."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=BUCKETS, registry=self.registry)

        self.latency = histogram(
            "tally_submit_to_commit_seconds",
            "From a tx's acceptance by this node's RPC to its block's commit on this node",
        )
        self.execution = histogram(
            "tally_block_execution_seconds",
            "The replica step that executed and committed a block, per block",
        )
        self.store = histogram(
            "tally_store_commit_seconds",
            "One turn's store transaction: its blocks and votes written, and the fsync",
        )
        self.signature = histogram(
            "tally_signature_check_seconds",
            "The stateless check of a tx submitted here: its shape and Ed25519 signature",
        )
        self.reorg_depth = histogram(
            "tally_reorg_depth_blocks", "Blocks dropped by each reorganisation (proof of work)"
        )
        self.registry.register(_NodeCollector(node))

    def observe(self, what: str, seconds: float) -> None:
        """The driver's observer (node/process/driver.py, `Shell.observe`)."""
        (self.execution if what == "execution" else self.store).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    """The gauges and counters, read from the node at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.tx_reasons = _reasons(LedgerError)

    def collect(self) -> Iterator[Metric]:
        yield from self._chain()
        yield from self._messages()
        yield from self._refusals()
        yield from self._peers()

    def _chain(self) -> Iterator[Metric]:
        node, status = self.node, self.node.replica.status()
        view, stable = (
            (status.view, status.stable_checkpoint) if isinstance(status, PbftStatus) else (0, 0)
        )
        stats = node.replica.stats
        yield _gauge("tally_height", "Height of this node's last stored block", node.store.height)
        yield _gauge("tally_view", "PBFT view (0 for proof of work)", view)
        yield _gauge("tally_stable_checkpoint", "PBFT stable checkpoint (0 for PoW)", stable)
        yield _gauge("tally_mempool_txs", "Txs waiting to be ordered", len(node.replica.mempool))
        yield _gauge(
            "tally_input_queue_events", "Events waiting for the replica", node.queue.qsize()
        )
        yield _counter(
            "tally_blocks_committed", "Blocks this process committed", node.commits.blocks
        )
        yield _counter(
            "tally_txs_committed", "Txs in blocks this process committed", node.commits.txs
        )
        yield _counter(
            "tally_view_changes", "View changes this replica started", stats["view_changes_started"]
        )
        yield _counter("tally_reorgs", "Reorganisations (proof of work)", stats["reorgs"])
        hub = node.hub
        yield _gauge("tally_subscribers", "Live subscriptions (WebSocket and SSE)", len(hub.live))
        yield _counter(
            "tally_subscriber_overflows", "Subscribers closed for falling behind", hub.overflows
        )
        events = CounterMetricFamily(
            "tally_consensus_events", "The replica's own counters, by event", labels=["event"]
        )
        for event, count in sorted(stats.items()):
            events.add_metric([event], count)
        yield events

    def _messages(self) -> Iterator[Metric]:
        driver = self.node.driver
        for way, counts in (("sent", driver.sent), ("received", driver.received)):
            family = CounterMetricFamily(
                f"tally_messages_{way}",
                f"Consensus messages {way}, by kind (a broadcast counts once)",
                labels=["kind"],
            )
            for kind in sorted(set(MESSAGE_KINDS) | set(counts)):
                family.add_metric([kind], counts[kind])
            yield family

    def _refusals(self) -> Iterator[Metric]:
        errors, transport = self.node.errors, self.node.transport.stats
        txs = CounterMetricFamily(
            "tally_txs_refused", "Txs refused before ordering, by reason", labels=["reason"]
        )
        for reason in self.tx_reasons:
            txs.add_metric([reason], errors[reason])
        yield txs
        refused: dict[str, int] = {
            "bad_frame": errors["bad_frame"],
            "bad_handshake": transport.bad_handshakes,
            "oversize_frame": transport.oversize_frames,
            "dropped_full_queue": transport.frames_dropped,
        }
        refused |= transport.rejected
        messages = CounterMetricFamily(
            "tally_messages_refused", "Peer frames refused, by reason", labels=["reason"]
        )
        for reason, count in sorted(refused.items()):
            messages.add_metric([reason], count)
        yield messages

    def _peers(self) -> Iterator[Metric]:
        seen, now = self.node.last_heard, time.time()
        peers = [p for p in self.node.peers if p != self.node.node_id]
        last = GaugeMetricFamily(
            "tally_peer_last_message_timestamp_seconds",
            "When a message from the peer last arrived (Unix time; 0: never)",
            labels=["peer"],
        )
        for peer in peers:
            last.add_metric([peer], seen.get(peer, 0.0))
        yield last
        connected = sum(1 for p in peers if now - seen.get(p, 0.0) < PEER_SILENT_S)
        yield _gauge(
            "tally_peers_connected", f"Peers heard from in the last {PEER_SILENT_S:g} s", connected
        )


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class Commits:
    """Blocks and txs this process committed, counted by the driver's commit hook."""

    def __init__(self) -> None:
        self.blocks = 0
        self.txs = 0

    def __call__(self, block: Block, receipts: tuple[Any, ...]) -> None:
        self.blocks += 1
        self.txs += len(block.txs)
