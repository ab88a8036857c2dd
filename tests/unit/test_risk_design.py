"""Townsend's risk-sharing programs: truth-telling exact after rounding, the full-information
benchmark, the cost of private information, history dependence, and audits."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from contracts.design.risk import RiskProblem, Utility, build, design_risk, violated
from contracts.risk_sharing.schedule import schedule_from_design
from node.cli.risk import load_schedule
from node.cluster.config import ConfigError
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


# -- issue 16: solved exactly first; the information regime travels with the design --------

CRRA8 = [
    "--incomes",
    "1,2,3",
    "--probs",
    ".3,.4,.3",
    "--endowment",
    "3",
    "--utility",
    "crra:8",
    "--transfers=-1:1:0.25",
]


def _design_cli(*args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "node.cli.main", "design", "risk-sharing", *args, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return dict(json.loads(out.stdout))


def test_crra_8_two_periods_reach_the_exact_lp_optimum_and_say_so() -> None:
    two = _design_cli(*CRRA8, "--periods", "2")
    one = _design_cli(*CRRA8, "--periods", "1")
    # the LP without margins; an independent LP (issue 16) agrees on -0.0022412
    assert two["lp_optimum"] == pytest.approx(-0.0022412, abs=1e-7)
    assert abs(two["objective"] - two["lp_optimum"]) <= 1e-6  # was -0.01796
    assert two["optimality_gap"] == pytest.approx(two["lp_optimum"] - two["objective"])
    assert two["verified"] is True
    # Townsend (1982): two periods beat the one-period contract repeated
    assert two["objective"] > one["objective"] * (1 + 0.95) + 1e-6


def test_no_spurious_audits_or_lottery_spikes() -> None:
    plain = design_risk(RiskProblem(**BASE))  # type: ignore[arg-type]
    costly = design_risk(RiskProblem(**BASE, audit_cost=2.0))  # type: ignore[arg-type]
    # at cost 2 the optimum never audits: no report gets an audit probability of 1e-4
    assert all(p == 0 for p in costly.audit_probability.values())
    assert costly.objective == pytest.approx(plain.objective, abs=1e-9)
    # Program 7's optimum is a fixed payment: no weight of 1e-4 on another transfer
    assert all(max(w) == plain.resolution for w in plain.weights.values())
    assert plain.optimality_gap == pytest.approx(0.0, abs=1e-9)


def test_a_public_design_records_its_regime_and_the_lies_that_pay() -> None:
    public = _design_cli("--public")
    private = _design_cli()
    assert public["information"] == "public" and public["incentive_compatible"] is False
    assert public["constraints"]["imposed"] == ["lottery sums"]
    assert (
        "IC period 1 after (): income 3 claims 1"
        in (public["constraints"]["truth_telling_violated"])
    )
    assert private["information"] == "private" and private["incentive_compatible"] is True
    assert private["constraints"]["verified"] == [
        "lottery sums",
        "truth-telling (Programs 7 and 8)",
    ]
    assert private["constraints"]["truth_telling_violated"] == []


def test_create_refuses_a_public_or_hand_edited_design_file(tmp_path: Path) -> None:
    path = tmp_path / "design.json"
    args = argparse.Namespace(design=str(path), unit=100, audit_cost=None)
    path.write_text(json.dumps(_design_cli("--public")))
    with pytest.raises(ConfigError, match="public design"):
        load_schedule(args)
    honest = _design_cli()
    path.write_text(json.dumps(honest))
    assert load_schedule(args)[0].truth_telling() == []  # the honest private design loads
    # pretend it was designed without --public, and hand the top report the best lottery
    public = _design_cli("--public")
    public["information"] = "private"
    path.write_text(json.dumps(public))
    with pytest.raises(ConfigError, match=r"income 300 gains .* by reporting 100"):
        load_schedule(args)
    edited = json.loads(json.dumps(honest))
    lots = edited["schedule"]["lotteries"]
    top = next(lot for lot in lots if lot[1] == [2])
    top[3] = [honest["resolution"]] + [0] * (len(top[3]) - 1)  # report 3: paid the most
    path.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match="by reporting 300"):
        load_schedule(args)


def test_a_row_with_no_slack_anywhere_is_named_unrepairable_not_verified() -> None:
    """Found by the optimality property test: with limited commitment and audits, the
    insurer's participation after a report of 1 holds with equality at every feasible
    point, and the optimum audits with probability 1 - 1/sqrt(2), which no weight out of
    10^6 hits exactly.  The designer must say so rather than call the rounding verified."""
    problem = RiskProblem(
        (1.0, 3.0),
        (0.5, 0.5),
        (-2.0, -1.0, 0.0, 1.0, 2.0),
        Utility("crra", 0.5),
        Utility("crra", 1.5),
        endowment=2.0,
        audit_cost=0.2,
        participation=True,
    )
    d = design_risk(problem)
    assert not d.verified
    assert violated(build(problem)[0], d) == d.unrepairable == ["participation agent 2 at (1)"]
    assert abs(float(d.audit_probability[0]) - (1 - 2**-0.5)) < 1e-6
