"""The signature limit (node/bench/siglimit.py) and how the benches report shares of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.bench import siglimit
from node.bench.pbft import with_share
from node.bench.siglimit import SignatureLimit, limit_for, limit_tx_s, measure, per_call_s
from node.bench.suite import render_report
from node.cli.main import main


class FakeClock:
    """Each batch takes the next of `batch_seconds`: start and end readings alternate."""

    def __init__(self, batch_seconds: list[float]) -> None:
        self.readings = self._readings(batch_seconds)

    @staticmethod
    def _readings(batch_seconds: list[float]) -> Iterator[float]:
        now = 0.0
        for seconds in batch_seconds:
            yield now
            now += seconds
            yield now

    def __call__(self) -> float:
        return next(self.readings)


def test_the_limit_is_cores_over_n_verifications_and_one_signature() -> None:
    assert limit_tx_s(cores=2, n_verify=4, verify_s=60e-6, sign_s=20e-6) == pytest.approx(
        2 / 260e-6
    )
    assert limit_tx_s(1, 7, 50e-6, 0.0) == pytest.approx(1 / 350e-6)


def test_per_call_is_the_median_batch_over_its_calls() -> None:
    calls: list[int] = []
    clock = FakeClock([0.04, 0.01, 0.02, 0.5, 0.03])  # one disturbed batch (0.5 s)
    assert per_call_s(calls.append, 100, clock, batches=5) == pytest.approx(0.03 / 100)
    assert calls == list(range(100)) * 5


def test_measure_turns_fake_timings_into_the_limit() -> None:
    sign_calls, verify_calls = siglimit.SIGN_CALLS_PER_BATCH, siglimit.VERIFY_CALLS_PER_BATCH
    sign = [sign_calls * t for t in (30e-6, 20e-6, 25e-6)]  # median 25 µs
    verify = [verify_calls * t for t in (50e-6, 900e-6, 60e-6)]  # median 60 µs
    limit = measure(4, clock=FakeClock(sign + verify), cores=2, batches=3)
    assert limit == SignatureLimit(
        nodes=4, cores=2, n_verify=4, verify_us=60.0, sign_us=25.0, limit_tx_s=7547.2
    )
    assert limit.share(1886.8) == 0.25  # 2 / 265 µs = 7547.2 tx/s


def test_measure_times_pynacl_for_real() -> None:
    limit = measure(7, batches=1)
    assert limit.verify_us > 0 and limit.sign_us > 0 and limit.n_verify == 7
    expected = limit_tx_s(limit.cores, 7, limit.verify_us * 1e-6, limit.sign_us * 1e-6)
    assert limit.limit_tx_s == pytest.approx(expected, rel=1e-3)


def test_every_phase_gets_its_share_of_the_limit() -> None:
    limit = limit_for(4, cores=2, verify_s=60e-6, sign_s=20e-6)  # 7692.3 tx/s
    phase = with_share({"mode": "saturation", "committed_tps": 1923.1}, limit)
    assert phase == {"mode": "saturation", "committed_tps": 1923.1, "share_of_limit": 0.25}


def test_bench_siglimit_reports_each_node_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "siglimit", "--nodes", "4,10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bench"] == "siglimit" and set(result["signature_limit"]) == {"4", "10"}
    four, ten = result["signature_limit"]["4"], result["signature_limit"]["10"]
    assert (four["n_verify"], ten["n_verify"]) == (4, 10)
    for row in (four, ten):  # each limit from its own timings (not compared: the machine is noisy)
        expected = limit_tx_s(
            row["cores"], row["n_verify"], row["verify_us"] / 1e6, row["sign_us"] / 1e6
        )
        assert row["limit_tx_s"] == pytest.approx(expected, rel=1e-3) and row["limit_tx_s"] > 0


def test_the_suite_report_shows_the_share_beside_each_tx_s(tmp_path: Path) -> None:
    limit = limit_for(4, cores=2, verify_s=60e-6, sign_s=20e-6)
    phase = {
        "nodes": 4,
        "mode": "saturation",
        "offered_tps": 0,
        "committed_tps": 1923.1,
        "latency_ms": {"p50": 40, "p90": 60, "p99": 90},
        "committed": 38462,
        "cpu_s": {"n0": 19.0},
        "peak_rss_mb": {"n0": 80.0},
        "wire_bytes_per_tx": 900,
    }
    result = {"signature_limit": {"4": limit.as_dict()}, "phases": [with_share(phase, limit)]}
    (tmp_path / "pbft4.json").write_text(json.dumps(result))
    older = {"phases": [phase | {"nodes": 7, "committed_tps": 900.0}]}  # before the limit
    (tmp_path / "pbft7_10.json").write_text(json.dumps(older))
    report = render_report(tmp_path, [])
    assert "| 4 | saturation | max | 1923.1 (0.25) | 40 |" in report
    assert "| 7 | saturation | max | 900.0 | 40 |" in report
    assert "n = 4: 7,692 tx/s (verify 60.0 µs, sign 20.0 µs, 2 cores)" in report


def test_the_suite_report_shows_the_state_bench_with_ratio_and_share(tmp_path: Path) -> None:
    limit = limit_for(4, cores=2, verify_s=60e-6, sign_s=20e-6)  # 7,692 tx/s
    tree_row = {
        "accounts": 1_000_000,
        "store": "sqlite",
        "update_ms_median": 82.1,
        "commit_ms_median": 150.0,
        "nodes_written": 6100,
        "peak_rss_mb": 281,
    }
    live = [
        {"accounts": n, "committed_tps": tps, "latency_ms": {"p50": 30}}
        | {"peak_rss_mb": {"n0": 90.0, "n1": 120.4}, "restart_rss_mb": 70.0}
        for n, tps in ((100, 3846.0), (1_000_000, 1923.0))
    ]
    live = [
        r | {"tps_ratio": round(r["committed_tps"] / 3846.0, 2)}
        for r in (with_share(r, limit) for r in live)
    ]
    result = {
        "changes": 1000,
        "signature_limit": {"4": limit.as_dict()},
        "results": [tree_row],
        "live": live,
    }
    (tmp_path / "state.json").write_text(json.dumps(result))
    report = render_report(tmp_path, [])
    assert "| 1,000,000 | sqlite | 82.1 | 150.0 | 6100 | 281 |" in report
    assert "| 1,000,000 | 1923.0 (0.25) | 0.5 | 30 | 120 | 70.0 |" in report
    assert "| 100 | 3846.0 (0.50) | 1.0 | 30 | 120 | 70.0 |" in report
    assert "n = 4: 7,692 tx/s" in report
