"""Sealed-bid auctions: worked examples, the tie-break, bids capped by deposits, bad terms,
the designer and its CLI (contracts/mechanisms/auction.py, contracts/design/auction.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from contracts.design.auction import DesignError, default_terms, design_auction
from contracts.kernel.checks import harness_seats
from contracts.kernel.engine import KernelEngine
from contracts.kernel.rule import BadMessage, BadTerms, Seats
from contracts.mechanisms.auction import AuctionRule, tie_key
from ledger.contract import engine_table
from node.cli import design_auction as cli
from tests.helpers.contracts import design_cli
from tests.helpers.sealed import WINDOW, SealedChain, keys

RULE = AuctionRule()
SEATS = harness_seats(3)
SELLER = SEATS.creator


def settle(fmt: str, units: int, reserve: int, bids: list[Any]) -> Any:
    terms = RULE.terms({"format": fmt, "units": units, "reserve": reserve}, len(bids))
    return RULE.settle(terms, bids, harness_seats(len(bids)))


def test_second_price_with_a_reserve() -> None:
    # 30 wins and pays max(second bid 20, reserve 25) = 25; the absent bidder pays nothing
    s = settle("second", 1, 25, [30, [20], None])
    assert s.outcome["units"] == [1, 0, 0]
    assert s.transfers == (-25, 0, 0)
    assert dict(s.receipts) == {SELLER: 25} and s.burn == 0
    assert s.outcome["clearing_price"] == 25 and s.outcome["unsold"] == 0
    # below the reserve nothing sells; at the reserve the bidder wins and pays it
    unsold = settle("second", 1, 35, [30, 20, None])
    assert unsold.transfers == (0, 0, 0) and unsold.outcome["unsold"] == 1
    assert dict(unsold.receipts) == {}
    assert settle("second", 1, 30, [30, 20, None]).transfers == (-30, 0, 0)


def test_second_price_is_the_pivot_payment_without_reserve() -> None:
    s = settle("second", 1, 0, [10, 40, 25])
    assert s.transfers == (0, -25, 0)  # others' welfare without bidder 1 (25) minus with (0)


def test_two_unit_vcg_example() -> None:
    # A values two units at 30 and 10, B one at 20, C one at 5.  The two highest marginal
    # values (30 of A, 20 of B) win.  A pays the others' welfare without it (20 + 5) minus
    # with it (20) = 5; B pays (30 + 10) - 30 = 10.
    s = settle("vcg", 2, 0, [[30, 10], [20], [5]])
    assert s.outcome["units"] == [1, 1, 0]
    assert s.outcome["payments"] == [5, 10, 0]
    assert s.outcome["clearing_price"] == 10 and s.outcome["revenue"] == 15
    assert dict(s.receipts) == {SELLER: 15}
    # a reserve of 12 is the seller's bid for each unit: A now pays 12 (the reserve beats 5)
    r = settle("vcg", 2, 12, [[30, 10], [20], [5]])
    assert r.outcome["payments"] == [12, 12, 0] and r.outcome["unsold"] == 0
    # a reserve of 25 keeps one unit: only A (30) wins, and pays the reserve
    k = settle("vcg", 2, 25, [[30, 10], [20], [5]])
    assert k.outcome["units"] == [1, 0, 0] and k.outcome["payments"] == [25, 0, 0]
    assert k.outcome["unsold"] == 1


def test_first_price_pays_the_bid() -> None:
    s = settle("first", 1, 5, [12, 30, 29])
    assert s.transfers == (0, -30, 0)
    assert settle("first", 1, 40, [12, 30, 29]).transfers == (0, 0, 0)


def test_ties_go_to_the_lowest_hash_of_contract_and_bidder() -> None:
    terms = RULE.terms({"format": "second", "units": 1, "reserve": 0}, 2)
    for cid in (bytes(32), b"\x01" * 32, b"\x02" * 32, b"\x03" * 32):
        a, b = b"\x0a" * 20, b"\x0b" * 20
        for parties in ((a, b), (b, a)):
            seats = Seats(cid, SELLER, parties, bytes(32))
            s = RULE.settle(terms, [50, 50], seats)
            winner = parties[s.outcome["units"].index(1)]
            keys = {p: tie_key(seats, i) for i, p in enumerate(parties)}
            assert winner == min(parties, key=keys.__getitem__)  # independent of the order
            assert sorted(s.transfers) == [-50, 0]


def test_tie_winners_differ_across_contracts() -> None:
    # unbiased: over many contract ids each of two equal bidders wins sometimes
    terms = RULE.terms({"format": "first", "units": 1, "reserve": 0}, 2)
    wins = [
        RULE.settle(
            terms, [7, 7], Seats(bytes([i]) * 32, SELLER, SEATS.parties[:2], bytes(32))
        ).outcome["units"][0]
        for i in range(40)
    ]
    assert 5 < sum(wins) < 35


def test_a_bid_above_the_deposit_is_refused() -> None:
    terms = RULE.terms({"format": "vcg", "units": 2, "reserve": 0}, 2)
    with pytest.raises(BadMessage, match=r"above the deposit.*totals 31.*deposit is 30"):
        RULE.message(terms, 0, [21, 10], 30)
    assert RULE.message(terms, 0, [20, 10], 30) == [20, 10]
    assert RULE.message(terms, 0, 5, 100) == [5]  # an int is a one-unit bid; deposit may exceed
    assert RULE.min_deposit(terms, 0) == 0 and RULE.default(terms, 0) is None


@pytest.mark.parametrize(
    "bid", [[10, 20], [1, 2, 3], [], [-1], [True], "10", [10**13], [1.5]], ids=repr
)
def test_malformed_bids_are_refused(bid: Any) -> None:
    terms = RULE.terms({"format": "vcg", "units": 2, "reserve": 0}, 2)
    with pytest.raises(BadMessage):
        RULE.message(terms, 0, bid, 10**15)


@pytest.mark.parametrize(
    ("terms", "says"),
    [
        ({"format": "dutch"}, "format"),
        ({"format": "second", "units": 2}, "units"),
        ({"format": "vcg", "units": 9}, "units"),
        ({"format": "vcg", "units": 0}, "units"),
        ({"format": "second", "reserve": -1}, "reserve"),
        ({"format": "second", "reserve": True}, "reserve"),
        ({"format": "second", "verify": {"bidders": 9, "values": [0], "claims": []}}, "bidders"),
        ({"format": "second", "verify": {"bidders": 2, "values": [0], "claims": ["x"]}}, "claims"),
        (
            {"format": "vcg", "units": 8, "verify": {"bidders": 4, "values": [0, 1, 2, 3]}},
            "claims",
        ),
        (
            {
                "format": "vcg",
                "units": 3,
                "verify": {"bidders": 4, "values": list(range(8)), "claims": []},
            },
            "over the bound",
        ),
    ],
)
def test_bad_terms_are_refused_with_a_reason(terms: dict[str, Any], says: str) -> None:
    with pytest.raises(BadTerms, match=says) as e:
        RULE.terms(terms, 3)
    assert e.value.reason == "bad_terms"


def test_a_tampered_design_is_refused_as_unsafe() -> None:
    first = design_auction("first", 1, 0, 2, (0, 10, 20)).terms
    assert RULE.terms(first, 2) == first  # honest claims pass
    tampered = {**first, "verify": {**first["verify"], "claims": ["dsic", "ir"]}}
    with pytest.raises(BadTerms, match="dsic fails") as e:
        RULE.terms(tampered, 2)
    assert e.value.reason == "unsafe_design"
    claims_pivot = {**first, "verify": {**first["verify"], "claims": ["pivot"]}}
    with pytest.raises(BadTerms, match="pivot fails"):
        RULE.terms(claims_pivot, 2)


def test_designs_verify_and_first_price_shows_a_witness() -> None:
    second = design_auction("second", 1, 0, 3, (0, 10, 20, 30)).to_json()
    assert all(second["checks"].values()) and second["witnesses"] == {}
    assert second["profiles"] == 64 and second["mean_revenue"] == [15, 1]
    assert second["example"]["payments"] == [20, 0, 0]
    first = design_auction("first", 1, 0, 3, (0, 10, 20, 30)).to_json()
    assert first["checks"]["dsic"] is False and first["checks"]["ir"] is True
    w = first["witnesses"]["dsic"]
    assert w == {"profile": [[30], [10], [10]], "party": 0, "misreport": [20], "gain": 10}
    assert first["terms"]["verify"]["claims"] == ["ir", "budget", "capped"]
    vcg = design_auction("vcg", 2, 5, 2, (0, 5, 10, 20)).to_json()
    assert all(vcg["checks"].values()) and vcg["types"] == 10
    json.dumps(vcg)  # plain JSON values


def test_design_errors_are_clear() -> None:
    with pytest.raises(DesignError, match="over the bound"):
        design_auction("second", 1, 0, 4, (*range(0, 80, 10), 1, 2, 3))
    with pytest.raises(DesignError, match="at most 3 units"):
        design_auction("vcg", 4, 0, 2, (0, 1))
    with pytest.raises(DesignError, match="format"):
        design_auction("english", 1, 0, 2, (0, 1))


def test_default_terms_are_accepted_by_create() -> None:
    for parties in (1, 3, 20):
        terms = default_terms(parties)
        assert terms["format"] == "second" and RULE.terms(terms, parties) == terms


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    return design_cli(cli, capsys, *argv)


def test_cli_auction(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = run_cli(["auction", "--format", "vcg", "--units", "2", "--json"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["mechanism"] == "auction" and data["terms"]["units"] == 2
    assert RULE.terms(data["terms"], 3) == data["terms"]
    rc, out = run_cli(["auction", "--format", "first"], capsys)
    assert rc == 0 and "dsic" in out
    rc, out = run_cli(["auction", "--units", "2", "--json"], capsys)
    assert rc == 1 and "units" in json.loads(out)["message"]


def test_on_the_ledger_a_non_revealer_forfeits_and_the_seller_is_paid() -> None:
    seller, a, b, c = keys(4)
    ch = SealedChain(engine_table(KernelEngine(RULE)), [seller, a, b, c])
    start = {k.address: ch.balance(k) for k in (seller, a, b, c)}
    terms = {"format": "second", "units": 1, "reserve": 10}
    assert ch.create("auction", seller, [a, b, c], penalty=5, terms=terms) == "ok"
    for key, amount in ((a, 100), (b, 500), (c, 60)):  # b's deposit hides its bid
        assert ch.call(key, "deposit", amount=amount) == "ok"
    for key, bid in ((a, 90), (b, 40), (c, 55)):
        assert ch.commit(key, bid) == "ok"
    before = ch.contract()
    assert ch.call(a, "reveal", message=[101], salt=bytes(32)) == "bad_reveal"
    assert ch.contract() == before  # a refused call changes nothing
    assert ch.reveal(b, 40) == "ok"
    assert ch.reveal(c, 55) == "ok"
    ch.wait(WINDOW + 1)  # a never reveals: its bid is absent and it forfeits the penalty
    s = ch.contract()
    assert s.phase == "settled"
    assert s.outcome["units"] == [0, 0, 1] and s.outcome["payments"] == [0, 0, 40]
    assert s.outcome["forfeits"] == [5, 0, 0]
    assert ch.balance(a) == start[a.address] - 5
    assert ch.balance(b) == start[b.address]
    assert ch.balance(c) == start[c.address] - 40
    assert ch.balance(seller) == start[seller.address] + 40


def test_on_the_ledger_a_bid_above_the_deposit_is_refused() -> None:
    seller, a = keys(2)
    ch = SealedChain(engine_table(KernelEngine(RULE)), [seller, a])
    assert ch.create("auction", seller, [a], terms={"format": "first"}) == "ok"
    assert ch.call(a, "deposit", amount=30) == "ok"
    assert ch.commit(a, 31) == "ok"
    before = ch.contract()
    assert ch.reveal(a, 31) == "bad_message"
    assert ch.contract() == before
    unsafe = {"format": "first", "verify": {"bidders": 2, "values": [0, 5, 9], "claims": ["dsic"]}}
    assert ch.create("auction", seller, [a], terms=unsafe) == "unsafe_design"
