"""The core exchange mechanism as a game, and the Moore-Repullo game of Aghion et al. (2018).

Core exchange: the seller delivers high (H) or low (L) quality (hidden from the
contract); the buyer redeems (R) or lets it refund/expire (X); the buyer
complains (C) or not (N); the seller admits cancel-or-fault (F) or not (N).  The
contract observes (redeem, complain, fault): 8 states.  Honest play, on and off
the path: deliver H; redeem iff high; complain iff low; admit iff the complaint
is justified (the quality was low and the buyer complained).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from contracts.design.game import Game, Leaf, Move, Node, Tree
from contracts.exchange import STATES as STATES  # the outcomes the engine observes and pays
from contracts.exchange import state as state

SELLER, BUYER = "seller", "buyer"


@dataclass(frozen=True)
class ExchangeParams:
    """Defaults in integer units of money; every one can be set from the CLI."""

    price: int = 100
    value_high: int = 150  # what high quality is worth to the buyer
    value_low: int = 110  # low quality is worth it too: refusing it needs a refund > price
    cost_high: int = 60  # the seller's cost of delivering high quality
    cost_low: int = 20  # the seller's cost of delivering low quality
    keep_cost: int = 5  # c_S: the seller's cost to keep the item for the buyer (5% of price)
    pickup_cost: int = 5  # c_B: the buyer's cost to pick it up (5% of price)
    complaint_cost: int = 1  # the buyer's effort of complaining
    fault_distaste: int = 20  # the seller's distaste for admitting a fault that is not real

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def exchange_game(p: ExchangeParams) -> Game:
    def admit(q: str, r: bool, c: bool) -> Node:
        real = q == "L"
        distaste = {} if real else {SELLER: -p.fault_distaste}
        return Node(
            f"{q}/{'R' if r else 'X'}/{'C' if c else 'N'}",
            SELLER,
            (Move("F", distaste, Leaf(state(r, c, True))), Move("N", {}, Leaf(state(r, c, False)))),
            prescribed="F" if real and c else "N",
        )

    def complain(q: str, r: bool) -> Node:
        return Node(
            f"{q}/{'R' if r else 'X'}",
            BUYER,
            (
                Move("C", {BUYER: -p.complaint_cost}, admit(q, r, True)),
                Move("N", {}, admit(q, r, False)),
            ),
            prescribed="C" if q == "L" else "N",
        )

    def redeem(q: str) -> Node:
        value = p.value_high if q == "H" else p.value_low
        return Node(
            q,
            BUYER,
            (
                Move("R", {BUYER: value - p.pickup_cost}, complain(q, True)),
                Move("X", {}, complain(q, False)),
            ),
            prescribed="R" if q == "H" else "X",
        )

    root = Node(
        "",
        SELLER,
        (
            Move("H", {SELLER: -p.cost_high - p.keep_cost}, redeem("H")),
            Move("L", {SELLER: -p.cost_low - p.keep_cost}, redeem("L")),
        ),
        prescribed="H",
    )
    return Game((SELLER, BUYER), root, STATES, {BUYER: p.price}, (SELLER, BUYER))


# -- Moore-Repullo (Aghion, Fehr, Holden and Wilkening 2018): checked, not designed ------------


@dataclass(frozen=True)
class MooreRepullo:
    value_high: int = 70
    value_low: int = 20
    price_high: int = 35
    price_low: int = 10
    fine: int = 25
    counter_high: int = 75
    counter_low: int = 25


def moore_repullo_game(quality: str, m: MooreRepullo = MooreRepullo()) -> Game:
    """The game once nature has chosen `quality` (both players know it; the court does not).
    Payoffs are in the move utilities: nothing is left to design (no transfers)."""
    value = m.value_high if quality == "high" else m.value_low

    def announce(said: str) -> Move:
        price = m.price_high if said == "high" else m.price_low
        counter = m.counter_high if said == "high" else m.counter_low
        accept = Move("accept", {BUYER: value - counter, SELLER: counter + m.fine}, Leaf("end"))
        reject = Move("reject", {SELLER: -m.fine}, Leaf("end"))
        # off the path the prescribed moves are only what we expect; backward induction
        # (subgame_perfect / spe_outcome) decides what is played
        challenged = Node(f"{said}/challenge", BUYER, (accept, reject), "reject")
        challenge = Move("challenge", {BUYER: -m.fine}, challenged)
        accept_price = Move("no challenge", {BUYER: value - price, SELLER: price}, Leaf("end"))
        seller = Node(said, SELLER, (accept_price, challenge), "no challenge")
        return Move(said, {}, seller)

    root = Node("", BUYER, (announce("high"), announce("low")), prescribed=quality)
    return Game((BUYER, SELLER), root, ("end",), {}, ())


def tree_json(tree: Tree, values: dict[object, object] | None = None) -> dict[str, object]:
    """The whole game: every node's player, moves with utilities, the prescribed move, and
    each leaf's final state."""
    if isinstance(tree, Leaf):
        return {"state": tree.state}
    return {
        "node": tree.label or "root",
        "player": tree.player,
        "prescribed": tree.prescribed,
        "moves": [
            {
                "move": m.name,
                "utility": {k: int(v) for k, v in m.utility.items()},
                "then": tree_json(m.child),
            }
            for m in tree.moves
        ],
    }
