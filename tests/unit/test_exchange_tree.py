"""The designer's game is the game the contract runs (issue 16, findings 3 and 4).

1. Walk the engine's state machine (`contracts/exchange.py`) and the designer's tree
   (`contracts/design/exchange.py`) side by side: in every stage, the ops the engine accepts
   (tried from both parties) and its window expiry are exactly the events of the node's
   moves, and every leaf is the state the engine settles in, paid by its row.
2. Backward induction in exact arithmetic on the engine's own transitions (not the tree):
   the seller's hidden shipment (high, low or nothing) and every accepted op and timeout in
   every stage, with the money the engine's effects move.  For random feasible designs,
   honest play is the unique subgame-perfect equilibrium, up to events the contract cannot
   tell apart (a refund tx and a redeem window that expires lead to the same stage and row).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from fractions import Fraction

import pytest

from contracts.design.designer import Design, DesignError, design
from contracts.design.exchange import (
    BUYER,
    QUALITIES,
    SELLER,
    STATES,
    TIMEOUT,
    ExchangeParams,
    exchange_game,
)
from contracts.design.game import Leaf, Move, Node, Tree
from contracts.exchange import OPS, STAGES, Exchange, ExchangeEngine
from ledger.contract import Context, ContractError, ContractRecord, Effect
from ledger.crypto import ADDRESS_SIZE
from tests.helpers.exchange import random_params

ENGINE = ExchangeEngine()
ADDRESS = {SELLER: b"\x01" * ADDRESS_SIZE, BUYER: b"\x02" * ADDRESS_SIZE}
PARTY = {a: p for p, a in ADDRESS.items()}
WINDOW = 3
Money = dict[str, Fraction]


def table_of(d: Design) -> list[int]:
    return [v for s in STATES for v in (d.transfer(s, SELLER), d.transfer(s, BUYER), d.burn(s))]


def flows(effect: Effect) -> Money:
    """What an effect moves to each party: credits out of escrow minus debits into it."""
    out = {SELLER: Fraction(0), BUYER: Fraction(0)}
    for address, v in effect.credits.items():
        out[PARTY[address]] += v
    for address, v in effect.debits.items():
        out[PARTY[address]] -= v
    return out


def step(record: ContractRecord, effect: Effect) -> ContractRecord:
    escrow = record.escrow + sum(effect.debits.values())
    escrow -= sum(effect.credits.values()) + effect.burn
    return ContractRecord(record.contract_id, record.engine, effect.data, escrow, effect.active)


def offered(d: Design, price: int) -> tuple[ContractRecord, Money]:
    """The seller's offer of the designed table: the contract then awaits acceptance."""
    args = {
        "role": "seller",
        "counterparty": ADDRESS[BUYER],
        "item": "x",
        "price": price,
        "deposit_seller": d.deposit(SELLER),
        "deposit_buyer": d.deposit(BUYER),
        "table": table_of(d),
        "windows": [WINDOW] * 5,
    }
    effect = ENGINE.apply(None, "offer", args, Context(0, ADDRESS[SELLER], b"offer"))
    record = step(ContractRecord(b"cid", "exchange", b"", 0, True), effect)
    return record, flows(effect)


Events = dict[tuple[str, str], tuple[ContractRecord, int, Money]]
_accepted: dict[tuple[bytes, int], Events] = {}


def accepted(record: ContractRecord, height: int) -> Events:
    """Every event the engine accepts here: (party, op) for each op it takes from that party
    at `height`, and ("deadline", "timeout") when its window expires; with the record after
    it, the height, and the money it moved."""
    key = (record.data, height)
    if key in _accepted:
        return _accepted[key]
    out: Events = {}
    if ENGINE.deadline(record) is not None:
        for party, address in ADDRESS.items():
            for op in (*OPS, "offer"):
                try:
                    effect = ENGINE.apply(
                        record, op, {}, Context(height, address, b"tx", time_ms=height)
                    )
                except ContractError:
                    continue
                out[(party, op)] = (step(record, effect), height, flows(effect))
        late = ENGINE.deadline(record)
        assert late is not None
        effect = ENGINE.on_deadline(record, Context(late + 1, b"", b"", time_ms=late + 1))
        out[("deadline", TIMEOUT)] = (step(record, effect), late + 1, flows(effect))
    _accepted[key] = out
    return out


def exchange(record: ContractRecord) -> Exchange:
    return Exchange.decode(record.data)


def opened(d: Design, price: int) -> tuple[ContractRecord, int, Money]:
    record, money = offered(d, price)
    after, height, paid = accepted(record, 0)[(BUYER, "accept")]
    return after, height, {p: money[p] + paid[p] for p in money}


# -- 1. the engine's moves and timeouts are the tree's ------------------------------------------


def walk(tree: Tree, record: ContractRecord, height: int, seen: set[str]) -> Iterator[str]:
    """Yield every difference between the tree below `tree` and the engine at `record`."""
    ex = exchange(record)
    if isinstance(tree, Leaf):
        if ex.stage != "settled" or ex.final_state() != tree.state:
            yield f"leaf {tree.state}: the engine is at {ex.stage} ({ex.final_state()})"
        return
    seen.add(ex.stage)
    events = accepted(record, height)
    engine = {("deadline" if op == TIMEOUT else who, op) for who, op in events}
    moves = {("deadline" if e == TIMEOUT else tree.player, e) for m in tree.moves for e in m.events}
    if engine != moves:
        yield (
            f"node {tree.label or 'root'} at {ex.stage}: engine accepts {sorted(engine)}, "
            f"tree has {sorted(moves)}"
        )
        return
    if STAGES[ex.stage][0] != tree.player:
        yield f"node {tree.label or 'root'}: {tree.player} moves, the engine waits for the other"
    for m in tree.moves:
        for e in m.events:
            after, h, _ = events[("deadline" if e == TIMEOUT else tree.player, e)]
            yield from walk(m.child, after, h, seen)


@pytest.mark.parametrize("keep_cost_on", ["delivery", "unredeemed"])
def test_every_engine_move_and_timeout_is_a_branch_of_the_designed_game(keep_cost_on: str) -> None:
    params = ExchangeParams(keep_cost_on=keep_cost_on)
    d = design(exchange_game(params))
    record, money = offered(d, params.price)
    # before the game: the buyer accepts, or the offer lapses and the seller gets all back
    # (payoff 0 to both, the outside option of the two IR constraints)
    events = accepted(record, 0)
    assert set(events) == {(BUYER, "accept"), ("deadline", TIMEOUT)}
    lapsed, _, refund = events[("deadline", TIMEOUT)]
    assert exchange(lapsed).stage == "cancelled"
    assert money[SELLER] + refund[SELLER] == 0 and not lapsed.active and lapsed.escrow == 0
    record, height, _ = opened(d, params.price)
    seen: set[str] = set()
    assert list(walk(d.game.root, record, height, seen)) == []
    assert seen | {"await_accept"} == set(STAGES), "every stage of the engine is a node"
    used = {e for n in d.game.nodes() for m in n.moves for e in m.events}
    assert used == {*OPS, TIMEOUT} - {"accept"}
    # the seller's hidden move: high, low, or nothing (a timeout, or a `deliver` tx that the
    # contract cannot check); nothing shipped costs nothing and is worth nothing redeemed
    root = d.game.root
    assert [m.name for m in root.moves] == list(QUALITIES)
    nothing = root.move("none")
    assert TIMEOUT in nothing.events and not nothing.utility
    assert isinstance(nothing.child, Node) and not nothing.child.move("R").utility


def test_the_walk_finds_a_tree_without_the_delivery_timeout() -> None:
    """The old tree: the seller's first move came only with `deliver`."""
    d = design(exchange_game(ExchangeParams()))
    root = d.game.root
    moves = tuple(
        Move(m.name, m.utility, m.child, ("deliver",)) for m in root.moves if m.name != "none"
    )
    old = Node(root.label, root.player, moves, root.prescribed)
    record, height, _ = opened(d, 100)
    (diff,) = walk(old, record, height, set())
    assert "await_delivery" in diff and "timeout" in diff


# -- 2. honest play is the unique SPE of the engine's own transitions ----------------------------


def utility(p: ExchangeParams, stage: str, q: str, op: str) -> Money:
    """What a move is worth beyond money: the seller's cost of shipping q (and of keeping
    it, on the reading `p` takes), the buyer's value of what she redeems less the pick-up,
    her effort of complaining, the seller's distaste for admitting a fault not real."""
    u = {SELLER: Fraction(0), BUYER: Fraction(0)}
    shipped = q != "none"
    keep = Fraction(p.keep_cost) if shipped else Fraction(0)
    if stage == "await_delivery":
        u[SELLER] -= {"H": p.cost_high, "L": p.cost_low, "none": 0}[q]
        u[SELLER] -= keep if p.keep_cost_on == "delivery" else 0
    elif stage == "await_redeem" and op == "redeem" and shipped:
        u[BUYER] += (p.value_high if q == "H" else p.value_low) - p.pickup_cost
    elif stage == "await_redeem" and op != "redeem":
        u[SELLER] -= keep if p.keep_cost_on == "unredeemed" else 0
    elif op == "complain":
        u[BUYER] -= p.complaint_cost
    elif op == "admit_fault" and q == "H":
        u[SELLER] -= p.fault_distaste
    return u


def is_honest(stage: str, q: str, op: str, complained: bool) -> bool:
    """Honest play, stated from the README, not read off the tree: ship high; redeem iff
    high; complain iff not high (low, or nothing came); admit iff that complaint was made."""
    if stage == "await_delivery":
        return q == "H"
    if stage == "await_redeem":
        return (op == "redeem") == (q == "H")
    if stage == "await_complaint":
        return (op == "complain") == (q != "H")
    return (op == "admit_fault") == (q != "H" and complained)


def engine_spe(p: ExchangeParams, d: Design) -> tuple[list[str], Money]:
    """Backward induction over the engine's transitions from acceptance: every place where
    the mover's best option is not honest, or not strictly better than every dishonest one,
    or where honest options differ; and the honest payoffs from the start."""
    failures: list[str] = []

    def solve(record: ContractRecord, height: int, q: str, path: str) -> Money:
        ex = exchange(record)
        if ex.stage == "settled":
            return {SELLER: Fraction(0), BUYER: Fraction(0)}
        mover = STAGES[ex.stage][0]
        options = []
        for (who, op), (after, h, money) in accepted(record, height).items():
            if who not in (mover, "deadline"):
                failures.append(f"{path}: {op} accepted from {who} at {ex.stage}")
            for shipped in QUALITIES if ex.stage == "await_delivery" else (q,):
                u = utility(p, ex.stage, shipped, op)
                rest = solve(after, h, shipped, f"{path}/{shipped if shipped != q else ''}{op}")
                total = {k: money[k] + u[k] + rest[k] for k in rest}
                options.append((is_honest(ex.stage, shipped, op, ex.complained), op, total))
        good = [o for o in options if o[0]]
        bad = [o for o in options if not o[0]]
        if not good:
            failures.append(f"{path or 'start'}: no honest option at {ex.stage}")
            return options[0][2]
        if any(o[2] != good[0][2] for o in good):
            failures.append(f"{path or 'start'}: honest options {[o[1] for o in good]} differ")
        best = max(o[2][mover] for o in options)
        if good[0][2][mover] != best or any(o[2][mover] >= best for o in bad):
            failures.append(
                f"{path or 'start'} ({ex.stage}, {q}): {mover} gets {good[0][2][mover]} honestly, "
                f"but {max(bad, key=lambda o: o[2][mover])[1]} gives "
                f"{max(o[2][mover] for o in bad)}"
            )
        return good[0][2]

    record, height, paid = opened(d, p.price)
    payoffs = solve(record, height, "?", "")
    return failures, {k: paid[k] + payoffs[k] for k in payoffs}


REPRODUCTION = ExchangeParams(43, 199, 3, 30, 8, 17, 7, 1, 30)  # issue 16, finding 3


def test_the_issues_reproduction_no_longer_pays_the_seller_to_deliver_nothing() -> None:
    d = design(exchange_game(REPRODUCTION))
    failures, honest = engine_spe(REPRODUCTION, d)
    assert failures == []
    assert honest[SELLER] >= 0 and honest[BUYER] >= 0
    nothing = d.transfer("XCF", SELLER) - d.deposit(SELLER)  # refund, complaint, admission
    assert nothing < honest[SELLER]


def feasible(count: int, seed: int) -> Iterator[tuple[ExchangeParams, Design]]:
    rng = random.Random(seed)
    found = 0
    while found < count:
        p = random_params(rng)
        try:
            d = design(exchange_game(p), rng.choice(["deposits", "burn"]))
        except DesignError:
            continue
        found += 1
        yield p, d


def check_feasible(count: int, seed: int) -> None:
    for p, d in feasible(count, seed):
        failures, honest = engine_spe(p, d)
        assert failures == [], (p, failures[:5])
        assert honest[SELLER] >= 0 and honest[BUYER] >= 0, (p, honest)  # IR: accepting pays
        _accepted.clear()


def test_honest_play_is_the_unique_spe_of_the_engine_on_random_feasible_designs() -> None:
    check_feasible(40, seed=16)


@pytest.mark.slow
def test_honest_play_is_the_unique_spe_of_the_engine_on_500_random_feasible_designs() -> None:
    check_feasible(500, seed=1603)
