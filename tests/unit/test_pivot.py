"""The public good by the pivot (Clarke) scheme: build and not-build examples with taxes,
where the surplus goes, the minimum deposit, bad and tampered terms, the designer and CLI
(contracts/mechanisms/pivot.py, contracts/design/pivot.py)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from contracts.design.pivot import DesignError, default_terms, design_pivot
from contracts.kernel.checks import harness_seats
from contracts.kernel.engine import KernelEngine
from contracts.kernel.rule import BadMessage, BadTerms
from contracts.mechanisms.pivot import PivotRule, min_deposit
from ledger.contract import BURN_ADDRESS, engine_table
from node.cli import design_auction as cli
from tests.helpers.contracts import design_cli
from tests.helpers.sealed import WINDOW, SealedChain, keys

RULE = PivotRule()
SEATS = harness_seats(3)
BUILDER = SEATS.creator
CHARITY = b"\xcc" * 20


def terms(**kw: Any) -> dict[str, Any]:
    args = {"cost": 90, "shares": [30, 30, 30], "cap": 60, "surplus_to": b"", **kw}
    return RULE.terms(args, len(args["shares"]))


def test_built_with_a_pivotal_agent() -> None:
    # net values 30, 10, -30: built (sum 10 >= 0).  Without agent 0 the others' net is -20:
    # not built, so agent 0 is pivotal and pays 20 on top of its share; the others are not.
    s = RULE.settle(terms(), [60, 40, 0], SEATS)
    assert s.outcome["build"] is True
    assert s.outcome["pivotal"] == [True, False, False]
    assert s.outcome["taxes"] == [20, 0, 0]
    assert s.transfers == (-50, -30, -30)
    assert dict(s.receipts) == {BUILDER: 90} and s.burn == 20  # the surplus is burnt


def test_not_built_with_taxes() -> None:
    # net values 20, -10, -20: not built (sum -10).  Without agent 2 the others' net is 10:
    # it would be built, so agent 2 pays 10.  Agent 1 is pivotal too, with a tax of 0.
    s = RULE.settle(terms(), [50, 20, 10], SEATS)
    assert s.outcome["build"] is False
    assert s.outcome["pivotal"] == [False, True, True]
    assert s.outcome["taxes"] == [0, 0, 10]
    assert s.transfers == (0, 0, -10) and dict(s.receipts) == {} and s.burn == 10


def test_the_surplus_goes_to_the_named_account() -> None:
    s = RULE.settle(terms(surplus_to=CHARITY), [60, 40, 0], SEATS)
    assert dict(s.receipts) == {BUILDER: 90, CHARITY: 20} and s.burn == 0
    assert s.outcome["surplus_to"] == CHARITY.hex()
    assert RULE.terms({**terms(), "surplus_to": CHARITY.hex()}, 3)["surplus_to"] == CHARITY
    # the builder may be the surplus account too: one receipt, K plus the surplus
    same = RULE.settle(terms(surplus_to=BUILDER), [60, 40, 0], SEATS)
    assert dict(same.receipts) == {BUILDER: 110}
    # an agent as the surplus account would be rebated others' taxes (not DSIC): burnt
    agent = RULE.settle(terms(surplus_to=SEATS.parties[1]), [60, 40, 0], SEATS)
    assert dict(agent.receipts) == {BUILDER: 90} and agent.burn == 20
    assert agent.outcome["surplus_to"] == ""


def test_exactly_covering_the_cost_builds_and_nobody_pays_tax() -> None:
    s = RULE.settle(terms(), [30, 30, 30], SEATS)
    assert s.outcome["build"] and s.outcome["taxes"] == [0, 0, 0]
    assert s.transfers == (-30, -30, -30)


def test_min_deposit_covers_every_payment_by_enumeration() -> None:
    # unequal shares, one above half the cap, one at 0; every report profile 0..cap
    t = RULE.terms({"cost": 9, "shares": [1, 2, 6], "cap": 7, "surplus_to": b""}, 3)
    assert [min_deposit(t, i) for i in range(3)] == [7, 7, 12]
    tight = [0, 0, 0]
    for reports in itertools.product(range(8), repeat=3):
        s = RULE.settle(t, list(reports), SEATS)
        assert min(s.outcome["taxes"]) >= 0 and s.outcome["surplus"] >= 0
        for i, paid in enumerate(s.transfers):
            assert -paid <= RULE.min_deposit(t, i)
            tight[i] = max(tight[i], -paid)
    assert tight == [7, 7, 7]  # when built a payment reaches the cap


def test_messages_and_defaults() -> None:
    t = terms()
    assert RULE.message(t, 0, 60, 0) == 60 and RULE.default(t, 1) == 0
    assert RULE.missing_commit == "cancel"
    for bad in (61, -1, True, "5", [5]):
        with pytest.raises(BadMessage, match=r"willingness to pay 0\.\.60"):
            RULE.message(t, 0, bad, 1000)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"cost": 0, "shares": [0, 0, 0]}, "cost"),
        ({"cost": 90, "shares": [45, 45]}, "2 shares for 3 parties"),
        ({"cap": -1}, "cap"),
        ({"shares": [30, 30, -30], "cost": 30}, "shares"),
        ({"surplus_to": b"\x01" * 19}, "surplus_to"),
        ({"surplus_to": "zz"}, "surplus_to"),
        ({"verify": {"values": [0, 61], "claims": []}}, "values"),
        ({"verify": {"values": [0, 30], "claims": ["fair"]}}, "claims"),
    ],
)
def test_bad_terms_are_refused_with_a_reason(args: dict[str, Any], says: str) -> None:
    full = {"cost": 90, "shares": [30, 30, 30], "cap": 60, "surplus_to": b"", **args}
    with pytest.raises(BadTerms, match=says) as e:
        RULE.terms(full, 3)
    assert e.value.reason == "bad_terms"


def test_oversize_check_is_refused() -> None:
    args = {"cost": 90, "shares": [10] * 9, "cap": 60}
    with pytest.raises(BadTerms, match="over the bound"):
        RULE.terms({**args, "verify": {"values": list(range(8)), "claims": []}}, 9)


def test_a_tampered_design_is_refused_as_unsafe() -> None:
    good = design_pivot(90, agents=3).terms
    assert RULE.terms(good, 3) == good
    short = {**good, "shares": [30, 30, 20]}  # the shares no longer cover K
    with pytest.raises(BadTerms, match=r"budget fails.*sum to 80, not the cost 90") as e:
        RULE.terms(short, 3)
    assert e.value.reason == "unsafe_design"
    claims_ir = {**good, "verify": {**good["verify"], "claims": ["dsic", "ir"]}}
    with pytest.raises(BadTerms, match="ir fails") as e:
        RULE.terms(claims_ir, 3)
    assert e.value.reason == "unsafe_design"


def test_design_reports_checks_and_figures() -> None:
    out = design_pivot(90, agents=3, grid=(0, 30, 60)).to_json()
    assert out["mechanism"] == "pivot"
    assert {k: v for k, v in out["checks"].items() if not v} == {"ir": False}
    assert out["witnesses"]["ir"] == {"profile": [0, 30, 60], "agent": 0, "utility": -30}
    assert out["deposits"] == [60, 60, 60] and out["surplus_goes_to"] == "burn"
    assert out["build_rate"] == [17, 27] and out["mean_surplus"] == [20, 3]
    assert out["terms"]["surplus_to"] == "" and RULE.terms(out["terms"], 3)["surplus_to"] == b""
    json.dumps(out)
    shares = design_pivot(100, shares=[50, 30, 20], grid=(0, 25, 50)).terms
    assert shares["shares"] == [50, 30, 20]


def test_design_errors_are_clear() -> None:
    with pytest.raises(DesignError, match="does not split into 3 equal whole shares"):
        design_pivot(100, agents=3)
    with pytest.raises(DesignError, match="2 shares for 3 agents"):
        design_pivot(100, shares=[50, 50], agents=3)
    with pytest.raises(DesignError, match="over the bound"):
        design_pivot(90, agents=9, grid=tuple(range(8)))


def test_default_terms_are_accepted_by_create() -> None:
    for parties in (1, 3, 6, 12):
        t = default_terms(parties)
        assert sum(t["shares"]) == t["cost"] and RULE.terms(t, parties) == t
        assert ("verify" in t) == (parties <= 8)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return design_cli(cli, capsys, *argv)


def test_cli_pivot(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(["pivot", "--agents", "3", "--values", "0,30,60", "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["terms"]["cost"] == 90 and data["checks"]["dsic"] is True
    assert RULE.terms(data["terms"], 3)["shares"] == [30, 30, 30]
    rc, out = run_cli(["pivot", "--cost", "100"], capsys)
    assert rc == 1 and "equal whole shares" in out
    rc, out = run_cli(["pivot", "--cost", "100", "--shares", "50,30,20"], capsys)
    assert rc == 0 and "verified" in out


def test_on_the_ledger_built_with_a_tax_burnt_and_a_missing_commit_cancels() -> None:
    builder, a, b, c = keys(4)
    ch = SealedChain(engine_table(KernelEngine(RULE)), [builder, a, b, c])
    start = {k.address: ch.balance(k) for k in (builder, a, b, c)}
    terms = design_pivot(90, agents=3).terms
    assert ch.create("pivot", builder, [a, b, c], penalty=1, terms=terms) == "ok"
    for key in (a, b, c):
        assert ch.call(key, "deposit", amount=60) == "ok"  # min_deposit: 30 + max(30, 30)
    assert ch.commit(a, 60) == "deposit_too_small"  # the penalty comes on top
    for key, wtp in ((a, 60), (b, 40), (c, 0)):
        assert ch.call(key, "deposit", amount=1) == "ok"
        assert ch.commit(key, wtp) == "ok"
    for key, wtp in ((a, 60), (b, 40), (c, 0)):
        assert ch.reveal(key, wtp) == "ok"
    s = ch.contract()
    assert s.phase == "settled" and s.outcome["build"] and s.outcome["taxes"] == [20, 0, 0]
    assert s.outcome["burn"] == 20
    assert [ch.balance(k) - start[k.address] for k in (builder, a, b, c)] == [90, -50, -30, -30]
    assert ch.state.balance(BURN_ADDRESS) == 20  # the surplus is burnt, nobody gets it
    # a party that never commits cancels the decision: every deposit back
    assert ch.create("pivot", builder, [a, b, c], terms=terms) == "ok"
    for key in (a, b):
        assert ch.call(key, "deposit", amount=60) == "ok"
        assert ch.commit(key, 60) == "ok"
    ch.wait(WINDOW + 1)
    assert ch.contract().phase == "cancelled"
    assert ch.balance(a) == start[a.address] - 50
