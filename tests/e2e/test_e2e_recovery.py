"""End to end, real processes: a primary killed (view change) and a backup killed, left behind
for 500 blocks, restarted (state transfer and crash recovery)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from consensus.pbft.messages import Commit, Prepare, PrePrepare
from ledger.encoding import decode_any
from ledger.tx import transfer
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from tests.helpers.livecluster import kill9, live_cluster, wait_for_status

ACCOUNTS = {f"acct{i}": 10**9 for i in range(8)}
PBFT = {
    "batch_size_max": 2,
    "batch_wait_ms": 2,
    "view_change_timeout_ms": 500,
    "status_interval_ms": 250,
    "checkpoint_interval": 32,
}


@pytest.fixture(scope="module", params=["tcp", "mqtt"])
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("recovery")
    with live_cluster(directory, "recovery", ACCOUNTS, PBFT, transport=request.param) as cfg:
        yield cfg


async def status(cfg: ClusterConfig, node: str) -> dict[str, Any]:
    async with RpcClient(cfg.node(node).rpc_url, timeout=5) as client:
        result: dict[str, Any] = await client.call("status")
        return result


class Sender:
    """Signed transfers from the cluster's accounts, nonces tracked locally."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.chain = load_genesis(cfg).chain_id
        self.keys = [account_key(cfg, name) for name in sorted(ACCOUNTS)]
        self.nonces: dict[int, int] = {}

    async def sync(self, cfg: ClusterConfig, node: str) -> None:
        async with RpcClient(cfg.node(node).rpc_url) as client:
            for i, key in enumerate(self.keys):
                acct = await client.call("get_account", address=key.address.hex())
                self.nonces[i] = acct["next_nonce"]

    def tx_hex(self, i: int) -> str:
        s = i % len(self.keys)
        key, to = self.keys[s], self.keys[(s + 1) % len(self.keys)].address
        tx = transfer(key, self.chain, self.nonces[s], to, 1)
        self.nonces[s] += 1
        return tx.encode().hex()


def persisted_votes(cfg: ClusterConfig, node: str) -> list[PrePrepare | Prepare | Commit]:
    db = sqlite3.connect(f"file:{cfg.db_path(node)}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT record FROM consensus_log").fetchall()
    finally:
        db.close()
    records = [decode_any(bytes(r[0])) for r in rows]
    return [r for r in records if isinstance(r, PrePrepare | Prepare | Commit)]


async def test_killing_the_primary_causes_a_view_change(cluster: ClusterConfig) -> None:
    cfg = cluster
    sender = Sender(cfg)
    await sender.sync(cfg, "n1")
    async with RpcClient(cfg.node("n1").rpc_url, timeout=30) as client:
        ok = await client.call("submit_tx", tx=sender.tx_hex(0), wait="commit")
        assert ok["status"] == "ok"
        before = await status(cfg, "n1")
        assert before["primary"] == "n0"
        kill9(cfg, "n0")
        # commits once the backups have replaced the primary (view 1, checked below)
        after_kill = await client.call("submit_tx", tx=sender.tx_hex(1), wait="commit")
    assert after_kill["status"] == "ok", after_kill
    rows = json.loads(_cli(cfg, "status", "--json").stdout)
    live = [r for r in rows if "error" not in r]
    assert len(live) == 3 and {r["view"] for r in live} == {1}
    assert {r["primary"] for r in live} == {"n1"} and "error" in rows[0]
    # the old primary comes back as a backup and learns the new view
    await asyncio.to_thread(launcher.up, cfg)
    top = (await status(cfg, "n1"))["height"]
    back = await wait_for_status(
        cfg, "n0", lambda s: s["height"] >= top and s["view"] == 1, "the new view"
    )
    assert back["role"] == "backup" and back["view_active"]


async def test_a_backup_down_for_500_blocks_catches_up_and_never_contradicts_itself(
    cluster: ClusterConfig,
) -> None:
    cfg = cluster
    sender = Sender(cfg)
    await sender.sync(cfg, "n1")
    votes_before = persisted_votes(cfg, "n3")
    assert votes_before, "a running backup must have persisted its votes"
    kill9(cfg, "n3")
    start = (await status(cfg, "n1"))["height"]
    async with RpcClient(cfg.node("n1").rpc_url, timeout=30) as client:
        while (await status(cfg, "n1"))["height"] < start + 500:
            await client.batch([("submit_tx", {"tx": sender.tx_hex(i)}) for i in range(64)])
            await asyncio.sleep(0.05)
    target = await wait_for_status(cfg, "n1", lambda s: s["mempool"] == 0, "an empty mempool")
    await asyncio.to_thread(launcher.up, cfg)  # restarts exactly the node that is down
    caught = await wait_for_status(
        cfg, "n3", lambda s: s["height"] >= target["height"], "n1's height"
    )
    n1 = await status(cfg, "n1")  # the cluster is idle now: both at the same block
    assert (caught["height"], caught["last_block_hash"]) == (n1["height"], n1["last_block_hash"])
    assert caught["stable_checkpoint"] >= start + 500 - 2 * PBFT["checkpoint_interval"]
    verify = _cli(cfg, "verify", "--node", "n3")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    signed: dict[tuple[int, int, int], bytes] = {}
    for vote in votes_before + persisted_votes(cfg, "n3"):
        assert vote.replica == 3
        key = (vote.TAG, vote.view, vote.seq)
        assert signed.setdefault(key, vote.digest) == vote.digest, f"n3 contradicted {key}"


async def test_consensus_state_shows_the_replica_in_flight(cluster: ClusterConfig) -> None:
    async with RpcClient(cluster.node("n2").rpc_url) as client:
        state = await client.call("consensus_state")
    assert state["view"] >= 1 and state["active"] is True
    assert state["high_watermark"] - state["stable_checkpoint"] == 2 * PBFT["checkpoint_interval"]
    assert state["memory"]["log_slots"] <= 2 * PBFT["checkpoint_interval"]
    assert set(state["peer_heights"]) <= {"n0", "n1", "n3"}


def _cli(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
