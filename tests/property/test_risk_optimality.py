"""The risk-sharing designer against drawn problems: the rounded, exactly verified schedule is
within a stated tolerance of the exact LP optimum, and never below what is obviously feasible.

Townsend's Programs 7, 8 and 9 (/work/shared/seeds/000_562edbfd514851a1.txt, "Risk Sharing
with Private Information on Crop Output", "Optimal Multiperiod Tie-ins", "Costly State
Verification") maximise, in `contracts.design.risk.build`,

    objective = sum over periods t = 1..T of beta**(t-1) * E[lambda1 U1(theta_t - tau)
                                                            + lambda2 U2(W + tau)]

(audits cost agent 2 K).  Two schedules are feasible for every such program, so the design's
value must not fall below theirs (up to the tolerance):

- **autarky**: tau = 0 whatever is reported (when 0 is on the grid).  Every report gets the
  same lottery, so no lie pays, and participation holds with equality.  Its value is
  sum_t beta**(t-1) sum_theta P_t(theta) (lambda1 U1(theta) + lambda2 U2(W)), where P_1 is
  the first period's distribution and P_{t+1} = P_t M under a Markov chain M.
- **the one-period optimum repeated** (i.i.d. incomes): a lie today changes nothing later,
  so the one-shot-lie constraints of Program 8 reduce to Program 7's, and the one-period
  participation constraints imply the multi-period ones.  Each period is worth V1, the
  one-period design's objective, so the T-period value is V1 * (1 + beta + ... + beta**(T-1)).

TOLERANCE bounds the optimality gap (LP optimum minus the rounded schedule's value) and the
slack of the comparisons: 1e-6 per unit of |LP optimum| (at least 1e-6).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from contracts.design.risk import (
    InfeasibleDesign,
    RiskDesign,
    RiskProblem,
    Utility,
    build,
    design_risk,
    violated,
)
from contracts.risk_sharing.schedule import schedule_from_design


def tolerance(problem: RiskProblem, d: RiskDesign) -> float:
    """What rounding every weight to a multiple of 1/R can cost at most (each count moves by
    less than one, so the objective by at most the sum of its coefficients over R), plus
    10^-6 per unit of the optimum.  With steep utilities (CRRA 8) rounding alone costs a
    few 10^-6: a bound relative to the optimum only was flaky."""
    _, objective = build(problem)
    rounding = sum(abs(float(v)) for v in objective.values()) / d.resolution
    return rounding + 1e-6 * max(1.0, abs(d.lp_optimum))


@st.composite
def problems(draw: st.DrawFn) -> RiskProblem:
    n = draw(st.integers(2, 3))
    incomes = tuple(
        sorted(draw(st.sets(st.sampled_from([1.0, 2.0, 3.0, 4.0]), min_size=n, max_size=n)))
    )
    weights = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    probs = tuple(w / sum(weights) for w in weights)
    step = draw(st.sampled_from([0.25, 0.5, 1.0]))
    reach = draw(st.sampled_from([1.0, 2.0]))
    transfers = tuple(-reach + step * k for k in range(round(2 * reach / step) + 1))
    utility = draw(
        st.sampled_from(["crra:0.5", "crra:1", "crra:1.5", "crra:3", "crra:8", "cara:0.7"])
    )
    periods = draw(st.integers(1, 2))
    audits = periods == 1 and draw(st.booleans())
    markov = None
    if periods == 2 and draw(st.booleans()):
        rows = [draw(st.lists(st.integers(1, 4), min_size=n, max_size=n)) for _ in range(n)]
        markov = tuple(tuple(x / sum(r) for x in r) for r in rows)
    return RiskProblem(
        incomes=incomes,
        probs=probs,
        transfers=transfers,
        u1=Utility.parse(utility),
        u2=Utility.parse(draw(st.sampled_from([utility, "crra:1.5"]))),
        endowment=draw(st.sampled_from([2.0, 3.0])),
        periods=periods,
        markov=markov,
        beta=draw(st.sampled_from([0.9, 0.95])),
        weights=(1.0, draw(st.sampled_from([1.0, 0.5, 2.0]))),
        audit_cost=draw(st.sampled_from([0.2, 1.0])) if audits else None,
        participation=draw(st.booleans()),
    )


def autarky(problem: RiskProblem) -> float | None:
    """The value of tau = 0 in every period (None if 0 is not on the grid)."""
    if 0.0 not in problem.transfers:
        return None
    lam1, lam2 = problem.weights
    u2 = problem.u2(problem.endowment)
    u1 = [problem.u1(x) for x in problem.incomes]
    if u2 is None or None in u1:
        return None
    dist = list(problem.probs)
    n, total = len(problem.incomes), 0.0
    for t in range(problem.periods):
        now = sum(p * (lam1 * (u or 0.0) + lam2 * u2) for p, u in zip(dist, u1, strict=True))
        total += problem.beta**t * now
        if problem.markov is not None:
            dist = [sum(dist[i] * problem.markov[i][k] for i in range(n)) for k in range(n)]
    return total


def designed(problem: RiskProblem) -> RiskDesign:
    try:
        return design_risk(problem)
    except InfeasibleDesign:
        assume(False)
        raise


@settings(max_examples=60, deadline=None)
@given(problem=problems())
def test_the_rounded_design_is_near_the_lp_optimum_and_beats_what_is_feasible(
    problem: RiskProblem,
) -> None:
    d = designed(problem)
    tol = tolerance(problem, d)
    if not d.verified:
        # Only when the designer names why: a broken row that holds with equality at every
        # feasible point, so no margin can absorb the rounding (test_risk_design.py has such
        # a problem).  Such a design is not deployable, and there is nothing more to check.
        assert d.unrepairable and set(d.unrepairable) <= set(violated(build(problem)[0], d))
        return
    assert abs(d.objective - d.lp_optimum) <= tol, (d.objective, d.lp_optimum)
    assert d.optimality_gap == d.lp_optimum - d.objective
    # the contract's own exact check agrees: no lie pays under the schedule it would hold
    assert schedule_from_design(d, 100).truth_telling() == []
    floor = autarky(problem)
    if floor is not None:
        assert d.objective >= floor - tol, ("below autarky", d.objective, floor)
    if problem.periods > 1 and problem.markov is None:
        one = designed(replace(problem, periods=1))
        repeated = one.objective * sum(problem.beta**t for t in range(problem.periods))
        assert d.objective >= repeated - tol, (
            "below the one-period design repeated",
            d.objective,
            repeated,
        )
