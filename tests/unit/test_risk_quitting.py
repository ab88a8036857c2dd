"""Walking away from a risk-sharing contract never pays (issue 16, finding 5).

A party walks away by missing a commitment (either agent) or the report (agent 1): the
contract closes.  The quitter's payoff is counted exactly, in ledger units, against
staying, at every history of a renewed multi-period contract.  Under the old rules a
breach cost one penalty: with the reference one-period design (transfers -1..1 by 0.25,
a sure payment of 0.75 to agent 1) renewed over 10 periods, agent 2 expects to pay 750
and walked away at the first commitment for 300."""

from __future__ import annotations

import itertools
from dataclasses import replace
from fractions import Fraction

import pytest

from contracts.design.risk import RiskProblem, Utility, design_risk
from contracts.risk_sharing import RiskEvent, commitment
from contracts.risk_sharing.engine import _check_commitment
from contracts.risk_sharing.schedule import Schedule, schedule_from_design
from ledger.contract import ContractError
from tests.unit.test_risk_sharing import (
    AGENT1,
    AGENT2,
    ROLE,
    TWO_PERIODS,
    WINDOW,
    Chain,
    secret,
)

U = Utility.parse("crra:1.5")
REFERENCE = schedule_from_design(
    design_risk(
        RiskProblem(
            (1.0, 2.0, 3.0), (1 / 3,) * 3, tuple(-1 + 0.25 * k for k in range(9)), U, U, 3.0
        )
    ),
    100,
)
PERIODS = 10
PENALTY = 300  # the CLI's default: the spread of transfers (200) plus one unit (100)


def quit_at(
    schedule: Schedule,
    quitter: str,
    when: int,
    periods: int,
    report: int = 0,
    penalty: int = PENALTY,
) -> int:
    """Agent 2's (or agent 1's) money after the contract, when `quitter` misses its
    commitment at period `when` (agent 1 misses the report instead, when quitter is
    "report"); everyone reports `report` and plays honestly until then."""
    chain = Chain()
    chain.open(schedule, periods=periods, penalty=penalty, audit_fee=0)
    before = chain.balance(AGENT1), chain.balance(AGENT2)
    held = chain.rs.collateral
    for _ in range(1, when):
        chain.period(report)
    p = chain.rs.period
    if quitter == "report":
        chain.commit_both()
    else:
        other = AGENT1 if quitter == "agent2" else AGENT2
        c = commitment(chain.cid, p, ROLE[other], secret(9))
        assert chain.call(other, "commit", period=p, commitment=c) == "ok"
    chain.wait(WINDOW)
    assert chain.rs.stage == "closed"
    chain.check_books()
    gains = chain.balance(AGENT1) - before[0] - held[0], chain.balance(AGENT2) - before[1] - held[1]
    return gains[1] if quitter == "agent2" else gains[0]


def stay(schedule: Schedule, periods: int, report: int = 0) -> tuple[int, int]:
    chain = Chain()
    chain.open(schedule, periods=periods, penalty=PENALTY, audit_fee=0)
    before = chain.balance(AGENT1), chain.balance(AGENT2)
    held = chain.rs.collateral
    for _ in range(periods):
        chain.period(report)
    assert chain.rs.stage == "closed"
    return chain.balance(AGENT1) - before[0] - held[0], chain.balance(AGENT2) - before[1] - held[1]


def test_the_reference_design_renewed_over_ten_periods_costs_agent_2_750() -> None:
    assert {lot.weights for lot in REFERENCE.lotteries} == {(0, 10**6, 0, 0, 0, 0, 0, 0, 0)}
    assert REFERENCE.transfers[1] == -75
    assert stay(REFERENCE, PERIODS) == (750, -750)


def old_rules(when: int) -> int:
    """Agent 2's cost of quitting at period `when` under the old rules: the periods played
    and one penalty (this figure was measured on the engine before the change)."""
    return 75 * (when - 1) + PENALTY


def test_under_the_old_rules_the_quitter_won() -> None:
    assert old_rules(1) == 300 < 750
    assert [w for w in range(1, PERIODS + 1) if old_rules(w) < 750] == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("when", range(1, PERIODS + 1))
def test_a_rational_quitter_loses_at_every_period(when: int) -> None:
    """Agent 2 stays: -750.  Quitting at period P costs the P - 1 payments made, the
    penalty and the 75 a period the rest would have cost: 300 more than staying."""
    cost = -quit_at(REFERENCE, "agent2", when, PERIODS)
    assert cost == 75 * (when - 1) + PENALTY + 75 * (PERIODS - when + 1) == 1050
    assert cost > 750 > old_rules(when) or when >= 7
    # agent 1 is paid 75 a period: walking away (commitment or report) forfeits the penalty
    # and the rest of her payments
    for quitter in ("agent1", "report"):
        assert quit_at(REFERENCE, quitter, when, PERIODS) == 75 * (when - 1) - PENALTY < 750


def staying_cost(
    schedule: Schedule,
    agent: int,
    periods: int,
    period: int,
    past: tuple[int, ...],
    income: int | None,
) -> Fraction:
    """Exactly, what staying from `period` on is expected to cost `agent` in ledger units
    (truthful reports, incomes by the schedule's beliefs), after the reports `past`, with
    this period's income `income` (None: drawn after the last report)."""
    if period > periods:
        return Fraction(0)
    n, h = len(schedule.incomes), schedule.horizon
    if income is None:
        p = schedule.beliefs[past[-1]]
        return sum(
            (
                Fraction(p[k], p[-1]) * staying_cost(schedule, agent, periods, period, past, k)
                for k in range(n)
            ),
            Fraction(0),
        )
    start = (period - 1) // h * h
    reports = (*past[start:], income)
    w = schedule.table[(period - start, reports, 0)]
    tau = Fraction(sum(x * y for x, y in zip(schedule.transfers, w, strict=True)), sum(w))
    now = tau if agent == 1 else -tau
    return now + staying_cost(schedule, agent, periods, period + 1, (*past, income), None)


def test_staying_beats_walking_away_at_every_history_of_a_renewed_two_period_design() -> None:
    """The two-period design renewed over 4 periods: at every history of reports, and for
    agent 1 at the report with every income, the forfeit exceeds what staying is expected
    to cost, exactly, by at least the penalty.  The engine takes that forfeit."""
    periods, n, penalty = 4, len(TWO_PERIODS.incomes), 500  # transfers span -200..200
    chain = Chain()
    chain.open(TWO_PERIODS, periods=periods, penalty=penalty, audit_fee=0)
    rs = chain.rs
    margins = []
    for period in range(1, periods + 1):
        for past in itertools.product(range(n), repeat=period - 1):
            for agent, role in ((1, "agent1"), (2, "agent2")):
                # period 1: any first income; agent 1 at the report knows this one
                incomes: list[int | None] = [None] if past else []
                if agent == 1 or not past:
                    incomes += list(range(n))
                for income in incomes:
                    cost = staying_cost(TWO_PERIODS, agent, periods, period, past, income)
                    margins.append(rs.forfeit(role, period) - cost)
    assert min(margins) >= penalty
    # agent 2's worst expected period costs 100 (a report of 1 in period 1, or of 3 then)
    assert TWO_PERIODS.worst_expected_payment(2) == 100
    assert [rs.forfeit("agent2", p) for p in range(1, 5)] == [900, 800, 700, 600]
    for when in range(1, periods + 1):
        played = sum(-e.amount for e in _played(TWO_PERIODS, when - 1))
        assert -quit_at(TWO_PERIODS, "agent2", when, periods, penalty=penalty) == (
            played + rs.forfeit("agent2", when)
        )


def _played(schedule: Schedule, periods: int) -> list[RiskEvent]:
    """The transfers of `periods` honest periods with reports of the lowest income."""
    chain = Chain()
    chain.open(schedule, periods=4, penalty=500, audit_fee=0)
    for _ in range(periods):
        chain.period(0)
    return [e for e in chain.rs.history if e.kind == "transfer"]


def test_terms_whose_collateral_cannot_fund_the_forfeit_are_refused() -> None:
    """The create check: the forfeit at every period fits in the collateral still held then
    and exceeds the quitter's saving; it is implied by the sizing, and guards it."""
    chain = Chain()
    assert chain.create(REFERENCE, periods=PERIODS, penalty=PENALTY, audit_fee=0) == "ok"
    rs = chain.rs
    assert rs.required("agent2") == PERIODS * (100 + PENALTY) >= rs.forfeit("agent2", 1) == 1050
    _check_commitment(rs)
    with pytest.raises(ContractError) as refused:  # no penalty: quitting would only break even
        _check_commitment(replace(rs, penalty=0))
    assert refused.value.reason == "quitting_pays"
