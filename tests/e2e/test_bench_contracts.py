"""`python -m node.bench.contracts`: contract calls on a live cluster of its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_bench_contracts_commits_every_call(tmp_path: Path) -> None:
    out_file = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "node.bench.contracts", "--pairs", "2", "--periods", "1"]
    cmd += ["--bidders", "3"]
    out = subprocess.run(
        [*cmd, "--json", "--out", str(out_file)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == json.loads(out_file.read_text())
    assert (result["bench"], result["nodes"], result["pairs"]) == ("contracts", 4, 2)
    # exchange: offer, accept, deliver, redeem, no_complaint, deny_fault;
    # risk sharing: create, 2 deposits, then 2 commits, a report and 2 reveals per period;
    # the auction: create, then a deposit, a commit and a reveal per bidder
    expected = {"exchange": 2 * 6, "risk_sharing": 2 * (1 + 2 + 5 * 1), "auction": 1 + 3 * 3}
    assert {p["phase"]: p["calls"] for p in result["phases"]} == expected
    assert result["bidders"] == 3
    for phase in result["phases"]:
        assert phase["contracts"] == (1 if phase["phase"] == "auction" else 2)
        assert phase["calls_per_s"] > 0
        assert 0 < phase["latency_ms"]["p50"] <= phase["latency_ms"]["p99"]
    (auction,) = (p for p in result["phases"] if p["phase"] == "auction")
    assert auction["last_reveal_to_settled_ms"] > 0
