"""The core exchange mechanism as a contract engine: a deterministic state machine.

Either party offers (item, price, deposits, the designed table of 8 rows, and
how many seconds of ledger time each move may take).  The other accepts by paying in.  Then:
the seller delivers (the contract cannot see the quality); the buyer redeems
or lets it refund; the buyer complains or not; the seller admits fault or
not.  Each move is a signed tx, accepted only from the right party, in the
right stage, by its deadline.  A move not made by its deadline takes its
default (refund, no complaint, no admission).  The final state pays the row
of the table exactly from escrow and burns the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ledger.contract import (
    MAX_WINDOW,
    Context,
    ContractError,
    ContractRecord,
    ContractSummary,
    Effect,
)
from ledger.crypto import ADDRESS_SIZE
from ledger.encoding import MAX_INT, Struct, Tag

NAME = "exchange"
WINDOWS = ("accept", "deliver", "redeem", "complain", "admit")
# stage -> (whose move is awaited, the ops that make it, the default when time runs out)
STAGES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "await_accept": ("counterparty", ("accept",), "cancelled"),
    "await_delivery": ("seller", ("deliver",), "no delivery"),
    "await_redeem": ("buyer", ("redeem", "refund"), "refund"),
    "await_complaint": ("buyer", ("complain", "no_complaint"), "no complaint"),
    "await_admission": ("seller", ("admit_fault", "deny_fault"), "no admission"),
}
ORDER = [*STAGES, "settled"]
OPS = {op: stage for stage, (_, ops, _) in STAGES.items() for op in ops}


def state(redeem: bool, complain: bool, fault: bool) -> str:
    """An outcome the contract observes: redeem (R) or not (X), complain (C) or not (N),
    fault admitted (F) or not (N).  Its table pays one row per outcome, and the designer
    (`contracts/design/exchange.py`) designs the table over the same outcomes."""
    return f"{'R' if redeem else 'X'}{'C' if complain else 'N'}{'F' if fault else 'N'}"


STATES = tuple(state(r, c, f) for r in (True, False) for c in (True, False) for f in (True, False))


@dataclass(frozen=True)
class ExchangeMove(Struct):
    """One step of the contract's history: a signed move (its tx id) or a default."""

    TAG = Tag.CONTRACT_MOVE
    height: int
    op: str
    by: str  # "seller", "buyer" or "deadline"
    tx_id: bytes


@dataclass(frozen=True)
class Exchange(Struct):
    TAG = Tag.EXCHANGE
    seller: bytes
    buyer: bytes
    offered_by: str  # "seller" or "buyer"
    item: str
    price: int
    deposit_seller: int
    deposit_buyer: int
    table: tuple[int, ...]  # 8 x (to seller, to buyer, burn), in STATES order (RCF ... XNN)
    windows: tuple[int, ...]  # seconds allowed for accept, deliver, redeem, complain, admit
    stage: str
    deadline: int  # ledger time (ms, block timestamps) by which the awaited move is due
    redeemed: bool
    complained: bool
    admitted: bool
    history: tuple[ExchangeMove, ...]

    @property
    def total(self) -> int:
        return self.price + self.deposit_seller + self.deposit_buyer

    def row(self, state: str) -> tuple[int, int, int]:
        i = STATES.index(state) * 3
        return self.table[i], self.table[i + 1], self.table[i + 2]

    def final_state(self) -> str:
        return state(self.redeemed, self.complained, self.admitted)

    def party(self, address: bytes) -> str | None:
        if address == self.seller:
            return "seller"
        return "buyer" if address == self.buyer else None


class ExchangeEngine:
    name = NAME

    def apply(
        self, record: ContractRecord | None, op: str, args: Mapping[str, Any], ctx: Context
    ) -> Effect:
        if op == "offer":
            if record is not None:
                raise ContractError("bad_op", "offer creates a contract: send it without an id")
            return offer(args, ctx)
        if record is None:
            raise ContractError("unknown_contract", "no such contract")
        ex = Exchange.decode(record.data)
        if op not in OPS:
            raise ContractError(
                "bad_op", f"unknown exchange op {op!r}; known: offer, {', '.join(OPS)}"
            )
        return move(ex, op, ctx)

    def deadline(self, record: ContractRecord) -> int | None:
        ex = Exchange.decode(record.data)
        return ex.deadline if ex.stage in STAGES else None

    def describe(self, record: ContractRecord) -> ContractSummary:
        ex = Exchange.decode(record.data)
        return ContractSummary(ex.stage, (ex.seller, ex.buyer))

    def on_deadline(self, record: ContractRecord, ctx: Context) -> Effect:
        ex = Exchange.decode(record.data)
        _, _, default = STAGES[ex.stage]
        step = ExchangeMove(ctx.height, default, "deadline", b"")
        if ex.stage == "await_accept":  # nobody accepted: the offerer gets its money back
            back = paid_in(ex, ex.offered_by)
            return Effect(
                replace(ex, stage="cancelled", history=(*ex.history, step)).encode(),
                False,
                credits={address_of(ex, ex.offered_by): back} if back else {},
            )
        return advance(replace(ex, history=(*ex.history, step)), ex.stage, ctx)


def offer(args: Mapping[str, Any], ctx: Context) -> Effect:
    role = args.get("role")
    if role not in ("seller", "buyer"):
        raise ContractError("bad_offer", "'role' must be 'seller' or 'buyer' (the offerer's)")
    other = _address(args.get("counterparty"))
    price, d_s, d_b = (_amount(args, k) for k in ("price", "deposit_seller", "deposit_buyer"))
    table = tuple(_amount({"v": v}, "v") for v in _list(args.get("table"), 24, "table"))
    windows = tuple(_window(v) for v in _list(args.get("windows"), 5, "windows"))
    for i in range(8):
        if sum(table[3 * i : 3 * i + 3]) != price + d_s + d_b:
            raise ContractError(
                "bad_table",
                f"row {STATES[i]} does not pay out exactly price + deposits = {price + d_s + d_b}",
            )
    if other == ctx.sender:
        raise ContractError("bad_offer", "buyer and seller must differ")
    item = args.get("item")
    if not isinstance(item, str) or len(item) > 256:
        raise ContractError("bad_offer", "'item' must be a description of at most 256 chars")
    seller, buyer = (ctx.sender, other) if role == "seller" else (other, ctx.sender)
    ex = Exchange(
        seller,
        buyer,
        role,
        item,
        price,
        d_s,
        d_b,
        table,
        windows,
        "await_accept",
        ctx.due(windows[0]),
        False,
        False,
        False,
        (ExchangeMove(ctx.height, "offer", role, ctx.tx_id),),
    )
    owed = paid_in(ex, role)
    return Effect(ex.encode(), True, debits={ctx.sender: owed} if owed else {})


def move(ex: Exchange, op: str, ctx: Context) -> Effect:
    party = ex.party(ctx.sender)
    if party is None:
        raise ContractError("wrong_party", "only this exchange's buyer and seller can move")
    if ex.stage in ("settled", "cancelled"):
        raise ContractError("contract_closed", f"the exchange is {ex.stage}")
    stage = OPS[op]
    whose, _, _ = STAGES[stage]
    expected = _counterparty(ex) if whose == "counterparty" else whose
    if party != expected:
        raise ContractError("wrong_party", f"{op} is the {expected}'s move, not the {party}'s")
    if ex.stage != stage:
        done = ex.stage not in STAGES or ORDER.index(ex.stage) > ORDER.index(stage)
        if done:
            raise ContractError(
                "deadline_passed" if _defaulted(ex, stage) else "already_moved",
                f"{op} belongs to {stage}, which is over (now {ex.stage})",
            )
        raise ContractError(
            "out_of_turn", f"{op} belongs to {stage}; the contract is at {ex.stage}"
        )
    if ctx.time_ms > ex.deadline:
        raise ContractError("deadline_passed", f"{op} was due by ledger time {ex.deadline} ms")
    step = ExchangeMove(ctx.height, op, party, ctx.tx_id)
    ex = replace(
        ex,
        history=(*ex.history, step),
        redeemed=ex.redeemed or op == "redeem",
        complained=ex.complained or op == "complain",
        admitted=ex.admitted or op == "admit_fault",
    )
    effect = advance(ex, stage, ctx)
    if op == "accept":
        owed = paid_in(ex, party)
        return replace(effect, debits={ctx.sender: owed} if owed else {})
    return effect


def advance(ex: Exchange, stage: str, ctx: Context) -> Effect:
    """Move to the next stage; after the last one, pay out the row of the final state."""
    nxt = ORDER[ORDER.index(stage) + 1]
    if nxt != "settled":
        window = ex.windows[WINDOWS.index(_window_name(nxt))]
        return Effect(replace(ex, stage=nxt, deadline=ctx.due(window)).encode(), True)
    to_seller, to_buyer, burn = ex.row(ex.final_state())
    credits = {ex.seller: to_seller, ex.buyer: to_buyer}
    return Effect(
        replace(ex, stage="settled", deadline=0).encode(),
        False,
        credits={a: v for a, v in credits.items() if v},
        burn=burn,
    )


def paid_in(ex: Exchange, party: str) -> int:
    return ex.price + ex.deposit_buyer if party == "buyer" else ex.deposit_seller


def address_of(ex: Exchange, party: str) -> bytes:
    return ex.seller if party == "seller" else ex.buyer


def _window_name(stage: str) -> str:
    return {
        "await_delivery": "deliver",
        "await_redeem": "redeem",
        "await_complaint": "complain",
        "await_admission": "admit",
    }[stage]


def _counterparty(ex: Exchange) -> str:
    return "buyer" if ex.offered_by == "seller" else "seller"


def _defaulted(ex: Exchange, stage: str) -> bool:
    _, _, default = STAGES[stage]
    return any(m.by == "deadline" and m.op == default for m in ex.history)


def _address(value: Any) -> bytes:
    if not isinstance(value, bytes) or len(value) != ADDRESS_SIZE:
        raise ContractError("bad_offer", f"'counterparty' must be a {ADDRESS_SIZE}-byte address")
    return value


def _amount(args: Mapping[str, Any], key: str) -> int:
    v = args.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_INT // 8:
        raise ContractError("bad_offer", f"{key!r} must be a non-negative integer")
    return v


def _window(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_WINDOW:
        raise ContractError("bad_offer", f"every window must be 1..{MAX_WINDOW} seconds")
    return v


def _list(v: Any, n: int, name: str) -> list[Any]:
    if not isinstance(v, list) or len(v) != n:
        raise ContractError("bad_offer", f"{name!r} must be a list of {n} integers")
    return v
