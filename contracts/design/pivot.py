"""The public-good designer: pivot (Clarke) terms plus their exact, exhaustive verification.

`design_pivot` picks the cost shares (equal by default, whole units only) and checks, on
a finite grid of willingness-to-pay reports and by calling the contract's own `settle`
(contracts.mechanisms.pivot.check_pivot: the one check that `PivotRule.terms` re-runs at
create): dominant-strategy IC, the budget (when built the builder gets K, covered by the
shares), a surplus that is never negative and never goes back to the agents, the taxes
equal to the slides' pivot h_i computed directly, payments within the minimum deposit,
and ex post IR (reported: the pivot scheme does not promise it).

Seed: /work/shared/seeds/002_73efa823a2277c74.txt, Lecture 10: the public-good "Example"
(build iff the willingness to pay covers K; t_i = 0 unless i is pivotal), "Our example
above is called a pivot scheme", and "Balancing the Budget" (the pivot scheme's surplus).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from contracts.kernel.checks import MAX_CHECK_COMPARISONS, Check, harness_seats
from contracts.kernel.lottery import stored
from contracts.kernel.rule import BadTerms
from contracts.mechanisms.pivot import (
    CHECKS,
    PivotRule,
    check_pivot,
    min_deposit,
    settle_pivot,
)

PROMISES = tuple(c for c in CHECKS if c != "ir")  # the pivot scheme is not ex post IR
DEFAULT_VALUES = (0, 30, 60)
DEFAULT_SHARE = 30  # default_terms: each agent's share of the cost


class DesignError(ValueError):
    """No design: the parameters are invalid, the grid is too large, or a check fails."""


@dataclass(frozen=True)
class PivotDesign:
    terms: dict[str, Any]  # exactly what `tally contract pivot create` takes
    values: tuple[int, ...]
    checks: dict[str, Check]
    build_rate: Fraction  # the share of grid profiles where the good is built
    mean_surplus: Fraction  # the mean surplus (taxes) over the grid
    max_surplus: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        terms = {**self.terms, "surplus_to": self.terms["surplus_to"].hex()}
        return {
            "mechanism": "pivot",
            "terms": terms,
            "checks": {name: c.ok for name, c in self.checks.items()},
            "witnesses": {n: c.witness for n, c in self.checks.items() if c.witness is not None},
            "promised": list(PROMISES),
            "values": list(self.values),
            "agents": len(self.terms["shares"]),
            "deposits": [min_deposit(self.terms, i) for i in range(len(self.terms["shares"]))],
            "build_rate": stored(self.build_rate),
            "mean_surplus": stored(self.mean_surplus),
            "max_surplus": self.max_surplus,
            "surplus_goes_to": terms["surplus_to"] or "burn",
            "examples": self.examples,
        }


def equal_shares(cost: int, agents: int) -> list[int]:
    if agents < 1 or cost % agents:
        raise DesignError(
            f"the cost {cost} does not split into {agents} equal whole shares: "
            "pick a cost divisible by the number of agents, or give the shares"
        )
    return [cost // agents] * agents


def design_pivot(
    cost: int,
    shares: Sequence[int] | None = None,
    agents: int | None = None,
    cap: int | None = None,
    grid: Sequence[int] = DEFAULT_VALUES,
    surplus_to: bytes = b"",
) -> PivotDesign:
    """Verified pivot terms (equal shares unless `shares` is given); DesignError if none."""
    split = list(shares) if shares is not None else equal_shares(cost, agents or 0)
    if agents is not None and len(split) != agents:
        raise DesignError(f"{len(split)} shares for {agents} agents")
    values = sorted(set(grid))
    args = {
        "cost": cost,
        "shares": split,
        "cap": max(values) if cap is None else cap,
        "surplus_to": surplus_to,
    }
    try:
        base = PivotRule().terms(args, len(split))
        checks = check_pivot(base, values)
        verify = {"values": values, "claims": [c for c in PROMISES if checks[c].ok]}
        terms = PivotRule().terms({**base, "verify": verify}, len(split))
    except (BadTerms, ValueError) as e:
        raise DesignError(str(e)) from e
    broken = [c for c in PROMISES if not checks[c].ok]
    if broken:
        raise DesignError(f"the pivot terms fail {', '.join(broken)}: {checks[broken[0]].witness}")
    return PivotDesign(terms, tuple(values), checks, *_figures(base, values))


def _figures(
    terms: dict[str, Any], values: Sequence[int]
) -> tuple[Fraction, Fraction, int, list[dict[str, Any]]]:
    seats = harness_seats(len(terms["shares"]))
    outcomes = [
        settle_pivot(terms, list(p), seats).outcome
        for p in itertools.product(values, repeat=len(terms["shares"]))
    ]
    built = [o for o in outcomes if o["build"]]
    surplus = [o["surplus"] for o in outcomes]
    # one example each way: the built and the not-built profile with the largest surplus
    examples = [
        max(group, key=lambda o: o["surplus"])
        for group in (built, [o for o in outcomes if not o["build"]])
        if group
    ]
    return (
        Fraction(len(built), len(outcomes)),
        Fraction(sum(surplus), len(outcomes)),
        max(surplus),
        [dict(o) for o in examples],
    )


def default_terms(parties: int) -> dict[str, Any]:
    """Equal shares of 30 each, reports 0..60, verified on {0, 30, 60} when the grid is
    small enough (3^n * n * 3 comparisons), else the structural checks only."""
    n = max(1, parties)
    cost = DEFAULT_SHARE * n
    if 3**n * n * 3 <= MAX_CHECK_COMPARISONS:
        return design_pivot(cost, agents=n, cap=60, grid=DEFAULT_VALUES).terms
    return PivotRule().terms({"cost": cost, "shares": [DEFAULT_SHARE] * n, "cap": 60}, n)
