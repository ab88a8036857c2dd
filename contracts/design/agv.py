"""The AGV designer: the efficient decision rule and its expected-externality transfers,
exactly in Fractions, verified by the contract's own check (`check_agv`).

Source: Holmstrom's slides, /work/shared/seeds/002_73efa823a2277c74.txt.  Lecture 11,
"Budget Balancing with BNE": t_i^AGV(m) = tbar_i^VCG(m_i) - 1/(n-1) sum_{j!=i}
tbar_j^VCG(m_j), so sum_i t_i^AGV(m) = 0 for every m, and "from i's point of view
tbar_i^AGV(m_i) = tbar_i^VCG(m_i) + constant": the same incentives as VCG.  Here
tbar_i^VCG(m_i) = E[sum_{j!=i} u_j(x*(m_i, theta_-i), theta_j)], the Groves transfer's
interim expectation (h_i = 0).  The public-good preset is Lecture 10's "Example" (build
or not, theta_i is i's willingness to pay, building costs K, shared equally here), where
the pivot scheme charges pivotal agents and runs a surplus; AGV balances it to zero.

No solver is needed: the transfers are a closed form.  The design reports, beside AGV's
interim expected transfers, the VCG (Groves) and pivot ones, and checks exactly that
each differs from AGV's by a constant per agent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from contracts.mechanisms.agv import (
    CHECKS,
    MAX_AGENTS,
    MAX_PROFILES,
    MIN_AGENTS,
    AgvTerms,
    Table,
    check_agv,
    interim,
    parse_terms,
    profile_count,
)

DEFAULT_VALUES = (0, 40, 80)  # the CLI's and default_terms' willingness-to-pay grid
DEFAULT_PROBS = (Fraction(1, 3),) * 3
SMALL_VALUES = (0, 80)  # when 3 types per agent would exceed MAX_PROFILES
SAME_AS_VCG = "same_interim_as_vcg"  # the designer's check beside the contract's CHECKS


class AgvDesignError(ValueError):
    """The problem is malformed or beyond the contract's limits."""


@dataclass(frozen=True)
class AgvProblem:
    decisions: tuple[str, ...]
    types: tuple[tuple[str, ...], ...]  # per agent
    prior: Table  # prior[i][type], independent across agents
    utility: tuple[Table, ...]  # utility[i][type][decision]
    default_report: tuple[int, ...] = ()  # a non-revealer's report (empty: type 0 for all)

    def __post_init__(self) -> None:
        n = len(self.types)
        if not MIN_AGENTS <= n <= MAX_AGENTS:
            raise AgvDesignError(f"AGV needs {MIN_AGENTS} to {MAX_AGENTS} agents, got {n}")
        if profile_count(self.types) > MAX_PROFILES:
            raise AgvDesignError(
                f"{profile_count(self.types)} type profiles, more than {MAX_PROFILES}"
            )
        if len(self.prior) != n or len(self.utility) != n:
            raise AgvDesignError("prior and utility need one entry per agent")
        if not self.decisions:
            raise AgvDesignError("there must be at least one decision")
        for i, ts in enumerate(self.types):
            if len(self.prior[i]) != len(ts) or len(self.utility[i]) != len(ts):
                raise AgvDesignError(f"agent {i} needs a probability and a utility per type")
            if any(len(row) != len(self.decisions) for row in self.utility[i]):
                raise AgvDesignError(f"agent {i} needs a utility per decision for each type")


@dataclass(frozen=True)
class AgvDesign:
    problem: AgvProblem
    terms: dict[str, Any] = field(hash=False)  # what `tally contract agv create` takes
    failures: tuple[str, ...]  # check_agv's, plus SAME_AS_VCG's
    expected_agv: Table  # [agent][report]: interim expected transfer, others truthful
    expected_vcg: Table  # the Groves (h = 0) transfer's
    expected_pivot: Table  # the pivot (Clarke) transfer's
    interim_utility: Table  # [agent][type]: truthful expected utility, transfer included
    bic_slack: Fraction | None  # least (truth - best misreport) over agents and types
    budget: dict[str, tuple[Fraction, Fraction]] = field(hash=False)  # min, max of sum_i t_i

    @property
    def checks(self) -> dict[str, bool]:
        return {c: not any(f.startswith(c + ":") for f in self.failures) for c in _NAMES}

    @property
    def verified(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        t = parse_terms(self.terms) if self.checks["shape"] else None
        return {
            "mechanism": "agv",
            "terms": self.terms,
            "checks": self.checks,
            "verified": self.verified,
            "failures": list(self.failures),
            "profiles": [] if t is None else _profiles_json(t),
            "interim": [
                [
                    {
                        "type": name,
                        "probability": str(self.problem.prior[i][r]),
                        "agv": str(self.expected_agv[i][r]),
                        "vcg": str(self.expected_vcg[i][r]),
                        "pivot": str(self.expected_pivot[i][r]),
                        "utility": str(self.interim_utility[i][r]),
                    }
                    for r, name in enumerate(ts)
                ]
                for i, ts in enumerate(self.problem.types)
            ],
            "agv_minus_vcg": _differences(self.expected_agv, self.expected_vcg),
            "agv_minus_pivot": _differences(self.expected_agv, self.expected_pivot),
            "budget": {k: [str(lo), str(hi)] for k, (lo, hi) in self.budget.items()},
            "bic_slack": None if self.bic_slack is None else str(self.bic_slack),
            # a figure, not a check: AGV does not promise interim IR (low types may lose)
            "interim_ir": all(u >= 0 for row in self.interim_utility for u in row),
        }


_NAMES = (*CHECKS, SAME_AS_VCG)


def design_agv(problem: AgvProblem) -> AgvDesign:
    """The efficient rule (ties: the lowest decision index) with AGV transfers."""
    base = AgvTerms(
        problem.decisions,
        problem.types,
        problem.prior,
        problem.utility,
        (),
        (),
        problem.default_report or (0,) * len(problem.types),
    )
    profiles = list(base.profiles())
    choice = tuple(_efficient(base, p) for p in profiles)
    others = _others(base, profiles, choice)
    vcg = _expected(base, profiles, others, pivot=False)
    transfers = _agv(vcg, profiles)
    t = replace(base, decision=choice, transfers=transfers)
    terms = t.stored()
    failures = check_agv(terms)  # the contract's own check, on exactly what it will get
    agv = tuple(tuple(interim(t, i)[0]) for i in range(t.agents))
    if not _constant(agv, vcg):
        failures = [*failures, f"{SAME_AS_VCG}: AGV minus VCG varies with the report"]
    return AgvDesign(
        problem,
        terms,
        tuple(failures),
        agv,
        vcg,
        _expected(base, profiles, others, pivot=True),
        tuple(_truthful(t, i) for i in range(t.agents)),
        _slack(t),
        _budgets(t, others),
    )


def _welfare(t: AgvTerms, x: int, profile: Sequence[int]) -> Fraction:
    return sum((t.utility[i][theta][x] for i, theta in enumerate(profile)), Fraction(0))


def _efficient(t: AgvTerms, profile: Sequence[int]) -> int:
    return max(range(len(t.decisions)), key=lambda x: (_welfare(t, x, profile), -x))


@dataclass(frozen=True)
class _Others:
    """At one profile, per agent i: the others' welfare sum_{j!=i} u_j at the efficient
    decision (i's Groves transfer), and the most they could get (the pivot's h_i)."""

    at_choice: tuple[Fraction, ...]
    best: tuple[Fraction, ...]


def _others(t: AgvTerms, profiles: list[tuple[int, ...]], choice: tuple[int, ...]) -> list[_Others]:
    out = []
    for profile, x in zip(profiles, choice, strict=True):
        welfare = [_welfare(t, y, profile) for y in range(len(t.decisions))]
        own = [t.utility[i][theta] for i, theta in enumerate(profile)]
        out.append(
            _Others(
                tuple(welfare[x] - u[x] for u in own),
                tuple(max(w - v for w, v in zip(welfare, u, strict=True)) for u in own),
            )
        )
    return out


def _expected(
    t: AgvTerms, profiles: list[tuple[int, ...]], others: list[_Others], pivot: bool
) -> Table:
    """Per agent and report: the interim expectation of the Groves transfer (or the pivot
    one, which subtracts the most the others could get without i)."""
    out = [[Fraction(0)] * len(ts) for ts in t.types]
    for profile, o in zip(profiles, others, strict=True):
        for i, r in enumerate(profile):
            value = o.at_choice[i] - (o.best[i] if pivot else 0)
            out[i][r] += t.weight(profile, i) * value
    return tuple(tuple(row) for row in out)


def _agv(vcg: Table, profiles: list[tuple[int, ...]]) -> Table:
    n = len(vcg)
    rows = []
    for profile in profiles:
        own = [vcg[i][r] for i, r in enumerate(profile)]
        total = sum(own, Fraction(0))
        # t_i = own_i - (1/(n-1)) * sum_{j != i} own_j: the others' shares of i's term
        rows.append(tuple(e - (total - e) / (n - 1) for e in own))
    return tuple(rows)


def _constant(a: Table, b: Table) -> bool:
    return all(
        len({x - y for x, y in zip(ra, rb, strict=True)}) == 1 for ra, rb in zip(a, b, strict=True)
    )


def _differences(a: Table, b: Table) -> list[str]:
    """Per agent: a - b at its first report (the same at every report when SAME_AS_VCG)."""
    return [str(ra[0] - rb[0]) for ra, rb in zip(a, b, strict=True)]


def _truthful(t: AgvTerms, i: int) -> tuple[Fraction, ...]:
    transfer, utility = interim(t, i)
    return tuple(utility[r][r] + transfer[r] for r in range(len(transfer)))


def _slack(t: AgvTerms) -> Fraction | None:
    gaps = []
    for i in range(t.agents):
        transfer, utility = interim(t, i)
        for theta, row in enumerate(utility):
            truth = row[theta] + transfer[theta]
            gaps += [truth - u - transfer[r] for r, u in enumerate(row) if r != theta]
    return min(gaps) if gaps else None


def _budgets(t: AgvTerms, others: list[_Others]) -> dict[str, tuple[Fraction, Fraction]]:
    sums: dict[str, list[Fraction]] = {"agv": [], "vcg": [], "pivot": []}
    for row, o in zip(t.transfers, others, strict=True):
        sums["agv"].append(sum(row, Fraction(0)))
        sums["vcg"].append(sum(o.at_choice, Fraction(0)))
        sums["pivot"].append(sum(o.at_choice, Fraction(0)) - sum(o.best, Fraction(0)))
    return {k: (min(v), max(v)) for k, v in sums.items()}


def _profiles_json(t: AgvTerms) -> list[dict[str, Any]]:
    return [
        {
            "reports": [t.types[i][r] for i, r in enumerate(profile)],
            "decision": t.decisions[t.decision[k]],
            "transfers": [str(x) for x in t.transfers[k]],
        }
        for k, profile in enumerate(t.profiles())
    ]


# -- the public good -----------------------------------------------------------------


def public_good(
    values: Sequence[int | Fraction],
    probs: Sequence[Fraction],
    cost: int | Fraction | None = None,
    agents: int = 3,
) -> AgvProblem:
    """Holmstrom's public good: every agent's willingness to pay is drawn from `values`
    with `probs`; building costs `cost` (default: agents times the mean value), shared
    equally, so u_i(build, theta) = theta - cost/agents and u_i(skip, theta) = 0.  "skip"
    is decision 0, so a tie (welfare exactly 0) does not build, as in the slides'
    x*(theta) = 1 iff sum theta_i > K."""
    if len(values) != len(probs) or not values:
        raise AgvDesignError("give one probability per value")
    if min(probs) <= 0 or sum(probs) != 1:
        raise AgvDesignError(f"the probabilities must be > 0 and sum to 1, not {sum(probs)}")
    mean = sum((Fraction(v) * p for v, p in zip(values, probs, strict=True)), Fraction(0))
    share = Fraction(agents * mean if cost is None else cost) / agents
    names = tuple(str(Fraction(v)) for v in values)
    row = tuple((Fraction(0), Fraction(v) - share) for v in values)
    return AgvProblem(
        ("skip", "build"),
        (names,) * agents,
        (tuple(Fraction(p) for p in probs),) * agents,
        (row,) * agents,
    )


def default_terms(parties: int) -> dict[str, Any]:
    """The public good for `parties` agents, values 0/40/80 (0/80 when 3**parties profiles
    are too many) equally likely, costing the expected total value."""
    values = DEFAULT_VALUES if 3**parties <= MAX_PROFILES else SMALL_VALUES
    probs = DEFAULT_PROBS if values == DEFAULT_VALUES else (Fraction(1, 2),) * 2
    d = design_agv(public_good(values, probs, agents=parties))
    if not d.verified:  # cannot happen for these numbers; never hand out an unsafe default
        raise AgvDesignError("; ".join(d.failures))
    return d.terms
