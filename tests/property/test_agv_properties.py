"""AGV over random small problems (2-3 agents, 2-3 types, 2-3 decisions, integer utilities
and priors): the design passes check_agv, and, recomputed here by brute force, the decision
is efficient, the budget balances exactly at every profile and truth-telling is a
Bayesian-Nash equilibrium; perturbing one transfer breaks the balance, and both check_agv
and the contract name it."""

from __future__ import annotations

import copy
from fractions import Fraction
from itertools import product
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.design.agv import AgvDesign, AgvProblem, design_agv
from contracts.kernel import lottery
from contracts.kernel.rule import BadTerms, Seats
from contracts.mechanisms.agv import RULE, check_agv

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def problems(draw: st.DrawFn) -> AgvProblem:
    n = draw(st.integers(2, 3))
    d = draw(st.integers(2, 3))
    sizes = [draw(st.integers(2, 3)) for _ in range(n)]
    prior = []
    for s in sizes:
        w = draw(st.lists(st.integers(1, 5), min_size=s, max_size=s))
        prior.append(tuple(Fraction(x, sum(w)) for x in w))
    utility = tuple(
        tuple(tuple(Fraction(draw(st.integers(-5, 5))) for _ in range(d)) for _ in range(s))
        for s in sizes
    )
    return AgvProblem(
        tuple(f"x{x}" for x in range(d)),
        tuple(tuple(f"t{r}" for r in range(s)) for s in sizes),
        tuple(prior),
        utility,
    )


def table(terms: dict[str, Any], key: str) -> list[list[Fraction]]:
    return [[lottery.fraction(v, key) for v in row] for row in terms[key]]


def profiles(problem: AgvProblem) -> list[tuple[int, ...]]:
    return list(product(*(range(len(ts)) for ts in problem.types)))


def interim_payoff(d: AgvDesign, i: int, theta: int, report: int) -> Fraction:
    """E over the others' types of i's utility plus transfer, i (type theta) reporting."""
    p, t = d.problem, table(d.terms, "transfers")
    total = Fraction(0)
    for k, profile in enumerate(profiles(p)):
        if profile[i] != report:
            continue
        w = Fraction(1)
        for j, tj in enumerate(profile):
            w *= p.prior[j][tj] if j != i else 1
        total += w * (p.utility[i][theta][d.terms["decision"][k]] + t[k][i])
    return total


@SETTINGS
@given(problems())
def test_design_is_verified_efficient_balanced_and_bic(problem: AgvProblem) -> None:
    d = design_agv(problem)
    assert d.verified and check_agv(d.terms) == [] and all(d.checks.values())
    assert RULE.terms(d.terms, len(problem.types)) == d.terms
    for k, profile in enumerate(profiles(problem)):
        welfare = [
            sum(problem.utility[i][r][x] for i, r in enumerate(profile))
            for x in range(len(problem.decisions))
        ]
        assert welfare[d.terms["decision"][k]] == max(welfare)
        assert sum(table(d.terms, "transfers")[k]) == 0
    for i, ts in enumerate(problem.types):
        for theta in range(len(ts)):
            truth = interim_payoff(d, i, theta, theta)
            assert all(truth >= interim_payoff(d, i, theta, r) for r in range(len(ts)))


@SETTINGS
@given(problems(), st.data())
def test_one_perturbed_transfer_is_named_and_refused(problem: AgvProblem, data: Any) -> None:
    d = design_agv(problem)
    t = copy.deepcopy(d.terms)
    k = data.draw(st.integers(0, len(t["transfers"]) - 1))
    i = data.draw(st.integers(0, len(problem.types) - 1))
    delta = data.draw(st.fractions(-10, 10, max_denominator=7).filter(lambda x: x != 0))
    t["transfers"][k][i] = lottery.stored(lottery.fraction(t["transfers"][k][i], "t") + delta)
    failures = check_agv(t)
    assert any(f.startswith("budget_balanced: ") and f"#{k} " in f for f in failures)
    with pytest.raises(BadTerms) as e:
        RULE.terms(t, len(problem.types))
    assert e.value.reason == "unsafe_design" and "budget_balanced" in str(e.value)


@SETTINGS
@given(problems(), st.data())
def test_settlement_balances_at_every_draw(problem: AgvProblem, data: Any) -> None:
    d = design_agv(problem)
    reports = [data.draw(st.integers(0, len(ts) - 1)) for ts in problem.types]
    draw = data.draw(st.binary(min_size=32, max_size=32))
    n = len(reports)
    s = RULE.settle(d.terms, reports, Seats(b"c" * 32, b"b" * 20, (b"p" * 20,) * n, draw))
    assert sum(s.transfers) == 0
    exact = [lottery.fraction(v, "t") for v in s.outcome["exact_transfers"]]
    assert all(v // 1 <= p <= -(-v // 1) for p, v in zip(s.transfers, exact, strict=True))
    most = [RULE.min_deposit(d.terms, i) for i in range(n)]
    assert all(-p <= m for p, m in zip(s.transfers, most, strict=True))
