"""A designed risk-sharing schedule as ledger data: integer lotteries over integer transfers.

The designer (`contracts.design.risk`) solves a linear program over lotteries and
rounds it to integer weights; this module holds the result in the form a
contract instance is created with, checks that it is well formed, and maps a
uniform draw in [0, resolution) to an outcome.

A lottery is keyed by (period within the horizon, the reports of this round so
far with the current one last, audit outcome): audit 0 is "not audited"; audit
1 + i is "audited, and the true income is incomes[i]".  For a report with
audits, the unaudited weights and the audited weights for any one true income
sum to the resolution together, and every true income's audited weights have
the same total A: the audit happens with probability A / resolution whatever
the truth, as Program 9 requires.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from ledger.contract import ContractError
from ledger.encoding import MAX_INT, Struct, Tag

if TYPE_CHECKING:
    from contracts.design.risk import RiskDesign

MAX_INCOMES = 16
MAX_TRANSFERS = 64
MAX_LOTTERIES = 1024
MAX_HORIZON = 10  # 2 incomes over 10 periods already make 2046 report histories
MAX_RESOLUTION = 10**12
UTILITY_SCALE = 10**9  # as contracts.design.risk.UTILITY_SCALE
MAX_UTILITY = MAX_INT // 1024

Key = tuple[int, tuple[int, ...], int]  # (period, reports, audit)


@dataclass(frozen=True)
class Lottery(Struct):
    TAG = Tag.RISK_LOTTERY
    period: int  # 1..horizon
    reports: tuple[int, ...]  # income indices reported this round, the current one last
    audit: int  # 0: not audited; 1 + i: audited, true income i
    weights: tuple[int, ...]  # one per transfer

    @property
    def key(self) -> Key:
        return (self.period, self.reports, self.audit)


@dataclass(frozen=True)
class Schedule(Struct):
    TAG = Tag.RISK_SCHEDULE
    incomes: tuple[int, ...]  # in ledger units, for display: reports are indices into this
    transfers: tuple[int, ...]  # from agent 1 to agent 2, ledger units (negative: 2 pays 1)
    resolution: int  # every lottery's weights sum to this
    horizon: int  # periods of the design; a longer contract renews it (round after round)
    lotteries: tuple[Lottery, ...]
    # What agent 1 is: the contract re-checks truth-telling with these (`truth_telling`).
    # utility[i][j]: U1(income i - transfer j) in 1 / UTILITY_SCALE; consumption that cannot
    # happen carries the designer's sentinel (far below every possible utility)
    utility: tuple[tuple[int, ...], ...] = ()
    # beliefs[i]: p(next income k | income i) for k < n as numerators, then their denominator
    beliefs: tuple[tuple[int, ...], ...] = ()
    discount: tuple[int, ...] = (0, 1)  # beta: numerator, denominator

    @cached_property
    def table(self) -> dict[Key, tuple[int, ...]]:
        return {lot.key: lot.weights for lot in self.lotteries}

    def audit_weight(self, period: int, reports: tuple[int, ...]) -> int:
        """A: out of `resolution`, how often the report `reports[-1]` is audited."""
        audited = self.table.get((period, reports, 1 + reports[-1]))
        return sum(audited) if audited else 0

    @property
    def audits(self) -> bool:
        return any(lot.audit for lot in self.lotteries)

    def outcome(self, period: int, reports: tuple[int, ...], u: int) -> int | None:
        """The transfer index for a draw u in [0, resolution); None when u calls an audit
        (the first A values do)."""
        a = self.audit_weight(period, reports)
        if u < a:
            return None
        return _pick(self.table[(period, reports, 0)], u - a)

    def audited_outcome(self, period: int, reports: tuple[int, ...], true: int, u: int) -> int:
        """The transfer index after an audit found income `true`, for the same draw u < A."""
        return _pick(self.table[(period, reports, 1 + true)], u)

    def max_payment(self, agent: int) -> int:
        """The most one period's transfer can take from agent 1 or agent 2."""
        worst = max(self.transfers) if agent == 1 else -min(self.transfers)
        return max(worst, 0)

    def spread(self) -> int:
        return max(self.transfers) - min(self.transfers)

    def worst_expected_payment(self, agent: int, fee: int = 0) -> Fraction:
        """The most one period can be expected to cost agent 1 or agent 2, exactly: the
        largest mean net payment of any lottery (any period and history of reports, so any
        reporting strategy), counting for agent 2 the audit fee times the audit chance.
        A quitter's continuation gain over r remaining periods is at most r times this."""
        worst = Fraction(0)
        for (t, reports, audit), plain in self.table.items():
            if audit:
                continue
            fee_paid = fee * self.audit_weight(t, reports)
            # whatever the true income is (a lie included), an audit brings its lottery
            audited = [self.table.get((t, reports, 1 + i)) for i in range(len(self.incomes))]
            lotteries = [
                [a + b for a, b in zip(plain, extra, strict=True)]
                for extra in audited
                if extra is not None
            ] or [list(plain)]
            for w in lotteries:
                tau = sum(x * y for x, y in zip(self.transfers, w, strict=True))
                cost = tau if agent == 1 else fee_paid - tau
                worst = max(worst, Fraction(cost, self.resolution))
        return worst

    def check(self) -> None:
        """Raise ContractError("bad_schedule") unless every lottery the contract can need
        exists and sums exactly, and nothing else is there."""
        n, m = len(self.incomes), len(self.transfers)
        if not 2 <= n <= MAX_INCOMES or not 1 <= m <= MAX_TRANSFERS:
            _bad(f"need 2..{MAX_INCOMES} incomes and 1..{MAX_TRANSFERS} transfers")
        if len(set(self.incomes)) != n:
            _bad("incomes must differ")
        if not 1 <= self.resolution <= MAX_RESOLUTION:
            _bad(f"resolution must be 1..{MAX_RESOLUTION}")
        # bound the horizon before counting histories: the count grows as n ** horizon
        if (
            not 1 <= self.horizon <= MAX_HORIZON
            or sum(n**t for t in range(1, self.horizon + 1)) > MAX_LOTTERIES
        ):
            _bad(f"horizon must be at least 1 with at most {MAX_LOTTERIES} report histories")
        if len(self.table) != len(self.lotteries):
            _bad("two lotteries have the same (period, reports, audit)")
        expected = 0
        for t in range(1, self.horizon + 1):
            for reports in itertools.product(range(n), repeat=t):
                expected += self._check_report(t, reports)
        if expected != len(self.lotteries):
            _bad("a lottery is keyed by a period, report history or audit that cannot happen")
        if len(self.utility) != n or any(
            len(row) != m or any(type(x) is not int or abs(x) > MAX_UTILITY for x in row)
            for row in self.utility
        ):
            _bad(f"'utility' must be {n} rows of {m} integers (agent 1's, for truth-telling)")
        if len(self.beliefs) != n or any(
            len(row) != n + 1 or any(type(x) is not int or x < 0 for x in row) or row[-1] < 1
            for row in self.beliefs
        ):
            _bad(f"'beliefs' must be {n} rows of {n} numerators and a positive denominator")
        d = self.discount
        if len(d) != 2 or not 0 <= d[0] <= d[1] or not 1 <= d[1] <= MAX_INT // 1024:
            _bad("'discount' must be [numerator, denominator] of a factor in [0, 1]")

    def truth_telling(self) -> list[str]:
        """Every one-shot lie that pays, checked exactly (integers and Fractions only).

        Programs 7, 8 and 9 of /work/shared/seeds/000_562edbfd514851a1.txt ("Risk Sharing
        with Private Information on Crop Output", (94); "Optimal Multiperiod Tie-ins",
        (96)-(97); "Costly State Verification"): at every period and reported history of
        the round, agent 1 with true income i gains nothing by reporting k instead and
        reporting truthfully afterwards, counting what the lie does to later lotteries.  A
        report's lottery is its unaudited weights plus, when it audits, the audited weights
        for the true income (the audit reveals it)."""
        n, horizon = len(self.incomes), self.horizon
        beta = Fraction(self.discount[0], self.discount[1])
        value: dict[tuple[int, tuple[int, ...], int], Fraction] = {}

        def now(t: int, reports: tuple[int, ...], true: int) -> int:
            w = self.table[(t, reports, 0)]
            audited = self.table.get((t, reports, 1 + true))
            row = self.utility[true]
            total = sum(u * x for u, x in zip(row, w, strict=True))
            if audited is not None:
                total += sum(u * x for u, x in zip(row, audited, strict=True))
            return total

        def truthful(t: int, reports: tuple[int, ...], true: int) -> Fraction:
            """Agent 1's value from period t on (times resolution * UTILITY_SCALE)."""
            key = (t, reports, true)
            if key not in value:
                v = Fraction(now(t, reports, true))
                if t < horizon:
                    p = self.beliefs[true]
                    v += beta * sum(
                        (Fraction(p[k], p[-1]) * truthful(t + 1, (*reports, k), k))
                        for k in range(n)
                    )
                value[key] = v
            return value[key]

        def lie(t: int, past: tuple[int, ...], true: int, told: int) -> Fraction:
            reports = (*past, told)
            v = Fraction(now(t, reports, true))
            if t < horizon:
                p = self.beliefs[true]
                v += beta * sum(
                    (Fraction(p[k], p[-1]) * truthful(t + 1, (*reports, k), k)) for k in range(n)
                )
            return v

        failures = []
        scale = self.resolution * UTILITY_SCALE
        for t in range(1, horizon + 1):
            for past in itertools.product(range(n), repeat=t - 1):
                for true, told in itertools.permutations(range(n), 2):
                    gain = lie(t, past, true, told) - truthful(t, (*past, true), true)
                    if gain > 0:
                        failures.append(
                            f"period {t} after reports {[self.incomes[i] for i in past]}: "
                            f"income {self.incomes[true]} gains {float(gain / scale):.6g} "
                            f"by reporting {self.incomes[told]}"
                        )
        return failures

    def check_truth_telling(self) -> None:
        """Raise ContractError("not_incentive_compatible") naming every lie that pays."""
        failures = self.truth_telling()
        if failures:
            raise ContractError(
                "not_incentive_compatible",
                "the schedule is not incentive compatible for private reports: "
                + "; ".join(failures[:5])
                + (f"; and {len(failures) - 5} more" if len(failures) > 5 else ""),
            )

    def _check_report(self, t: int, reports: tuple[int, ...]) -> int:
        """Check the lotteries for one reported history; return how many there are."""
        n, m = len(self.incomes), len(self.transfers)
        plain = self.table.get((t, reports, 0))
        audited = [self.table.get((t, reports, 1 + i)) for i in range(n)]
        where = f"period {t} reports {list(reports)}"
        if plain is None:
            _bad(f"no lottery for {where}")
        present = [w for w in audited if w is not None]
        if present and len(present) != n:
            _bad(f"{where}: audited lotteries must exist for every true income or none")
        for w in (plain, *present):
            if len(w) != m or any(type(x) is not int or x < 0 for x in w):
                _bad(f"{where}: weights must be {m} non-negative integers")
        a = sum(present[0]) if present else 0
        if any(sum(w) != a for w in present) or sum(plain) + a != self.resolution:
            _bad(f"{where}: weights must sum to the resolution {self.resolution}")
        return 1 + len(present)


def _pick(weights: tuple[int, ...], u: int) -> int:
    for j, w in enumerate(weights):
        if u < w:
            return j
        u -= w
    raise ContractError("bad_schedule", "draw beyond the lottery's weights")


def _bad(message: str) -> NoReturn:
    raise ContractError("bad_schedule", message)


def schedule_from_args(value: Any) -> Schedule:
    """The schedule as it travels in a `create` call: a map of plain values."""
    if not isinstance(value, Mapping) or set(value) != set(SCHEDULE_KEYS):
        _bad("'schedule' must map " + ", ".join(SCHEDULE_KEYS))
    lotteries = []
    for item in _ints_list(value["lotteries"], "lotteries", nested=True):
        if not isinstance(item, list) or len(item) != 4:
            _bad("each lottery must be [period, [reports...], audit, [weights...]]")
        period, reports, audit, weights = item
        lotteries.append(
            Lottery(
                _int(period, "period"),
                tuple(_ints_list(reports, "reports")),
                _int(audit, "audit"),
                tuple(_ints_list(weights, "weights")),
            )
        )
    if len(lotteries) > MAX_LOTTERIES:
        _bad(f"at most {MAX_LOTTERIES} lotteries")
    schedule = Schedule(
        tuple(_ints_list(value["incomes"], "incomes")),
        tuple(_ints_list(value["transfers"], "transfers")),
        _int(value["resolution"], "resolution"),
        _int(value["horizon"], "horizon"),
        tuple(lotteries),
        _int_rows(value["utility"], "utility"),
        _int_rows(value["beliefs"], "beliefs"),
        tuple(_ints_list(value["discount"], "discount")),
    )
    schedule.check()
    return schedule


SCHEDULE_KEYS = (
    "incomes",
    "transfers",
    "resolution",
    "horizon",
    "lotteries",
    "utility",
    "beliefs",
    "discount",
)


def _int_rows(v: Any, name: str) -> tuple[tuple[int, ...], ...]:
    if not isinstance(v, list) or len(v) > MAX_INCOMES:
        _bad(f"{name!r} must be a list of at most {MAX_INCOMES} rows")
    return tuple(tuple(_ints_list(row, name)) for row in v)


def schedule_args(schedule: Schedule) -> dict[str, Any]:
    """The inverse of `schedule_from_args`."""
    return {
        "incomes": list(schedule.incomes),
        "transfers": list(schedule.transfers),
        "resolution": schedule.resolution,
        "horizon": schedule.horizon,
        "lotteries": [
            [lot.period, list(lot.reports), lot.audit, list(lot.weights)]
            for lot in schedule.lotteries
        ],
        "utility": [list(row) for row in schedule.utility],
        "beliefs": [list(row) for row in schedule.beliefs],
        "discount": list(schedule.discount),
    }


def schedule_from_design(design: RiskDesign, unit: int) -> Schedule:
    """A designed program as ledger data: incomes and transfers in ledger units (`unit`
    per unit of the design's grid), the rounded lottery weights as they are."""
    problem = design.problem
    lotteries = [(t, h, a, w) for (t, h, a), w in sorted(design.weights.items())]
    return scaled_schedule(
        problem.incomes,
        problem.transfers,
        design.resolution,
        problem.periods,
        lotteries,
        unit,
        design.utility_table,
        design.beliefs(),
        design.discount(),
    )


def scaled_schedule(
    incomes: Sequence[float],
    transfers: Sequence[float],
    resolution: int,
    horizon: int,
    lotteries: Sequence[tuple[int, Sequence[int], int, Sequence[int]]],
    unit: int,
    utility: Sequence[Sequence[int]] = (),
    beliefs: Sequence[Sequence[int]] = (),
    discount: Sequence[int] = (0, 1),
) -> Schedule:
    """A schedule from the designer's grid (in its own units), checked (its form: whether
    it is truthful is `Schedule.truth_telling`)."""
    schedule = Schedule(
        _scaled(incomes, unit, "income"),
        _scaled(transfers, unit, "transfer"),
        resolution,
        horizon,
        tuple(Lottery(t, tuple(h), a, tuple(w)) for t, h, a, w in lotteries),
        tuple(tuple(row) for row in utility),
        tuple(tuple(row) for row in beliefs),
        tuple(discount),
    )
    schedule.check()
    return schedule


def _scaled(values: Sequence[float], unit: int, what: str) -> tuple[int, ...]:
    out = tuple(round(v * unit) for v in values)
    for v, scaled in zip(values, out, strict=True):
        if abs(v * unit - scaled) > 1e-6:
            raise ValueError(f"{what} {v:g} is not a whole number of ledger units at unit {unit}")
    return out


def _int(v: Any, name: str) -> int:
    if type(v) is not int or abs(v) > MAX_INT // 1024:
        _bad(f"{name!r} must be an integer")
    return int(v)


def _ints_list(v: Any, name: str, nested: bool = False) -> list[Any]:
    if not isinstance(v, list) or (not nested and any(type(x) is not int for x in v)):
        _bad(f"{name!r} must be a list of integers")
    return list(v)
