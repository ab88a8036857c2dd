"""End to end, real processes: a stopped node's SQLite file damaged in the middle (3 x 2,000
random bytes) is caught at start.  With `damaged_store = "refuse"` the node exits with one
line in its log and never answers; with "rebuild" it moves the file aside and catches up
from its peers by state transfer."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ledger.tx import transfer
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from tests.helpers.livecluster import live_cluster, node_status, wait_for_status

ACCOUNTS = {f"acct{i}": 10**9 for i in range(8)}
PBFT = {
    "batch_size_max": 16,
    "batch_wait_ms": 2,
    "view_change_timeout_ms": 500,
    "status_interval_ms": 250,
    "checkpoint_interval": 32,
}
NODE = "n3"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("damaged")
    with live_cluster(directory, "damaged", ACCOUNTS, PBFT) as cfg:
        asyncio.run(load(cfg, 3000))
        yield cfg


async def load(cfg: ClusterConfig, n: int) -> None:
    """`n` transfers, committed: a chain of a few hundred blocks, a file of some pages."""
    chain = load_genesis(cfg).chain_id
    keys = [account_key(cfg, name) for name in sorted(ACCOUNTS)]
    async with RpcClient(cfg.node("n0").rpc_url, timeout=30) as client:
        nonces = [
            (await client.call("get_account", address=k.address.hex()))["next_nonce"] for k in keys
        ]
        for start in range(0, n, 64):
            calls = []
            for i in range(start, min(start + 64, n)):
                s = i % len(keys)
                tx = transfer(keys[s], chain, nonces[s], keys[(s + 1) % len(keys)].address, 1)
                nonces[s] += 1
                calls.append(("submit_tx", {"tx": tx.encode().hex()}))
            await client.batch(calls)
    await wait_for_status(cfg, "n0", lambda s: s["mempool"] == 0, "an empty mempool")


def use_setting(cfg: ClusterConfig, value: str | None) -> None:
    """Set [cluster] damaged_store in cluster.toml (None: the default); each node reads it
    when it starts."""
    lines = [
        line for line in cfg.path.read_text().splitlines() if not line.startswith("damaged_store")
    ]
    if value is not None:
        lines.insert(lines.index("[cluster]") + 1, f'damaged_store = "{value}"')
    cfg.path.write_text("\n".join(lines) + "\n")


def stop_and_damage(cfg: ClusterConfig) -> None:
    """Stop NODE with SIGTERM, then write 3 x 2,000 random bytes into the middle of its file."""
    pid = launcher.signal_node(cfg, NODE, signal.SIGTERM)
    assert launcher.stop_pid(pid, 10) in ("terminated", "not running")
    while launcher.running_pid(cfg, NODE) is not None:
        time.sleep(0.05)
    path = cfg.db_path(NODE)
    size = path.stat().st_size
    assert size > 200_000, f"the store is too small to damage its middle ({size} bytes)"
    rng = random.Random(15)
    with path.open("r+b") as f:
        for offset in (size // 2 - 30_000, size // 2, size // 2 + 30_000):
            f.seek(offset)
            f.write(rng.randbytes(2000))


def log_since(cfg: ClusterConfig, offset: int) -> str:
    return cfg.log_path(NODE).read_bytes()[offset:].decode(errors="replace")


def wait_exit(pid: int, timeout_s: float) -> int | None:
    """The exit code of our child `pid`, or None if it still runs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    return None


def digest(cfg: ClusterConfig) -> str:
    return hashlib.sha256(cfg.db_path(NODE).read_bytes()).hexdigest()


async def test_refuse_a_damaged_store_exits_with_one_line_and_never_answers(
    cluster: ClusterConfig,
) -> None:
    cfg = cluster
    use_setting(cfg, None)  # the default: refuse
    stop_and_damage(cfg)
    damaged = digest(cfg)
    offset = cfg.log_path(NODE).stat().st_size
    pid = launcher.start_node(cfg, cfg.node(NODE))
    code = await asyncio.to_thread(wait_exit, pid, 60)
    if code is None:  # it started on a damaged store: the bug
        status = await node_status(cfg, NODE)
        launcher.stop_pid(pid, 5)
        pytest.fail(f"{NODE} started on a damaged store and answers status: {status}")
    assert code != 0
    assert await node_status(cfg, NODE) is None
    log = log_since(cfg, offset)
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1, log
    assert "damaged" in errors[0] and str(cfg.db_path(NODE)) in errors[0], errors[0]
    assert "Traceback" not in log and f"node {NODE} up" not in log, log
    assert digest(cfg) == damaged, "refusing must leave the damaged file as it was"
    # the rest of the cluster is untouched and still commits
    await load(cfg, 64)


async def test_rebuild_moves_the_damaged_store_aside_and_catches_up(
    cluster: ClusterConfig,
) -> None:
    cfg = cluster
    use_setting(cfg, "rebuild")
    if launcher.running_pid(cfg, NODE) is not None:
        stop_and_damage(cfg)
    # else: the test before left it stopped, its store damaged
    path = cfg.db_path(NODE)
    offset = cfg.log_path(NODE).stat().st_size
    pid = launcher.start_node(cfg, cfg.node(NODE))
    try:
        target = (await node_status(cfg, "n0") or {})["height"]
        caught = await wait_for_status(
            cfg, NODE, lambda s: s["height"] >= target, f"n0's height {target}"
        )
    except BaseException:
        print(log_since(cfg, offset))
        raise
    assert launcher.running_pid(cfg, NODE) == pid
    aside = sorted(path.parent.glob(path.name + ".damaged-*"))
    assert aside, f"the damaged store was not kept aside: {list(path.parent.iterdir())}"
    assert "damaged" in log_since(cfg, offset)
    n0 = await node_status(cfg, "n0")
    assert n0 is not None and caught["height"] <= n0["height"]
    verify = _cli(cfg, "verify", "--node", NODE)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _cli(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)
