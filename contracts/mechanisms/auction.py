"""Sealed-bid auctions with escrow: first price, second price (Vickrey), multi-unit VCG.

Townsend & Zhang's escrowed auction (/work/shared/seeds/001_ccf41dfaa83f9976.txt,
section II, "Letting agents also contract directly among themselves"): every bid is capped
by the bidder's deposit and a program, not an auctioneer, settles it, so nobody can bid
more than it holds or renege.  Here a bid above the deposit is invalid; a deposit may
exceed the bid, so the deposit does not reveal it.

The second price and VCG rules are Holmstrom's pivot scheme
(/work/shared/seeds/002_73efa823a2277c74.txt, Lecture 10: "VCG Mechanism", the pivot
scheme's h_i, and "Example 2: Second price auction ... Check: this is a pivot scheme"):
bidder i pays (the others' welfare without i) - (the others' welfare with i).  The
seller's reserve is its own bid to keep each unit (k marginal values equal to the
reserve), so a reserve needs no special case: the k highest marginal values win, and the
units the reserve wins stay unsold.  Second price is VCG with k = 1.  First price pays the
winner's own bid; it is not incentive compatible, and the exact check says so with a
witness.

Ties are broken without bias and without a draw: by the lowest
hash(["tally/tie", contract id, bidder]); at equal value a bidder beats the reserve (the
reserve is the lowest price the seller accepts).

`check_auction` is the exact, exhaustive check on a finite type grid, run through the
very `settle` the contract runs; the designer (contracts/design/auction.py) reports it and
`AuctionRule.terms` re-runs it at create for the properties the terms claim.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.kernel.checks import (
    Check,
    check_size,
    dsic_witness,
    first_failure,
    harness_seats,
    refuse_failed,
)
from contracts.kernel.rule import BadMessage, BadTerms, MissingCommit, Seats, Settlement
from ledger.encoding import hash_bytes, pack

FORMATS = ("first", "second", "vcg")
MAX_UNITS = {"first": 1, "second": 1, "vcg": 8}  # first and second price sell one unit
MAX_VALUE = 10**12  # the largest marginal value a bid may state
# The exact checks a design may claim, and which formats can pass them.
CHECKS = ("dsic", "ir", "budget", "capped", "pivot")
# Bounds of the exhaustive check (its cost bound is contracts/kernel/checks.py's).
MAX_CHECK_UNITS = 3
MAX_CHECK_BIDDERS = 4
MAX_CHECK_VALUES = 8
SELLER = -1  # the owner index of the reserve's entries


def parse_terms(args: Mapping[str, Any]) -> dict[str, Any]:
    """The auction's terms in normal form: format, units, reserve (BadTerms otherwise)."""
    fmt = args.get("format")
    if fmt not in FORMATS:
        raise BadTerms(f"'format' must be one of {', '.join(FORMATS)}, got {fmt!r}")
    units, reserve = args.get("units", 1), args.get("reserve", 0)
    if type(units) is not int or not 1 <= units <= MAX_UNITS[fmt]:
        raise BadTerms(f"'units' must be an integer 1..{MAX_UNITS[fmt]} for {fmt}, got {units!r}")
    if type(reserve) is not int or not 0 <= reserve <= MAX_VALUE:
        raise BadTerms(f"'reserve' must be an integer 0..{MAX_VALUE}, got {reserve!r}")
    return {"format": fmt, "units": units, "reserve": reserve}


def parse_verify(value: Any) -> dict[str, Any]:
    """The optional "verify" block: the grid a design was checked on, and what it claims."""
    if not isinstance(value, Mapping):
        raise BadTerms("'verify' must be a map with bidders, values and claims")
    bidders, values, claims = value.get("bidders"), value.get("values"), value.get("claims")
    if type(bidders) is not int or not 1 <= bidders <= MAX_CHECK_BIDDERS:
        raise BadTerms(f"verify 'bidders' must be an integer 1..{MAX_CHECK_BIDDERS}")
    if not isinstance(values, list | tuple) or not 1 <= len(values) <= MAX_CHECK_VALUES:
        raise BadTerms(f"verify 'values' must be a list of 1..{MAX_CHECK_VALUES} integers")
    if any(type(v) is not int or not 0 <= v <= MAX_VALUE for v in values):
        raise BadTerms(f"verify 'values' must be integers 0..{MAX_VALUE}")
    if not isinstance(claims, list | tuple) or any(c not in CHECKS for c in claims):
        raise BadTerms(f"verify 'claims' must be a list of checks among {', '.join(CHECKS)}")
    return {
        "bidders": bidders,
        "values": sorted(set(values)),
        "claims": [c for c in CHECKS if c in claims],
    }


def bid_vector(value: Any, units: int) -> list[int]:
    """A bid in normal form: marginal values, non-increasing, 1..units long."""
    bid = [value] if type(value) is int else value
    if not isinstance(bid, list | tuple) or not 1 <= len(bid) <= units:
        raise BadMessage(f"a bid is an integer or a list of 1..{units} marginal values")
    if any(type(v) is not int or not 0 <= v <= MAX_VALUE for v in bid):
        raise BadMessage(f"every marginal value must be an integer 0..{MAX_VALUE}")
    if any(a < b for a, b in itertools.pairwise(bid)):
        raise BadMessage(f"marginal values must be non-increasing, got {list(bid)}")
    return list(bid)


class AuctionRule:
    name: str = "auction"
    missing_commit: MissingCommit = "absent"  # a bidder who never commits is simply out

    def terms(self, args: Mapping[str, Any], parties: int) -> dict[str, Any]:
        terms = parse_terms(args)
        if "verify" not in args:
            return terms
        verify = parse_verify(args["verify"])
        try:
            checks = check_auction(terms, verify["bidders"], verify["values"])
        except ValueError as e:
            raise BadTerms(str(e)) from e
        refuse_failed(checks, verify["claims"])
        return {**terms, "verify": verify}

    def min_deposit(self, terms: Mapping[str, Any], index: int) -> int:
        return 0  # a bid is capped by the deposit, so any deposit covers its own bid

    def message(self, terms: Mapping[str, Any], index: int, value: Any, deposit: int) -> Any:
        bid = bid_vector(value, terms["units"])
        if sum(bid) > deposit:
            raise BadMessage(
                f"a bid above the deposit is invalid: the bid totals {sum(bid)}, "
                f"the deposit is {deposit}"
            )
        return bid

    def default(self, terms: Mapping[str, Any], index: int) -> Any | None:
        return None  # a non-revealer's bid is absent (it forfeits the kernel's penalty)

    def settle(
        self, terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
    ) -> Settlement:
        return settle_auction(terms, messages, seats)


def tie_key(seats: Seats, index: int) -> bytes:
    return hash_bytes(pack(["tally/tie", seats.contract_id, seats.parties[index]]))


def ranking(
    terms: Mapping[str, Any], bids: Sequence[Sequence[int] | None], seats: Seats
) -> list[tuple[int, int]]:
    """Every marginal value as (value, owner), best first: higher value, then a bidder
    before the reserve, then the lower tie hash."""
    keys = [tie_key(seats, i) for i in range(len(bids))]
    entries = [(v, i) for i, b in enumerate(bids) if b is not None for v in b]
    entries += [(terms["reserve"], SELLER)] * terms["units"]
    return sorted(entries, key=lambda e: (-e[0], e[1] == SELLER, keys[e[1]] if e[1] >= 0 else b""))


def top_welfare(entries: Sequence[tuple[int, int]], units: int, without: int | None) -> int:
    """The welfare of the best allocation (without bidder `without`): marginal values are
    non-increasing, so the k highest entries are an efficient allocation."""
    return sum(v for v, _ in [e for e in entries if e[1] != without][:units])


def settle_auction(
    terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
) -> Settlement:
    k = terms["units"]
    bids = [None if m is None else bid_vector(m, k) for m in messages]
    entries = ranking(terms, bids, seats)
    won = [0] * len(bids)
    for _, owner in entries[:k]:
        if owner != SELLER:
            won[owner] += 1
    if terms["format"] == "first":
        pay = [sum(b[:q]) if b is not None else 0 for b, q in zip(bids, won, strict=True)]
    else:
        total = top_welfare(entries, k, None)
        pay = [
            top_welfare(entries, k, i) - (total - sum(b[:q])) if b is not None and q else 0
            for i, (b, q) in enumerate(zip(bids, won, strict=True))
        ]
    revenue = sum(pay)
    clearing = entries[k][0] if len(entries) > k else terms["reserve"]
    return Settlement(
        transfers=tuple(-p for p in pay),
        receipts={seats.creator: revenue} if revenue else {},
        outcome={
            "format": terms["format"],
            "units": won,
            "payments": pay,
            "clearing_price": clearing,  # the highest rejected marginal value (or reserve)
            "unsold": k - sum(won),
            "revenue": revenue,
        },
    )


# --- the exact checks: one function, run by the designer and by `terms` at create ---


def auction_types(terms: Mapping[str, Any], values: Sequence[int]) -> list[list[int]]:
    """The type grid: every non-increasing vector of `units` marginal values over values."""
    grid = sorted(set(values), reverse=True)
    return [list(c) for c in itertools.combinations_with_replacement(grid, terms["units"])]


def clarke_payments(
    bids: Sequence[Sequence[int]], won: Sequence[int], units: int, reserve: int
) -> list[int] | None:
    """The pivot payments for allocation `won` by brute force over allocations, or None
    when `won` is not efficient: an independent computation (no ranking, no greedy) for
    the "pivot" check."""

    def best(without: int) -> int:
        ranges = [range(len(b) + 1) if i != without else range(1) for i, b in enumerate(bids)]
        return max(
            sum(sum(b[:x]) for b, x in zip(bids, q, strict=True)) + reserve * (units - sum(q))
            for q in itertools.product(*ranges)
            if sum(q) <= units
        )

    welfare = sum(sum(b[:q]) for b, q in zip(bids, won, strict=True))
    welfare += reserve * (units - sum(won))
    if welfare != best(-1):
        return None
    return [best(i) - (welfare - sum(b[: won[i]])) for i, b in enumerate(bids)]


def check_auction(
    terms: Mapping[str, Any], bidders: int, values: Sequence[int]
) -> dict[str, Check]:
    """Exact, exhaustive checks on the grid, through `settle_auction` itself:
    dsic (no profitable misreport at any profile), ir (truthful utility >= 0), budget
    (the seller receives the payments, >= 0, nothing burnt, transfers conserve), capped
    (nobody pays more than its bid totals, so the deposit covers it), and pivot (second
    price and VCG: the allocation is efficient and the payments equal the Clarke pivot
    payments computed by brute force; with one unit, second price is the pivot payment)."""
    types = auction_types(terms, values)
    check_size(len(types), bidders)
    seats = harness_seats(bidders)
    played = {
        p: settle_auction(terms, [types[t] for t in p], seats)
        for p in itertools.product(range(len(types)), repeat=bidders)
    }

    def utility(p: tuple[int, ...], i: int, true: int) -> int:
        s = played[p]
        return sum(types[true][: s.outcome["units"][i]]) - int(s.outcome["payments"][i])

    def bids(p: tuple[int, ...]) -> list[list[int]]:
        return [types[t] for t in p]

    lie = dsic_witness(len(types), bidders, utility)
    if lie is not None:
        lie = {**lie, "profile": bids(tuple(lie["profile"])), "misreport": types[lie["misreport"]]}
    checks = {"dsic": Check(lie is None, lie)}
    checks["ir"] = first_failure(
        {"profile": bids(p), "bidder": i, "utility": utility(p, i, p[i])}
        for p in played
        for i in range(bidders)
        if utility(p, i, p[i]) < 0
    )
    checks["budget"] = first_failure(
        {"profile": bids(p), "outcome": dict(s.outcome)}
        for p, s in played.items()
        if not _budget_ok(s, seats)
    )
    checks["capped"] = first_failure(
        {"profile": bids(p), "payments": s.outcome["payments"]}
        for p, s in played.items()
        if any(-t > sum(b) for t, b in zip(s.transfers, bids(p), strict=True))
    )
    if terms["format"] == "first":
        checks["pivot"] = Check(False, {"reason": "first price charges the bid, not the pivot"})
        return checks
    k, r = terms["units"], terms["reserve"]
    checks["pivot"] = first_failure(
        {"profile": bids(p), "payments": s.outcome["payments"], "pivot": pivot}
        for p, s in played.items()
        for pivot in [clarke_payments(bids(p), s.outcome["units"], k, r)]
        if pivot != s.outcome["payments"]
    )
    return checks


def _budget_ok(s: Settlement, seats: Seats) -> bool:
    paid = -sum(s.transfers)
    return (
        s.burn == 0
        and paid >= 0
        and sum(s.receipts.values()) == paid
        and (paid == 0 or set(s.receipts) == {seats.creator})
    )
