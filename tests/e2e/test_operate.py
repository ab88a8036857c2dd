"""End to end, real processes: operating one node of a running cluster.  A node that fails to
start stops only what that launch started (never the healthy nodes), and says why; one node
can be started (`tally up --node`) or restarted (`tally restart`) on its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.tx import transfer
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from tests.helpers.livecluster import live_cluster, wait_for_status

ACCOUNTS = {"alice": 10**9, "bob": 10**9}
PBFT = {
    "batch_size_max": 4,
    "batch_wait_ms": 2,
    "view_change_timeout_ms": 1000,
    "status_interval_ms": 250,
    "checkpoint_interval": 8,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    with live_cluster(tmp_path_factory.mktemp("operate"), "operate", ACCOUNTS, PBFT) as cfg:
        yield cfg


def tally(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def pids(cfg: ClusterConfig, nodes: list[str]) -> dict[str, int | None]:
    return {n: launcher.running_pid(cfg, n) for n in nodes}


async def commit_transfers(cfg: ClusterConfig, node: str, count: int = 1) -> int:
    """Submit `count` transfers alice -> bob to `node`, each waited until committed; return
    the height of the last."""
    key, to = account_key(cfg, "alice"), account_key(cfg, "bob").address
    chain = load_genesis(cfg).chain_id
    height = 0
    async with RpcClient(cfg.node(node).rpc_url, timeout=60) as client:
        for _ in range(count):
            nonce = (await client.call("get_account", address=key.address.hex()))["next_nonce"]
            tx = transfer(key, chain, nonce, to, 1)
            result = await client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
            assert result["status"] == "ok", result
            height = result["height"]
    return height


def damage_store(path: Path) -> None:
    """Truncate the SQLite file to half and overwrite its header, so that opening it fails."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
        f.seek(0)
        f.write(b"not a database!!" * 8)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def stop(cfg: ClusterConfig, node: str) -> None:
    pid = launcher.running_pid(cfg, node)
    assert pid is not None
    assert launcher.stop_pid(pid, grace_s=10) in ("terminated", "killed")


def test_a_node_that_fails_to_start_leaves_the_running_nodes_alone(cluster: ClusterConfig) -> None:
    asyncio.run(commit_transfers(cluster, "n0", 3))
    healthy = ["n0", "n1", "n2"]
    stop(cluster, "n3")
    damage_store(cluster.db_path("n3"))
    before = pids(cluster, healthy)
    assert None not in before.values()

    out = tally(cluster, "up")

    assert out.returncode != 0
    assert "n3" in out.stderr.splitlines()[0], out.stderr
    last_log_line = cluster.log_path("n3").read_text().strip().splitlines()[-1]
    assert last_log_line.strip() in out.stderr
    assert pids(cluster, healthy) == before  # still running, the same processes
    assert launcher.running_pid(cluster, "n3") is None
    asyncio.run(commit_transfers(cluster, "n0", 2))

    # Repaired (the store rebuilt from the peers), n3 alone is started and catches up.
    remove_store(cluster.db_path("n3"))
    out = tally(cluster, "up", "--node", "n3")
    assert out.returncode == 0, out.stderr
    assert pids(cluster, healthy) == before
    assert launcher.running_pid(cluster, "n3") is not None
    target = asyncio.run(commit_transfers(cluster, "n0", 2))
    asyncio.run(wait_for_status(cluster, "n3", lambda s: s["height"] >= target, "catch-up"))


def test_restart_one_node(cluster: ClusterConfig) -> None:
    old = launcher.running_pid(cluster, "n1")
    others = pids(cluster, ["n0", "n2", "n3"])

    out = tally(cluster, "restart", "n1")

    assert out.returncode == 0, out.stderr
    new = launcher.running_pid(cluster, "n1")
    assert new is not None and new != old
    assert pids(cluster, ["n0", "n2", "n3"]) == others
    height = asyncio.run(commit_transfers(cluster, "n1", 2))
    asyncio.run(wait_for_status(cluster, "n1", lambda s: s["height"] >= height, "commit"))


def test_restart_reports_a_node_that_fails_to_start(cluster: ClusterConfig) -> None:
    others = pids(cluster, ["n0", "n1", "n3"])
    stop(cluster, "n2")
    damage_store(cluster.db_path("n2"))

    out = tally(cluster, "restart", "n2")

    assert out.returncode != 0
    assert "n2" in out.stderr.splitlines()[0], out.stderr
    assert pids(cluster, ["n0", "n1", "n3"]) == others
    remove_store(cluster.db_path("n2"))
    out = tally(cluster, "restart", "n2")
    assert out.returncode == 0, out.stderr


def test_fault_heal_of_a_node_that_fails_to_start_leaves_the_others_alone(
    cluster: ClusterConfig,
) -> None:
    others = pids(cluster, ["n0", "n1", "n3"])
    stop(cluster, "n2")
    damage_store(cluster.db_path("n2"))

    out = tally(cluster, "fault", "heal", "--json")

    assert out.returncode != 0
    assert "n2 exited during start-up" in out.stdout, out.stdout
    assert pids(cluster, ["n0", "n1", "n3"]) == others
    asyncio.run(commit_transfers(cluster, "n0"))
    remove_store(cluster.db_path("n2"))
    out = tally(cluster, "fault", "heal")
    assert out.returncode == 0, out.stdout + out.stderr
    assert launcher.running_pid(cluster, "n2") is not None
