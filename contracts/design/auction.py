"""The sealed-bid auction designer: terms plus their exact, exhaustive verification.

An auction's design is its format, number of units and reserve; what needs designing is
the evidence.  `design_auction` checks, on a finite grid of values and by calling the
contract's own `settle` (contracts.mechanisms.auction.check_auction: the one check that
`AuctionRule.terms` re-runs at create), dominant-strategy IC, ex post IR, the seller's
budget, that nobody pays more than its bid, and for second price and VCG that the
payments are the pivot payments.  First price fails DSIC, and the design says so with a
witness (a profile, a bidder and a profitable shaded bid).

Seeds: /work/shared/seeds/002_73efa823a2277c74.txt, Lecture 10 ("VCG Mechanism", the
pivot scheme, "Example 2: Second price auction ... this is a pivot scheme");
/work/shared/seeds/001_ccf41dfaa83f9976.txt, section II (bids escrowed and capped by the
deposit).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from contracts.kernel.checks import Check, harness_seats
from contracts.kernel.lottery import stored
from contracts.kernel.rule import BadTerms
from contracts.mechanisms.auction import (
    CHECKS,
    AuctionRule,
    auction_types,
    check_auction,
    parse_terms,
    settle_auction,
)

# What each format promises (and a design must verify): first price is not DSIC and does
# not charge the pivot payment.
PROMISES = {
    "first": ("ir", "budget", "capped"),
    "second": CHECKS,
    "vcg": CHECKS,
}
DEFAULT_VALUES = (0, 10, 20, 30)


class DesignError(ValueError):
    """No design: the parameters are invalid, the grid is too large, or a check fails."""


@dataclass(frozen=True)
class AuctionDesign:
    terms: dict[str, Any]  # exactly what `tally contract auction create` takes
    bidders: int
    values: tuple[int, ...]
    checks: dict[str, Check]
    types: int
    revenue: Fraction  # the mean revenue over the grid, every profile equally likely
    example: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "mechanism": "auction",
            "terms": self.terms,
            "checks": {name: c.ok for name, c in self.checks.items()},
            "witnesses": {n: c.witness for n, c in self.checks.items() if c.witness is not None},
            "promised": list(PROMISES[self.terms["format"]]),
            "bidders": self.bidders,
            "values": list(self.values),
            "types": self.types,
            "profiles": self.types**self.bidders,
            "mean_revenue": stored(self.revenue),
            "example": self.example,
        }


def design_auction(
    format: str,
    units: int = 1,
    reserve: int = 0,
    bidders: int = 3,
    grid: Sequence[int] = DEFAULT_VALUES,
) -> AuctionDesign:
    """Verified terms for the auction; DesignError when there is none."""
    try:
        base = parse_terms({"format": format, "units": units, "reserve": reserve})
        if units > 3:
            raise DesignError("the exhaustive check takes at most 3 units")
        checks = check_auction(base, bidders, grid)
        claims = [c for c in PROMISES[format] if checks[c].ok]
        verify = {"bidders": bidders, "values": sorted(set(grid)), "claims": claims}
        terms = AuctionRule().terms({**base, "verify": verify}, bidders)
    except (BadTerms, ValueError) as e:
        raise DesignError(str(e)) from e
    broken = [c for c in PROMISES[format] if not checks[c].ok]
    if broken:
        raise DesignError(f"{format} fails {', '.join(broken)}: {checks[broken[0]].witness}")
    types = auction_types(base, grid)
    seats = harness_seats(bidders)
    revenues = [
        settle_auction(base, list(p), seats).outcome["revenue"]
        for p in itertools.product(types, repeat=bidders)
    ]
    top = [types[min(i, len(types) - 1)] for i in range(bidders)]
    example = {"bids": top, **settle_auction(base, top, seats).outcome}
    return AuctionDesign(
        terms=terms,
        bidders=bidders,
        values=tuple(sorted(set(grid))),
        checks=checks,
        types=len(types),
        revenue=Fraction(sum(revenues), len(revenues)),
        example=example,
    )


def default_terms(parties: int) -> dict[str, Any]:
    """A second-price auction of one unit, no reserve, verified on a small grid."""
    return design_auction("second", 1, 0, max(1, min(parties, 3)), DEFAULT_VALUES).terms
