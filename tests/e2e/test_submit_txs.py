"""`submit_txs` on a live node (issue 18 item 3): RpcClient.submit_txs splits txs into calls
of the node's max_batch, the txs commit, refusals come back per tx as submit_tx's errors, and
the load generator submits with it and keeps its output format."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.block import Genesis
from ledger.tx import Tx, transfer
from node.bench import loadgen
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient, RpcError
from tests.helpers.livecluster import live_cluster
from tests.helpers.wait import wait_for

MAX_BATCH = 10
RPC_TOML = f"\n[rpc]\nmax_batch = {MAX_BATCH}\n"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("submittxs")
    accounts = {"alice": 10_000, "bob": 10_000}
    with live_cluster(directory, "submittxs", accounts, {}, RPC_TOML) as cfg:
        yield cfg


def transfers(cfg: ClusterConfig, genesis: Genesis, first: int, count: int) -> list[Tx]:
    alice, bob = account_key(cfg, "alice"), account_key(cfg, "bob")
    return [transfer(alice, genesis.chain_id, n, bob.address, 1) for n in range(first, count)]


async def test_txs_split_by_max_batch_commit_and_replays_are_refused_per_tx(
    cluster: ClusterConfig,
) -> None:
    genesis = load_genesis(cluster)
    txs = transfers(cluster, genesis, 0, 25)
    async with RpcClient(cluster.nodes[0].rpc_url) as client:
        answers = await client.submit_txs([t.encode() for t in txs], size=16)
        assert client.max_batch == MAX_BATCH  # 16 was refused; it learnt the node's limit
        assert answers == [{"tx_id": t.tx_id.hex(), "status": "pending"} for t in txs]

        async def all_committed() -> bool:
            calls = [("get_tx", {"tx_id": t.tx_id.hex()}) for t in txs]
            return all(
                isinstance(r, dict) and r.get("status") == "ok" for r in await client.batch(calls)
            )

        await wait_for(all_committed, "the 25 txs to commit")
        again = await client.submit_txs([txs[0].encode().hex(), txs[-1].encode(), b"\x00"])
        assert [type(a) for a in again] == [RpcError] * 3
        errors: list[Any] = [a.data for a in again if isinstance(a, RpcError)]
        assert errors == [{"error": "bad_nonce"}] * 2 + [{"error": "malformed_tx"}]
        account = await client.call(
            "get_account", address=account_key(cluster, "alice").address.hex()
        )
        assert account["nonce"] == 25 and account["balance"] == 10_000 - 25


async def test_the_load_generator_submits_in_batches_and_reports_as_before(
    cluster: ClusterConfig,
) -> None:
    result = await loadgen.run(cluster, rate=0, duration=1.0, drain_s=20.0, total=60, batch=7)
    assert set(result) == {
        "mode",
        "offered_tps",
        "duration_s",
        "submitted",
        "rejected",
        "committed",
        "committed_tps",
        "latency_ms",
    }
    assert result["mode"] == "saturation" and result["offered_tps"] is None
    assert (result["submitted"], result["rejected"], result["committed"]) == (60, 0, 60)
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "mean"}
