"""The benchmark commands run end to end and report what they claim (small sizes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.livecluster import bench_json


@pytest.mark.slow  # tests/e2e/test_e2e.py runs a short `tally bench pbft` in the default lane
def test_bench_pbft_reports_costs_per_node_and_a_half_saturation_phase(tmp_path: Path) -> None:
    args = ["pbft", "--rate", "0", "--duration", "3", "--half", "--accounts", "8"]
    result = bench_json(tmp_path, *args, "--plot", str(tmp_path / "p.png"))
    sat, half = result["phases"]
    assert (sat["mode"], half["mode"]) == ("saturation", "half")
    assert half["offered_tps"] == max(1, int(sat["committed_tps"] / 2))
    for phase in (sat, half):
        assert phase["committed"] == phase["submitted"] > 0, phase  # its counts explain a miss
        assert set(phase["cpu_s"]) == set(phase["peak_rss_mb"]) == {"n0", "n1", "n2", "n3"}
        # Per node, CPU seconds are rounded to 0.1: a node can show 0.0 over a short phase.
        # The cluster as a whole did the work.
        assert all(v >= 0 for v in phase["cpu_s"].values())
        assert sum(phase["cpu_s"].values()) > 0
        assert all(20 < v < 1000 for v in phase["peak_rss_mb"].values())
        assert 100 < phase["wire_bytes_per_tx"] < 10_000
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_replay_rebuilds_the_whole_chain_in_both_modes(tmp_path: Path) -> None:
    """How much faster trusting the certificates is, is the benchmark's figure to report
    (BENCHMARKS.md), not a test's to assert: it depends on the machine and its load."""
    result = bench_json(tmp_path, "replay", "--blocks", "20", "--txs", "200", "--accounts", "50")
    certs, sigs = result["modes"]
    assert (certs["mode"], sigs["mode"]) == ("certificates", "every signature")
    # each replay reached the stored state root (the bench fails otherwise)
    assert certs["blocks"] == sigs["blocks"] == 20 and certs["txs"] == sigs["txs"] == 4000
    assert certs["txs_per_s"] > 0 and sigs["txs_per_s"] > 0


def test_bench_sim_measures_simulated_seconds_per_wall_second(tmp_path: Path) -> None:
    result = bench_json(tmp_path, "sim", "--rates", "1,20", "--duration", "10", "--seeds", "1")
    light, heavier = result["runs"]
    assert (light["rate"], heavier["rate"]) == (1, 20)
    assert light["virtual_s"] >= 10 and heavier["virtual_s"] >= 10
    assert light["speed"] > 0 and heavier["speed"] > 0  # the figure; its size is the machine's
    assert heavier["messages"] > light["messages"] > 0  # simulated, so deterministic


def test_bench_memory_samples_rss_while_committing(tmp_path: Path) -> None:
    result = bench_json(tmp_path, "memory", "--transfers", "3000", "--every", "1")
    assert result["committed"] == 3000
    assert set(result["peak_rss_mb"]) == {"n0", "n1", "n2", "n3"}
    assert all(20 < v < 1000 for v in result["peak_rss_mb"].values())
    assert result["samples"][-1]["committed"] >= 3000


@pytest.mark.parametrize(
    "args", [["pbft", "--nodes", "x"], ["pbft", "--rate", "-5"], ["sim", "--rates", "a"]]
)
def test_bad_bench_arguments_get_a_clear_error(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli.main", "bench", *args], capture_output=True, text=True
    )
    assert out.returncode == 2 and "expected" in out.stderr and "Traceback" not in out.stderr


def test_bench_integrity_times_every_start_up_check(tmp_path: Path) -> None:
    store = tmp_path / "chain.sqlite"
    result = bench_json(tmp_path, "integrity", "--blocks", "300", "--path", str(store))
    assert result["blocks"] == 300 and result["built_s"] is not None and store.exists()
    names = [c["check"] for c in result["checks"]]
    assert names[:2] == ["PRAGMA quick_check", "PRAGMA integrity_check"]
    assert any("full" in n for n in names) and all(c["seconds"] >= 0 for c in result["checks"])
    again = bench_json(tmp_path, "integrity", "--blocks", "300", "--path", str(store))
    assert again["built_s"] is None  # the store is reused, not built again


@pytest.mark.slow  # two live clusters, each filled by real transfers
def test_bench_state_fills_live_clusters_and_reports_saturation_per_size(tmp_path: Path) -> None:
    args = ["state", "--accounts", "100,600", "--reps", "2", "--stores", "sqlite"]
    result = bench_json(tmp_path, *args, "--live-duration", "3")
    assert [r["accounts"] for r in result["results"]] == [100, 600]
    small, large = result["live"]
    assert (small["accounts"], large["accounts"]) == (100, 600)
    assert small["tps_ratio"] == 1.0 and large["tps_ratio"] > 0
    for row in (small, large):
        assert row["committed_tps"] > 0 and row["restart_rss_mb"] > 0
        assert set(row["peak_rss_mb"]) == {"n0", "n1", "n2", "n3"}
