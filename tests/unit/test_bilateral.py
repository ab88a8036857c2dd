"""Bilateral trade: Myerson-Satterthwaite on a 2x2 and a 3x3 grid (infeasible under
efficiency, with an exact certificate; the second best with its numbers), the contract's
exact checks refusing tampered schedules, deposits, messages and settlement (payments sum
to zero), a run on the ledger, and the CLI."""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from typing import Any

import pytest

from contracts.design.bilateral import (
    BilateralDesign,
    BilateralInfeasible,
    BilateralProblem,
    default_terms,
    design_bilateral,
    verify_certificate,
)
from contracts.kernel import lottery
from contracts.kernel.engine import KernelEngine
from contracts.kernel.rule import BadMessage, BadTerms, Seats
from contracts.mechanisms.bilateral import RULE, check_bilateral
from ledger.contract import engine_table
from node.cli import design_bilateral as bilateral_cli
from tests.helpers.contracts import design_cli
from tests.helpers.sealed import WINDOW, SealedChain, keys

F = Fraction
TWO = BilateralProblem.uniform((1, 10), (0, 9))
THREE = BilateralProblem.uniform((10, 30, 50), (0, 20, 40))


def second_best(problem: BilateralProblem) -> BilateralDesign:
    d = design_bilateral(problem)
    assert isinstance(d, BilateralDesign)
    return d


def infeasible(problem: BilateralProblem) -> BilateralInfeasible:
    d = design_bilateral(problem, efficient=True)
    assert isinstance(d, BilateralInfeasible)
    return d


def seats(draw: bytes) -> Seats:
    return Seats(b"c" * 32, b"x" * 20, (b"b" * 20, b"s" * 20), draw)


def fractions(table: list[list[Any]]) -> list[list[Fraction]]:
    return [[lottery.fraction(x, "x") for x in row] for row in table]


def test_two_by_two_efficiency_is_impossible() -> None:
    r = infeasible(TWO)
    assert r.budget == "ex_ante"  # the weaker budget of the slides: the stronger statement
    assert r.conflicts == {
        "BIC_buyer": True,
        "BIC_seller": True,
        "IR_buyer": True,
        "IR_seller": True,
        "budget": True,
        "efficiency": True,
    }  # every family is needed: drop any one and a mechanism exists
    assert r.certificate is not None and r.certificate.verified
    weights = dict(r.certificate.weights)
    # the proof on the slides: the low buyer's and the high seller's IR, the incentive
    # constraints between them, and the budget
    for row in (
        "IR_buyer[b=1]",
        "IR_seller[s=9]",
        "BIC_buyer[b=10 claims 1]",
        "BIC_seller[s=0 claims 9]",
        "budget[E(t_B - t_S)>=0]",
    ):
        assert weights[row] > 0
    assert verify_certificate(TWO, weights)
    assert r.to_json()["checks"] == {"lp_infeasible": True, "certificate_verified": True}


def test_a_tampered_certificate_does_not_verify() -> None:
    weights = dict(infeasible(TWO).certificate.weights)  # type: ignore[union-attr]
    halved = {**weights, "budget[E(t_B - t_S)>=0]": weights["budget[E(t_B - t_S)>=0]"] / 2}
    dropped = {k: v for k, v in weights.items() if k != "IR_seller[s=9]"}
    negative = {**weights, "IR_buyer[b=1]": -weights["IR_buyer[b=1]"]}
    unknown = {**weights, "IR_buyer[b=2]": F(1)}
    for bad in (halved, dropped, negative, unknown, {}):
        assert not verify_certificate(TWO, bad)
    # certified for the other budget's rows it is not a certificate either
    assert not verify_certificate(TWO, weights, budget="ex_post")


def test_two_by_two_second_best_numbers() -> None:
    d = second_best(TWO)
    assert d.verified and all(d.checks.values())
    assert fractions(d.terms["trade"]) == [[1, 0], [1, F(1, 4)]]
    assert d.gains == F(45, 16) and TWO.first_best() == 3
    assert d.lp_optimum == pytest.approx(45 / 16) and d.lp_optimum_ex_ante == pytest.approx(45 / 16)
    out = d.to_json()
    assert out["mechanism"] == "bilateral" and out["terms"] == d.terms
    assert out["gap"] == pytest.approx(0, abs=1e-9)
    assert out["deposits"] == {"buyer": 2, "seller": 0}


def test_three_by_three_numbers() -> None:
    r = infeasible(THREE)
    assert r.certificate is not None and verify_certificate(THREE, dict(r.certificate.weights))
    d = second_best(THREE)
    assert d.verified
    trade = fractions(d.terms["trade"])
    assert trade == [[1, 0, 0], [1, F(1, 3), 0], [1, 1, 1]]
    assert d.gains == F(400, 27) and THREE.first_best() == F(140, 9)
    assert d.gains < THREE.first_best()


def test_efficient_when_supports_do_not_overlap_is_a_posted_price() -> None:
    d = design_bilateral(BilateralProblem.uniform((5, 6), (1, 2)), efficient=True)
    assert isinstance(d, BilateralDesign) and d.verified
    assert d.posted_price == F(7, 2) and d.gains == 4
    assert fractions(d.terms["payment"]) == [[F(7, 2)] * 2] * 2


def test_small_grids_can_have_slack() -> None:
    """On a finite grid efficiency may be feasible although the supports overlap: the LP
    decides (buyer 1 or 3, seller 0 or 2)."""
    p = BilateralProblem.uniform((1, 3), (0, 2))
    d = design_bilateral(p, efficient=True)
    assert isinstance(d, BilateralDesign) and d.verified and d.gains == p.first_best()


def test_the_contract_accepts_the_design_and_refuses_tampering() -> None:
    terms = second_best(TWO).terms
    assert RULE.terms(terms, 2) == terms and check_bilateral(terms) == []
    t = copy.deepcopy(terms)
    t["payment"][1] = [[3, 1], [3, 1]]  # the high buyer pays 3 instead of 7/4: it claims 1
    with pytest.raises(BadTerms) as e:
        RULE.terms(t, 2)
    assert e.value.reason == "unsafe_design" and "BIC_buyer[b=10 claims 1]" in str(e.value)
    t = copy.deepcopy(terms)
    t["payment"][0] = [[2, 1], [2, 1]]  # the low buyer pays more than trade is worth
    assert "IR_buyer[b=1]" in check_bilateral(t)
    t = copy.deepcopy(terms)
    t["trade"][1][1] = [5, 4]
    assert "probabilities[b=10,s=9]" in check_bilateral(t)
    t = copy.deepcopy(terms)
    t["seller_prior"] = [[1, 2], [1, 3]]
    with pytest.raises(BadTerms, match="prior_seller") as e:
        RULE.terms(t, 2)
    assert e.value.reason == "unsafe_design"


@pytest.mark.parametrize(
    "change",
    [
        {"buyer_values": [10, 1]},
        {"buyer_values": [1, 10, 20]},
        {"trade": [[1, 0]]},
        {"payment": [[[1, 0], 0], [0, 0]]},
        {"default_report": [2, 0]},
        {"seller_values": [0, 1.5]},
        {"payment": [[0, 0], [0, 2 * 10**9 + 1]]},
    ],
)
def test_malformed_terms_are_bad_terms(change: dict[str, Any]) -> None:
    with pytest.raises(BadTerms) as e:
        RULE.terms({**second_best(TWO).terms, **change}, 2)
    assert e.value.reason == "bad_terms"


def test_two_parties_only() -> None:
    with pytest.raises(BadTerms):
        RULE.terms(second_best(TWO).terms, 3)
    with pytest.raises(ValueError):
        default_terms(3)
    assert RULE.terms(default_terms(2), 2) == default_terms(2)


def test_deposits_messages_and_defaults() -> None:
    terms = second_best(TWO).terms  # payments 1/2 (buyer 1) and 7/4 (buyer 10)
    assert RULE.min_deposit(terms, 0) == 2 and RULE.min_deposit(terms, 1) == 0
    t = copy.deepcopy(terms)
    t["payment"] = [[[-5, 2], [0, 1]], [[0, 1], [0, 1]]]
    assert RULE.min_deposit(t, 0) == 0 and RULE.min_deposit(t, 1) == 3
    assert RULE.message(terms, 0, 1, 0) == 1
    for bad in (2, -1, True, "1", None):
        with pytest.raises(BadMessage):
            RULE.message(terms, 0, bad, 10)
    assert (RULE.default(terms, 0), RULE.default(terms, 1)) == (0, 1)


def test_settlement_pays_exactly_and_sums_to_zero() -> None:
    terms = second_best(TWO).terms
    seen = {True: 0, False: 0}
    for n in range(200):
        out = RULE.settle(terms, [1, 1], seats(n.to_bytes(32, "big")))
        buyer, seller = out.transfers
        assert buyer + seller == 0 and out.burn == 0 and not out.receipts
        assert seller in (1, 2)  # 7/4 rounded: floor or ceil
        assert out.outcome["exact_payment"] == [7, 4] and out.outcome["payment"] == seller
        assert out.outcome["probability"] == [1, 4] and out.outcome["reports"] == [10, 9]
        seen[out.outcome["trade"]] += 1
    assert seen[True] and seen[False]  # trade with probability 1/4
    never = RULE.settle(terms, [0, 1], seats(b"\1" * 32))
    assert never.outcome["trade"] is False and sum(never.transfers) == 0


BUYER, SELLER, CREATOR = keys(3)


def test_on_the_ledger() -> None:
    terms = default_terms(2)  # buyer 5..35, seller 0..30: deposits 25 and 0
    ch = SealedChain(engine_table(KernelEngine(RULE)), [BUYER, SELLER, CREATOR])
    bad = copy.deepcopy(terms)
    bad["payment"][3] = [[40, 1]] * 4
    assert ch.create("bilateral", CREATOR, [BUYER, SELLER], penalty=3, terms=bad) == (
        "unsafe_design"
    )
    assert ch.create("bilateral", CREATOR, [BUYER, SELLER], penalty=3, terms=terms) == "ok"
    assert ch.call(BUYER, "deposit", amount=27) == "ok"
    assert ch.commit(BUYER, 3) == "deposit_too_small"  # the penalty 3 plus 25
    assert ch.call(BUYER, "deposit", amount=1) == "ok" and ch.commit(BUYER, 3) == "ok"
    assert ch.call(SELLER, "deposit", amount=3) == "ok" and ch.commit(SELLER, 1) == "ok"
    assert ch.reveal(BUYER, 3) == "ok"
    ch.wait(WINDOW + 1)  # the seller never reveals: forfeits 3, counts as cost 30
    s = ch.contract()
    assert s.phase == "settled" and s.outcome["reports"] == [35, 30]
    assert s.outcome["trade"] is True and s.outcome["forfeits"] == [0, 3]
    assert s.outcome["transfers"] == [-25, 25]
    assert (ch.balance(BUYER), ch.balance(SELLER)) == (10_000 - 25, 10_000 + 25 - 3)


def run_cli(*argv: str) -> int:
    return design_cli(bilateral_cli, None, "bilateral", *argv)[0]


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verified"] and out["terms"] == default_terms(2)
    assert out["expected_gains"] == [35, 4] and out["first_best"] == [75, 8]
    assert run_cli("--efficient", "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert not out["feasible"] and out["certificate"]["verified"]
    assert run_cli("--efficient", "--buyer", "1,10", "--seller", "0,9") == 1
    assert "IR_seller[s=9]" in capsys.readouterr().out
    assert run_cli("--efficient", "--buyer", "5,6", "--seller", "1,2") == 0
    assert "posted price of 7/2" in capsys.readouterr().out
    assert run_cli("--buyer", "1,2", "--buyer-probs", "1/3,1/2") == 1
    assert run_cli("--buyer", "1,x", "--json") == 1
    assert json.loads(capsys.readouterr().out)["error"] == "bad_problem"
