"""The AGV (d'Aspremont-Gérard-Varet) expected-externality mechanism as a kernel rule.

Source: Holmstrom's slides, /work/shared/seeds/002_73efa823a2277c74.txt, Lecture 11,
"BNE Implementation" and "Budget Balancing with BNE": with independent types, agent i's
Bayesian IC constraint only involves its interim expected transfer, so the transfers

    t_i(m) = tbar_i^VCG(m_i) - 1/(n-1) * sum_{j != i} tbar_j^VCG(m_j)

(tbar_i^VCG(m_i): the expected welfare of the others under the efficient decision when i
reports m_i) give i the same incentives as VCG, "the extra terms cannot be influenced by
i's message", while sum_i t_i(m) = 0 at every profile m.  "Caveats": this needs
independent types and a common prior, so the prior is part of the designed terms.

Terms (plain canonical values; fractions as [numerator, denominator]):
    decisions       [name per decision]
    types           [[type name per type] per agent]
    prior           [[P(type) per type] per agent]: independent, each > 0, each sums to 1
    utility         [[[u_i(x, type) per decision x] per type] per agent]
    decision        [decision index per type profile]
    transfers       [[t_i per agent] per type profile]
    default_report  [type index per agent]: what a committed non-revealer counts as
Profiles are in lexicographic order of type indices, agent 0 most significant.

`check_agv` re-verifies a schedule exactly in Fractions (efficiency, budget balance at
every profile, Bayesian IC); `AgvRule.terms` refuses a schedule that fails it, and the
designer (contracts/design/agv.py) reports the same checks.  A message is a type index
(a type name is accepted and normalised to its index).  Settlement pays the profile's
exact transfers rounded by `lottery.round_preserving`: they sum to 0 at every draw and
their expectation over the draw is exactly t, so BIC holds in expectation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import product
from typing import Any

from contracts.kernel import lottery
from contracts.kernel.rule import BadMessage, BadTerms, MissingCommit, Seats, Settlement
from ledger.encoding import MAX_INT

MIN_AGENTS = 2
MAX_AGENTS = 8
MAX_PROFILES = 4096  # type profiles: the BIC check walks them all once per agent and type
MAX_DECISIONS = 64
MAX_NAME = 64  # characters in a decision or type name
KEYS = ("decisions", "types", "prior", "utility", "decision", "transfers", "default_report")
# The exact checks, in order; every failure message starts with its check's name.
CHECKS = ("shape", "prior", "efficient", "budget_balanced", "bayesian_ic")
LABEL = "agv"  # the draw's label for rounding the transfers

Table = tuple[tuple[Fraction, ...], ...]


@dataclass(frozen=True)
class AgvTerms:
    """Parsed terms: the same data as the stored form, with Fractions."""

    decisions: tuple[str, ...]
    types: tuple[tuple[str, ...], ...]
    prior: Table
    utility: tuple[Table, ...]  # utility[i][type][decision]
    decision: tuple[int, ...]
    transfers: Table  # transfers[profile][agent]
    default_report: tuple[int, ...]

    @property
    def agents(self) -> int:
        return len(self.types)

    def profiles(self) -> Iterator[tuple[int, ...]]:
        return product(*(range(len(ts)) for ts in self.types))

    def weight(self, profile: Sequence[int], skip: int) -> Fraction:
        """The prior probability of the others' types (everyone but agent `skip`)."""
        w = Fraction(1)
        for j, theta in enumerate(profile):
            if j != skip:
                w *= self.prior[j][theta]
        return w

    def stored(self) -> dict[str, Any]:
        def table(rows: Table) -> list[list[list[int]]]:
            return [[lottery.stored(x) for x in row] for row in rows]

        return {
            "decisions": list(self.decisions),
            "types": [list(ts) for ts in self.types],
            "prior": table(self.prior),
            "utility": [table(u) for u in self.utility],
            "decision": list(self.decision),
            "transfers": table(self.transfers),
            "default_report": list(self.default_report),
        }


def profile_count(types: Sequence[Sequence[Any]]) -> int:
    return math.prod(len(ts) for ts in types)


def profile_index(types: Sequence[Sequence[Any]], reports: Sequence[int]) -> int:
    """The position of a profile in lexicographic order (agent 0 most significant)."""
    k = 0
    for ts, r in zip(types, reports, strict=True):
        k = k * len(ts) + r
    return k


def check_agv(terms: Mapping[str, Any]) -> list[str]:
    """The failed checks (each message starts with its name in CHECKS); empty when sound."""
    try:
        t = parse_terms(terms)
    except ValueError as e:
        return [f"shape: {e}"]
    return failures(t)


class AgvRule:
    name = "agv"
    missing_commit: MissingCommit = "cancel"  # the prior covers every named agent

    def terms(self, args: Mapping[str, Any], parties: int) -> dict[str, Any]:
        try:
            t = parse_terms(args)
        except ValueError as e:
            raise BadTerms(f"shape: {e}") from e
        if t.agents != parties:
            raise BadTerms(f"the terms are for {t.agents} agents, the contract has {parties}")
        failed = failures(t)
        if failed:
            raise BadTerms("unsafe design: " + "; ".join(failed), reason="unsafe_design")
        return t.stored()

    def min_deposit(self, terms: Mapping[str, Any], index: int) -> int:
        # rounding pays floor(t_i) or ceil(t_i), so the most i can pay is ceil(-t_i)
        worst = min(lottery.fraction(row[index], "transfer") for row in terms["transfers"])
        return max(0, math.ceil(-worst))

    def message(self, terms: Mapping[str, Any], index: int, value: Any, deposit: int) -> Any:
        names = terms["types"][index]
        if isinstance(value, str) and value in names:
            return names.index(value)
        if type(value) is not int or not 0 <= value < len(names):
            raise BadMessage(
                f"a report is a type index 0..{len(names) - 1} (or a name: "
                f"{', '.join(names)}), got {value!r}"
            )
        return value

    def default(self, terms: Mapping[str, Any], index: int) -> Any | None:
        return terms["default_report"][index]

    def settle(
        self, terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
    ) -> Settlement:
        types = terms["types"]
        reports = [terms["default_report"][i] if m is None else m for i, m in enumerate(messages)]
        k = profile_index(types, reports)
        x = terms["decision"][k]
        exact = [lottery.fraction(v, "transfer") for v in terms["transfers"][k]]
        paid = lottery.round_preserving(exact, seats.draw, LABEL)
        return Settlement(
            transfers=tuple(paid),
            outcome={
                "decision": terms["decisions"][x],
                "reports": [types[i][r] for i, r in enumerate(reports)],
                "transfers": paid,
                "exact_transfers": [lottery.stored(v) for v in exact],
            },
        )


RULE = AgvRule()


# -- parsing (shape and limits) ------------------------------------------------------


def parse_terms(args: Mapping[str, Any]) -> AgvTerms:
    """The terms as Fractions; ValueError naming the first malformed part."""
    if not isinstance(args, Mapping) or sorted(args) != sorted(KEYS):
        raise ValueError(f"terms must be a map with exactly the keys {', '.join(KEYS)}")
    decisions = _names(args["decisions"], "decisions", MAX_DECISIONS)
    raw_types = _seq(args["types"], "types")
    if not MIN_AGENTS <= len(raw_types) <= MAX_AGENTS:
        raise ValueError(f"AGV needs {MIN_AGENTS} to {MAX_AGENTS} agents, got {len(raw_types)}")
    types = tuple(_names(ts, f"types[{i}]", MAX_PROFILES) for i, ts in enumerate(raw_types))
    if profile_count(types) > MAX_PROFILES:
        raise ValueError(f"{profile_count(types)} type profiles, more than {MAX_PROFILES}")
    n, d, sizes = len(types), len(decisions), [len(ts) for ts in types]
    prior = _table(args["prior"], "prior", [(s,) for s in sizes])
    utility = tuple(
        _table(u, f"utility[{i}]", [(d,)] * sizes[i])
        for i, u in enumerate(_seq(args["utility"], "utility", n))
    )
    p = profile_count(types)
    decision = tuple(
        _index(x, d, f"decision[{k}]") for k, x in enumerate(_seq(args["decision"], "decision", p))
    )
    transfers = _table(args["transfers"], "transfers", [(n,)] * p)
    default = tuple(
        _index(r, sizes[i], f"default_report[{i}]")
        for i, r in enumerate(_seq(args["default_report"], "default_report", n))
    )
    return AgvTerms(decisions, types, prior, utility, decision, transfers, default)


def _seq(value: Any, what: str, length: int | None = None) -> Sequence[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{what} must be a list")
    if length is not None and len(value) != length:
        raise ValueError(f"{what} must have {length} entries, has {len(value)}")
    return value


def _names(value: Any, what: str, most: int) -> tuple[str, ...]:
    names = _seq(value, what)
    if not 1 <= len(names) <= most:
        raise ValueError(f"{what} must have 1 to {most} names")
    if not all(isinstance(x, str) and 0 < len(x) <= MAX_NAME for x in names):
        raise ValueError(f"{what} must be names of 1 to {MAX_NAME} characters")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} has a repeated name")
    return tuple(names)


def _index(value: Any, size: int, what: str) -> int:
    if type(value) is not int or not 0 <= value < size:
        raise ValueError(f"{what} must be an index 0..{size - 1}, got {value!r}")
    return value


def _table(value: Any, what: str, shape: Sequence[tuple[int]]) -> Table:
    rows = _seq(value, what, len(shape))
    return tuple(
        tuple(_fraction(x, f"{what}[{r}][{c}]") for c, x in enumerate(_seq(row, f"{what}[{r}]", w)))
        for r, (row, (w,)) in enumerate(zip(rows, shape, strict=True))
    )


def _fraction(value: Any, what: str) -> Fraction:
    x = lottery.fraction(value, what)
    if abs(x.numerator) > MAX_INT:  # the canonical encoding's integers are 64-bit
        raise ValueError(f"{what} has a numerator beyond 64 bits")
    return x


# -- the exact checks ----------------------------------------------------------------


def failures(t: AgvTerms) -> list[str]:
    """The failed exact checks of well-formed terms (the shape is parse_terms')."""
    return [*_prior(t), *_efficient(t), *_budget(t), *_bic(t)]


def _prior(t: AgvTerms) -> list[str]:
    bad = [
        f"agent {i} " + ("has a type of probability <= 0" if min(p) <= 0 else f"sums to {sum(p)}")
        for i, p in enumerate(t.prior)
        if min(p) <= 0 or sum(p) != 1
    ]
    return [f"prior: {'; '.join(bad)}"] if bad else []


def _welfare(t: AgvTerms, x: int, profile: Sequence[int]) -> Fraction:
    return sum((t.utility[i][theta][x] for i, theta in enumerate(profile)), Fraction(0))


def _efficient(t: AgvTerms) -> list[str]:
    bad = []
    for k, profile in enumerate(t.profiles()):
        best = max(_welfare(t, x, profile) for x in range(len(t.decisions)))
        if _welfare(t, t.decision[k], profile) != best:
            bad.append(k)
    return _summary("efficient", t, bad, "not welfare-maximising at")


def _budget(t: AgvTerms) -> list[str]:
    bad = [k for k, row in enumerate(t.transfers) if sum(row) != 0]
    return _summary("budget_balanced", t, bad, "transfers do not sum to 0 at")


def _summary(check: str, t: AgvTerms, bad: list[int], what: str) -> list[str]:
    if not bad:
        return []
    first = next(p for k, p in enumerate(t.profiles()) if k == bad[0])
    names = ", ".join(t.types[i][theta] for i, theta in enumerate(first))
    return [f"{check}: {what} {len(bad)} profile(s), first #{bad[0]} ({names})"]


def interim(t: AgvTerms, i: int) -> tuple[list[Fraction], list[list[Fraction]]]:
    """Agent i's interim expectations, the others truthful under the prior: the expected
    transfer per report, and the expected utility from the decision per (type, report)."""
    size, d = len(t.types[i]), len(t.decisions)
    transfer = [Fraction(0)] * size
    mass = [[Fraction(0)] * d for _ in range(size)]  # P(decision x | i reports r)
    for k, profile in enumerate(t.profiles()):
        w, r = t.weight(profile, i), profile[i]
        transfer[r] += w * t.transfers[k][i]
        mass[r][t.decision[k]] += w
    utility = [
        [
            sum((m * u for m, u in zip(mass[r], t.utility[i][theta], strict=True)), Fraction(0))
            for r in range(size)
        ]
        for theta in range(size)
    ]
    return transfer, utility


def _bic(t: AgvTerms) -> list[str]:
    bad = []
    for i in range(t.agents):
        transfer, utility = interim(t, i)
        for theta, row in enumerate(utility):
            truth = row[theta] + transfer[theta]
            for r, u in enumerate(row):
                if u + transfer[r] > truth:
                    gain = u + transfer[r] - truth
                    bad.append(
                        f"agent {i} type {t.types[i][theta]} gains {gain} reporting {t.types[i][r]}"
                    )
    if not bad:
        return []
    return [f"bayesian_ic: {len(bad)} profitable misreport(s), first: {bad[0]}"]
