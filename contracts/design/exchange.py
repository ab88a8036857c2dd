"""The core exchange mechanism as a game, and the Moore-Repullo game of Aghion et al. (2018).

Core exchange: the seller delivers high (H) or low (L) quality, or nothing at all
(none), hidden from the contract; the buyer redeems (R) or lets it refund/expire
(X); the buyer complains (C) or not (N); the seller admits cancel-or-fault (F) or
not (N).  The contract observes (redeem, complain, fault): 8 states.  Honest play,
on and off the path: deliver H; redeem iff high; complain iff not high (low
quality or nothing); admit iff the complaint is justified (the quality was low or
nothing came, and the buyer complained).

The tree is the game the engine (`contracts/exchange.py`) runs, move for move:
every op it accepts in a stage and every window that expires there is an event
of one move (`Move.events`), and `tests/unit/test_exchange_tree.py` walks the two
side by side.  Seed 003 ("Formal Definition") assumes "that the seller always
provides an item or service"; the engine cannot enforce that (its deadline on
delivery passes to the buyer's stage, and a `deliver` tx is only the seller's
word), so the tree has the third seller move "none": nothing shipped, whether or
not the seller sends `deliver`.  A move the contract cannot see lists both events
("deliver" and "timeout"): they lead to the same stage and the same observed
bits.  Waiting out a window is the same move as its default op (refund, no
complaint, deny), which is the seed's "no redeem (refund or expire - RfE)".  The
acceptance stage is not a node: not accepting cancels the offer and refunds the
offerer, the outside option of the two individual-rationality constraints.

The keep cost c_S.  Seed 003, "Formal Definition": "cost of the seller to keep the
item for the buyer, denoted by c_S" next to "cost of the buyer to pick-up the item
from the seller, denoted by c_B", and "At this iteration, both costs are assumed to
be a certain fraction of the price".  Tally's default (`keep_cost_on="delivery"`)
reads c_S as the cost of holding the item for the buyer until she picks it up or
refuses it: the seller bears it whenever it delivers, before the buyer moves, a
cost of the trade like the price fraction the seed makes it, and the counterpart
of c_B, which the buyer bears when she picks the item up (redeems).  The other
reading, that the seller keeps the item only when it stays with her because the
buyer did not redeem, is defensible too (the seed does not say when the cost
falls), so it is a parameter: `keep_cost_on="unredeemed"` charges c_S on the
refund/expire move after a delivery.  The two give different minimum deposits
in about one random parameter set in six.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from contracts.design.game import Game, Leaf, Move, Node, Tree
from contracts.exchange import STATES as STATES  # the outcomes the engine observes and pays
from contracts.exchange import state as state

SELLER, BUYER = "seller", "buyer"
TIMEOUT = "timeout"  # the event of a window that expires (the engine's `on_deadline`)
QUALITIES = ("H", "L", "none")  # the seller's hidden first move
KEEP_COST_ON = ("delivery", "unredeemed")


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
    # when the seller bears c_S: on every delivery (default) or only when the buyer does
    # not redeem what was delivered (see the module docstring)
    keep_cost_on: str = "delivery"

    def __post_init__(self) -> None:
        if self.keep_cost_on not in KEEP_COST_ON:
            raise ValueError(f"keep_cost_on must be one of {', '.join(KEEP_COST_ON)}")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def honest(q: str) -> tuple[str, str, bool]:
    """Honest play after the seller's hidden move `q`: the buyer's redeem move, her
    complaint move, and whether the fault is real (so a complaint is justified)."""
    return ("R", "N", False) if q == "H" else ("X", "C", True)


def exchange_game(p: ExchangeParams) -> Game:
    keep = {SELLER: -p.keep_cost} if p.keep_cost else {}
    on_delivery = keep if p.keep_cost_on == "delivery" else {}
    unredeemed = keep if p.keep_cost_on == "unredeemed" else {}

    def admit(q: str, r: bool, c: bool) -> Node:
        real = honest(q)[2]
        distaste = {} if real else {SELLER: -p.fault_distaste}
        return Node(
            f"{q}/{'R' if r else 'X'}/{'C' if c else 'N'}",
            SELLER,
            (
                Move("F", distaste, Leaf(state(r, c, True)), ("admit_fault",)),
                Move("N", {}, Leaf(state(r, c, False)), ("deny_fault", TIMEOUT)),
            ),
            prescribed="F" if real and c else "N",
        )

    def complain(q: str, r: bool) -> Node:
        return Node(
            f"{q}/{'R' if r else 'X'}",
            BUYER,
            (
                Move("C", {BUYER: -p.complaint_cost}, admit(q, r, True), ("complain",)),
                Move("N", {}, admit(q, r, False), ("no_complaint", TIMEOUT)),
            ),
            prescribed=honest(q)[1],
        )

    def redeem(q: str) -> Node:
        # redeeming nothing is worth nothing and there is nothing to pick up
        gets = {
            "H": {BUYER: p.value_high - p.pickup_cost},
            "L": {BUYER: p.value_low - p.pickup_cost},
        }
        return Node(
            q,
            BUYER,
            (
                Move("R", gets.get(q, {}), complain(q, True), ("redeem",)),
                Move(
                    "X", unredeemed if q != "none" else {}, complain(q, False), ("refund", TIMEOUT)
                ),
            ),
            prescribed=honest(q)[0],
        )

    def ship(q: str, cost: int) -> dict[str, int]:
        total = -cost + on_delivery.get(SELLER, 0)
        return {SELLER: total} if total else {}

    events = ("deliver", TIMEOUT)  # the contract sees neither what was shipped nor whether
    root = Node(
        "",
        SELLER,
        (
            Move("H", ship("H", p.cost_high), redeem("H"), events),
            Move("L", ship("L", p.cost_low), redeem("L"), events),
            Move("none", {}, redeem("none"), events),
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
                "events": list(m.events),
                "then": tree_json(m.child),
            }
            for m in tree.moves
        ],
    }
