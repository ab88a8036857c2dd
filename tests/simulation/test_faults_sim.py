"""Every fault kind in the simulator: within the bound the checker stays green; beyond it,
the checker sees the fork."""

from __future__ import annotations

import os
import random
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from node.faults.spec import CATALOGUE, POW_ONLY, FaultSpec
from node.sim.command import faults_from
from node.sim.faults import FaultPlan, random_plan
from node.sim.run import SimReport, run_sim

# The faulty node (n0 is the first primary) and what each kind must visibly do.
CASES: dict[str, tuple[str, str]] = {
    "drop": ("node=n1,probability=0.5", "dropped"),
    "delay": ("node=n1,ms=40,jitter_ms=20", ""),
    "duplicate": ("node=n1,probability=0.5", ""),
    "reorder": ("node=n1,probability=0.5,window_ms=30", ""),
    "partition": ("groups=n0,n1|n2,n3,at=0.5,duration=1.5", ""),
    "isolate": ("node=n0,at=0.5,duration=1", "view"),
    "kill": ("node=n0,at=0.5", "view"),
    "pause": ("node=n0,at=0.5,duration=1.5", "view"),
    "restart": ("node=n2,at=1", ""),
    "equivocate": ("node=n0", "evidence"),
    "double_vote": ("node=n1", ""),
    "mute": ("node=n1", ""),
    "silent_primary": ("node=n0", "view"),
    "forge": ("node=n1", "bad_signature"),
    "replay": ("node=n1", "stale"),
    "invalid_block": ("node=n0", "rejected"),
    "flood": ("node=n1", "bad_frames"),
    "twins": ("node=n2", ""),
}


def test_every_kind_in_the_catalogue_has_a_case() -> None:
    assert set(CASES) == set(CATALOGUE) - POW_ONLY  # test_pow_sim.py runs the PoW attacks


def run(faults: list[str], nodes: int = 4, seed: int = 1, **kw: object) -> SimReport:
    specs = tuple(FaultSpec.parse(f) for f in faults)
    report, _ = run_sim(
        nodes,
        seed,
        3.0,
        kw.pop("plan", FaultPlan()),
        faults=specs,  # type: ignore[arg-type]
        **kw,
    )  # type: ignore[arg-type]
    return report


@pytest.mark.parametrize("kind", sorted(CASES))
def test_one_faulty_node_of_four_keeps_the_cluster_safe_and_live(kind: str) -> None:
    params, shows = CASES[kind]
    report = run([f"kind={kind},{params}"])
    assert report.ok, f"{[v for v in report.verdicts if not v.ok]}\n{report.command}"
    assert report.blocks > 0
    s = report.stats
    checks = {
        "dropped": report.messages_dropped > 0,
        "view": report.max_view >= 1,
        "evidence": report.evidence == ["n0"],
        "bad_signature": s.get("bad_signature", 0) > 0,
        "stale": s.get("late_vote", 0) + s.get("out_of_window_vote", 0) > 0,
        "rejected": s.get("bad_pre_prepare", 0) > 0 and report.max_view >= 1,
        "bad_frames": s.get("bad_frames", 0) > 0,
        "": True,
    }
    assert checks[shows], f"{kind} did not show {shows!r}: {s}"


BYZANTINE = [
    "equivocate",
    "double_vote",
    "mute",
    "silent_primary",
    "forge",
    "replay",
    "invalid_block",
    "flood",
    "twins",
]


def two_byzantine_of_seven(seed: int) -> tuple[int, list[str], str]:
    rng = random.Random(seed)
    nodes = [f"n{i}" for i in range(7)]
    bad = rng.sample(nodes, 2)
    faults = tuple(FaultSpec.parse(f"kind={rng.choice(BYZANTINE)},node={n}") for n in bad)
    plan = random_plan(rng, nodes, 0, 3000)  # network faults on top, no crashes
    report, _ = run_sim(7, seed, 3.0, plan, rate=5, faults=faults)
    return seed, [f"{v.name}: {v.detail}" for v in report.verdicts if not v.ok], report.command


def two_byzantine_of_seven_over(seeds: range) -> None:
    with ProcessPoolExecutor(min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(two_byzantine_of_seven, seeds, chunksize=10))
    failures = [(s, bad, cmd) for s, bad, cmd in results if bad]
    assert len(results) == len(seeds)
    assert failures == [], "\n".join(f"seed {s}: {b}\n  {c}" for s, b, c in failures)


def test_two_byzantine_of_seven_over_twenty_seeds() -> None:
    two_byzantine_of_seven_over(range(20))


@pytest.mark.slow
def test_two_byzantine_of_seven_over_three_hundred_seeds() -> None:
    two_byzantine_of_seven_over(range(300))


def test_colluding_equivocators_beyond_the_bound_fork_and_the_checker_sees_it() -> None:
    """f+1 = 2 of 4: an equivocating primary and a double-voting accomplice split the honest
    replicas, each half commits a different block, and agreement is reported violated."""
    faults = ["kind=equivocate,node=n0,colluders=n1", "kind=double_vote,node=n1,colluders=n0"]
    forks = []
    for seed in range(10):
        report = run(faults, seed=seed)
        bad = {v.name for v in report.verdicts if not v.ok}
        if "agreement" in bad:
            forks.append(seed)
            assert set(report.evidence) >= {"n0"}
            assert "--fault 'kind=equivocate" in report.command
    assert forks, "two colluding equivocators never forked the honest replicas"


def test_a_scenario_file_replays_the_cluster_toml_fault_format(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(
        '[[fault]]\nnode = "n0"\nkind = "equivocate"\n\n'
        '[[fault]]\nnode = "n3"\nkind = "drop"\nprobability = 0.3\nat_seconds = 0.5\n'
        "duration_seconds = 1.0\n"
    )

    class Args:
        fault: list[str] = []

    args = Args()
    args.scenario = str(scenario)  # type: ignore[attr-defined]
    faults = faults_from(args)  # type: ignore[arg-type]
    assert [f.kind for f in faults] == ["equivocate", "drop"]
    assert faults[1].param("probability") == 0.3 and faults[1].duration_seconds == 1.0
    report, _ = run_sim(4, 2, 3.0, FaultPlan(), faults=faults)
    assert report.ok and report.evidence == ["n0"]
