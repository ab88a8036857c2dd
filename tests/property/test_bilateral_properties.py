"""Bilateral trade over random small grids (2-3 values a side, random positive priors).

- Efficiency imposed: the LP's verdict agrees with an independent closed form when no
  value is shared (the discrete version of the slides' argument: the most a buyer can pay
  under BIC and IR against the least a seller accepts); when infeasible, the Farkas
  certificate verifies exactly and every family is needed; when feasible, the design is
  verified and reaches the first best.
- The second best: feasible, verified exactly by the contract's own check, its gains at
  most the first best and equal to the LP optimum, ex post balance costing nothing
  against ex ante; a tampered payment is refused with "unsafe_design".
- Supports that do not overlap: efficiency is feasible (a posted price).
- Settlement: the two transfers sum to zero at every draw.
"""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.design.bilateral import (
    BilateralDesign,
    BilateralInfeasible,
    BilateralProblem,
    design_bilateral,
    verify_certificate,
)
from contracts.kernel import lottery
from contracts.kernel.rule import BadTerms, Seats
from contracts.mechanisms.bilateral import RULE, parse

SETTINGS = settings(max_examples=40, deadline=None)


def _prior(weights: list[int]) -> tuple[Fraction, ...]:
    return tuple(Fraction(w, sum(weights)) for w in weights)


@st.composite
def problems(draw: st.DrawFn, shared: bool = True) -> BilateralProblem:
    """Random grids; with `shared` False no value is both a buyer's and a seller's."""
    nb, ns = draw(st.integers(2, 3)), draw(st.integers(2, 3))
    if shared:
        buyer = draw(st.sets(st.integers(0, 20), min_size=nb, max_size=nb))
        seller = draw(st.sets(st.integers(0, 20), min_size=ns, max_size=ns))
    else:
        values = draw(
            st.permutations(
                sorted(draw(st.sets(st.integers(0, 20), min_size=nb + ns, max_size=nb + ns)))
            )
        )
        buyer, seller = set(values[:nb]), set(values[nb:])
    weights = st.integers(1, 5)
    return BilateralProblem(
        tuple(sorted(buyer)),
        _prior([draw(weights) for _ in range(nb)]),
        tuple(sorted(seller)),
        _prior([draw(weights) for _ in range(ns)]),
    )


def efficient_trade_possible(pr: BilateralProblem) -> bool:
    """No value shared, trade exactly when b > s: the interim trade chances P (buyer) and Q
    (seller) are fixed.  BIC and IR let the buyer pay at most
    sum_j b_j (P_j - P_{j-1}) Pr(b >= b_j) and the seller accept no less than
    sum_k s_k (Q_k - Q_{k+1}) Pr(s <= s_k); a budget-balanced mechanism exists iff the
    first covers the second."""
    bv, bp, sv, sp = pr.buyer_values, pr.buyer_prior, pr.seller_values, pr.seller_prior
    p = [sum((q for s, q in zip(sv, sp, strict=True) if s < b), Fraction(0)) for b in bv]
    q = [sum((w for b, w in zip(bv, bp, strict=True) if b > s), Fraction(0)) for s in sv]
    pay = sum(
        (b * (p[j] - (p[j - 1] if j else 0)) * sum(bp[j:]) for j, b in enumerate(bv)),
        Fraction(0),
    )
    accept = sum(
        (
            s * (q[k] - (q[k + 1] if k + 1 < len(q) else 0)) * sum(sp[: k + 1])
            for k, s in enumerate(sv)
        ),
        Fraction(0),
    )
    return pay >= accept


def check_efficient(pr: BilateralProblem) -> bool:
    """The efficient design's own guarantees; returns whether it was feasible."""
    d = design_bilateral(pr, efficient=True)
    if isinstance(d, BilateralInfeasible):
        assert d.certificate is not None and d.certificate.verified
        assert verify_certificate(pr, dict(d.certificate.weights), d.budget)
        assert all(d.conflicts.values())  # every family is needed
        return False
    assert d.verified and d.gains == pr.first_best()
    return True


@SETTINGS
@given(problems(shared=False))
def test_efficiency_is_feasible_exactly_when_the_closed_form_says(pr: BilateralProblem) -> None:
    assert check_efficient(pr) == efficient_trade_possible(pr)


@SETTINGS
@given(problems())
def test_efficient_design_or_certificate(pr: BilateralProblem) -> None:
    check_efficient(pr)


@SETTINGS
@given(problems())
def test_second_best(pr: BilateralProblem) -> None:
    d = design_bilateral(pr)
    assert isinstance(d, BilateralDesign) and d.verified and all(d.checks.values())
    assert 0 <= d.gains <= pr.first_best()
    assert float(d.gains) == pytest.approx(d.lp_optimum, abs=1e-7)
    assert d.lp_optimum == pytest.approx(d.lp_optimum_ex_ante, abs=1e-7)
    assert RULE.terms(d.terms, 2) == d.terms
    # tamper: buyer type i pays its whole interim surplus plus one more in every cell
    i = len(pr.buyer_values) // 2
    surplus = parse(d.terms).buyer_utility(i, i)
    bad = copy.deepcopy(d.terms)
    bad["payment"][i] = [
        lottery.stored(lottery.fraction(t, "t") + surplus + 1) for t in bad["payment"][i]
    ]
    with pytest.raises(BadTerms) as e:
        RULE.terms(bad, 2)
    assert e.value.reason == "unsafe_design" and f"IR_buyer[b={pr.buyer_values[i]}]" in str(e.value)


@SETTINGS
@given(problems(), st.integers(0, 30))
def test_separated_supports_trade_efficiently(pr: BilateralProblem, lift: int) -> None:
    low = min(pr.buyer_values)
    shift = max(pr.seller_values) - low + lift  # every buyer value now >= every seller cost
    lifted = BilateralProblem(
        tuple(b + shift for b in pr.buyer_values), pr.buyer_prior, pr.seller_values, pr.seller_prior
    )
    d = design_bilateral(lifted, efficient=True)
    assert isinstance(d, BilateralDesign) and d.verified and d.posted_price is not None
    assert d.gains == lifted.first_best()


@SETTINGS
@given(problems(), st.binary(min_size=32, max_size=32), st.data())
def test_settlement_sums_to_zero(pr: BilateralProblem, draw: bytes, data: st.DataObject) -> None:
    d = design_bilateral(pr)
    assert isinstance(d, BilateralDesign)
    b = data.draw(st.integers(0, len(pr.buyer_values) - 1))
    s = data.draw(st.integers(0, len(pr.seller_values) - 1))
    out = RULE.settle(d.terms, [b, s], Seats(b"c" * 32, b"x" * 20, (b"b" * 20, b"s" * 20), draw))
    assert sum(out.transfers) == 0
    t = d.schedule.payment[b][s]
    assert out.transfers[1] in (t.__floor__(), t.__ceil__())
    assert -out.transfers[0] <= RULE.min_deposit(d.terms, 0)
    assert out.transfers[0] >= -RULE.min_deposit(d.terms, 0)
    assert -out.transfers[1] <= RULE.min_deposit(d.terms, 1)
