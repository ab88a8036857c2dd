"""Design transfers by linear programming (SciPy's HiGHS), then prove them exactly.

1. Solve the LP of `game.constraints` lexicographically: minimise total
   deposits; then, keeping them, burn nothing on the prescribed path if possible;
   then, with objective "burn", burn as much as possible off the path.
2. Round to integer units (deposits up, transfers to nearest) and re-check every
   constraint with Fractions, plus backward induction.  If rounding broke one,
   solve again with a wider margin; if that fails, report which constraints fail.
3. An infeasible LP is reported with an irreducible set of constraints that
   cannot hold together (a deletion filter).

The constraints cover exactly the game `game` describes; for the core exchange
(`contracts/design/exchange.py`) that is every move and timeout the engine
accepts, the seller's delivering nothing among them.  The exchange's keep cost
c_S falls on every delivery by default, or only on an unredeemed one with
`ExchangeParams(keep_cost_on="unredeemed")`: seed 003, "Formal Definition",
gives c_S as the "cost of the seller to keep the item for the buyer" without
saying when it falls (the reasons for the default are in that module's docstring
and the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from contracts.design.game import Constraint, Game, Var, constraints, subgame_perfect, variables
from contracts.design.lp import linprog

MAX_REPAIRS = 8


class DesignError(Exception):
    """No design exists (or none survives rounding); `conflict` names the constraints."""

    def __init__(self, message: str, conflict: list[str]) -> None:
        super().__init__(message + ("".join(f"\n  - {c}" for c in conflict)))
        self.conflict = conflict


@dataclass(frozen=True)
class Design:
    game: Game
    values: dict[Var, Fraction]  # integer units
    lp_values: dict[Var, float]  # before rounding
    margin: int
    objective: str
    verified: bool

    def transfer(self, state: str, player: str) -> int:
        return int(self.values[("t", state, player)])

    def deposit(self, player: str) -> int:
        return int(self.values.get(("d", player), Fraction(0)))

    def burn(self, state: str) -> int:
        total = self.game.money_in().value(self.values)
        return int(total - sum(self.values[("t", state, p)] for p in self.game.players))


def design(game: Game, objective: str = "deposits", margin: int = 1) -> Design:
    if objective not in ("deposits", "burn"):
        raise ValueError("objective must be 'deposits' or 'burn'")
    for extra in range(MAX_REPAIRS):
        lp = solve(game, margin + extra, objective)
        values = round_design(game, lp)
        failures = violated(game, values, margin)
        if not failures:
            return Design(game, values, lp, margin, objective, verified=True)
    raise DesignError(
        "rounding to integer units breaks these constraints even with a wider "
        "margin; use smaller units",
        failures,
    )


def solve(game: Game, margin: int, objective: str) -> dict[Var, float]:
    cons = constraints(game, margin)
    xs = variables(game)
    _, on_path, _ = game.outcome(game.root)
    deposits = np.array([1.0 if v[0] == "d" else 0.0 for v in xs])  # least money locked up
    paid_on_path = np.array([-1.0 if v[0] == "t" and v[1] == on_path.state else 0.0 for v in xs])
    stages = [deposits, paid_on_path]  # then burn nothing on the honest path, if possible
    if objective == "burn":  # then burn off the path: burn(s) = money in - sum t(s)
        stages.append(np.array([1.0 if v[0] == "t" and v[1] != on_path.state else 0.0 for v in xs]))
    caps: list[tuple[np.ndarray, float]] = []
    result = _linprog(xs, cons, stages[0])
    if result is None:
        raise DesignError(
            "no transfers make the prescribed play subgame-perfect; these constraints cannot "
            "hold together:",
            conflict(game, cons, xs),
        )
    for k, cost in enumerate(stages):
        if k:
            found = _linprog(xs, cons, cost, caps)
            result = found if found is not None else result
        caps.append((cost, float(cost @ result) + 1e-7))  # later stages keep this optimum
    return dict(zip(xs, (float(v) for v in result), strict=True))


def _linprog(
    xs: list[Var],
    cons: list[Constraint],
    cost: np.ndarray,
    caps: list[tuple[np.ndarray, float]] | None = None,
) -> np.ndarray | None:
    index = {v: i for i, v in enumerate(xs)}
    caps = caps or []
    a_ub = np.zeros((len(cons) + len(caps), len(xs)))
    b_ub = np.zeros(len(cons) + len(caps))
    for row, c in enumerate(cons):  # expr >= 0  <=>  -coefs . x <= const
        for v, coef in c.expr.coefs.items():
            a_ub[row, index[v]] = -float(coef)
        b_ub[row] = float(c.expr.const)
    for k, (row_costs, cap) in enumerate(caps):
        a_ub[len(cons) + k, :], b_ub[len(cons) + k] = row_costs, cap
    res = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=[(0, None)] * len(xs), method="highs")
    return res.x if res.status == 0 else None


def round_design(game: Game, lp: dict[Var, float]) -> dict[Var, Fraction]:
    """Deposits round up (more money in never hurts a budget); transfers to the nearest unit."""
    values = {v: Fraction(math.ceil(x - 1e-6) if v[0] == "d" else round(x)) for v, x in lp.items()}
    return {v: max(Fraction(0), x) for v, x in values.items()}


def violated(game: Game, values: dict[Var, Fraction], margin: int) -> list[str]:
    """Every constraint that fails in exact arithmetic, and any node where backward induction
    does not strictly pick the prescribed move."""
    failures = [c.name for c in constraints(game, margin) if c.expr.value(values) < 0]
    spe = subgame_perfect(game, values)
    for node in game.nodes():
        best, strict = spe[node.label]
        if best != node.prescribed or not strict:
            failures.append(
                f"backward induction at {node.label or 'root'} picks {best}"
                + ("" if strict else " (tie)")
            )
    return failures


def conflict(game: Game, cons: list[Constraint], xs: list[Var]) -> list[str]:
    """A deletion filter: drop each constraint whose removal keeps the LP infeasible; what
    remains is an irreducible infeasible subset."""
    kept = list(cons)
    for c in list(cons):
        trial = [k for k in kept if k is not c]
        if _linprog(xs, trial, np.zeros(len(xs))) is None:
            kept = trial
    return [c.name for c in kept]
