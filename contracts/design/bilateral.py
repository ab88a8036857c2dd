"""Bilateral trade by linear programming: Myerson-Satterthwaite on numbers, and the second best.

A buyer (value b) and a seller (cost s) with independent finite distributions.  A direct
mechanism is a trade probability p(b, s) in [0, 1] and payments for every report pair.  The
LP's constraint families (every row is named, "IR_seller[s=3]"):

- BIC_buyer, BIC_seller: the truth is a best reply in interim expectation;
- IR_buyer, IR_seller: interim expected utility >= 0 at every type;
- budget: "ex_ante" (the buyer pays t_B, the seller receives t_S, E[t_B - t_S] >= 0: the
  statement on the slides) or "ex_post" (one payment t: what the contract deploys);
- efficiency (optional): p = 1 where b > s, p = 0 where b < s (free at b == s);
- bounds: 0 <= p <= 1 (always kept).

The objective is the expected gains from trade E[p·(b - s)].

- With efficiency and overlapping supports the LP is infeasible: that is the theorem (with
  the weaker ex ante budget, so the ex post LP is infeasible too).  The designer reports
  which families conflict (is the LP feasible once that family alone is dropped?) and a
  Farkas certificate: nonnegative rational weights on the rows whose weighted sum has every
  coefficient 0 but a positive right-hand side (0 >= c > 0), found by a certificate LP,
  made exact, and verified in Fractions (`verify_certificate`).  On a finite grid the
  theorem needs enough overlap: with few types the incentive constraints have slack, and
  efficient trade can be feasible although the supports overlap (buyer {1, 3}, seller
  {0, 2}); the LP decides, and a feasible design is verified like any other.
- Without efficiency: the second best with an ex post balanced payment, in two steps.  The
  trade probabilities of HiGHS's optimal vertex are made exact (the smallest denominators
  that still reach the LP optimum); then, with them fixed, a second LP picks the payments
  that need the least escrow, and those are made exact the same way.  The result is
  verified by the contract's own check (`contracts.mechanisms.bilateral.failures`); rows
  that rounding broke get a margin and the payment LP is solved again (the pattern of
  `contracts.design.risk.design_risk`).  The exact gains, HiGHS's optimum and their gap are
  reported, with the ex ante LP's optimum (the same: ex post balance costs nothing).
- Supports that do not overlap (every buyer value >= every seller value): a posted price
  between them is efficient, and is what the designer deploys.

Seed: /work/shared/seeds/002_73efa823a2277c74.txt (Holmstrom, Lecture 11,
"Myerson-Satterthwaite Theorem" (slide 47 of 65), "Setup" (48), "Requirements" (49) and
"M-S Theorem Proof" (51-54: the pivot scheme's deficit E[max(b - s, 0)] that no transfer
preserving the interim payments can close)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from contracts.design.lp import linprog
from contracts.kernel.lottery import MAX_DENOMINATOR, stored
from contracts.mechanisms.bilateral import (
    MAX_TYPES,
    MAX_VALUE,
    BilateralRule,
    Schedule,
    checks,
    failures,
    stored_terms,
)

Budget = Literal["ex_ante", "ex_post"]
Var = tuple[str, int, int]  # ("p" | "t" | "tB" | "tS", buyer index, seller index)
FAMILIES = ("BIC_buyer", "BIC_seller", "IR_buyer", "IR_seller", "budget", "efficiency")
DENOMINATORS = tuple(10**k for k in range(1, 10))  # tried in turn to make the vertex exact
MAX_REPAIRS = 12  # re-solves with a wider margin on the rows that rounding broke


@dataclass(frozen=True)
class BilateralProblem:
    buyer_values: tuple[int, ...]
    buyer_prior: tuple[Fraction, ...]
    seller_values: tuple[int, ...]
    seller_prior: tuple[Fraction, ...]

    @classmethod
    def uniform(cls, buyer: Sequence[int], seller: Sequence[int]) -> BilateralProblem:
        return cls(
            tuple(buyer),
            tuple(Fraction(1, len(buyer)) for _ in buyer),
            tuple(seller),
            tuple(Fraction(1, len(seller)) for _ in seller),
        )

    def validate(self) -> None:
        for what, values, prior in (
            ("buyer", self.buyer_values, self.buyer_prior),
            ("seller", self.seller_values, self.seller_prior),
        ):
            if not 1 <= len(values) <= MAX_TYPES or len(prior) != len(values):
                raise ValueError(f"the {what} needs 1 to {MAX_TYPES} values, one probability each")
            if list(values) != sorted(set(values)):
                raise ValueError(f"the {what}'s values must be strictly increasing")
            if not all(0 <= v <= MAX_VALUE for v in values):
                raise ValueError(f"the {what}'s values must be integers in [0, {MAX_VALUE}]")
            if any(q <= 0 for q in prior) or sum(prior) != 1:
                raise ValueError(f"the {what}'s probabilities must be positive and sum to 1")

    def cells(self) -> Iterable[tuple[int, int, Fraction, int]]:
        """(buyer index, seller index, probability of the pair, b - s) for every pair."""
        for i, (b, qb) in enumerate(zip(self.buyer_values, self.buyer_prior, strict=True)):
            for k, (s, qs) in enumerate(zip(self.seller_values, self.seller_prior, strict=True)):
                yield i, k, qb * qs, b - s

    def first_best(self) -> Fraction:
        """E[max(b - s, 0)]: the gains when every efficient trade happens."""
        return sum((q * max(gap, 0) for _, _, q, gap in self.cells()), Fraction(0))

    @property
    def separated(self) -> bool:
        """Every buyer value is at least every seller cost: a posted price is efficient."""
        return min(self.buyer_values) >= max(self.seller_values)


@dataclass(frozen=True)
class Row:
    """coeffs · x >= rhs."""

    name: str
    family: str
    coeffs: Mapping[Var, Fraction]
    rhs: Fraction = Fraction(0)


def _payments(budget: Budget) -> tuple[str, str]:
    return ("t", "t") if budget == "ex_post" else ("tB", "tS")


def _add(row: dict[Var, Fraction], var: Var, v: Fraction) -> None:
    row[var] = row.get(var, Fraction(0)) + v


def _buyer_row(
    pr: BilateralProblem, pay: str, true: int, report: int, sign: int
) -> dict[Var, Fraction]:
    """sign * the buyer's interim utility with value `true` reporting `report`."""
    row: dict[Var, Fraction] = {}
    b = pr.buyer_values[true]
    for k, q in enumerate(pr.seller_prior):
        _add(row, ("p", report, k), sign * q * b)
        _add(row, (pay, report, k), -sign * q)
    return row


def _seller_row(
    pr: BilateralProblem, pay: str, true: int, report: int, sign: int
) -> dict[Var, Fraction]:
    row: dict[Var, Fraction] = {}
    s = pr.seller_values[true]
    for i, q in enumerate(pr.buyer_prior):
        _add(row, (pay, i, report), sign * q)
        _add(row, ("p", i, report), -sign * q * s)
    return row


def _merge(a: dict[Var, Fraction], b: dict[Var, Fraction]) -> dict[Var, Fraction]:
    out = dict(a)
    for var, v in b.items():
        _add(out, var, v)
    return {var: v for var, v in out.items() if v}


def lp_rows(pr: BilateralProblem, efficient: bool, budget: Budget) -> list[Row]:
    """Every constraint of the LP, named as the contract's check names its failures."""
    pay_b, pay_s = _payments(budget)
    rows = []
    for i, k, _, _ in pr.cells():
        cell = f"b={pr.buyer_values[i]},s={pr.seller_values[k]}"
        rows.append(Row(f"bound[p({cell})>=0]", "bounds", {("p", i, k): Fraction(1)}))
        rows.append(
            Row(f"bound[p({cell})<=1]", "bounds", {("p", i, k): Fraction(-1)}, Fraction(-1))
        )
    for side, values, utility, pay in (
        ("buyer", pr.buyer_values, _buyer_row, pay_b),
        ("seller", pr.seller_values, _seller_row, pay_s),
    ):
        tag = side[0]
        for i, v in enumerate(values):
            truth = utility(pr, pay, i, i, 1)
            rows.append(Row(f"IR_{side}[{tag}={v}]", f"IR_{side}", truth))
            for j, w in enumerate(values):
                if j != i:
                    lie = utility(pr, pay, i, j, -1)
                    rows.append(
                        Row(f"BIC_{side}[{tag}={v} claims {w}]", f"BIC_{side}", _merge(truth, lie))
                    )
    if budget == "ex_ante":
        surplus: dict[Var, Fraction] = {}
        for i, k, q, _ in pr.cells():
            _add(surplus, (pay_b, i, k), q)
            _add(surplus, (pay_s, i, k), -q)
        rows.append(Row("budget[E(t_B - t_S)>=0]", "budget", surplus))
    if efficient:
        for i, k, _, gap in pr.cells():
            cell = f"b={pr.buyer_values[i]},s={pr.seller_values[k]}"
            if gap > 0:  # trade: p >= 1
                rows.append(
                    Row(
                        f"efficiency[{cell}: p=1]",
                        "efficiency",
                        {("p", i, k): Fraction(1)},
                        Fraction(1),
                    )
                )
            elif gap < 0:  # no trade: -p >= 0
                rows.append(
                    Row(f"efficiency[{cell}: p=0]", "efficiency", {("p", i, k): Fraction(-1)})
                )
    return rows


def _variables(pr: BilateralProblem, budget: Budget) -> list[Var]:
    kinds = ("p", *dict.fromkeys(_payments(budget)))
    return [(kind, i, k) for kind in kinds for i, k, _, _ in pr.cells()]


def _gains(pr: BilateralProblem) -> dict[Var, Fraction]:
    return {("p", i, k): q * gap for i, k, q, gap in pr.cells()}


def _lp(
    variables: Sequence[Var],
    rows: Sequence[Row],
    objective: Mapping[Var, Fraction] | None = None,
    margins: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, float] | None:
    """Maximise `objective` (none: feasibility) over free `variables` subject to `rows`
    (each >= rhs + its margin): HiGHS's solution and optimum, or None when infeasible."""
    col = {v: c for c, v in enumerate(variables)}
    a_ub = np.zeros((len(rows), len(variables)))
    b_ub = np.zeros(len(rows))
    for r, row in enumerate(rows):
        for var, v in row.coeffs.items():
            a_ub[r, col[var]] = -float(v)
        b_ub[r] = -(float(row.rhs) + (margins or {}).get(row.name, 0.0))
    cost = np.zeros(len(variables))
    for var, v in (objective or {}).items():
        cost[col[var]] = -float(v)  # linprog minimises
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=(None, None), method="highs")
    if res.status != 0:
        return None
    return res.x, -float(res.fun)


def feasible(pr: BilateralProblem, rows: Sequence[Row], budget: Budget) -> bool:
    return _lp(_variables(pr, budget), rows) is not None


# ---------------------------------------------------------------------------------------
# Infeasibility: which families conflict, and an exact Farkas certificate


@dataclass(frozen=True)
class Certificate:
    """Nonnegative weights on named rows: Σ w·(coeffs · x) is identically 0, while
    Σ w·rhs = `constant` > 0, so the rows cannot all hold (0 >= constant > 0)."""

    weights: tuple[tuple[str, Fraction], ...]
    constant: Fraction
    verified: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": [{"row": name, "weight": stored(w)} for name, w in self.weights],
            "constant": stored(self.constant),
            "verified": self.verified,
        }


def certificate_constant(rows: Sequence[Row], weights: Mapping[str, Fraction]) -> Fraction | None:
    """Σ w·rhs when `weights` (nonnegative, on names of `rows`) make every coefficient of
    the weighted sum exactly zero and that constant positive; None otherwise."""
    by_name = {row.name: row for row in rows}
    if not weights or any(name not in by_name or w < 0 for name, w in weights.items()):
        return None
    total: dict[Var, Fraction] = {}
    for name, w in weights.items():
        for var, v in by_name[name].coeffs.items():
            _add(total, var, w * v)
    constant = sum((w * by_name[name].rhs for name, w in weights.items()), Fraction(0))
    if any(total.values()) or constant <= 0:
        return None
    return constant


def verify_certificate(
    pr: BilateralProblem, weights: Mapping[str, Fraction], budget: Budget = "ex_ante"
) -> bool:
    """The exact check: do these weights prove the efficient LP infeasible?"""
    return certificate_constant(lp_rows(pr, True, budget), weights) is not None


def _solve_exact(matrix: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction] | None:
    """A solution of matrix · y = rhs (free unknowns at 0) by exact elimination, or None."""
    m = [[*row, b] for row, b in zip(matrix, rhs, strict=True)]
    n = len(matrix[0]) if matrix else 0
    pivots: list[int] = []
    r = 0
    for c in range(n):
        pivot = next((i for i in range(r, len(m)) if m[i][c]), None)
        if pivot is None:
            continue
        m[r], m[pivot] = m[pivot], m[r]
        m[r] = [x / m[r][c] for x in m[r]]
        for i in range(len(m)):
            if i != r and m[i][c]:
                m[i] = [x - m[i][c] * y for x, y in zip(m[i], m[r], strict=True)]
        pivots.append(c)
        r += 1
    if any(row[-1] for row in m[r:]):
        return None
    y = [Fraction(0)] * n
    for i, c in enumerate(pivots):
        y[c] = m[i][-1]
    return y


def find_certificate(
    pr: BilateralProblem, rows: Sequence[Row], budget: Budget
) -> Certificate | None:
    """Farkas: y >= 0 with yᵀA = 0 and yᵀc = 1 (least total weight), by HiGHS; then exact:
    solve for y on HiGHS's support in Fractions (or rationalise), and verify."""
    variables = _variables(pr, budget)
    col = {v: c for c, v in enumerate(variables)}
    a_eq = np.zeros((len(variables) + 1, len(rows)))
    for r, row in enumerate(rows):
        for var, v in row.coeffs.items():
            a_eq[col[var], r] = float(v)
        a_eq[-1, r] = float(row.rhs)
    b_eq = np.zeros(len(variables) + 1)
    b_eq[-1] = 1.0
    res = linprog(np.ones(len(rows)), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    if res.status != 0:
        return None
    support = [r for r in range(len(rows)) if res.x[r] > 1e-9]
    for weights in _exact_weights(rows, support, res.x, variables):
        constant = certificate_constant(rows, weights)
        if constant is not None:
            scale = 1 / constant  # normalise: the contradiction reads 0 >= 1
            named = tuple((rows[r].name, weights[rows[r].name] * scale) for r in support)
            return Certificate(named, Fraction(1), True)
    return None


def _exact_weights(
    rows: Sequence[Row], support: list[int], x: np.ndarray, variables: list[Var]
) -> Iterable[dict[str, Fraction]]:
    """Candidate exact weights: the exact solution on HiGHS's support, then roundings."""
    matrix = [[rows[r].coeffs.get(var, Fraction(0)) for r in support] for var in variables]
    matrix.append([rows[r].rhs for r in support])
    y = _solve_exact(matrix, [Fraction(0)] * len(variables) + [Fraction(1)])
    if y is not None:
        yield {rows[r].name: w for r, w in zip(support, y, strict=True)}
    for d in DENOMINATORS:
        yield {rows[r].name: Fraction(float(x[r])).limit_denominator(d) for r in support}


# ---------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BilateralDesign:
    """A verified (or, if repair failed, unverified) deployable schedule."""

    problem: BilateralProblem
    schedule: Schedule
    efficient: bool
    lp_optimum: float  # HiGHS's optimum of the ex post LP solved (no margins)
    lp_optimum_ex_ante: float  # the same LP with the weaker ex ante budget
    posted_price: Fraction | None = None
    margins: Mapping[str, float] = field(default_factory=dict)

    @property
    def terms(self) -> dict[str, Any]:
        return stored_terms(self.schedule)

    @property
    def checks(self) -> dict[str, bool]:
        return checks(self.schedule)

    @property
    def verified(self) -> bool:
        return not failures(self.schedule)

    @property
    def gains(self) -> Fraction:
        return self.schedule.gains()

    def deposits(self) -> dict[str, int]:
        rule = BilateralRule()
        return {"buyer": rule.min_deposit(self.terms, 0), "seller": rule.min_deposit(self.terms, 1)}

    def to_json(self) -> dict[str, Any]:
        first = self.problem.first_best()
        return {
            "mechanism": "bilateral",
            "feasible": True,
            "efficient": self.efficient,
            "terms": self.terms,
            "checks": self.checks,
            "verified": self.verified,
            "expected_gains": stored(self.gains),
            "expected_gains_float": float(self.gains),
            "lp_optimum": self.lp_optimum,
            "lp_optimum_ex_ante": self.lp_optimum_ex_ante,
            "gap": self.lp_optimum - float(self.gains),
            "first_best": stored(first),
            "first_best_float": float(first),
            "share_of_first_best": float(self.gains / first) if first else 1.0,
            "posted_price": None if self.posted_price is None else stored(self.posted_price),
            "deposits": self.deposits(),
            "margins": dict(self.margins),
        }


@dataclass(frozen=True)
class BilateralInfeasible:
    """No mechanism meets every family: the theorem on these numbers."""

    problem: BilateralProblem
    budget: Budget  # the budget the infeasibility was shown with (ex ante is the weaker)
    conflicts: Mapping[str, bool]  # family -> is the LP feasible once it alone is dropped?
    certificate: Certificate | None

    @property
    def terms(self) -> None:
        return None

    def to_json(self) -> dict[str, Any]:
        first = self.problem.first_best()
        return {
            "mechanism": "bilateral",
            "feasible": False,
            "efficient": True,
            "terms": None,
            "checks": {
                "lp_infeasible": True,
                "certificate_verified": self.certificate is not None and self.certificate.verified,
            },
            "budget": self.budget,
            "conflicts": {f: {"feasible_without": ok} for f, ok in self.conflicts.items()},
            "certificate": None if self.certificate is None else self.certificate.to_json(),
            "first_best": stored(first),
            "first_best_float": float(first),
        }


# ---------------------------------------------------------------------------------------
# The designer


def design_bilateral(
    problem: BilateralProblem, efficient: bool = False
) -> BilateralDesign | BilateralInfeasible:
    """The second best (or, with `efficient`, an efficient mechanism or the proof that none
    exists), ex post balanced and verified exactly."""
    problem.validate()
    if efficient:
        for budget in ("ex_ante", "ex_post"):  # ex ante infeasible: the stronger statement
            rows = lp_rows(problem, True, budget)
            if not feasible(problem, rows, budget):
                return _infeasible(problem, rows, budget)
    rows = lp_rows(problem, efficient, "ex_ante")
    ex_ante = _lp(_variables(problem, "ex_ante"), rows, _gains(problem))
    lp_ex_ante = math.nan if ex_ante is None else ex_ante[1]
    if efficient and problem.separated:
        return _posted_price(problem, lp_ex_ante)
    return _second_best(problem, efficient, lp_ex_ante)


def _infeasible(pr: BilateralProblem, rows: list[Row], budget: Budget) -> BilateralInfeasible:
    conflicts = {
        family: feasible(pr, [r for r in rows if r.family != family], budget)
        for family in FAMILIES
        if any(r.family == family for r in rows)
    }
    return BilateralInfeasible(pr, budget, conflicts, find_certificate(pr, rows, budget))


def _default_report(pr: BilateralProblem) -> tuple[int, int]:
    # a silent buyer counts as its lowest value, a silent seller as its highest cost
    return (0, len(pr.seller_values) - 1)


def _posted_price(pr: BilateralProblem, lp_ex_ante: float) -> BilateralDesign:
    """Trade always at the midpoint of [max cost, min value]: dominant-strategy IC and IR."""
    price = Fraction(max(pr.seller_values) + min(pr.buyer_values), 2)
    nb, ns = len(pr.buyer_values), len(pr.seller_values)
    schedule = Schedule(
        pr.buyer_values,
        pr.buyer_prior,
        pr.seller_values,
        pr.seller_prior,
        tuple(tuple(Fraction(1) for _ in range(ns)) for _ in range(nb)),
        tuple(tuple(price for _ in range(ns)) for _ in range(nb)),
        _default_report(pr),
    )
    solved = _lp(_variables(pr, "ex_post"), lp_rows(pr, True, "ex_post"), _gains(pr))
    lp_optimum = math.nan if solved is None else solved[1]
    return BilateralDesign(pr, schedule, True, lp_optimum, lp_ex_ante, price)


def _schedule(pr: BilateralProblem, values: Mapping[Var, Fraction]) -> Schedule:
    nb, ns = len(pr.buyer_values), len(pr.seller_values)
    return Schedule(
        pr.buyer_values,
        pr.buyer_prior,
        pr.seller_values,
        pr.seller_prior,
        tuple(
            tuple(min(max(values[("p", i, k)], Fraction(0)), Fraction(1)) for k in range(ns))
            for i in range(nb)
        ),
        tuple(tuple(values[("t", i, k)] for k in range(ns)) for i in range(nb)),
        _default_report(pr),
    )


def _second_best(pr: BilateralProblem, efficient: bool, lp_ex_ante: float) -> BilateralDesign:
    """Trade probabilities from the gains LP, made exact (smallest denominators first);
    then the payments for them that need the least escrow, made exact and verified."""
    rows = lp_rows(pr, efficient, "ex_post")
    variables = _variables(pr, "ex_post")
    solved = _lp(variables, rows, _gains(pr))
    if solved is None:  # cannot happen: no trade and no payment meets every row
        raise RuntimeError("the second-best LP is infeasible")
    x, lp_optimum = solved
    tried: list[dict[Var, Fraction]] = []
    last: tuple[Schedule, dict[str, float]] | None = None
    for d in DENOMINATORS:
        trade = {
            v: min(max(Fraction(float(x[c])).limit_denominator(d), Fraction(0)), Fraction(1))
            for c, v in enumerate(variables)
            if v[0] == "p"
        }
        if trade in tried:
            continue
        tried.append(trade)
        found = _payments_for(pr, rows, trade)
        if found is None or not _better(found[0], last):
            continue
        last = found
        # a coarse rounding can be feasible yet give up gains: go on until it reaches the LP
        if not failures(found[0]) and float(found[0].gains()) >= lp_optimum - OPTIMUM_TOLERANCE:
            break
    if last is None:  # no rounding of the trade probabilities admits payments
        zero = {v: Fraction(0) for v in variables if v[0] == "t"}
        last = (_schedule(pr, tried[-1] | zero), {})
    schedule, margins = last
    return BilateralDesign(pr, schedule, efficient, lp_optimum, lp_ex_ante, None, margins)


OPTIMUM_TOLERANCE = 1e-9  # gains this close to HiGHS's optimum count as reaching it


def _better(schedule: Schedule, than: tuple[Schedule, dict[str, float]] | None) -> bool:
    """Verified beats unverified; then more gains."""
    if than is None:
        return True
    ok, was = not failures(schedule), not failures(than[0])
    return ok > was or (ok == was and schedule.gains() > than[0].gains())


def _fix(rows: Sequence[Row], fixed: Mapping[Var, Fraction]) -> list[Row] | None:
    """The rows with the `fixed` variables substituted (None: a row they alone break)."""
    out = []
    for row in rows:
        rhs = row.rhs - sum(
            (v * fixed[var] for var, v in row.coeffs.items() if var in fixed), Fraction(0)
        )
        coeffs = {var: v for var, v in row.coeffs.items() if var not in fixed}
        if coeffs:
            out.append(Row(row.name, row.family, coeffs, rhs))
        elif rhs > 0:
            return None
    return out


DEPOSIT: tuple[Var, Var] = (("D", 0, 0), ("D", 1, 0))  # the buyer's and the seller's escrow


def _deposit_rows(pr: BilateralProblem) -> list[Row]:
    """D_buyer >= max(t, 0), D_seller >= max(-t, 0) over every cell."""
    rows = [
        Row(f"deposit[{side}]>=0", "deposit", {d: Fraction(1)})
        for side, d in zip(("buyer", "seller"), DEPOSIT, strict=True)
    ]
    for i, k, _, _ in pr.cells():
        t: Var = ("t", i, k)
        rows.append(
            Row(f"deposit[buyer]>=t{i},{k}", "deposit", {DEPOSIT[0]: Fraction(1), t: Fraction(-1)})
        )
        rows.append(
            Row(f"deposit[seller]>=-t{i},{k}", "deposit", {DEPOSIT[1]: Fraction(1), t: Fraction(1)})
        )
    return rows


def _payments_for(
    pr: BilateralProblem, rows: Sequence[Row], trade: Mapping[Var, Fraction]
) -> tuple[Schedule, dict[str, float]] | None:
    """Payments for these exact trade probabilities: the LP minimising the two deposits,
    made exact; rows that rounding broke get a margin and it is solved again."""
    fixed = _fix(rows, trade)
    if fixed is None:
        return None
    pays: list[Var] = [("t", i, k) for i, k, _, _ in pr.cells()]
    program = fixed + _deposit_rows(pr)
    objective = {d: Fraction(-1) for d in DEPOSIT}
    margins: dict[str, float] = {}
    schedule: Schedule | None = None
    for _ in range(MAX_REPAIRS):
        solved = _lp([*pays, *DEPOSIT], program, objective, margins)
        if solved is None:
            break
        x = solved[0]
        for d in DENOMINATORS:
            pay = {v: Fraction(float(x[c])).limit_denominator(d) for c, v in enumerate(pays)}
            schedule = _schedule(pr, {**trade, **pay})
            if not failures(schedule) and _within(schedule):
                return schedule, margins
        assert schedule is not None
        for name, missed in _deficits(rows, schedule).items():
            margins[name] = max(2 * margins.get(name, 0.0), 2 * missed, 1e-9)
    return None if schedule is None else (schedule, margins)


def _within(schedule: Schedule) -> bool:
    return all(x.denominator <= MAX_DENOMINATOR for row in schedule.payment for x in row)


def _deficits(rows: Sequence[Row], schedule: Schedule) -> dict[str, float]:
    """By how much each row the schedule breaks misses, exactly (as a float)."""
    value: dict[Var, Fraction] = {}
    for i, trades in enumerate(schedule.trade):
        for k, p in enumerate(trades):
            value[("p", i, k)] = p
            value[("t", i, k)] = schedule.payment[i][k]
    out = {}
    for row in rows:
        lhs = sum((v * value[var] for var, v in row.coeffs.items()), Fraction(0))
        if lhs < row.rhs:
            out[row.name] = float(row.rhs - lhs)
    return out


DEFAULT_BUYER = (5, 15, 25, 35)
DEFAULT_SELLER = (0, 10, 20, 30)


def default_terms(parties: int) -> dict[str, Any]:
    """The second best for buyer values 5, 15, 25, 35 and seller costs 0, 10, 20, 30, all
    equally likely: efficient trade is impossible there (see `design_bilateral`)."""
    if parties != 2:
        raise ValueError(f"bilateral trade has 2 parties (buyer, seller), not {parties}")
    design = design_bilateral(BilateralProblem.uniform(DEFAULT_BUYER, DEFAULT_SELLER))
    assert isinstance(design, BilateralDesign) and design.verified
    return design.terms
