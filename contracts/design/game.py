"""Finite extensive-form games whose final states a contract observes only partly.

A player's payoff at a leaf is linear in the design variables: the move
utilities along the path, plus what the contract pays the player in the leaf's
observed state, minus what the player paid in (a fixed amount and a deposit).
Constraints are kept symbolic (`Linear`), so the LP and the exact re-check
share one definition.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

Var = tuple[str, ...]  # ("t", state, player) or ("d", player)
Number = Fraction | int


@dataclass(frozen=True)
class Linear:
    """const + sum(coef * var): an affine expression over the design variables."""

    coefs: Mapping[Var, Fraction] = field(default_factory=dict)
    const: Fraction = Fraction(0)

    def __add__(self, other: Linear | Number) -> Linear:
        if not isinstance(other, Linear):
            return Linear(self.coefs, self.const + Fraction(other))
        coefs = dict(self.coefs)
        for var, c in other.coefs.items():
            coefs[var] = coefs.get(var, Fraction(0)) + c
        return Linear({v: c for v, c in coefs.items() if c}, self.const + other.const)

    def __neg__(self) -> Linear:
        return Linear({v: -c for v, c in self.coefs.items()}, -self.const)

    def __sub__(self, other: Linear | Number) -> Linear:
        return self + (-other if isinstance(other, Linear) else -Fraction(other))

    def value(self, x: Mapping[Var, Fraction]) -> Fraction:
        return self.const + sum(
            (c * x.get(v, Fraction(0)) for v, c in self.coefs.items()), Fraction(0)
        )


def var(*name: str) -> Linear:
    return Linear({tuple(name): Fraction(1)})


@dataclass(frozen=True)
class Leaf:
    state: str  # the final state the contract observes


@dataclass(frozen=True)
class Move:
    name: str
    utility: Mapping[str, Number]  # per player; missing players get 0
    child: Node | Leaf
    # the contract events that make this move (its ops, and "timeout" for a window that
    # expires): a move whose hidden part the contract cannot see lists every event it may
    # come with; empty for a game that is not run by a contract
    events: tuple[str, ...] = ()


@dataclass(frozen=True)
class Node:
    label: str  # the path to it, e.g. "H/R"
    player: str
    moves: tuple[Move, ...]
    prescribed: str  # the move the designer wants here, on and off the path

    def move(self, name: str) -> Move:
        return next(m for m in self.moves if m.name == name)


Tree = Node | Leaf


@dataclass(frozen=True)
class Game:
    players: tuple[str, ...]
    root: Node
    states: tuple[str, ...]
    pays_in: Mapping[str, Number]  # fixed money each player puts in (the buyer's price)
    deposits: tuple[str, ...]  # players whose deposit is a design variable

    def nodes(self) -> Iterator[Node]:
        stack: list[Tree] = [self.root]
        while stack:
            node = stack.pop()
            if isinstance(node, Node):
                yield node
                stack.extend(m.child for m in reversed(node.moves))

    def money_in(self) -> Linear:
        total = Linear({}, Fraction(sum(Fraction(v) for v in self.pays_in.values())))
        for player in self.deposits:
            total = total + var("d", player)
        return total

    def paid_by(self, player: str) -> Linear:
        paid = Linear({}, Fraction(self.pays_in.get(player, 0)))
        return paid + var("d", player) if player in self.deposits else paid

    def outcome(self, tree: Tree) -> tuple[list[str], Leaf, dict[str, Fraction]]:
        """Prescribed play from `tree`: the moves, the leaf, and the utilities collected."""
        path, utils = [], {p: Fraction(0) for p in self.players}
        while isinstance(tree, Node):
            move = tree.move(tree.prescribed)
            path.append(move.name)
            for p, u in move.utility.items():
                utils[p] += Fraction(u)
            tree = move.child
        return path, tree, utils

    def payoff(self, player: str, first: Move | None, tree: Tree) -> Linear:
        """`player`'s payoff if `first` is taken (its utility counts) and play is prescribed
        afterwards from `tree`: move utilities + transfer in the final state - paid in."""
        _, leaf, utils = self.outcome(tree)
        gained = utils[player] + (Fraction(first.utility.get(player, 0)) if first else 0)
        return var("t", leaf.state, player) + gained - self.paid_by(player)


@dataclass(frozen=True)
class Constraint:
    """expr >= 0, with a name a person can read."""

    name: str
    expr: Linear


def constraints(game: Game, margin: Number) -> list[Constraint]:
    """Incentive compatibility at every decision node (the prescribed move beats every other
    by `margin`, given prescribed play afterwards), budget per final state, and individual
    rationality on the prescribed path.  Transfers and deposits are >= 0 separately."""
    out = []
    for node in game.nodes():
        best = node.move(node.prescribed)
        for other in node.moves:
            if other.name != best.name:
                gain = (
                    game.payoff(node.player, best, best.child)
                    - game.payoff(node.player, other, other.child)
                    - margin
                )
                out.append(
                    Constraint(
                        f"IC {node.player} at {node.label or 'root'}: "
                        f"{best.name} over {other.name}",
                        gain,
                    )
                )
    for state in game.states:
        paid_out = Linear()
        for p in game.players:
            paid_out = paid_out + var("t", state, p)
        out.append(Constraint(f"budget in state {state}", game.money_in() - paid_out))
    for p in game.players:
        out.append(Constraint(f"IR {p}", game.payoff(p, None, game.root)))
    return out


def variables(game: Game) -> list[Var]:
    return [("t", s, p) for s in game.states for p in game.players] + [
        ("d", p) for p in game.deposits
    ]


def subgame_perfect(game: Game, x: Mapping[Var, Fraction]) -> dict[str, tuple[str, bool]]:
    """Backward induction in exact arithmetic: at every node the best move for its player,
    and whether it is strictly best (a unique subgame-perfect equilibrium needs all True)."""
    result: dict[str, tuple[str, bool]] = {}

    def solve(tree: Tree) -> tuple[Leaf, dict[str, Fraction]]:
        if isinstance(tree, Leaf):
            return tree, {p: Fraction(0) for p in game.players}
        options = []
        for move in tree.moves:
            leaf, utils = solve(move.child)
            utils = {p: u + Fraction(move.utility.get(p, 0)) for p, u in utils.items()}
            value = utils[tree.player] + x.get(("t", leaf.state, tree.player), Fraction(0))
            options.append((value, move.name, leaf, utils))
        options.sort(key=lambda o: o[0], reverse=True)
        strict = len(options) == 1 or options[0][0] > options[1][0]
        result[tree.label] = (options[0][1], strict)
        return options[0][2], options[0][3]

    solve(game.root)
    return result


def spe_outcome(game: Game, x: Mapping[Var, Fraction]) -> tuple[list[str], dict[str, Fraction]]:
    """The moves of subgame-perfect play from the root, and each player's payoff (move
    utilities plus transfers in the final state, minus what it paid in)."""
    spe = subgame_perfect(game, x)
    tree: Tree = game.root
    path, utils = [], {p: Fraction(0) for p in game.players}
    while isinstance(tree, Node):
        move = tree.move(spe[tree.label][0])
        path.append(move.name)
        for p, u in move.utility.items():
            utils[p] += Fraction(u)
        tree = move.child
    payoffs = {
        p: u + x.get(("t", tree.state, p), Fraction(0)) - game.paid_by(p).value(x)
        for p, u in utils.items()
    }
    return path, payoffs
