"""The CLI with its default node killed: real node processes, n0 (the first member, and the
primary of view 0) killed with SIGKILL; transfer, query, status and contract commands are
answered by the others."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from node.cluster import launcher
from node.cluster.config import ClusterConfig
from tests.helpers.livecluster import live_cluster
from tests.helpers.wait import wait_for

ACCOUNTS = {"alice": 1_000_000, "bob": 1_000_000, "carol": 1_000}
LONG = 1000  # blocks: the offer's windows outlast the test


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    with live_cluster(
        tmp_path_factory.mktemp("failover"), "failover", ACCOUNTS, {"batch_wait_ms": 5}
    ) as cfg:
        pid = launcher.running_pid(cfg, "n0")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        asyncio.run(wait_for(lambda: not _alive(pid), "n0 to die"))
        yield cfg


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] != "Z"


def tally(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def tally_json(cfg: ClusterConfig, *args: str) -> Any:
    out = tally(cfg, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_transfer_waits_for_its_commit_through_the_others(cluster: ClusterConfig) -> None:
    result = tally_json(
        cluster, "tx", "transfer", "--from", "alice", "--to", "bob", "--amount", "5", "--wait"
    )
    assert result["status"] == "ok" and result["height"] >= 1
    bob = tally_json(cluster, "query", "account", "bob")
    assert bob["balance"] == ACCOUNTS["bob"] + 5
    tx = tally_json(cluster, "query", "tx", result["tx_id"])
    assert tx["height"] == result["height"]
    block = tally_json(cluster, "query", "block", str(result["height"]))
    assert result["tx_id"] in [t["tx_id"] for t in block["txs"]]


def test_status_shows_the_dead_node_down_with_its_whole_error(cluster: ClusterConfig) -> None:
    out = tally(cluster, "status")
    assert out.returncode == 2  # some node did not answer
    n0 = cluster.node("n0")
    row = next(line for line in out.stdout.splitlines() if "n0" in line)
    assert "down" in row
    # its own column, the last, with the whole message: folded over lines, not cut
    last_cells = [line.split("│")[-2].strip() for line in out.stdout.splitlines() if "│" in line]
    folded = "".join(last_cells).replace(" ", "")  # wrapped at spaces: compare without them
    assert f"cannotreachnodeat{n0.rpc_url}" in folded and folded.endswith(")]")
    rows = tally_json_status(cluster)
    assert [r["node_id"] for r in rows if "error" in r] == ["n0"]


def tally_json_status(cfg: ClusterConfig) -> list[dict[str, Any]]:
    out = tally(cfg, "status", "--json")
    rows: list[dict[str, Any]] = json.loads(out.stdout)
    return rows


def test_a_contract_is_offered_and_shown_through_the_others(cluster: ClusterConfig) -> None:
    windows = ",".join([str(LONG)] * 5)
    offer = ["offer", "--from", "alice", "--to", "bob", "--windows", windows]
    cid = tally_json(cluster, "contract", "exchange", *offer)["contract_id"]
    view = tally_json(cluster, "contract", "exchange", "show", "--id", cid)
    assert view["stage"] == "await_accept"
    listed = tally_json(cluster, "query", "contracts", "--active", "--party", "bob")
    row = next(c for c in listed["contracts"] if c["id"] == cid)
    assert (row["engine"], row["phase"], row["active"]) == ("exchange", "await_accept", True)
    assert row["created_height"] == tally_json(cluster, "query", "tx", cid)["height"]
    assert row["deadline"] == view["deadline"]
    table = tally(cluster, "query", "contracts", "--phase", "await_accept")
    assert table.returncode == 0 and cid[:16] in table.stdout


def test_an_accounts_history_and_a_block_range_through_the_others(cluster: ClusterConfig) -> None:
    sent = [
        tally_json(
            cluster, "tx", "transfer", "--from", "carol", "--to", "alice", "--amount", "1", "--wait"
        )
        for _ in range(3)
    ]
    history = tally_json(cluster, "query", "txs", "carol", "--limit", "2")
    assert [t["tx_id"] for t in history["txs"]] == [s["tx_id"] for s in sent[:2]]
    rest = tally_json(
        cluster,
        "query",
        "txs",
        "carol",
        "--from-height",
        str(history["next"]["from_height"]),
        "--from-index",
        str(history["next"]["from_index"]),
    )
    assert [t["tx_id"] for t in rest["txs"]] == [sent[2]["tx_id"]] and rest["next"] is None
    table = tally(cluster, "query", "txs", "carol", "--limit", "2")
    assert "more: tally query txs carol --from-height" in table.stdout
    blocks = tally_json(
        cluster, "query", "blocks", str(sent[0]["height"]), "--to", str(sent[2]["height"])
    )
    assert [b["height"] for b in blocks["blocks"]] == list(
        range(sent[0]["height"], sent[2]["height"] + 1)
    )


def test_a_named_dead_node_is_not_passed_over_and_the_error_names_it(
    cluster: ClusterConfig,
) -> None:
    out = tally(cluster, "query", "account", "bob", "--node", "n0")
    assert out.returncode == 2
    assert "no node answered (tried n0: cannot reach node at" in out.stderr
    assert "n1" not in out.stderr


def test_watch_replays_blocks_through_the_others(cluster: ClusterConfig) -> None:
    out = tally(cluster, "watch", "blocks", "--from-height", "1", "--count", "1", "--json")
    assert out.returncode == 0, out.stderr
    event = json.loads(out.stdout.splitlines()[0])
    assert event["type"] == "block" and event["height"] == 1 and event["txs"] >= 1


def test_watch_explains_a_bad_filter(cluster: ClusterConfig) -> None:
    out = tally(cluster, "watch", "contract", "beef", "--count", "1")
    assert out.returncode == 1
    assert "contract must be 64 hex digits, got 'beef'" in out.stderr
