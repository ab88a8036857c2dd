"""Information-constrained risk sharing (Townsend; Prescott and Townsend): LPs over lotteries.

Agent 1 (the villager) has income θ that only she sees; agent 2 (the insurer)
has a public endowment W.  The contract maps reported incomes to lotteries over
a grid of transfers τ (from agent 1 to agent 2; negative: agent 2 pays).

- One period (Program 7): truth-telling for every actual and announced income.
- T periods (Program 8, generalised): lotteries depend on the whole history of
  reports; incomes follow a Markov chain; at every period and reported history,
  a one-shot lie followed by truthful reports must not pay, counting what the
  lie does to future transfers (constraints 96-97 of the seed for T = 2).
- Costly state verification (Program 9, one period): after a report an audit
  happens with some probability, at cost K to agent 2, and reveals θ.  Joint
  probabilities of (audit, transfer) keep the program linear.
- Limited commitment: at every history each agent's continuation value is at
  least its autarky value.

The LP is solved exactly first (no margins), its solution rounded to integer
lottery weights with exact sums, and every constraint checked again in exact
Fractions; only rows that rounding broke are re-solved with a margin (see
`design_risk`).  The LP optimum is reported next to the rounded value.
Utilities are whole multiples of 1 / UTILITY_SCALE and probabilities small
fractions, the same numbers the ledger's schedule carries, so the contract's own
truth-telling check (`contracts.risk_sharing.schedule.Schedule.truth_telling`)
agrees with the designer's.  Consumption outside a utility's domain is
impossible: such transfers get no weight, and a lie that would need one is not
available.

Seed: /work/shared/seeds/000_562edbfd514851a1.txt, sections "Risk Sharing with
Private Information on Crop Output" (Program 7, (93)-(94)), "Optimal Multiperiod
Tie-ins" (Program 8, (95)-(97)), "Multiperiod Contracts Townsend (1982)" and
"Costly State Verification" (Program 9).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from fractions import Fraction as F

import numpy as np

from contracts.design.lp import linprog

History = tuple[int, ...]  # indices into incomes: the reports so far, the current one last
Column = tuple[int, History, int, int]  # (period, history, audit outcome 0/1 or true, transfer)


@dataclass(frozen=True)
class Utility:
    kind: str  # "crra", "cara" or "table"
    param: float = 1.0
    table: tuple[tuple[float, float], ...] = ()

    @classmethod
    def parse(cls, text: str) -> Utility:
        """'crra:1.5', 'cara:0.5', or 'table:1=0,2=0.7,3=1'."""
        kind, _, rest = text.partition(":")
        if kind == "table":
            pairs = tuple(
                (float(c), float(u)) for c, u in (p.split("=") for p in rest.split(",") if p)
            )
            return cls("table", 0.0, pairs)
        if kind not in ("crra", "cara"):
            raise ValueError(f"utility {text!r}: expected crra:GAMMA, cara:A or table:c=u,...")
        return cls(kind, float(rest or 1.0))

    def __call__(self, c: float) -> float | None:
        """U(c), or None outside the domain (consumption that cannot happen)."""
        if self.kind == "table":
            return dict(self.table).get(round(c, 9))
        if self.kind == "cara":
            return -math.exp(-self.param * c) / self.param
        if c <= 0:
            return None
        return math.log(c) if self.param == 1 else c ** (1 - self.param) / (1 - self.param)


@dataclass(frozen=True)
class RiskProblem:
    incomes: tuple[float, ...]
    probs: tuple[float, ...]  # of the first period's income
    transfers: tuple[float, ...]
    u1: Utility
    u2: Utility
    endowment: float = 0.0  # W, every period
    periods: int = 1
    markov: tuple[tuple[float, ...], ...] | None = None  # p(θ' | θ); None: i.i.d.
    beta: float = 0.95
    weights: tuple[float, float] = (1.0, 1.0)  # λ1, λ2
    audit_cost: float | None = None  # Program 9 (one period only)
    participation: bool = False
    public: bool = False  # incomes observed: no truth-telling constraints (full information)

    def p(self, now: int, before: int | None) -> float:
        if before is None or self.markov is None:
            return self.probs[now]
        return self.markov[before][now]


@dataclass
class RiskDesign:
    problem: RiskProblem
    resolution: int
    weights: dict[tuple[int, History, int], list[int]]  # (period, history, audit) -> weights
    objective: float
    utility1: float
    utility2: float
    binding: list[str]
    audit_probability: dict[int, Fraction] = field(default_factory=dict)
    verified: bool = False
    lp_optimum: float = math.nan  # the exact LP's optimum, before rounding (no margins)
    margins: dict[str, float] = field(default_factory=dict)  # the rows that needed one
    # agent 1's U(income i - transfer j) in 1 / UTILITY_SCALE (impossible: the sentinel)
    utility_table: tuple[tuple[int, ...], ...] = ()
    # truth-telling constraints (private reports) that the rounded schedule breaks: always
    # empty for a private design that verified; for a public one, what a villager gains by lying
    truth_telling: list[str] = field(default_factory=list)
    # rows that rounding broke and no margin can fix: they hold with equality at every
    # feasible point (an implicit equality), and the exact optimum needs weights that are
    # not multiples of 1 / resolution (an irrational audit probability, say)
    unrepairable: list[str] = field(default_factory=list)

    @property
    def information(self) -> str:
        """'public' (incomes observed: no truth-telling imposed) or 'private'."""
        return "public" if self.problem.public and self.problem.audit_cost is None else "private"

    @property
    def imposed(self) -> list[str]:
        """The kinds of constraint the LP imposed (and the exact re-check verified)."""
        kinds = ["lottery sums"]
        if self.problem.audit_cost is not None:
            kinds.append("truth-telling with audits (Program 9)")
        elif not self.problem.public:
            kinds.append("truth-telling (Programs 7 and 8)")
        if self.problem.participation:
            kinds.append("participation")
        return kinds

    def beliefs(self) -> tuple[tuple[int, ...], ...]:
        """p(next income | this one) as rows of numerators over a common denominator (last)."""
        pr, n = self.problem, len(self.problem.incomes)
        rows = []
        for now in range(n):
            ps = [_ratio(pr.p(k, now if pr.markov is not None else None)) for k in range(n)]
            den = math.lcm(*(p.denominator for p in ps))
            rows.append((*(int(p * den) for p in ps), den))
        return tuple(rows)

    def discount(self) -> tuple[int, int]:
        beta = _ratio(self.problem.beta)
        return (beta.numerator, beta.denominator)

    @property
    def optimality_gap(self) -> float:
        """How much the rounded, verified schedule gives up against the LP optimum."""
        return self.lp_optimum - self.objective

    def expected_transfer(self, period: int, history: History, audit: int = 0) -> float | None:
        """The lottery's mean transfer; None for an audit branch that never happens."""
        w = self.weights[(period, history, audit)]
        if not sum(w):
            return None
        return sum(t * x for t, x in zip(self.problem.transfers, w, strict=True)) / sum(w)


class InfeasibleDesign(Exception):
    pass


def histories(problem: RiskProblem, period: int) -> Iterator[History]:
    return itertools.product(range(len(problem.incomes)), repeat=period)


class _Program:
    """Columns, objective and constraints of one LP, kept as {column: coefficient} rows."""

    def __init__(self, problem: RiskProblem) -> None:
        self.pr = problem
        self.cols: dict[Column, int] = {}
        self.fixed_zero: set[int] = set()
        self.eq: list[tuple[dict[int, F], F]] = []
        self.ge: list[tuple[str, dict[int, F], F]] = []  # name, row, rhs: row >= rhs
        self.u1 = {
            (i, j): _exact(problem.u1(x - t))
            for i, x in enumerate(problem.incomes)
            for j, t in enumerate(problem.transfers)
        }
        feasible = [u for u in self.u1.values() if u is not None]
        if not feasible:
            raise InfeasibleDesign("no transfer on the grid leaves agent 1 a feasible consumption")
        # a lie that would need impossible consumption cannot be told: it is worth this little
        self.impossible = min(feasible) - 10 * (max(feasible) - min(feasible) + 1)

    def col(self, key: Column) -> int:
        if key not in self.cols:
            self.cols[key] = len(self.cols)
        return self.cols[key]

    def u2(self, j: int, audited: bool = False) -> F | None:
        cost = self.pr.audit_cost if audited and self.pr.audit_cost else 0.0
        return _exact(self.pr.u2(self.pr.endowment + self.pr.transfers[j] - cost))

    def lottery(self, t: int, h: History, audit: int = 0) -> list[int]:
        """Columns of the lottery for reported history h at period t (creating them), with
        weights summing to one and impossible consumption excluded."""
        cols = [self.col((t, h, audit, j)) for j in range(len(self.pr.transfers))]
        true = audit - 1 if audit else h[-1]  # an audit reveals the true income
        for j, c in enumerate(cols):
            if self.u1[(true, j)] is None or self.u2(j, audit > 0) is None:
                self.fixed_zero.add(c)
        return cols

    def agent1(self, t: int, h: History, true: int, audit: int = 0) -> dict[int, F]:
        """Agent 1's utility this period with true income `true` under the lottery for h."""
        row = {}
        for j, c in enumerate(self.lottery(t, h, audit)):
            u = self.u1[(true, j)]
            row[c] = self.impossible if u is None else u
        return row

    def future1(self, t: int, h: History, true: int) -> dict[int, F]:
        """Agent 1's discounted expected utility from t+1 on, reporting truthfully, after
        history h with true income `true` now."""
        row: dict[int, F] = {}
        if t == self.pr.periods:
            return row
        for n in range(len(self.pr.incomes)):
            p = _ratio(self.pr.beta) * _ratio(self.pr.p(n, true))
            nh = (*h, n)
            for c, v in _add(self.agent1(t + 1, nh, n), self.future1(t + 1, nh, n)).items():
                row[c] = row.get(c, F(0)) + p * v
        return row


def _add(a: dict[int, F], b: dict[int, F], scale: F = F(1)) -> dict[int, F]:
    out = dict(a)
    for c, v in b.items():
        out[c] = out.get(c, F(0)) + scale * v
    return out


def build(problem: RiskProblem) -> tuple[_Program, dict[int, float]]:
    """The LP: lottery columns, truth-telling, participation, and the welfare objective."""
    if problem.audit_cost is not None and problem.periods != 1:
        raise ValueError("costly state verification is designed for one period")
    prog = _Program(problem)
    objective: dict[int, float] = {}
    lam1, lam2 = problem.weights
    n = len(problem.incomes)
    for t in range(1, problem.periods + 1):
        for h in histories(problem, t):
            prob = math.prod(problem.p(h[k], h[k - 1] if k else None) for k in range(t))
            disc = problem.beta ** (t - 1) * prob
            audits = (0, 1 + h[-1]) if problem.audit_cost is not None else (0,)
            for audit in audits:
                for j, c in enumerate(prog.lottery(t, h, audit)):
                    u1, u2 = prog.u1[(h[-1], j)], prog.u2(j, audit > 0)
                    if u1 is not None and u2 is not None:
                        objective[c] = disc * (lam1 * u1 + lam2 * u2)
            _sum_to_one(prog, t, h, audits)
    if problem.audit_cost is not None:
        _audits(prog)
    elif not problem.public:
        for t in range(1, problem.periods + 1):
            for past in histories(problem, t - 1):
                for true, lie in itertools.permutations(range(n), 2):
                    _truth_telling(prog, t, past, true, lie)
    if problem.participation:
        _participation(prog)
    return prog, objective


def _sum_to_one(prog: _Program, t: int, h: History, audits: tuple[int, ...]) -> None:
    if len(audits) == 1:
        prog.eq.append(({c: F(1) for c in prog.lottery(t, h)}, F(1)))
        return
    # Program 9: for every true income the audit is equally likely (it depends on the report
    # only); audited transfers may depend on the true income that the audit reveals.
    n = len(prog.pr.incomes)
    for true in range(n):
        audited = prog.lottery(t, h, 1 + true)
        row = {c: F(1) for c in prog.lottery(t, h, 0)} | {c: F(1) for c in audited}
        prog.eq.append((row, F(1)))
        if true != h[-1]:  # audited with true income `true` has the same chance as truthful
            same = {c: F(1) for c in audited}
            for c in (prog.col((t, h, 1 + h[-1], j)) for j in range(len(prog.pr.transfers))):
                same[c] = same.get(c, F(0)) - 1
            prog.eq.append((same, F(0)))


def _truth_telling(prog: _Program, t: int, past: History, true: int, lie: int) -> None:
    honest = (*past, true)
    told = (*past, lie)
    lhs = _add(prog.agent1(t, honest, true), prog.future1(t, honest, true))
    rhs = _add(prog.agent1(t, told, true), prog.future1(t, told, true))
    name = (
        f"IC period {t} after {_names(prog.pr, past)}: income "
        f"{prog.pr.incomes[true]:g} claims {prog.pr.incomes[lie]:g}"
    )
    prog.ge.append((name, _add(lhs, rhs, F(-1)), F(0)))


def _audits(prog: _Program) -> None:
    """Truth-telling with audits: the liar's lottery is the report's no-audit lottery, or,
    if audited, the one for (report, true income)."""
    pr, n = prog.pr, len(prog.pr.incomes)
    for true, lie in itertools.permutations(range(n), 2):
        lhs = _add(prog.agent1(1, (true,), true, 0), prog.agent1(1, (true,), true, 1 + true))
        rhs = _add(prog.agent1(1, (lie,), true, 0), prog.agent1(1, (lie,), true, 1 + true))
        name = f"IC income {pr.incomes[true]:g} claims {pr.incomes[lie]:g} (audits)"
        prog.ge.append((name, _add(lhs, rhs, F(-1)), F(0)))


def _participation(prog: _Program) -> None:
    """At every truthful history, staying beats walking away to autarky, for both agents."""
    pr = prog.pr
    for t in range(1, pr.periods + 1):
        for h in histories(pr, t):
            now = h[-1]
            stay = _add(prog.agent1(t, h, now), prog.future1(t, h, now))
            prog.ge.append(
                (f"participation agent 1 at {_names(pr, h)}", stay, _autarky1(prog, t, now))
            )
            stay2 = _future2(prog, t, h)
            prog.ge.append((f"participation agent 2 at {_names(pr, h)}", stay2, _autarky2(prog, t)))


def _future2(prog: _Program, t: int, h: History) -> dict[int, F]:
    pr = prog.pr
    row = {c: prog.u2(j) or F(0) for j, c in enumerate(prog.lottery(t, h))}
    if t < pr.periods:
        for n in range(len(pr.incomes)):
            row = _add(
                row, _future2(prog, t + 1, (*h, n)), _ratio(pr.beta) * _ratio(pr.p(n, h[-1]))
            )
    return row


def _autarky1(prog: _Program, t: int, now: int) -> F:
    pr = prog.pr
    value = _exact(pr.u1(pr.incomes[now])) or F(0)
    if t < pr.periods:
        future = sum(
            (_ratio(pr.p(n, now)) * _autarky1(prog, t + 1, n) for n in range(len(pr.incomes))),
            F(0),
        )
        value += _ratio(pr.beta) * future
    return value


def _autarky2(prog: _Program, t: int) -> F:
    value = _exact(prog.pr.u2(prog.pr.endowment)) or F(0)
    return value + (_ratio(prog.pr.beta) * _autarky2(prog, t + 1) if t < prog.pr.periods else F(0))


UTILITY_SCALE = 10**9  # utilities are whole multiples of 1 / UTILITY_SCALE (the schedule's)


def _exact(u: float | None) -> F | None:
    """A utility as the exact rational the ledger's schedule carries: a whole number of
    1 / UTILITY_SCALE, so the contract re-checks truth-telling with the designer's numbers."""
    return None if u is None else F(round(u * UTILITY_SCALE), UTILITY_SCALE)


def _ratio(x: float) -> F:
    """A probability or discount factor as the small rational it stands for (0.3 -> 3/10,
    1/3 as a float -> 1/3), as the schedule carries it."""
    return F(x).limit_denominator(10**6)


def _names(pr: RiskProblem, h: History) -> str:
    return "(" + ",".join(f"{pr.incomes[i]:g}" for i in h) + ")"


MAX_REPAIRS = 24  # re-solves with a wider margin on the rows that rounding broke


def design_risk(problem: RiskProblem, resolution: int = 1_000_000) -> RiskDesign:
    """Solve exactly, round, re-check exactly; widen margins only where rounding broke a row.

    The approach of the exchange designer (contracts/design/designer.py): the LP is first
    solved with no margin at all (Programs 7, 8 and 9 of
    /work/shared/seeds/000_562edbfd514851a1.txt, "Risk Sharing with Private Information on
    Crop Output", "Optimal Multiperiod Tie-ins" and "Costly State Verification"), so the
    rounded schedule starts at the LP optimum.  Rounding to integer weights can break a
    binding constraint by a hair; then only the broken rows get a margin, starting at twice
    what they missed by and doubling, until the exact check passes.  A margin proportional
    to a row's coefficients (the old approach) counted the sentinel utility of impossible
    consumption and cost up to 0.07 utility units: far from the optimum, yet "verified".
    The LP optimum is kept (`lp_optimum`) next to the rounded schedule's value.
    """
    prog, objective = build(problem)
    size = len(prog.cols)
    cost = np.zeros(size)
    for c, v in objective.items():
        cost[c] = -float(v)  # linprog minimises
    margins = [0.0] * len(prog.ge)
    res = _solve(prog, cost, margins)
    if res is None:
        raise InfeasibleDesign(
            "no lotteries satisfy truth-telling"
            + (" and participation" if problem.participation else "")
            + " on this grid"
        )
    lp_optimum = -float(cost @ res)
    names = {name: r for r, (name, _, _) in enumerate(prog.ge)}
    design = _round(prog, problem, res, resolution, objective)
    for _ in range(MAX_REPAIRS):
        deficits = _deficits(prog, design)
        if not deficits:
            break
        for r, missed in deficits.items():
            margins[r] = max(2 * margins[r], 2 * missed, 1e-12)
        found = _solve(prog, cost, margins)
        if found is None:  # the margins cannot all hold: keep the last rounding, unverified
            design.unrepairable = [prog.ge[r][0] for r in deficits if _no_slack(prog, r)]
            break
        res = found
        design = _round(prog, problem, res, resolution, objective)
    design.lp_optimum = lp_optimum
    design.margins = {name: margins[r] for name, r in names.items() if margins[r]}
    design.binding = [
        name
        for (name, row, rhs), margin in zip(prog.ge, margins, strict=True)
        if sum(v * res[c] for c, v in row.items()) - rhs < margin + 1e-7
    ]
    design.verified = not violated(prog, design)
    design.utility_table = tuple(
        tuple(
            _scaled_utility(prog.u1[(i, j)], prog.impossible) for j in range(len(problem.transfers))
        )
        for i in range(len(problem.incomes))
    )
    if design.information == "public":  # what the full-information schedule tempts
        private, _ = build(replace(problem, public=False))
        design.truth_telling = [name for name in violated(private, design) if name[:2] == "IC"]
    return design


def _no_slack(prog: _Program, r: int) -> bool:
    """Whether row r holds with equality at every feasible point: its largest slack is 0."""
    _, row, rhs = prog.ge[r]
    cost = np.zeros(len(prog.cols))
    for c, v in row.items():
        cost[c] = -float(v)
    x = _solve(prog, cost, [0.0] * len(prog.ge))
    return x is not None and -float(cost @ x) - float(rhs) <= 1e-9


def _scaled_utility(u: F | None, impossible: F) -> int:
    """U in whole 1 / UTILITY_SCALE (the sentinel for consumption that cannot happen)."""
    return int((impossible if u is None else u) * UTILITY_SCALE)


def _deficits(prog: _Program, design: RiskDesign) -> dict[int, float]:
    """By how much each inequality that fails in exact arithmetic misses (row index: amount).
    The lottery sums hold by construction of the rounding."""
    n = design.resolution
    exact = _exact_weights(prog, design)
    out = {}
    for r, (_, row, rhs) in enumerate(prog.ge):
        lhs = sum((v * exact[c] for c, v in row.items()), Fraction(0))
        if lhs < rhs:
            out[r] = float(rhs - lhs) + 1.0 / n**2
    return out


def _exact_weights(prog: _Program, design: RiskDesign) -> dict[int, Fraction]:
    n = design.resolution
    return {
        c: Fraction(design.weights[(t, h, audit)][j], n)
        for (t, h, audit, j), c in prog.cols.items()
    }


def _solve(prog: _Program, cost: np.ndarray, margins: list[float]) -> np.ndarray | None:
    size = len(prog.cols)
    a_eq = np.zeros((len(prog.eq), size))
    b_eq = np.array([float(rhs) for _, rhs in prog.eq])
    for r, (row, _) in enumerate(prog.eq):
        for c, v in row.items():
            a_eq[r, c] = float(v)
    a_ub = np.zeros((len(prog.ge), size))
    b_ub = np.zeros(len(prog.ge))
    for r, ((_, row, rhs), margin) in enumerate(zip(prog.ge, margins, strict=True)):
        for c, v in row.items():
            a_ub[r, c] = -float(v)
        b_ub[r] = -(float(rhs) + margin)
    bounds = [(0.0, 0.0) if c in prog.fixed_zero else (0.0, 1.0) for c in range(size)]
    res = linprog(
        cost,
        A_ub=a_ub if len(prog.ge) else None,
        b_ub=b_ub if len(prog.ge) else None,
        A_eq=a_eq,
        b_eq=b_eq,
        bounds=bounds,
        method="highs",
    )
    return res.x if res.status == 0 else None


def _round(
    prog: _Program, problem: RiskProblem, x: np.ndarray, n: int, objective: dict[int, float]
) -> RiskDesign:
    """Largest-remainder rounding to integer weights: each lottery sums to exactly n; with
    audits, a report's unaudited and truthful-audited weights together sum to n, and the
    audited weights for every other true income sum to the same audit total."""
    by_lottery: dict[tuple[int, History, int], list[int]] = {}
    for (t, h, audit, _), c in sorted(prog.cols.items()):
        by_lottery.setdefault((t, h, audit), []).append(c)
    counts = np.zeros(len(prog.cols), dtype=np.int64)
    for (t, h, audit), cols in by_lottery.items():
        if audit == 0:
            group = cols + by_lottery.get((t, h, 1 + h[-1]), [])
            counts[group] = _largest_remainder(x[group], n, prog.fixed_zero, group)
    for (t, h, audit), cols in by_lottery.items():
        if audit and audit != 1 + h[-1]:
            total = int(counts[by_lottery[(t, h, 1 + h[-1])]].sum())
            counts[cols] = _largest_remainder(x[cols], total, prog.fixed_zero, cols)
    weights: dict[tuple[int, History, int], list[int]] = {}
    for (t, h, audit, j), c in prog.cols.items():
        weights.setdefault((t, h, audit), [0] * len(problem.transfers))[j] = int(counts[c])
    value = sum(v * counts[c] / n for c, v in objective.items())
    u1 = _expected(prog, counts / n, agent=1)
    u2 = _expected(prog, counts / n, agent=2)
    audits = {}
    if problem.audit_cost is not None:
        for i in range(len(problem.incomes)):
            audits[i] = Fraction(sum(weights.get((1, (i,), 1 + i), [0])), n)
    return RiskDesign(problem, n, weights, value, u1, u2, [], audits)


def _largest_remainder(
    p: np.ndarray, total: int, excluded: set[int], cols: list[int]
) -> np.ndarray:
    """Integers summing to exactly `total`, each within one of total * p / sum(p), never on
    an excluded column (impossible consumption)."""
    p = np.array([0.0 if c in excluded else max(v, 0.0) for c, v in zip(cols, p, strict=True)])
    if p.sum() <= 0:
        p = np.array([0.0 if c in excluded else 1.0 for c in cols])
    exact = p * total / p.sum()
    floor = np.floor(exact).astype(np.int64)
    for k in np.argsort(-(exact - floor), kind="stable")[: total - int(floor.sum())]:
        floor[k] += 1
    return np.asarray(floor, dtype=np.int64)


def _expected(prog: _Program, x: np.ndarray, agent: int) -> float:
    pr = prog.pr
    total = 0.0
    for (t, h, audit, j), c in prog.cols.items():
        if audit not in (0, 1 + h[-1]) or x[c] == 0:
            continue
        prob = math.prod(pr.p(h[k], h[k - 1] if k else None) for k in range(t))
        u = prog.u1[(h[-1], j)] if agent == 1 else prog.u2(j, audit > 0)
        total += pr.beta ** (t - 1) * prob * x[c] * (u or 0.0)
    return total


def violated(prog: _Program, design: RiskDesign) -> list[str]:
    """Every truth-telling and participation constraint, and every lottery sum, checked in
    exact Fractions with the rounded weights."""
    n = design.resolution
    exact = {c: Fraction(0) for c in range(len(prog.cols))}
    for (t, h, audit, j), c in prog.cols.items():
        exact[c] = Fraction(design.weights[(t, h, audit)][j], n)
    failures = []
    for name, row, rhs in prog.ge:
        lhs = sum((Fraction(v) * exact[c] for c, v in row.items()), Fraction(0))
        if lhs < Fraction(rhs):
            failures.append(name)
    for row, rhs in prog.eq:
        if sum((Fraction(v) * exact[c] for c, v in row.items()), Fraction(0)) != Fraction(rhs):
            failures.append("a lottery does not sum to one")
    return failures


# The built-in design: incomes 1, 2, 3 equally likely, transfers -2..2 by 0.5, CRRA 1.5 for
# both, the insurer's endowment 3.  Two periods (history dependent), or one with audits.
DEFAULT_PROBLEM = RiskProblem(
    incomes=(1.0, 2.0, 3.0),
    probs=(1 / 3, 1 / 3, 1 / 3),
    transfers=tuple(-2 + 0.5 * k for k in range(9)),
    u1=Utility.parse("crra:1.5"),
    u2=Utility.parse("crra:1.5"),
    endowment=3.0,
    periods=2,
)
