"""Bilateral trade: a buyer and a seller with private values, and a designed direct mechanism.

Party 0 is the buyer (value b), party 1 the seller (cost s); each reveals an index into its
list of possible values.  The schedule gives, for every report pair, the probability of
trade p(b, s) and the payment t(b, s) from the buyer to the seller (paid whether or not the
trade happens, so the budget balances ex post by construction).  Utilities: the buyer's
u = p·b - t, the seller's u = t - p·s.  The contract refuses (reason "unsafe_design") a
schedule that fails its exact checks, in Fractions:

- Bayesian incentive compatibility for both sides, against the common prior (independent
  finite distributions): at every type, the interim expected utility of the truth is at
  least that of every misreport;
- interim individual rationality for both: that expected utility is >= 0 at every type;
- priors positive and summing to one, and 0 <= p <= 1.

Randomised trade uses the commit-reveal draw (`lottery.chance`), and a fractional payment is
rounded to whole units by `lottery.round_preserving`, so the two transfers sum to zero in
every outcome and each side's expected transfer is exactly the designed one.

The economics: Holmstrom's slides, /work/shared/seeds/002_73efa823a2277c74.txt, Lecture 11,
"Myerson-Satterthwaite Theorem" (slide 47 of 65), "Setup" (48) and "Requirements" (49): with
overlapping supports no mechanism is efficient, ex ante budget balanced and interim IR; the
designer (contracts/design/bilateral.py) shows this on numbers and deploys the second best.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from contracts.kernel import lottery
from contracts.kernel.rule import BadMessage, BadTerms, MissingCommit, Seats, Settlement

BUYER, SELLER = 0, 1
MAX_TYPES = 12  # values per side: the exact BIC check is O(n^3)
MAX_VALUE = 10**9  # the largest value or cost, in whole units of money
MAX_PAYMENT = 2 * MAX_VALUE  # the largest |payment| in any cell (keeps deposits finite)
# The check families, in the order `checks` reports them (the designer reports the same).
CHECKS = (
    "prior_buyer",
    "prior_seller",
    "probabilities",
    "BIC_buyer",
    "BIC_seller",
    "IR_buyer",
    "IR_seller",
    "budget_ex_post",
)


@dataclass(frozen=True)
class Schedule:
    """The terms as exact numbers: trade[i][k] and payment[i][k] for buyer report i and
    seller report k."""

    buyer_values: tuple[int, ...]
    buyer_prior: tuple[Fraction, ...]
    seller_values: tuple[int, ...]
    seller_prior: tuple[Fraction, ...]
    trade: tuple[tuple[Fraction, ...], ...]
    payment: tuple[tuple[Fraction, ...], ...]
    default_report: tuple[int, int]

    def buyer_utility(self, true: int, report: int) -> Fraction:
        """The buyer's interim expected utility with value index `true` reporting `report`."""
        b = self.buyer_values[true]
        return sum(
            (
                q * (self.trade[report][k] * b - self.payment[report][k])
                for k, q in enumerate(self.seller_prior)
            ),
            Fraction(0),
        )

    def seller_utility(self, true: int, report: int) -> Fraction:
        s = self.seller_values[true]
        return sum(
            (
                q * (self.payment[i][report] - self.trade[i][report] * s)
                for i, q in enumerate(self.buyer_prior)
            ),
            Fraction(0),
        )

    def gains(self) -> Fraction:
        """Expected gains from trade under truth-telling: E[p(b, s)·(b - s)]."""
        return sum(
            (
                qb * qs * self.trade[i][k] * (b - s)
                for i, (b, qb) in enumerate(zip(self.buyer_values, self.buyer_prior, strict=True))
                for k, (s, qs) in enumerate(zip(self.seller_values, self.seller_prior, strict=True))
            ),
            Fraction(0),
        )


def _values(raw: Any, what: str) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple) or not 1 <= len(raw) <= MAX_TYPES:
        raise ValueError(f"{what} must be a list of 1 to {MAX_TYPES} integers")
    if not all(type(v) is int and 0 <= v <= MAX_VALUE for v in raw):
        raise ValueError(f"{what} must be integers in [0, {MAX_VALUE}]")
    if any(a >= b for a, b in itertools.pairwise(raw)):
        raise ValueError(f"{what} must be strictly increasing")
    return tuple(raw)


def _fractions(raw: Any, n: int, what: str) -> tuple[Fraction, ...]:
    if not isinstance(raw, list | tuple) or len(raw) != n:
        raise ValueError(f"{what} must be a list of {n} fractions")
    return tuple(lottery.fraction(x, what) for x in raw)


def _table(raw: Any, rows: int, cols: int, what: str) -> tuple[tuple[Fraction, ...], ...]:
    if not isinstance(raw, list | tuple) or len(raw) != rows:
        raise ValueError(f"{what} must have one row per buyer value ({rows})")
    return tuple(_fractions(row, cols, f"{what} row") for row in raw)


def _payments(table: tuple[tuple[Fraction, ...], ...]) -> tuple[tuple[Fraction, ...], ...]:
    if any(abs(t) > MAX_PAYMENT for row in table for t in row):
        raise ValueError(f"a payment must be at most {MAX_PAYMENT} either way")
    return table


def parse(terms: Mapping[str, Any]) -> Schedule:
    """The schedule from its stored form; ValueError on any malformed field."""
    if not isinstance(terms, Mapping):
        raise ValueError("terms must be a map")
    bv = _values(terms.get("buyer_values"), "buyer_values")
    sv = _values(terms.get("seller_values"), "seller_values")
    default = terms.get("default_report")
    if (
        not isinstance(default, list | tuple)
        or len(default) != 2
        or not all(type(x) is int for x in default)
        or not (0 <= default[0] < len(bv) and 0 <= default[1] < len(sv))
    ):
        raise ValueError("default_report must be [buyer index, seller index]")
    return Schedule(
        bv,
        _fractions(terms.get("buyer_prior"), len(bv), "buyer_prior"),
        sv,
        _fractions(terms.get("seller_prior"), len(sv), "seller_prior"),
        _table(terms.get("trade"), len(bv), len(sv), "trade"),
        _payments(_table(terms.get("payment"), len(bv), len(sv), "payment")),
        (default[0], default[1]),
    )


def failures(sch: Schedule) -> list[str]:
    """Every exact check the schedule fails, by name and place ("BIC_buyer[b=3 claims 2]")."""
    out = []
    for name, prior in (("prior_buyer", sch.buyer_prior), ("prior_seller", sch.seller_prior)):
        if any(q <= 0 for q in prior) or sum(prior) != 1:
            out.append(name)
    out += [
        f"probabilities[b={sch.buyer_values[i]},s={sch.seller_values[k]}]"
        for i, row in enumerate(sch.trade)
        for k, p in enumerate(row)
        if not 0 <= p <= 1
    ]
    for side, values, utility in (
        ("buyer", sch.buyer_values, sch.buyer_utility),
        ("seller", sch.seller_values, sch.seller_utility),
    ):
        tag = side[0]
        for i, v in enumerate(values):
            truth = utility(i, i)
            if truth < 0:
                out.append(f"IR_{side}[{tag}={v}]")
            out += [
                f"BIC_{side}[{tag}={v} claims {values[j]}]"
                for j in range(len(values))
                if j != i and utility(i, j) > truth
            ]
    return out


def checks(sch: Schedule) -> dict[str, bool]:
    """Each check family: True when it holds everywhere (ex post budget balance holds by
    construction: one payment from buyer to seller)."""
    failed = {f.split("[")[0] for f in failures(sch)}
    return {name: name not in failed for name in CHECKS}


def check_bilateral(terms: Mapping[str, Any]) -> list[str]:
    """The failed exact checks of stored terms (empty: safe to deploy).  Malformed terms
    raise BadTerms (reason "bad_terms")."""
    try:
        sch = parse(terms)
    except ValueError as e:
        raise BadTerms(str(e)) from e
    return failures(sch)


def stored_terms(sch: Schedule) -> dict[str, Any]:
    """The canonical stored form of a schedule (fractions as [num, den] in lowest terms)."""

    def rows(table: tuple[tuple[Fraction, ...], ...]) -> list[list[list[int]]]:
        return [[lottery.stored(x) for x in row] for row in table]

    return {
        "buyer_values": list(sch.buyer_values),
        "buyer_prior": [lottery.stored(q) for q in sch.buyer_prior],
        "seller_values": list(sch.seller_values),
        "seller_prior": [lottery.stored(q) for q in sch.seller_prior],
        "trade": rows(sch.trade),
        "payment": rows(sch.payment),
        "default_report": list(sch.default_report),
    }


class BilateralRule:
    name = "bilateral"
    missing_commit: MissingCommit = "cancel"  # trade needs both sides

    def terms(self, args: Mapping[str, Any], parties: int) -> dict[str, Any]:
        if parties != 2:
            raise BadTerms(f"bilateral trade has 2 parties (buyer, seller), not {parties}")
        failed = check_bilateral(args)
        if failed:
            raise BadTerms(
                "the schedule fails its exact checks: " + ", ".join(failed),
                reason="unsafe_design",
            )
        return stored_terms(parse(args))

    def min_deposit(self, terms: Mapping[str, Any], index: int) -> int:
        # the most a rounded payment can take: ceil(t) from the buyer, ceil(-t) from the seller
        sign = 1 if index == BUYER else -1
        cells = (sign * t for row in parse(terms).payment for t in row)
        return max(0, *(math.ceil(x) for x in cells))

    def message(self, terms: Mapping[str, Any], index: int, value: Any, deposit: int) -> Any:
        sch = parse(terms)
        values = sch.buyer_values if index == BUYER else sch.seller_values
        if type(value) is not int or not 0 <= value < len(values):
            raise BadMessage(f"a report is a value index in [0, {len(values)}), got {value!r}")
        return value

    def default(self, terms: Mapping[str, Any], index: int) -> Any | None:
        return parse(terms).default_report[index]

    def settle(
        self, terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
    ) -> Settlement:
        sch = parse(terms)
        b, s = (sch.default_report[k] if m is None else m for k, m in enumerate(messages))
        p, t = sch.trade[b][s], sch.payment[b][s]
        traded = lottery.chance(seats.draw, "trade", p)
        buyer, seller = lottery.round_preserving([-t, t], seats.draw, "payment")
        return Settlement(
            transfers=(buyer, seller),
            outcome={
                "reports": [sch.buyer_values[b], sch.seller_values[s]],
                "report_indices": [b, s],
                "trade": traded,
                "probability": lottery.stored(p),
                "payment": seller,
                "exact_payment": lottery.stored(t),
            },
        )


RULE = BilateralRule()
