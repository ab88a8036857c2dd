"""The kernel engine: one deterministic state machine for every sealed-message mechanism.

    create -> commit (deposit, commit) -> reveal -> settled | cancelled

- create (anyone; the creator is the seller or the builder): names the parties, the
  penalty for a missing reveal, the two windows (seconds of ledger time) and the rule's
  designed terms, which the rule re-verifies exactly (an unsafe design is refused).
- commit phase: a party deposits into escrow (as often as it likes; a deposit may exceed
  what it will bid, so it reveals nothing) and commits once to
  H("tally/seal", contract id, party, phase, salt, message), which binds the message
  to this contract, this party and this phase.  Committing needs a deposit of at least
  the penalty plus the most settlement could take from the party.  The phase ends when
  every party has committed, or at its deadline: then a rule with missing_commit
  "cancel" refunds everybody, and one with "absent" goes on without the missing.
- reveal phase: a party sends its message and salt; they must match its commitment, and
  the rule must accept the message (a bid above the deposit is refused).  The phase ends
  when every committed party has revealed, or at its deadline: a committed party that did
  not reveal forfeits the penalty (burnt, so nobody gains from another's silence) and its
  message counts as the rule's default.
- settlement: the rule computes transfers from the messages, the terms and the draw
  (H of every salt, a withheld salt replaced by its commitment: fixed before anybody
  could see it); escrow pays out to the unit and the contract closes.

Escrow is locked from deposit to settlement: nobody can withdraw or renege.  Every
Effect is checked before it leaves the engine (`_conserved`): while open the escrow
equals the deposits; at the end it is paid out exactly, nobody receiving more than the
contract holds for it.  Source: Townsend & Zhang's escrowed sealed bids
(/work/shared/seeds/001_ccf41dfaa83f9976.txt, section I).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from contracts.kernel.rule import Rule, Seats, Settlement
from ledger.contract import (
    MAX_WINDOW,
    Context,
    ContractError,
    ContractRecord,
    ContractSummary,
    Effect,
)
from ledger.crypto import ADDRESS_SIZE
from ledger.encoding import MAX_INT, Struct, Tag, hash_bytes, pack, unpack

PHASES = ("commit", "reveal")  # the open phases, in order; then settled or cancelled
CLOSED = ("settled", "cancelled")
OPS = {"deposit": "commit", "commit": "commit", "reveal": "reveal"}  # op -> its phase
SEALED_PHASE = "reveal"  # the phase a commitment's message is revealed in (bound in it)
MAX_PARTIES = 256
SALT_SIZE = 32


def commitment(contract_id: bytes, party: bytes, message: Any, salt: bytes) -> bytes:
    """What a party commits to: its message, salted, bound to contract, party and phase."""
    return hash_bytes(pack(["tally/seal", contract_id, party, SEALED_PHASE, salt, message]))


@dataclass(frozen=True)
class SealedEvent(Struct):
    """One entry of the contract's history."""

    TAG = Tag.SEALED_EVENT
    height: int
    kind: str  # create deposit commit reveal absent withheld settle refused cancel
    party: int  # the party's index, -1 for the creator or the contract itself
    tx_id: bytes  # the signed tx that caused it (empty for a deadline passing)
    amount: int  # a deposit, or a forfeited penalty
    data: bytes  # a commitment, or a revealed message (packed)


@dataclass(frozen=True)
class Sealed(Struct):
    TAG = Tag.SEALED
    creator: bytes
    parties: tuple[bytes, ...]
    terms: dict[str, Any]  # the rule's normalised, verified terms
    penalty: int  # forfeited by a committed party that does not reveal
    windows: tuple[int, ...]  # seconds of ledger time for the commit and the reveal phase
    phase: str
    deadline: int  # ledger time (ms) at which the open phase ends
    deposits: tuple[int, ...]
    commitments: tuple[bytes, ...]  # b"" until made
    messages: tuple[bytes, ...]  # the packed revealed message, b"" until revealed
    salts: tuple[bytes, ...]  # b"" until revealed
    outcome: dict[str, Any]  # the rule's outcome and the payouts, once settled
    history: tuple[SealedEvent, ...]

    def index(self, address: bytes) -> int | None:
        return self.parties.index(address) if address in self.parties else None

    def event(
        self, ctx: Context, kind: str, party: int, amount: int = 0, data: bytes = b""
    ) -> Sealed:
        return replace(
            self,
            history=(*self.history, SealedEvent(ctx.height, kind, party, ctx.tx_id, amount, data)),
        )


class KernelEngine:
    """An Engine (ledger/contract.py) running one Rule."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        # The last state this engine produced, with its encoding.  A block's calls to one
        # contract each decode what the call before just encoded (a 100-bidder auction's
        # record is about 30 KB, and decoding re-checks it is canonical), so equal bytes
        # skip the decode.  A pure memo: the bytes alone determine the state.
        self._last: tuple[bytes, Sealed] | None = None

    def _decode(self, data: bytes) -> Sealed:
        if self._last is not None and self._last[0] == data:
            return self._last[1]
        return Sealed.decode(data)

    def _done(self, escrow: int, step: tuple[Sealed, Effect]) -> Effect:
        effect = _checked(escrow, step)
        self._last = (effect.data, step[0])
        return effect

    def apply(
        self, record: ContractRecord | None, op: str, args: Mapping[str, Any], ctx: Context
    ) -> Effect:
        if op == "create":
            if record is not None:
                raise ContractError("bad_op", "create makes a contract: send it without an id")
            return self._done(0, self.create(args, ctx))
        if record is None:
            raise ContractError("unknown_contract", "no such contract")
        if op not in OPS:
            known = ", ".join(OPS)
            raise ContractError("bad_op", f"unknown {self.name} op {op!r}; known: create, {known}")
        s = self._decode(record.data)
        i = self._party(s, op, ctx)
        if op == "deposit":
            step = deposit(s, i, args, ctx)
        elif op == "commit":
            step = self.commit(s, i, args, ctx, record.contract_id)
        else:
            step = self.reveal(s, i, args, ctx, record.contract_id)
        return self._done(record.escrow, step)

    def _party(self, s: Sealed, op: str, ctx: Context) -> int:
        """The sender's party index, if `op` is its move now; else the reason it is not."""
        if s.phase in CLOSED:
            raise ContractError("contract_closed", f"the {self.name} contract is {s.phase}")
        i = s.index(ctx.sender)
        if i is None:
            raise ContractError("wrong_party", f"only this contract's parties can {op}")
        if s.phase != OPS[op]:
            raise ContractError(
                "out_of_phase",
                f"{op} belongs to the {OPS[op]} phase; the contract is in its {s.phase} phase",
            )
        if ctx.time_ms > s.deadline:
            raise ContractError(
                "deadline_passed", f"the {s.phase} phase ended at ledger time {s.deadline} ms"
            )
        return i

    def deadline(self, record: ContractRecord) -> int | None:
        s = self._decode(record.data)
        return s.deadline if s.phase in PHASES else None

    def describe(self, record: ContractRecord) -> ContractSummary:
        s = self._decode(record.data)
        return ContractSummary(s.phase, tuple(dict.fromkeys((s.creator, *s.parties))))

    def on_deadline(self, record: ContractRecord, ctx: Context) -> Effect:
        s = self._decode(record.data)
        if s.phase == "commit":
            return self._done(record.escrow, self.end_commit(s, ctx, record.contract_id))
        return self._done(record.escrow, self.end_reveal(s, ctx, record.contract_id))

    # -- the moves -------------------------------------------------------------------

    def create(self, args: Mapping[str, Any], ctx: Context) -> tuple[Sealed, Effect]:
        parties = _parties(args.get("parties"))
        windows = _windows(args.get("windows"))
        penalty = _amount(args.get("penalty", 0), "penalty")
        terms = args.get("terms")
        if not isinstance(terms, dict):
            raise ContractError("bad_terms", "'terms' must be a map (the designed schedule)")
        n, none = len(parties), (b"",) * len(parties)
        s = Sealed(
            ctx.sender,
            parties,
            self.rule.terms(terms, n),
            penalty,
            windows,
            "commit",
            ctx.due(windows[0]),
            (0,) * n,
            none,
            none,
            none,
            {},
            (),
        ).event(ctx, "create", -1)
        return s, Effect(s.encode(), True)

    def commit(
        self, s: Sealed, i: int, args: Mapping[str, Any], ctx: Context, cid: bytes
    ) -> tuple[Sealed, Effect]:
        if s.commitments[i]:
            raise ContractError("already_committed", "this party has already committed")
        c = args.get("commitment")
        if not isinstance(c, bytes) or len(c) != 32:
            raise ContractError("bad_args", "'commitment' must be 32 bytes")
        most = self.rule.min_deposit(s.terms, i)
        if s.deposits[i] < s.penalty + most:
            raise ContractError(
                "deposit_too_small",
                f"committing needs {s.penalty + most} in escrow (the penalty {s.penalty} plus "
                f"the most settlement can take, {most}); this party holds {s.deposits[i]}",
            )
        s = replace(s, commitments=_set(s.commitments, i, c)).event(ctx, "commit", i, data=c)
        if all(s.commitments):
            return self.end_commit(s, ctx, cid)
        return s, Effect(s.encode(), True)

    def reveal(
        self, s: Sealed, i: int, args: Mapping[str, Any], ctx: Context, cid: bytes
    ) -> tuple[Sealed, Effect]:
        if not s.commitments[i]:
            raise ContractError("not_committed", "this party did not commit: nothing to reveal")
        if s.messages[i]:
            raise ContractError("already_revealed", "this party has already revealed")
        salt, message = args.get("salt"), args.get("message")
        if not isinstance(salt, bytes) or len(salt) != SALT_SIZE:
            raise ContractError("bad_args", f"'salt' must be {SALT_SIZE} bytes")
        try:
            sealed = commitment(cid, s.parties[i], message, salt)
        except ValueError as e:
            raise ContractError("bad_message", f"the message cannot be encoded: {e}") from e
        if sealed != s.commitments[i]:
            raise ContractError(
                "bad_reveal", "message and salt do not match this party's commitment"
            )
        value = self.rule.message(s.terms, i, message, s.deposits[i])
        raw = pack(value)
        s = replace(s, messages=_set(s.messages, i, raw), salts=_set(s.salts, i, salt))
        s = s.event(ctx, "reveal", i, data=raw)
        if all(m or not c for m, c in zip(s.messages, s.commitments, strict=True)):
            return self.settle(s, ctx, cid)
        return s, Effect(s.encode(), True)

    # -- phase ends ------------------------------------------------------------------

    def end_commit(self, s: Sealed, ctx: Context, cid: bytes) -> tuple[Sealed, Effect]:
        missing = [i for i, c in enumerate(s.commitments) if not c]
        if len(missing) == len(s.parties) or (missing and self.rule.missing_commit == "cancel"):
            return cancel(s, ctx)
        for i in missing:
            s = s.event(ctx, "absent", i)
        s = replace(s, phase="reveal", deadline=ctx.due(s.windows[1]))
        return s, Effect(s.encode(), True)

    def end_reveal(self, s: Sealed, ctx: Context, cid: bytes) -> tuple[Sealed, Effect]:
        for i, (c, m) in enumerate(zip(s.commitments, s.messages, strict=True)):
            if c and not m:
                s = s.event(ctx, "withheld", i, amount=s.penalty)
        return self.settle(s, ctx, cid)

    def settle(self, s: Sealed, ctx: Context, cid: bytes) -> tuple[Sealed, Effect]:
        """Pay out the rule's settlement; if it is not funded exactly (a rule's bug), refuse
        it and cancel instead, every deposit back: a deadline must always end the phase."""
        try:
            return self._settle(s, ctx, cid)
        except (ContractError, ArithmeticError, LookupError, ValueError) as e:
            return cancel(s.event(ctx, "refused", -1, data=str(e).encode()[:200]), ctx)

    def _settle(self, s: Sealed, ctx: Context, cid: bytes) -> tuple[Sealed, Effect]:
        """The rule's settlement; a withheld reveal costs the penalty (burnt)."""
        withheld = [bool(c and not m) for c, m in zip(s.commitments, s.messages, strict=True)]
        messages = [
            unpack(m) if m else self.rule.default(s.terms, i) if w else None
            for i, (m, w) in enumerate(zip(s.messages, withheld, strict=True))
        ]
        draw = hash_bytes(
            pack(
                [
                    "tally/seal-draw",
                    cid,
                    [a or b for a, b in zip(s.salts, s.commitments, strict=True)],
                ]
            )
        )
        out = self.rule.settle(s.terms, messages, Seats(cid, s.creator, s.parties, draw))
        forfeits = [s.penalty if w else 0 for w in withheld]
        refunds = _refunds(s, out, forfeits)
        credits: dict[bytes, int] = {}
        for address, amount in [*zip(s.parties, refunds, strict=True), *out.receipts.items()]:
            if amount:
                credits[address] = credits.get(address, 0) + amount
        outcome = {
            **out.outcome,
            "transfers": list(out.transfers),
            "refunds": list(refunds),
            "forfeits": forfeits,
            "receipts": {a.hex(): v for a, v in out.receipts.items()},
            "burn": out.burn + sum(forfeits),
        }
        s = replace(s, phase="settled", deadline=0, outcome=outcome).event(ctx, "settle", -1)
        return s, Effect(s.encode(), False, credits=credits, burn=out.burn + sum(forfeits))


def deposit(s: Sealed, i: int, args: Mapping[str, Any], ctx: Context) -> tuple[Sealed, Effect]:
    amount = _amount(args.get("amount"), "amount")
    if amount == 0:
        raise ContractError("bad_args", "'amount' must be positive")
    s = replace(s, deposits=_set(s.deposits, i, s.deposits[i] + amount))
    s = s.event(ctx, "deposit", i, amount)
    return s, Effect(s.encode(), True, debits={ctx.sender: amount})


def _draw(cid: bytes, s: Sealed) -> bytes:
    """Fixed by every commitment before the first reveal; known once the last one is in.
    A withheld salt is replaced by its commitment, so withholding cannot steer it."""
    seeds = [salt or c for salt, c in zip(s.salts, s.commitments, strict=True)]
    return hash_bytes(pack(["tally/seal-draw", cid, seeds]))


def cancel(s: Sealed, ctx: Context) -> tuple[Sealed, Effect]:
    """Every deposit back; nothing else happened."""
    credits: dict[bytes, int] = {}
    for address, amount in zip(s.parties, s.deposits, strict=True):
        if amount:
            credits[address] = credits.get(address, 0) + amount
    s = replace(s, phase="cancelled", deadline=0).event(ctx, "cancel", -1)
    return s, Effect(s.encode(), False, credits=credits)


def _refunds(s: Sealed, out: Settlement, forfeits: list[int]) -> list[int]:
    """What each party gets back: its deposit, less its forfeit, plus its transfer; the
    settlement must be funded exactly by what the parties hold."""
    if len(out.transfers) != len(s.parties):
        raise _broken(f"{len(out.transfers)} transfers for {len(s.parties)} parties")
    if out.burn < 0 or any(v < 0 for v in out.receipts.values()):
        raise _broken("a negative receipt or burn")
    if -sum(out.transfers) != sum(out.receipts.values()) + out.burn:
        raise _broken("the transfers, receipts and burn do not sum to zero")
    refunds = [d - f + t for d, f, t in zip(s.deposits, forfeits, out.transfers, strict=True)]
    if min(refunds, default=0) < 0:
        raise _broken("a party would pay more than it holds in escrow")
    return refunds


def _checked(escrow: int, step: tuple[Sealed, Effect]) -> Effect:
    """The invariant, on every transition: escrow equals the deposits while the contract is
    open, and is paid out to the unit when it closes."""
    s, effect = step
    after = escrow + sum(effect.debits.values()) - sum(effect.credits.values()) - effect.burn
    expected = sum(s.deposits) if s.phase in PHASES else 0
    if after != expected or min([*effect.credits.values(), effect.burn, 0]) < 0:
        raise _broken(f"escrow would be {after}, the contract accounts for {expected}")
    return effect


def _broken(why: str) -> ContractError:
    # A rule or kernel bug: the tx fails and nothing moves, rather than money being made.
    return ContractError("invariant", f"settlement refused: {why}")


def _set(values: tuple[Any, ...], i: int, value: Any) -> tuple[Any, ...]:
    return (*values[:i], value, *values[i + 1 :])


def _parties(value: Any) -> tuple[bytes, ...]:
    if (
        not isinstance(value, list)
        or not 1 <= len(value) <= MAX_PARTIES
        or not all(isinstance(a, bytes) and len(a) == ADDRESS_SIZE for a in value)
    ):
        raise ContractError(
            "bad_terms", f"'parties' must list 1..{MAX_PARTIES} addresses of {ADDRESS_SIZE} bytes"
        )
    if len(set(value)) != len(value):
        raise ContractError("bad_terms", "a party is listed twice")
    return tuple(value)


def _windows(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) != len(PHASES)
        or not all(type(w) is int and 1 <= w <= MAX_WINDOW for w in value)
    ):
        raise ContractError(
            "bad_terms", f"'windows' must be [commit, reveal] seconds, each 1..{MAX_WINDOW}"
        )
    return tuple(value)


def _amount(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_INT // 8:
        raise ContractError("bad_args", f"{name!r} must be a non-negative integer")
    return value
