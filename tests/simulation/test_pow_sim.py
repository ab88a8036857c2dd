"""Proof of work in the deterministic simulator: partitions that heal onto the most-work chain
(state equal to a fresh replay, the losing side's txs committed again), retargeting, and the
attacks: withholding, selfish mining, and the private-fork double spend."""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.pow.replica import PowReplica
from ledger.state import State, apply_block
from ledger.tx import transfer
from node.cluster.config import local_cluster_toml
from node.engines import chain_engines
from node.faults.spec import FaultSpec
from node.sim.cluster import SimCluster
from node.sim.doublespend import exact, success_rate
from node.sim.faults import FaultPlan, Partition
from tests.helpers.livecluster import bench_json

ACCOUNTS = {f"a{i}": 10**6 for i in range(4)}
GROUPS = (frozenset({"n0", "n1"}), frozenset({"n2", "n3"}))


def replay(c: SimCluster, node: str) -> State:
    store = c.nodes[node].store
    state = State.from_genesis(c.genesis, chain_engines())
    for h in range(1, store.height + 1):
        block = store.get_block(h)
        assert block is not None
        state, _ = apply_block(state, block)
    return state


def tip(c: SimCluster, node: str) -> tuple[int, bytes]:
    store = c.nodes[node].store
    return store.height, store.last_header.sha256()


def test_partitions_heal_onto_the_most_work_chain_and_the_losers_txs_commit_again() -> None:
    shares = {"n0": 0.15, "n1": 0.15, "n2": 0.35, "n3": 0.35}  # the n2,n3 side mines more
    plan = FaultPlan(partitions=(Partition(2_000, 40_000, GROUPS),))
    c = SimCluster(4, 3, accounts=ACCOUNTS, plan=plan, consensus="pow", hash_share=shares)
    reorgs: list[tuple[str, int, int]] = []
    c.on_reorg.append(lambda node, fork, depth: reorgs.append((node, fork, depth)))
    chain = c.genesis.chain_id
    txs = []
    for i, (name, node) in enumerate([("a0", "n0"), ("a1", "n1"), ("a2", "n2"), ("a3", "n3")]):
        for nonce in range(3):  # sent inside the partition, each side to its own miners
            tx = transfer(c.accounts[name], chain, nonce, c.accounts["a0"].address, 1 + i)
            c.submit(node, tx, at_ms=5_000 + 1000 * nonce)
            txs.append(tx)
    c.run_until(lambda: False, 39_000)
    minority, majority = tip(c, "n0"), tip(c, "n2")
    assert minority != majority, "each side mined its own chain"
    c.run_until(lambda: False, 70_000)
    tips = {tip(c, n) for n in c.members}
    assert len(tips) == 1, f"every node converges on one chain: {tips}"
    assert any(node in ("n0", "n1") for node, _, _ in reorgs), "the minority side reorganised"
    for node in c.members:
        store = c.nodes[node].store
        assert replay(c, node).root() == store.state.root() == store.last_header.state_root
        for tx in txs:  # including the minority side's, which its lost blocks held first
            record = store.get_tx(tx.tx_id)
            assert record is not None and record.reason == "ok", tx.tx_id.hex()


def test_retargeting_brings_the_block_interval_to_the_target() -> None:
    # the members hash 3x faster than the initial difficulty assumes
    shares = dict.fromkeys(("n0", "n1", "n2", "n3"), 0.75)
    settings = {"retarget_interval": 10, "target_block_ms": 1000}
    c = SimCluster(4, 5, consensus="pow", hash_share=shares, config=settings)
    c.run_until(lambda: c.height("n0") >= 160, 10**7)
    store = c.nodes["n0"].store
    times = [store.get_block(h).header.timestamp_ms for h in (0, 10, 60, 160)]  # type: ignore[union-attr]
    early = (times[1] - times[0]) / 10
    late = (times[3] - times[2]) / 100
    assert early < 600, "before retargeting, blocks come too fast"
    assert 750 <= late <= 1250, f"after retargeting: mean {late} ms for a 1000 ms target"


def test_a_withholding_miner_wastes_its_work() -> None:
    shares = {"n0": 0.4, "n1": 0.2, "n2": 0.2, "n3": 0.2}
    settings = {"retarget_interval": 10**6}  # no retarget to make up for the lost hash power
    c = SimCluster(4, 7, consensus="pow", hash_share=shares, config=settings)
    c.inject(FaultSpec("withhold", "n0"))
    c.run_until(lambda: False, 120_000)
    store = c.nodes["n1"].store
    miners = [store.get_block(h).header.proposer for h in range(1, store.height + 1)]  # type: ignore[union-attr]
    assert "n0" not in miners and len(miners) > 40
    attacker = c.nodes["n0"].replica
    assert isinstance(attacker, PowReplica) and attacker.stats["mined"] > 10
    times = [store.get_block(h).header.timestamp_ms for h in range(store.height + 1)]  # type: ignore[union-attr]
    mean = statistics.mean(b - a for a, b in itertools.pairwise(times))
    assert mean > 1300, f"60% of the hash power finds blocks 1/0.6 times slower: {mean} ms"


def test_a_selfish_miner_takes_more_than_its_share_of_blocks() -> None:
    shares = {"n0": 0.45, "n1": 0.55 / 3, "n2": 0.55 / 3, "n3": 0.55 / 3}
    c = SimCluster(4, 11, consensus="pow", hash_share=shares, config={"retarget_interval": 10**6})
    c.inject(FaultSpec("selfish_mine", "n0"))
    c.run_until(lambda: c.height("n1") >= 300, 10**7)
    store = c.nodes["n1"].store
    miners = [store.get_block(h).header.proposer for h in range(1, 301)]  # type: ignore[union-attr]
    share = miners.count("n0") / len(miners)
    honest = c.nodes["n1"].replica
    assert isinstance(honest, PowReplica) and honest.stats["reorgs"] > 0
    assert share > 0.5, f"selfish mining with 45% of the hash power took {share:.0%} of blocks"


def test_double_spends_succeed_far_more_often_with_a_majority() -> None:
    majority = success_rate(0.6, 2, 30)
    minority = success_rate(0.1, 2, 30)
    assert majority >= 0.9 and minority <= 0.1, (majority, minority)


@pytest.mark.slow  # a sweep of simulated attacks against the exact analysis
def test_the_measured_double_spend_rate_matches_the_exact_analysis() -> None:
    measured = success_rate(0.3, 2, 120, first_seed=1000)
    assert abs(measured - exact(0.3, 2)) < 0.12, (measured, exact(0.3, 2))


def test_bench_double_spend_reports_measured_exact_and_nakamoto(tmp_path: Path) -> None:
    args = ["--shares", "0.6", "--confirmations", "1,2", "--trials", "3"]
    result = bench_json(tmp_path, "double-spend", *args)
    rows = {(r["share"], r["confirmations"]): r for r in result["rows"]}
    assert set(rows) == {(0.6, 1), (0.6, 2)}
    assert all(r["measured"] == 1.0 and r["exact"] == r["nakamoto"] == 1.0 for r in rows.values())


def test_tally_sim_pow_takes_hash_shares_from_cluster_toml(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    toml = local_cluster_toml("shares", list(range(9000, 9008)), {"alice": 1}, pow={})
    # the [[node]] entries gain a hash_share each: n3 holds most of the hash power
    for node, share in (("n0", 0.1), ("n1", 0.1), ("n2", 0.1), ("n3", 0.7)):
        toml = toml.replace(f'id = "{node}"', f'id = "{node}"\nhash_share = {share}')
    path.write_text(toml)
    cmd = [
        sys.executable,
        "-m",
        "node.cli.main",
        "sim",
        "--consensus",
        "pow",
        "--cluster",
        str(path),
    ]
    args = ["--duration", "60", "--partition", "n0,n1|n2,n3@10-30", "--json"]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and {v["name"] for v in report["verdicts"]} == {
        "final prefix",
        "replay",
        "liveness",
    }
    blocks = report["blocks_by_miner"]
    assert blocks["n3"] > sum(v for k, v in blocks.items() if k != "n3")
    assert report["reorgs"] >= 1, "the partition's minority side gave up its branch"
