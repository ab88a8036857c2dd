"""The exchange designer: LP, rounding, and the exact proof that honest play is the unique
subgame-perfect equilibrium."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.design.designer import DesignError, _linprog, design, solve, violated
from contracts.design.exchange import (
    BUYER,
    SELLER,
    STATES,
    ExchangeParams,
    exchange_game,
    moore_repullo_game,
)
from contracts.design.game import Node, constraints, spe_outcome, subgame_perfect, variables
from tests.helpers.exchange import KEEP_COST_ON, RANGES


def assert_sound(params: ExchangeParams, objective: str = "deposits", margin: int = 1) -> None:
    game = exchange_game(params)
    d = design(game, objective, margin)
    values = d.values
    assert all(v.denominator == 1 and v >= 0 for v in values.values()), "integer units"
    assert violated(game, values, margin) == []
    spe = subgame_perfect(game, values)
    for node in game.nodes():  # unique SPE: the prescribed move strictly best everywhere
        assert spe[node.label] == (node.prescribed, True), node.label
    total_in = params.price + d.deposit(SELLER) + d.deposit(BUYER)
    for s in STATES:
        assert d.transfer(s, SELLER) + d.transfer(s, BUYER) + d.burn(s) == total_in
        assert d.burn(s) >= 0
    honest = "RNN"
    keep = params.keep_cost if params.keep_cost_on == "delivery" else 0  # redeemed: not kept
    seller = d.transfer(honest, SELLER) - d.deposit(SELLER) - params.cost_high - keep
    buyer = (
        params.value_high
        - params.pickup_cost
        + d.transfer(honest, BUYER)
        - params.price
        - d.deposit(BUYER)
    )
    assert seller >= 0 and buyer >= 0, "individual rationality to the unit"
    lp = solve(game, margin, "deposits")
    lp_deposits = lp[("d", SELLER)] + lp[("d", BUYER)]
    assert d.deposit(SELLER) + d.deposit(BUYER) - lp_deposits < 2, "LP optimum up to rounding"


def test_the_default_design_makes_honest_play_the_unique_spe() -> None:
    game = exchange_game(ExchangeParams())
    # the seed's 15 nodes and the 7 after delivering nothing (issue 16, finding 3)
    assert sum(1 for _ in game.nodes()) == 22
    kinds = [c.name.split()[0] for c in constraints(game, 1)]
    assert (kinds.count("IC"), kinds.count("budget"), kinds.count("IR")) == (23, 8, 2)
    for keep_cost_on in ("delivery", "unredeemed"):
        assert_sound(ExchangeParams(keep_cost_on=keep_cost_on))
        assert_sound(ExchangeParams(keep_cost_on=keep_cost_on), objective="burn")


def test_delivering_nothing_never_beats_delivering_high() -> None:
    """Issue 16's reproduction: before, the seller got 0 honestly and 1 by delivering nothing
    (the buyer refunds and complains, the seller admits: row XCF)."""
    p = ExchangeParams(43, 199, 3, 30, 8, 17, 7, 1, 30)
    d = design(exchange_game(p))
    honest = d.transfer("RNN", SELLER) - d.deposit(SELLER) - p.cost_high - p.keep_cost
    nothing = d.transfer("XCF", SELLER) - d.deposit(SELLER)
    assert honest >= 0 and nothing < honest
    assert d.game.root.move("none").events == ("deliver", "timeout")


def test_when_the_keep_cost_falls_is_a_parameter_and_changes_the_deposits() -> None:
    p = ExchangeParams(256, 691, 143, 265, 136, 20, 15, 5, 9)
    assert p.keep_cost_on == "delivery"
    on_delivery = design(exchange_game(p))
    unredeemed = design(exchange_game(ExchangeParams(**{**vars(p), "keep_cost_on": "unredeemed"})))
    assert on_delivery.deposit(SELLER) + on_delivery.deposit(BUYER) == 31  # the LP's minimum
    assert unredeemed.deposit(SELLER) + unredeemed.deposit(BUYER) == 11
    root = on_delivery.game.root
    assert root.move("H").utility == {SELLER: -p.cost_high - p.keep_cost}
    redeem = unredeemed.game.root.move("H").child
    assert isinstance(redeem, Node) and redeem.move("X").utility == {SELLER: -p.keep_cost}
    with pytest.raises(ValueError):
        ExchangeParams(keep_cost_on="sometimes")


params = st.builds(
    ExchangeParams,
    **{name: st.integers(low, high) for name, (low, high) in RANGES.items()},
    keep_cost_on=st.sampled_from(KEEP_COST_ON),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=params, objective=st.sampled_from(["deposits", "burn"]))
def test_drawn_parameters_design_soundly_or_explain_why_not(
    p: ExchangeParams, objective: str
) -> None:
    try:
        assert_sound(p, objective)
    except DesignError as e:
        assert e.conflict, "an infeasible design must name its conflicting constraints"
        game = exchange_game(p)
        named = [c for c in constraints(game, 1) if c.name in e.conflict]
        xs = variables(game)
        assert _linprog(xs, named, np.zeros(len(xs))) is None, "the named set must conflict"
        for c in named:  # irreducible: drop any one and it can hold
            rest = [k for k in named if k is not c]
            assert _linprog(xs, rest, np.zeros(len(xs))) is not None


def test_an_impossible_design_names_the_constraints_in_conflict() -> None:
    with pytest.raises(DesignError) as info:
        design(exchange_game(ExchangeParams(fault_distaste=1)))
    # after low quality or nothing delivered the seller's node is the same constraint; the
    # deletion filter keeps the later one
    assert sorted(info.value.conflict) == [
        "IC seller at H/X/C: N over F",
        "IC seller at none/X/C: F over N",
    ]


@pytest.mark.parametrize(("quality", "payoffs"), [("high", (35, 35)), ("low", (10, 10))])
def test_moore_repullo_truthful_and_unchallenged(quality: str, payoffs: tuple[int, int]) -> None:
    game = moore_repullo_game(quality)
    spe = subgame_perfect(game, {})
    assert spe[""] == (quality, True)
    assert spe[quality] == ("no challenge", True)
    other = "low" if quality == "high" else "high"
    assert spe[other][0] == ("challenge" if quality == "high" else "no challenge")
    path, pay = spe_outcome(game, {})
    assert path == [quality, "no challenge"]
    assert (pay[BUYER], pay[SELLER]) == (Fraction(payoffs[0]), Fraction(payoffs[1]))


def tally(*args: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "node.cli.main", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_cli_design_exchange_json() -> None:
    r = tally("design", "exchange", "--price", "200", "--objective", "burn", "--json")
    assert r["price"] == 200 and r["objective"] == "burn" and r["verified"] is True
    rows = r["transfers"]
    assert isinstance(rows, list) and len(rows) == 8
    total = 200 + r["deposits"]["seller"] + r["deposits"]["buyer"]  # type: ignore[index]
    assert all(t["seller"] + t["buyer"] + t["burn"] == total for t in rows)
    assert {(t["redeem"], t["complain"], t["fault"]) for t in rows} == {
        (a, b, c) for a in (True, False) for b in (True, False) for c in (True, False)
    }
    assert r["game"]["player"] == "seller" and r["game"]["prescribed"] == "H"  # type: ignore[index]
    r = tally("design", "exchange", "--keep-cost-on", "unredeemed", "--json")
    assert r["parameters"]["keep_cost_on"] == "unredeemed" and r["verified"] is True  # type: ignore[index]


def test_cli_design_check_moore_repullo() -> None:
    r = tally("design", "check", "moore-repullo", "--json")
    assert r["high"]["payoffs"] == {"buyer": 35, "seller": 35}  # type: ignore[index]
    assert r["low"]["play"] == ["low", "no challenge"]  # type: ignore[index]
