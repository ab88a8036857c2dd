"""The simulator and its checker: many seeds, drawn fault schedules, a checker that can fail."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.pbft.config import PbftConfig
from consensus.pbft.replica import RECENT_COMMITTED
from ledger.tx import transfer
from node.sim.cluster import SimCluster
from node.sim.faults import Crash, FaultPlan, Partition, random_plan
from node.sim.run import run_sim

NODES = [f"n{i}" for i in range(7)]


def one_seed(seed: int) -> tuple[int, list[str], str]:
    """Seven replicas, random loss/delay/duplication, a partition, crash/restart of up to f."""
    plan = random_plan(random.Random(seed), NODES, 2, 3000)
    report, _ = run_sim(7, seed, 3.0, plan, rate=5)
    return seed, [f"{v.name}: {v.detail}" for v in report.verdicts if not v.ok], report.command


def sweep(seeds: range) -> None:
    workers = min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(one_seed, seeds, chunksize=25))
    failures = [(seed, bad, cmd) for seed, bad, cmd in results if bad]
    assert len(results) == len(seeds)
    assert failures == [], "\n".join(f"seed {s}: {b}\n  reproduce: {c}" for s, b, c in failures)


def test_seven_replicas_over_fifty_seeds_keep_safety_and_liveness() -> None:
    sweep(range(50))


@pytest.mark.slow
def test_seven_replicas_over_a_thousand_seeds_keep_safety_and_liveness() -> None:
    sweep(range(1000))


@st.composite
def fault_plans(draw: st.DrawFn, nodes: int = 4) -> FaultPlan:
    ids = [f"n{i}" for i in range(nodes)]
    f = (nodes - 1) // 3
    partitions = []
    if draw(st.booleans()):
        start = draw(st.integers(0, 2000))
        cut = draw(st.integers(1, nodes - 1))
        order = draw(st.permutations(ids))
        groups = (frozenset(order[:cut]), frozenset(order[cut:]))
        partitions.append(Partition(start, start + draw(st.integers(1, 2000)), groups))
    crashes = []
    for node in draw(st.lists(st.sampled_from(ids), max_size=f, unique=True)):
        at = draw(st.integers(0, 2500))
        restart = draw(st.one_of(st.none(), st.integers(at + 1, 3000)))
        crashes.append(Crash(node, at, restart))
    return FaultPlan(
        drop=draw(st.sampled_from([0.0, 0.02, 0.1, 0.2])),
        duplicate=draw(st.sampled_from([0.0, 0.05])),
        delay_ms=draw(st.integers(1, 20)),
        jitter_ms=draw(st.integers(0, 40)),
        partitions=tuple(partitions),
        crashes=tuple(crashes),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=fault_plans(), seed=st.integers(0, 2**32))
def test_drawn_fault_schedules_never_violate_the_checker(plan: FaultPlan, seed: int) -> None:
    report, _ = run_sim(4, seed, 3.0, plan, rate=10)
    assert report.ok, f"{[v for v in report.verdicts if not v.ok]}\nreproduce: {report.command}"


def test_a_broken_quorum_is_caught_by_the_checker(monkeypatch: pytest.MonkeyPatch) -> None:
    """With f+1 instead of 2f+1, two sides of a partition can both commit: the checker must
    see it, or it could not be trusted when it says all is well."""
    monkeypatch.setattr(PbftConfig, "quorum", property(lambda self: self.f + 1))
    for seed in range(200):
        _, bad, command = one_seed(seed)
        if any(b.startswith(("agreement", "integrity")) for b in bad):
            assert "tally sim" in command and f"--seed {seed}" in command
            return
    pytest.fail("200 seeds with a broken quorum and the checker saw nothing")


def test_the_same_seed_gives_a_byte_identical_trace() -> None:
    plan = random_plan(random.Random(5), NODES[:4], 1, 3000)
    runs = [run_sim(4, 5, 3.0, plan, keep_trace=True)[1] for _ in range(2)]
    first, second = runs[0].trace, runs[1].trace
    assert first is not None and second is not None and len(first) > 1000
    assert "\n".join(first).encode() == "\n".join(second).encode()
    other = run_sim(4, 6, 3.0, plan, keep_trace=True)[1].trace
    assert other != first


def test_a_seed_reproduces_in_another_process_whatever_the_hash_seed() -> None:
    """Set and dict orders of str/bytes change with PYTHONHASHSEED; the run must not."""
    cmd = [
        sys.executable,
        "-m",
        "node.cli.main",
        *["sim", "--nodes", "4", "--seed", "11", "--duration", "2", "--random-faults", "--json"],
    ]
    hashes = set()
    for hash_seed in ("1", "2"):
        env = os.environ | {"PYTHONHASHSEED": hash_seed}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        hashes.add(json.loads(out.stdout)["trace_sha256"])
    assert len(hashes) == 1


def test_a_failing_run_prints_the_seed_and_the_command_that_reproduces_it() -> None:
    # Three of four nodes down for good: no quorum, so liveness must fail.
    args = "sim --nodes 4 --seed 3 --duration 1 --crash n1@0.5 --crash n2@0.5 --crash n3@0.5"
    cmd = [sys.executable, "-m", "node.cli.main", *args.split()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "seed 3 failed" in out.stdout and "tally sim --nodes 4 --seed 3" in out.stdout
    assert "--crash 'n1@0.5'" in out.stdout


def memory_stays_bounded(blocks: int) -> None:
    interval = 16
    c = SimCluster(
        4,
        1,
        accounts={f"a{i}": 10**9 for i in range(8)},
        config={"batch_size_max": 1, "batch_wait_ms": 1, "checkpoint_interval": interval},
    )
    keys = list(c.accounts.values())
    for i in range(blocks):
        tx = transfer(keys[i % 8], c.genesis.chain_id, i // 8, keys[(i + 1) % 8].address, 1)
        c.submit(f"n{i % 4}", tx, at_ms=i // 4)
    worst: dict[str, int] = {}

    def sample(node_id: str, block: object) -> None:
        replica = c.nodes[node_id].replica
        if replica is not None and c.nodes[node_id].store.height % 50 == 0:
            for name, size in replica.footprint().items():
                worst[name] = max(worst.get(name, 0), size)

    c.on_commit.append(sample)
    assert c.run_until(lambda: all(n.store.height >= blocks for n in c.nodes.values()), 10**7)
    log_size = 2 * interval  # the watermark window, L
    assert worst["log_slots"] <= log_size
    assert worst["prepared_certs"] <= log_size + interval
    assert worst["signed"] <= 3 * (log_size + interval)
    assert worst["checkpoint_votes"] <= 4 * (log_size // interval + 1)
    assert worst["recent_tx_ids"] <= RECENT_COMMITTED
    assert all(r.stable_seq >= blocks - 2 * interval for r in c.replicas.values())


def test_memory_stays_bounded_over_a_thousand_blocks() -> None:
    memory_stays_bounded(1000)  # 60 checkpoints: the log is collected many times over


@pytest.mark.slow
def test_memory_stays_bounded_over_ten_thousand_blocks() -> None:
    memory_stays_bounded(10_000)
