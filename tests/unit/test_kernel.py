"""The contract kernel on the ledger, with a toy rule: deposits are locked in escrow until
settlement, commitments bind, a missing reveal forfeits, every out-of-phase, foreign or
duplicate call is refused and changes nothing, and money is conserved to the unit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.kernel.engine import KernelEngine
from contracts.kernel.rule import BadMessage, BadTerms, MissingCommit, Seats, Settlement
from ledger.contract import BURN_ADDRESS, engine_table
from tests.helpers.sealed import SECOND, WINDOW, SealedChain, keys


class PayWhatYouSay:
    """Each party reveals an amount (at most its deposit) and pays it to the creator."""

    def __init__(self, name: str = "toy", missing_commit: MissingCommit = "absent") -> None:
        self.name, self.missing_commit = name, missing_commit
        self.overpay = False

    def terms(self, args: Mapping[str, Any], parties: int) -> dict[str, Any]:
        if args.get("unsafe"):
            raise BadTerms("the design fails its checks", reason="unsafe_design")
        return {"floor": int(args.get("floor", 0))}

    def min_deposit(self, terms: Mapping[str, Any], index: int) -> int:
        return int(terms["floor"])

    def message(self, terms: Mapping[str, Any], index: int, value: Any, deposit: int) -> Any:
        if type(value) is not int or not 0 <= value <= deposit:
            raise BadMessage(f"an amount 0..{deposit}")
        return value

    def default(self, terms: Mapping[str, Any], index: int) -> Any | None:
        return 1

    def settle(
        self, terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
    ) -> Settlement:
        paid = [m or 0 for m in messages]
        if self.overpay:  # a broken rule: takes more from party 0 than it holds
            paid[0] += 10**6
            return Settlement(tuple(-p for p in paid), {seats.creator: sum(paid)})
        return Settlement(tuple(-p for p in paid), {seats.creator: sum(paid)}, outcome={"n": 1})


CREATOR, A, B, C, STRANGER = keys(5)


def chain(rule: PayWhatYouSay | None = None) -> tuple[SealedChain, PayWhatYouSay]:
    rule = rule or PayWhatYouSay()
    return SealedChain(engine_table(KernelEngine(rule)), [CREATOR, A, B, C, STRANGER]), rule


def opened(rule: PayWhatYouSay | None = None, penalty: int = 10) -> SealedChain:
    ch, _ = chain(rule)
    assert ch.create("toy", CREATOR, [A, B, C], penalty=penalty, terms={}) == "ok"
    return ch


def test_sealed_amounts_settle_on_the_last_reveal() -> None:
    ch = opened()
    for k, amount in ((A, 100), (B, 50), (C, 70)):
        assert ch.call(k, "deposit", amount=200) == "ok"
        assert ch.commit(k, amount) == "ok"
    assert ch.contract().phase == "reveal"
    assert ch.reveal(A, 100) == "ok" and ch.reveal(B, 50) == "ok"
    assert ch.state.contracts[ch.cid].escrow == 600  # locked until the last reveal
    assert ch.reveal(C, 70) == "ok"
    s = ch.contract()
    assert s.phase == "settled" and ch.state.contracts[ch.cid].escrow == 0
    assert ch.balance(CREATOR) == 10_000 + 220
    assert [ch.balance(k) for k in (A, B, C)] == [9_900, 9_950, 9_930]
    assert s.outcome["refunds"] == [100, 150, 130] and s.outcome["n"] == 1


def refused(ch: SealedChain, key: Any, op: str, reason: str, **args: Any) -> None:
    before = ch.state.contracts[ch.cid]
    got = ch.reveal(key, args["message"]) if op == "reveal!" else ch.call(key, op, **args)
    assert got == reason
    assert ch.state.contracts[ch.cid] == before, f"{op} changed the contract"


def test_foreign_duplicate_and_out_of_phase_calls_change_nothing() -> None:
    ch = opened()
    refused(ch, STRANGER, "deposit", "wrong_party", amount=5)
    refused(ch, A, "commit", "deposit_too_small", commitment=ch.seal(A, 5))  # penalty first
    assert ch.call(A, "deposit", amount=20) == "ok"
    refused(ch, A, "reveal", "out_of_phase", message=5, salt=b"\0" * 32)
    refused(ch, A, "withdraw", "bad_op")  # escrow is locked: there is no way to renege
    refused(ch, A, "commit", "bad_args", commitment=b"short")
    assert ch.commit(A, 5) == "ok"
    refused(ch, A, "commit", "already_committed", commitment=ch.seal(A, 6))
    for k in (B, C):
        assert ch.call(k, "deposit", amount=20) == "ok" and ch.commit(k, 30) == "ok"
    refused(ch, A, "deposit", "out_of_phase", amount=5)
    refused(ch, A, "reveal", "bad_reveal", message=6, salt=ch.salts[A.address])
    refused(ch, C, "reveal!", "bad_message", message=30)  # above its deposit of 20
    assert ch.reveal(A, 5) == "ok"
    refused(ch, A, "reveal!", "already_revealed", message=5)


def test_a_missing_reveal_forfeits_the_penalty_and_counts_as_the_default() -> None:
    ch = opened(penalty=10)
    for k in (A, B, C):
        assert ch.call(k, "deposit", amount=50) == "ok" and ch.commit(k, 20) == "ok"
    assert ch.reveal(A, 20) == "ok" and ch.reveal(B, 20) == "ok"
    burnt = ch.state.balance(BURN_ADDRESS)
    ch.wait(WINDOW + 1)
    s = ch.contract()
    assert s.phase == "settled" and [e.kind for e in s.history].count("withheld") == 1
    assert s.outcome["forfeits"] == [0, 0, 10]
    assert ch.balance(C) == 10_000 - 10 - 1  # the penalty, and the default amount 1
    assert ch.state.balance(BURN_ADDRESS) == burnt + 10
    refused(ch, C, "reveal!", "contract_closed", message=20)


def test_a_late_move_is_refused_after_the_deadline() -> None:
    ch = opened()
    assert ch.call(A, "deposit", amount=20) == "ok"
    late = ch.tx(A, "commit", commitment=ch.seal(A, 3))
    # Its block is stamped past the deadline: the move is refused, then the phase ends
    # (nobody committed, so the contract cancels and A's deposit comes back).
    assert ch.block(late, gap=WINDOW * SECOND) == ["deadline_passed"]
    assert ch.contract().phase == "cancelled" and ch.balance(A) == 10_000


@pytest.mark.parametrize("missing", ["absent", "cancel"])
def test_a_party_that_never_commits(missing: MissingCommit) -> None:
    ch = opened(PayWhatYouSay(missing_commit=missing))
    for k in (A, B):
        assert ch.call(k, "deposit", amount=40) == "ok" and ch.commit(k, 15) == "ok"
    assert ch.call(C, "deposit", amount=40) == "ok"  # deposits, never commits
    ch.wait(WINDOW + 1)
    s = ch.contract()
    if missing == "cancel":
        assert s.phase == "cancelled" and [ch.balance(k) for k in (A, B, C)] == [10_000] * 3
        return
    assert s.phase == "reveal" and any(e.kind == "absent" for e in s.history)
    assert ch.reveal(A, 15) == "ok" and ch.reveal(B, 15) == "ok"
    assert ch.contract().phase == "settled" and ch.balance(C) == 10_000


def test_unsafe_terms_and_bad_parties_are_refused_at_create() -> None:
    ch, _ = chain()
    assert ch.create("toy", CREATOR, [A, B], terms={"unsafe": True}) == "unsafe_design"
    assert ch.create("toy", CREATOR, [A, A], terms={}) == "bad_terms"
    assert ch.create("toy", CREATOR, [A], terms={}, windows=[0, 5]) == "bad_terms"
    assert ch.cid == b""


def test_a_settlement_that_would_pay_out_more_than_escrow_is_refused() -> None:
    rule = PayWhatYouSay()
    ch = opened(rule)
    for k in (A, B, C):
        assert ch.call(k, "deposit", amount=20) == "ok" and ch.commit(k, 5) == "ok"
    rule.overpay = True
    for k in (A, B, C):
        assert ch.reveal(k, 5) == "ok"
    s = ch.contract()  # refused, so cancelled: nothing made, every deposit back
    assert s.phase == "cancelled" and b"more than it holds" in s.history[-2].data
    assert [ch.balance(k) for k in (CREATOR, A, B, C)] == [10_000] * 4


MOVES = st.lists(
    st.tuples(
        st.sampled_from(["deposit", "commit", "reveal", "wait"]),
        st.sampled_from([0, 1, 2, 3]),  # A, B, C, or the stranger
        st.integers(0, 60),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(MOVES)
def test_any_sequence_of_moves_conserves_money_and_escrow(
    moves: list[tuple[str, int, int]],
) -> None:
    ch = opened(penalty=5)
    people = [A, B, C, STRANGER]
    for op, who, x in moves:
        key = people[who]
        if op == "wait":
            ch.wait(1 + x % 4)
        elif op == "deposit":
            ch.call(key, "deposit", amount=x)
        elif op == "commit":
            ch.commit(key, x)
        elif key.address in ch.salts:
            ch.reveal(key, x)
        record = ch.state.contracts[ch.cid]
        s = ch.contract()
        assert record.escrow == (sum(s.deposits) if record.active else 0)
    ch.wait(2 * WINDOW + 2)
    assert not ch.state.contracts[ch.cid].active and ch.state.contracts[ch.cid].escrow == 0
