"""Townsend's risk-sharing programs: truth-telling exact after rounding, the full-information
benchmark, the cost of private information, history dependence, and audits."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.design.risk import RiskProblem, Utility, build, design_risk, violated
from contracts.risk_sharing.schedule import schedule_from_design
from node.cli.risk import load_schedule
from tests.helpers.livecluster import bench_json

U = Utility.parse("crra:1.5")
GRID = tuple(-2 + 0.5 * k for k in range(9))  # 9 transfers
BASE = {
    "incomes": (1.0, 2.0, 3.0),
    "probs": (1 / 3, 1 / 3, 1 / 3),
    "transfers": GRID,
    "u1": U,
    "u2": U,
    "endowment": 3.0,
}


def solved(**kw: object) -> tuple[RiskProblem, object]:
    problem = RiskProblem(**BASE, **kw)  # type: ignore[arg-type]
    d = design_risk(problem)
    prog, _ = build(problem)
    assert violated(prog, d) == [], "a constraint fails in exact arithmetic after rounding"
    assert d.verified
    for key, w in d.weights.items():
        if key[2] in (0,):
            assert sum(w) + sum(d.weights.get((key[0], key[1], 1 + key[1][-1]), [])) == d.resolution
    return problem, d


@pytest.mark.parametrize("periods", [1, 2])
def test_truth_telling_holds_exactly_after_rounding(periods: int) -> None:
    _, d = solved(periods=periods)
    assert d.binding, "the binding constraints are reported"  # type: ignore[attr-defined]


def test_public_incomes_recover_the_full_information_optimum() -> None:
    _, d = solved(public=True)
    direct = 0.0  # with nothing to hide, each income's best transfer independently
    for x, p in zip(BASE["incomes"], BASE["probs"], strict=True):  # type: ignore[call-overload]
        values = [U(x - t) for t in GRID]
        best = max(
            (u1 + U(3.0 + t))  # type: ignore[operator]
            for u1, t in zip(values, GRID, strict=True)
            if u1 is not None
        )
        direct += p * best
    assert d.objective == pytest.approx(direct, abs=1e-9)  # type: ignore[attr-defined]
    # Borch: equal weights, equal utilities: consumptions equalise across the two agents in
    # every state, up to the grid (half a grid step)
    for i, x in enumerate(BASE["incomes"]):  # type: ignore[arg-type]
        tau = d.expected_transfer(1, (i,))  # type: ignore[attr-defined]
        assert abs((x - tau) - (3.0 + tau)) <= 0.5 + 1e-9


def test_private_income_costs_welfare_and_no_type_mimics_another() -> None:
    _, full = solved(public=True)
    _, private = solved()
    assert private.objective < full.objective - 1e-6  # type: ignore[attr-defined]
    assert any("claims" in b for b in private.binding)  # type: ignore[attr-defined]


def test_two_periods_beat_repeating_one_and_depend_on_history() -> None:
    beta = BASE.get("beta", 0.95)
    _, one = solved()
    problem, two = solved(periods=2)
    repeated = one.objective * (1 + problem.beta)  # type: ignore[attr-defined]
    assert two.objective > repeated + 1e-6  # type: ignore[attr-defined]
    assert beta == 0.95
    # Townsend (1982): what period 2 pays depends on what was reported in period 1
    differs = [
        abs(two.expected_transfer(2, (a, now)) - two.expected_transfer(2, (b, now))) > 1e-6  # type: ignore[attr-defined]
        for now in range(3)
        for a in range(3)
        for b in range(3)
        if a < b
    ]
    assert any(differs)


def test_costly_audits_happen_and_truth_stays_optimal() -> None:
    _, none = solved()
    _, audited = solved(audit_cost=1.0)  # a third of the insurer's endowment
    probs = audited.audit_probability  # type: ignore[attr-defined]
    assert max(probs.values()) > 0, "audits are used even at a high cost"
    assert audited.objective >= none.objective - 1e-9  # type: ignore[attr-defined]


def test_participation_constraints_hold_at_every_history() -> None:
    _, d = solved(periods=2, participation=True)
    _, free = solved(periods=2)
    assert d.objective <= free.objective + 1e-9  # type: ignore[attr-defined]


def test_cli_design_risk_sharing_json() -> None:
    cmd = [
        sys.executable,
        "-m",
        "node.cli.main",
        "design",
        "risk-sharing",
        "--incomes",
        "1,2,3",
        "--probs",
        "1/3,1/3,1/3",
        "--transfers=-2:2:0.5",
        "--utility",
        "crra:1.5",
        "--endowment",
        "3",
        "--periods",
        "2",
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["verified"] is True and r["periods"] == 2
    assert len(r["lotteries"]) == 3 + 9
    assert all(sum(lot["weights"]) == r["resolution"] for lot in r["lotteries"])
    assert r["history_dependent"] is True


def test_a_design_file_becomes_the_schedule_a_contract_is_created_with(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "node.cli.main", "design", "risk-sharing", "--transfers=-2:2:0.5"]
    out = subprocess.run([*cmd, "--audit-cost", "1", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    path = tmp_path / "design.json"
    path.write_text(out.stdout)
    args = argparse.Namespace(design=str(path), unit=100, audit_cost=None)
    schedule, cost = load_schedule(args)
    direct = schedule_from_design(design_risk(RiskProblem(**BASE, audit_cost=1.0)), 100)  # type: ignore[arg-type]
    assert schedule == direct and cost == 1.0
    assert schedule.audits and schedule.transfers == tuple(range(-200, 201, 50))


def test_bench_risk_design_reports_its_figures(tmp_path: Path) -> None:
    r = bench_json(tmp_path, "risk-design", "--periods", "2", "--repeat", "1")
    assert r["lotteries"] == 3 + 9 and r["verified"] is True and r["seconds_median"] > 0
