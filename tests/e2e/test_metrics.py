"""`GET /metrics` on real node processes, parsed with prometheus-client's own text parser:
every metric is there from the start at zero, and moves with the work the cluster does."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.errors import LedgerError
from ledger.tx import transfer
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.process.metrics import MESSAGE_KINDS, _reasons
from node.rpc.client import RpcClient
from node.rpc.jsonrpc import RpcError
from tests.helpers.livecluster import live_cluster
from tests.helpers.wait import wait_for

ACCOUNTS = {"alice": 1_000_000, "bob": 1_000_000}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Every metric the issue lists, by the name its samples carry
GAUGES = (
    "tally_height",
    "tally_view",
    "tally_stable_checkpoint",
    "tally_mempool_txs",
    "tally_input_queue_events",
    "tally_peers_connected",
)
COUNTERS = (
    "tally_txs_committed_total",
    "tally_blocks_committed_total",
    "tally_view_changes_total",
    "tally_reorgs_total",
)
HISTOGRAMS = (
    "tally_submit_to_commit_seconds",
    "tally_block_execution_seconds",
    "tally_store_commit_seconds",
    "tally_signature_check_seconds",
    "tally_reorg_depth_blocks",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    with live_cluster(
        tmp_path_factory.mktemp("metrics"), "metrics", ACCOUNTS, {"batch_wait_ms": 5}
    ) as cfg:
        yield cfg


async def scrape(cfg: ClusterConfig, node: int = 0) -> Samples:
    url = cfg.nodes[node].rpc_url.removesuffix("/rpc") + "/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def test_every_metric_is_there_at_startup_at_zero(cluster: ClusterConfig) -> None:
    samples = await scrape(cluster)
    names = {name for name, _ in samples}
    for name in GAUGES + COUNTERS:
        assert name in names, name
    for name in HISTOGRAMS:
        assert value(samples, f"{name}_count") == 0, name
        assert value(samples, f"{name}_bucket", le="+Inf") == 0, name
    for name in COUNTERS:
        assert value(samples, name) == 0, name
    assert value(samples, "tally_height") == 0
    for reason in _reasons(LedgerError):
        assert value(samples, "tally_txs_refused_total", reason=reason) == 0, reason
    for kind in MESSAGE_KINDS:
        assert ("tally_messages_sent_total", (("kind", kind),)) in samples, kind
        assert ("tally_messages_received_total", (("kind", kind),)) in samples, kind
    peers = [n.id for n in cluster.nodes[1:]]
    for peer in peers:
        assert ("tally_peer_last_message_timestamp_seconds", (("peer", peer),)) in samples


async def test_the_metrics_follow_a_commit_and_a_refusal(cluster: ClusterConfig) -> None:
    genesis = load_genesis(cluster)
    alice, bob = account_key(cluster, "alice"), account_key(cluster, "bob")
    async with RpcClient(cluster.nodes[0].rpc_url, timeout=30) as client:
        tx = transfer(alice, genesis.chain_id, 0, bob.address, 3)
        done = await client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
        assert done["status"] == "ok"
        with pytest.raises(RpcError):  # nonce 0 again: refused before ordering
            await client.call("submit_tx", tx=tx.encode().hex())
    samples = await scrape(cluster)
    assert value(samples, "tally_txs_committed_total") == 1
    assert value(samples, "tally_blocks_committed_total") >= 1
    assert value(samples, "tally_height") >= 1
    assert value(samples, "tally_submit_to_commit_seconds_count") == 1
    assert value(samples, "tally_signature_check_seconds_count") >= 1
    assert value(samples, "tally_block_execution_seconds_count") >= 1
    assert value(samples, "tally_store_commit_seconds_count") >= 1
    assert value(samples, "tally_txs_refused_total", reason="bad_nonce") == 1
    assert value(samples, "tally_messages_sent_total", kind="PrePrepare") >= 1  # n0 leads
    assert value(samples, "tally_messages_received_total", kind="Prepare") >= 1

    async def all_peers_heard() -> bool:
        return value(await scrape(cluster), "tally_peers_connected") == len(cluster.nodes) - 1

    await wait_for(all_peers_heard, "n0 to hear from its three peers")
    backup = await scrape(cluster, 1)
    assert value(backup, "tally_txs_committed_total") == 1
    assert value(backup, "tally_submit_to_commit_seconds_count") == 0  # submitted at n0
