"""Proof of work end to end: four miner processes (each with its mining worker) converge on
one chain; the same RPC methods and CLI work as under PBFT, with confirmations and finality;
a live partition heals onto the most-work chain; and every PoW attack can be injected live."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.tx import transfer
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.faults.spec import POW_ONLY
from node.rpc.client import RpcClient
from tests.helpers.livecluster import bench_json, live_cluster
from tests.helpers.wait import wait_for

POW = {
    "target_block_ms": 300,
    "retarget_interval": 10,
    "confirmations": 3,
    "initial_difficulty": 200_000,
    "tip_interval_ms": 200,
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("pow")
    accounts = {"alice": 10**6, "bob": 10**6}
    with live_cluster(directory, "pow", accounts, {}, pow=POW) as cfg:
        yield cfg


def cli(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


async def rpc(cfg: ClusterConfig, node: str, method: str, **params: Any) -> Any:
    async with RpcClient(cfg.node(node).rpc_url, timeout=30) as client:
        return await client.call(method, **params)


async def one_tip(cfg: ClusterConfig) -> tuple[int, str] | None:
    """The common tip, once every node reports the same one twice in a row."""
    tips = {(s["height"], s["last_block_hash"]) for s in await statuses(cfg)}
    if len(tips) != 1:
        return None
    await asyncio.sleep(0.1)
    again = {(s["height"], s["last_block_hash"]) for s in await statuses(cfg)}
    return tips.pop() if again == tips else None


async def statuses(cfg: ClusterConfig) -> list[dict[str, Any]]:
    return [await rpc(cfg, n, "status") for n in cfg.node_ids()]


def test_miners_converge_and_a_transfer_becomes_final(cluster: ClusterConfig) -> None:
    cfg = cluster

    async def go() -> None:
        await wait_for(lambda: _higher(cfg, 12), "a dozen blocks")
        key = account_key(cfg, "alice")
        bob = account_key(cfg, "bob").address
        tx = transfer(key, load_genesis(cfg).chain_id, 0, bob, 25)
        done = await rpc(cfg, "n1", "submit_tx", tx=tx.encode().hex(), wait="commit")
        assert done["status"] == "ok"

        async def final() -> dict[str, Any] | None:
            t = await rpc(cfg, "n2", "get_tx", tx_id=tx.tx_id.hex())
            return t if t.get("final") else None

        record = await wait_for(final, "the transfer to be 3 blocks deep")
        assert record["confirmations"] >= 3 and record["status"] == "ok"
        block = await rpc(cfg, "n0", "get_block", height=record["height"])
        assert block["final"] and block["confirmations"] >= 3 and block["pow"]["bits"]
        assert tx.tx_id.hex() in [t["tx_id"] for t in block["txs"]]
        for node in cfg.node_ids():  # the same methods answer as under PBFT
            assert (await rpc(cfg, node, "get_account", address=bob.hex()))["balance"] == 10**6 + 25
        assert len(await rpc(cfg, "n3", "members")) == 4
        assert (await rpc(cfg, "n3", "consensus_state"))["stats"]["mined"] >= 0
        assert await rpc(cfg, "n3", "get_evidence") == []
        assert await wait_for(lambda: one_tip(cfg), "one tip")

    asyncio.run(go())
    status = json.loads(cli(cfg, "status", "--json").stdout)
    assert {s["consensus_kind"] for s in status} == {"pow"}
    assert all(s["final_height"] == s["height"] - 2 for s in status)
    check = cli(cfg, "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["divergence"] is None
    verify = cli(cfg, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


async def _higher(cfg: ClusterConfig, height: int) -> bool:
    return all(s["height"] >= height for s in await statuses(cfg))


@pytest.mark.slow  # the simulator heals partitions in the default lane (test_pow_sim.py)
def test_a_live_partition_heals_onto_one_chain(cluster: ClusterConfig) -> None:
    cfg = cluster
    out = cli(
        cfg, "fault", "inject", "partition", "--param", "groups=n0,n1|n2,n3", "--duration", "4"
    )
    assert out.returncode == 0, out.stdout + out.stderr

    async def go() -> None:
        await asyncio.sleep(4.5)
        await wait_for(lambda: one_tip(cfg), "the two sides to agree again", timeout=90)
        stats = [(await rpc(cfg, n, "consensus_state"))["stats"] for n in cfg.node_ids()]
        assert sum(s.get("reorgs", 0) for s in stats) >= 1, "one side gave up its branch"

    asyncio.run(go())
    check = cli(cfg, "check", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["divergence"] is None
    verify = cli(cfg, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_pbft_faults_are_refused_on_a_pow_node(cluster: ClusterConfig) -> None:
    out = cli(cluster, "fault", "inject", "equivocate", "--node", "n0")
    assert out.returncode != 0 and "disturbs PBFT" in out.stdout + out.stderr


# The attacks live in the slow lane; every one of them runs in the simulator in the default
# lane (tests/simulation/test_pow_sim.py).
LIVE = sorted(POW_ONLY)
ATTACKS = [pytest.param(k, marks=[pytest.mark.slow]) for k in LIVE]


@pytest.mark.parametrize("kind", ATTACKS)
def test_pow_attacks_inject_and_heal_live(cluster: ClusterConfig, kind: str) -> None:
    cfg = cluster
    params = (
        ["--param", f"tx={'ab' * 32}", "--param", "give_up=5"] if kind == "double_spend" else []
    )
    out = cli(cfg, "fault", "inject", kind, "--node", "n3", *params, "--json")
    assert out.returncode == 0, out.stdout + out.stderr

    async def go() -> None:
        start = (await rpc(cfg, "n0", "status"))["height"]
        await wait_for(lambda: _higher(cfg, start + 3), "blocks while n3 attacks")
        healed = cli(cfg, "fault", "heal")
        assert healed.returncode == 0, healed.stdout + healed.stderr
        await wait_for(lambda: one_tip(cfg), "convergence after the attack", timeout=90)

    asyncio.run(go())
    check = cli(cfg, "check", "--json")
    assert check.returncode == 0 and json.loads(check.stdout)["divergence"] is None


@pytest.mark.slow
def test_bench_pow_measures_the_block_interval(tmp_path: Path) -> None:
    args = ["--target-ms", "200", "--warmup", "2", "--blocks", "5"]
    result = bench_json(tmp_path, "pow", *args)
    assert (result["from_height"], result["to_height"]) == (2, 7)
    assert result["mean_interval_ms"] > 0 and result["final_difficulty"] > 0
