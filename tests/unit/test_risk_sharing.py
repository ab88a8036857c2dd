"""The risk-sharing contract in the ledger's state transition: designed schedules run period
by period, draws follow the lotteries exactly, money is conserved to the unit, and every
foreign, duplicate, early, late or stale message is refused and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from contracts.design.risk import RiskProblem, Utility, design_risk
from contracts.risk_sharing import RiskSharing, commitment, draw_value
from contracts.risk_sharing.engine import ORDER, ROLES
from contracts.risk_sharing.schedule import (
    Lottery,
    Schedule,
    schedule_args,
    schedule_from_args,
    schedule_from_design,
)
from ledger.block import Genesis
from ledger.contract import ContractError
from ledger.crypto import KeyPair
from ledger.state import State, build_block, genesis_header
from ledger.tx import contract_call
from node.engines import chain_engines

AGENT1, AGENT2, AUDITOR, STRANGER = (KeyPair(bytes([i]) * 32) for i in (1, 2, 3, 4))
ROLE = {AGENT1: "agent1", AGENT2: "agent2"}
CHAIN = "risk-test"
U = Utility.parse("crra:1.5")
GRID = tuple(-2 + 0.5 * k for k in range(9))
BASE = RiskProblem((1.0, 2.0, 3.0), (1 / 3, 1 / 3, 1 / 3), GRID, U, U, endowment=3.0)
TWO_PERIODS = schedule_from_design(design_risk(RiskProblem(**{**BASE.__dict__, "periods": 2})), 100)
AUDITED = schedule_from_design(
    design_risk(RiskProblem(**{**BASE.__dict__, "audit_cost": 1.0})), 100
)
WINDOW = 3  # seconds of ledger time
SECOND = 1000  # the test chain makes a block each second of ledger time
PENALTY = 450  # transfers span -200..200 and the audit fee is 7


def secret(*parts: int) -> bytes:
    return bytes(parts).rjust(32, b"\x00")


class Chain:
    """A ledger with the three parties, building one block per call."""

    def __init__(self, balance: int = 100_000, balances: dict[KeyPair, int] | None = None) -> None:
        funds = {AGENT1: balance, AGENT2: balance, STRANGER: balance, **(balances or {})}
        genesis = Genesis(CHAIN, 0, (), {k.address.hex(): v for k, v in funds.items()})
        self.state = State.from_genesis(genesis, chain_engines())
        self.parent = genesis_header(genesis)
        self.nonces = {k.address: 0 for k in (AGENT1, AGENT2, AUDITOR, STRANGER)}
        self.cid = b""
        self.supply = self.state.total_supply()

    def block(self, *txs: Any) -> list[str]:
        block, self.state, receipts = build_block(
            self.state, self.parent, txs, "n0", self.parent.timestamp_ms + SECOND
        )
        self.parent = block.header
        assert self.state.total_supply() == self.supply, "money is conserved"
        return [r.reason for r in receipts]

    def wait(self, blocks: int) -> None:
        for _ in range(blocks):
            self.block()

    def call(self, key: KeyPair, op: str, **args: Any) -> str:
        tx = contract_call(key, CHAIN, self.nonces[key.address], "risk_sharing", op, self.cid, args)
        (reason,) = self.block(tx)
        if reason == "ok":
            self.nonces[key.address] += 1
            if op == "create":
                self.cid = tx.tx_id
        return reason

    def create(self, schedule: Schedule = TWO_PERIODS, **changes: Any) -> str:
        self.cid = b""
        terms = {
            "role": "agent1",
            "counterparty": AGENT2.address,
            "auditor": AUDITOR.address,
            "schedule": schedule_args(schedule),
            "periods": 4,
            "windows": [WINDOW] * 5,
            "penalty": PENALTY,
            "audit_fee": 7,
        }
        return self.call(AGENT1, "create", **(terms | changes))

    @property
    def rs(self) -> RiskSharing:
        return RiskSharing.decode(self.state.contracts[self.cid].data)

    def open(self, schedule: Schedule = TWO_PERIODS, **changes: Any) -> None:
        assert self.create(schedule, **changes) == "ok"
        for key in (AGENT1, AGENT2):
            assert self.call(key, "deposit", amount=self.rs.required(ROLE[key])) == "ok"
        assert self.rs.stage == "commit" and self.rs.period == 1

    def commit_both(self, s1: bytes = secret(1), s2: bytes = secret(2)) -> None:
        p = self.rs.period
        for key, s in ((AGENT1, s1), (AGENT2, s2)):
            c = commitment(self.cid, p, ROLE[key], s)
            assert self.call(key, "commit", period=p, commitment=c) == "ok"

    def period(self, report: int, s1: bytes = secret(1), s2: bytes = secret(2)) -> None:
        """One honest period: commit, report, reveal (the draw and transfer follow)."""
        p = self.rs.period
        self.commit_both(s1, s2)
        assert self.call(AGENT1, "report", period=p, report=report) == "ok"
        assert self.call(AGENT1, "reveal", period=p, secret=s1) == "ok"
        assert self.call(AGENT2, "reveal", period=p, secret=s2) == "ok"

    def balance(self, key: KeyPair) -> int:
        return self.state.account(key.address).balance

    def check_books(self) -> None:
        """The contract holds exactly the collateral it reports, never a negative amount."""
        rs, record = self.rs, self.state.contracts[self.cid]
        assert record.escrow == sum(rs.collateral) and min(rs.collateral) >= 0
        assert rs.stage in (*ORDER, "closed", "cancelled")
        assert record.active == (rs.stage not in ("closed", "cancelled"))
        assert not any("short" in e.note for e in rs.history)


def money(rs: RiskSharing, role: str) -> int:
    """What the history says `role` gained: transfers, penalties and fees (not collateral)."""
    total = 0
    for e in rs.history:
        if e.kind == "transfer" and role != "auditor":
            total += -e.amount if role == "agent1" else e.amount
        elif e.kind == "penalty" and role != "auditor":
            total += -e.amount if e.by == role else e.amount
        elif e.kind == "fee":
            total += {"agent2": -e.amount, "auditor": e.amount}.get(role, 0)
    return total


# -- schedules and draws --------------------------------------------------------------------

SMALL = Schedule(
    (10, 20),
    (-5, 0, 5),
    12,
    1,
    (
        Lottery(1, (0,), 0, (3, 4, 1)),  # 8 of 12 unaudited, so audited 4 of 12
        Lottery(1, (0,), 1, (4, 0, 0)),
        Lottery(1, (0,), 2, (0, 1, 3)),
        Lottery(1, (1,), 0, (0, 12, 0)),
    ),
    ((1, 2, 3), (4, 5, 6)),
    ((1, 1, 2), (1, 1, 2)),
    (19, 20),
)


def test_every_draw_value_lands_on_the_lottery_in_proportion_to_its_weights() -> None:
    SMALL.check()
    outcomes = [SMALL.outcome(1, (0,), u) for u in range(12)]
    assert outcomes.count(None) == 4  # the audit range
    assert [outcomes.count(j) for j in range(3)] == [3, 4, 1]
    for true, weights in ((0, (4, 0, 0)), (1, (0, 1, 3))):
        after = [SMALL.audited_outcome(1, (0,), true, u) for u in range(4)]
        assert [after.count(j) for j in range(3)] == list(weights)
    assert {SMALL.outcome(1, (1,), u) for u in range(12)} == {1}


def test_draw_values_are_spread_evenly() -> None:
    cid = b"\x07" * 32
    counts = [0] * 4
    for i in range(4000):
        counts[draw_value(cid, 1, 0, (secret(i % 256, i // 256), secret(9)), 4)] += 1
    assert all(900 < c < 1100 for c in counts), counts


def test_designed_schedules_convert_and_round_trip() -> None:
    assert TWO_PERIODS.horizon == 2 and len(TWO_PERIODS.lotteries) == 3 + 9
    assert TWO_PERIODS.transfers == tuple(range(-200, 201, 50))
    assert AUDITED.audits and AUDITED.audit_weight(1, (0,)) > 0
    assert schedule_from_args(schedule_args(AUDITED)) == AUDITED
    with pytest.raises(ValueError, match="whole number"):
        schedule_from_design(design_risk(BASE), 3)  # 0.5 * 3 is not a ledger amount


BROKEN = {
    "missing lottery": lambda a: a["lotteries"].pop(),
    "wrong sum": lambda a: a["lotteries"][0][3].__setitem__(0, a["lotteries"][0][3][0] + 1),
    "negative weight": lambda a: a["lotteries"][0][3].__setitem__(0, -1),
    "short weights": lambda a: a["lotteries"][0][3].pop(),
    "extra lottery": lambda a: a["lotteries"].append([3, [0, 0, 0], 0, [0] * 8 + [10**6]]),
    "duplicate": lambda a: a["lotteries"].append(a["lotteries"][0]),
    "same incomes": lambda a: a["incomes"].__setitem__(1, a["incomes"][0]),
    "bool weight": lambda a: a["lotteries"][0][3].__setitem__(0, True),
    "missing key": lambda a: a.pop("horizon"),
    # would make validation count 3**(10**15) histories inside block execution
    "huge horizon": lambda a: a.__setitem__("horizon", 10**15),
}


@pytest.mark.parametrize("damage", list(BROKEN), ids=list(BROKEN))
def test_malformed_schedules_are_refused(damage: str) -> None:
    args = schedule_args(TWO_PERIODS)
    BROKEN[damage](args)
    with pytest.raises(ContractError) as info:
        schedule_from_args(args)
    assert info.value.reason == "bad_schedule"
    chain = Chain()
    assert chain.call(AGENT1, "create", **_terms(args)) == "bad_schedule"


def _terms(schedule: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {
        "role": "agent1",
        "counterparty": AGENT2.address,
        "auditor": AUDITOR.address,
        "schedule": schedule,
        "periods": 2,
        "windows": [WINDOW] * 5,
        "penalty": PENALTY,
        "audit_fee": 0,
    } | changes


BAD_TERMS: dict[str, dict[str, Any]] = {
    "penalty too small": {"penalty": 400},  # withholding could pay: spread is 400
    "penalty below spread plus fee": {"penalty": 405, "audit_fee": 5},
    "no periods": {"periods": 0},
    "auditor is a party": {"auditor": AGENT2.address},
    "counterparty is the creator": {"counterparty": AGENT1.address},
    "short windows list": {"windows": [3, 3]},
    "zero window": {"windows": [3, 0, 3, 3, 3]},
    "bad role": {"role": "insurer"},
    "bad address": {"auditor": b"\x01" * 5},
}


@pytest.mark.parametrize("case", list(BAD_TERMS), ids=list(BAD_TERMS))
def test_bad_terms_are_refused(case: str) -> None:
    chain = Chain()
    before = chain.state.root()
    reason = chain.call(AGENT1, "create", **_terms(schedule_args(TWO_PERIODS), **BAD_TERMS[case]))
    assert reason == "bad_terms"
    assert chain.state.contracts == {} and chain.balance(AGENT1) == 100_000
    assert chain.state.root() == before


# -- honest play ----------------------------------------------------------------------------


def test_an_honest_contract_runs_every_period_and_conserves_money() -> None:
    chain = Chain()
    chain.open(periods=6)
    start = {k: chain.balance(k) + chain.rs.collateral[i] for i, k in enumerate((AGENT1, AGENT2))}
    reports = [0, 2, 1, 1, 0, 2]
    for p, report in enumerate(reports, start=1):
        assert chain.rs.period == p
        chain.period(report, secret(p, 1), secret(p, 2))
        chain.check_books()
    rs = chain.rs
    assert rs.stage == "closed" and rs.collateral == (0, 0)
    assert chain.state.contracts[chain.cid].escrow == 0
    assert rs.reports == tuple(reports)
    kinds = [e.kind for e in rs.history if e.period == 1]
    assert kinds == ["start", "commit", "commit", "report", "reveal", "reveal", "draw", "transfer"]
    for key in (AGENT1, AGENT2):
        assert chain.balance(key) == start[key] + money(rs, ROLE[key])
    assert money(rs, "agent1") + money(rs, "agent2") == 0


def test_each_transfer_is_the_drawn_outcome_of_the_lottery_for_this_rounds_reports() -> None:
    """Periods 1-2 use the design's periods 1-2 with the reports of 1-2; period 3 starts a
    new round of the 2-period design: its lottery is keyed by its own report alone."""
    chain = Chain()
    chain.open(periods=4)
    reports = [2, 0, 1, 1]
    for report in reports:
        chain.period(report)
    draws = [e for e in chain.rs.history if e.kind == "draw"]
    transfers = [e.amount for e in chain.rs.history if e.kind == "transfer"]
    keys = [(1, (2,)), (2, (2, 0)), (1, (1,)), (2, (1, 1))]
    for (t, h), d, tau in zip(keys, draws, transfers, strict=True):
        j = TWO_PERIODS.outcome(t, h, d.amount)
        assert j is not None and TWO_PERIODS.transfers[j] == tau
        assert d.amount == draw_value(chain.cid, d.period, h[-1], (secret(1), secret(2)), 10**6)


def test_payments_come_from_collateral_when_the_balance_is_short() -> None:
    """Agent 2 holds nothing outside the contract: everything it owes comes from collateral,
    which the terms sized so that it is never short."""
    chain = Chain()
    chain.create(periods=5)
    need = chain.rs.required("agent2")
    chain = Chain(balances={AGENT2: need})
    chain.open(periods=5)
    assert chain.balance(AGENT2) == 0
    for p in range(1, 6):
        chain.period(0, secret(p), secret(p, 9))  # the lowest income: agent 2 pays
        chain.check_books()
    notes = {e.note for e in chain.rs.history if e.kind == "transfer" and e.amount < 0}
    assert notes == {"collateral"}
    assert chain.balance(AGENT2) == need + money(chain.rs, "agent2")


def test_collateral_is_required_before_the_first_period() -> None:
    chain = Chain()
    assert chain.create(windows=[20] * 5) == "ok"
    need = chain.rs.required("agent1")
    p = {"period": 1, "commitment": b"\x00" * 32}
    assert chain.call(AGENT1, "commit", **p) == "out_of_turn"
    assert chain.call(AGENT1, "deposit", amount=need + 1) == "bad_args"
    assert chain.call(AGENT1, "deposit", amount=need - 1) == "ok"
    assert chain.call(AGENT1, "deposit", amount=1) == "ok"
    assert chain.call(AGENT1, "deposit", amount=1) == "already_moved"
    assert chain.call(STRANGER, "deposit", amount=1) == "wrong_party"
    assert chain.rs.stage == "await_collateral"
    chain.wait(20)  # agent 2 never deposits: cancelled, agent 1's deposit comes back
    assert chain.rs.stage == "cancelled" and chain.balance(AGENT1) == 100_000
    assert chain.call(AGENT2, "deposit", amount=1) == "contract_closed"


# -- refusals -------------------------------------------------------------------------------


def test_foreign_duplicate_out_of_order_stale_and_late_messages_are_refused() -> None:
    chain = Chain()
    chain.open(windows=[30] * 5)  # long enough for every refusal below (a block each)
    s1, s2 = secret(1), secret(2)
    c1 = commitment(chain.cid, 1, "agent1", s1)

    def refused(key: KeyPair, op: str, reason: str, **args: Any) -> None:
        before = chain.state.contracts[chain.cid]
        assert chain.call(key, op, **args) == reason, (op, args)
        assert chain.state.contracts[chain.cid] == before, "a refused call changes nothing"

    refused(AGENT1, "report", "out_of_turn", period=1, report=0)  # before the commitments
    refused(AGENT1, "reveal", "out_of_turn", period=1, secret=s1)
    refused(STRANGER, "commit", "wrong_party", period=1, commitment=c1)
    refused(AUDITOR, "commit", "wrong_party", period=1, commitment=c1)
    refused(AGENT1, "commit", "out_of_turn", period=2, commitment=c1)  # early
    refused(AGENT1, "commit", "bad_args", period=1, commitment=b"short")
    refused(AGENT1, "fly", "bad_op", period=1)
    assert chain.call(AGENT1, "commit", period=1, commitment=c1) == "ok"
    refused(AGENT1, "commit", "already_moved", period=1, commitment=c1)  # duplicate
    assert (
        chain.call(AGENT2, "commit", period=1, commitment=commitment(chain.cid, 1, "agent2", s2))
        == "ok"
    )
    refused(AGENT2, "report", "wrong_party", period=1, report=0)
    refused(AGENT1, "report", "bad_args", period=1, report=3)  # only incomes 0..2
    assert chain.call(AGENT1, "report", period=1, report=1) == "ok"
    refused(AGENT1, "report", "already_moved", period=1, report=0)  # no second thoughts
    refused(AGENT1, "reveal", "bad_reveal", period=1, secret=s2)  # not its secret
    refused(AGENT2, "reveal", "bad_reveal", period=1, secret=s1)
    assert chain.call(AGENT1, "reveal", period=1, secret=s1) == "ok"
    refused(AGENT1, "reveal", "already_moved", period=1, secret=s1)
    assert chain.call(AGENT2, "reveal", period=1, secret=s2) == "ok"
    assert chain.rs.period == 2
    refused(AGENT1, "report", "stale_period", period=1, report=0)  # a replayed old report
    refused(AUDITOR, "audit", "stale_period", period=1, income=0)
    chain.commit_both()
    assert chain.call(AGENT1, "report", period=2, report=0) == "ok"
    assert chain.call(AGENT1, "reveal", period=2, secret=s1) == "ok"
    chain.wait(30)  # agent 2 withholds
    refused(AGENT2, "reveal", "deadline_passed", period=2, secret=s2)  # late


def test_a_commitment_cannot_be_copied_from_the_other_agent_or_another_period() -> None:
    chain = Chain()
    chain.open()
    s = secret(5)
    c1 = commitment(chain.cid, 1, "agent1", s)
    assert chain.call(AGENT1, "commit", period=1, commitment=c1) == "ok"
    assert chain.call(AGENT2, "commit", period=1, commitment=c1) == "ok"  # a copy
    assert chain.call(AGENT1, "report", period=1, report=0) == "ok"
    assert chain.call(AGENT1, "reveal", period=1, secret=s) == "ok"
    assert chain.call(AGENT2, "reveal", period=1, secret=s) == "bad_reveal"  # binds the role


# -- defaults and penalties -----------------------------------------------------------------


@pytest.mark.parametrize("withholder", [AGENT1, AGENT2], ids=["agent1", "agent2"])
def test_a_withheld_reveal_costs_the_penalty_and_never_pays(withholder: KeyPair) -> None:
    """Whatever secrets were drawn, the withholder ends worse off than by revealing: the
    penalty exceeds the largest difference the draw can make."""
    for k in range(6):
        s1, s2 = secret(k, 1), secret(k, 2)
        results = {}
        for withhold in (False, True):
            chain = Chain()
            chain.open(periods=1)
            chain.commit_both(s1, s2)
            chain.call(AGENT1, "report", period=1, report=k % 3)
            for key, s in ((AGENT1, s1), (AGENT2, s2)):
                if not (withhold and key is withholder):
                    assert chain.call(key, "reveal", period=1, secret=s) == "ok"
            chain.wait(WINDOW if withhold else 0)
            chain.check_books()
            assert chain.rs.stage == "closed"
            results[withhold] = chain.balance(withholder)
            if withhold:
                role = ROLE[withholder]
                assert [e.kind for e in chain.rs.history if e.by == role][-3:] == [
                    "withheld",
                    "penalty",
                    "refund",
                ]
                assert any(e.kind == "penalty" and e.amount == PENALTY for e in chain.rs.history)
        assert results[True] < results[False]


@pytest.mark.parametrize("stage", ["commit", "report"])
def test_a_missing_commitment_or_report_is_a_breach_that_ends_the_contract(stage: str) -> None:
    chain = Chain()
    chain.open(periods=3)
    c = commitment(chain.cid, 1, "agent2", secret(2))
    assert chain.call(AGENT2, "commit", period=1, commitment=c) == "ok"
    if stage == "report":
        c = commitment(chain.cid, 1, "agent1", secret(1))
        assert chain.call(AGENT1, "commit", period=1, commitment=c) == "ok"
    a1, a2 = chain.balance(AGENT1), chain.balance(AGENT2)
    held = chain.rs.collateral
    chain.wait(WINDOW)
    rs = chain.rs
    assert rs.stage == "closed" and [e.kind for e in rs.history[-4:-2]] == ["breach", "penalty"]
    assert chain.balance(AGENT1) == a1 + held[0] - PENALTY
    assert chain.balance(AGENT2) == a2 + held[1] + PENALTY
    chain.check_books()


# -- audits ---------------------------------------------------------------------------------


def audited_secret(chain: Chain, report: int, audit: bool) -> bytes:
    """Agent 2's secret that makes this period's draw call an audit (or not)."""
    a = AUDITED.audit_weight(1, (report,))
    for i in range(10_000):
        s2 = secret(i % 256, i // 256, 7)
        u = draw_value(chain.cid, chain.rs.period, report, (secret(1), s2), AUDITED.resolution)
        if (u < a) == audit:
            return s2
    raise AssertionError("no such secret")


@pytest.mark.parametrize("verdict", [0, 1, None], ids=["truthful", "caught lying", "no verdict"])
def test_an_audit_is_settled_by_the_auditors_verdict(verdict: int | None) -> None:
    chain = Chain()
    chain.open(AUDITED, periods=2)
    report = 0  # the lowest income is the one audited
    s2 = audited_secret(chain, report, audit=True)
    chain.period(report, secret(1), s2)
    assert chain.rs.stage == "audit"
    u = chain.rs.draw
    assert chain.call(AGENT1, "audit", period=1, income=0) == "wrong_party"
    fee_before = chain.balance(AUDITOR)
    if verdict is None:
        chain.wait(WINDOW)
        true = report
        assert chain.balance(AUDITOR) == fee_before  # no verdict, no fee
    else:
        assert chain.call(AUDITOR, "audit", period=1, income=verdict) == "ok"
        true = verdict
        assert chain.balance(AUDITOR) == fee_before + 7
    tau = next(e.amount for e in reversed(chain.rs.history) if e.kind == "transfer")
    assert tau == AUDITED.transfers[AUDITED.audited_outcome(1, (report,), true, u)]
    assert chain.rs.period == 2 and chain.rs.stage == "commit"
    chain.check_books()


def test_an_unaudited_draw_skips_the_auditor() -> None:
    chain = Chain()
    chain.open(AUDITED, periods=1)
    chain.period(0, secret(1), audited_secret(chain, 0, audit=False))
    assert chain.rs.stage == "closed"
    assert "audit" not in [e.kind for e in chain.rs.history]


# -- any sequence of messages ---------------------------------------------------------------

KEYS = [AGENT1, AGENT2, AUDITOR, STRANGER]
OPS = ["commit", "report", "reveal", "audit", "deposit", "wait"]
REASONS = {
    "ok",
    "wrong_party",
    "out_of_turn",
    "already_moved",
    "deadline_passed",
    "stale_period",
    "contract_closed",
    "bad_args",
    "bad_reveal",
    "insufficient_funds",
}


Message = tuple[int, str, int, int, bool]  # (sender, op, period offset, value, honest secret)


@st.composite
def messages(draw: st.DrawFn) -> list[Message]:
    """Random messages, more than half of them the protocol's next move (so runs get far)."""
    op = st.sampled_from(["next"] * 8 + OPS)
    message = st.tuples(
        st.integers(0, 3), op, st.integers(-1, 1), st.integers(-1, 3), st.booleans()
    )
    return draw(st.lists(message, min_size=10, max_size=80))


def next_move(chain: Chain, value: int) -> tuple[KeyPair, str, int]:
    """Who moves next in an honest run, what, and in which period."""
    rs = chain.rs
    if rs.stage == "await_collateral":
        i = 0 if rs.collateral[0] < rs.required("agent1") else 1
        return (AGENT1, AGENT2)[i], "deposit", 0
    if rs.stage in ("commit", "reveal"):
        done = rs.commitments if rs.stage == "commit" else rs.secrets
        return (AGENT2 if done[0] else AGENT1), rs.stage, rs.period
    return (AGENT1 if rs.stage == "report" else AUDITOR), rs.stage, rs.period


@settings(max_examples=150, deadline=None)
@given(messages(), st.booleans())
def test_any_message_sequence_conserves_money_and_stays_in_a_defined_state(
    msgs: list[Message], audited: bool
) -> None:
    chain = Chain()
    schedule = AUDITED if audited else TWO_PERIODS
    assert chain.create(schedule, periods=3, windows=[12] * 5) == "ok"
    for who, op, offset, value, honest in msgs:
        key, period = KEYS[who], max(chain.rs.period, 1) + offset
        if op == "next" and chain.rs.stage not in ("closed", "cancelled"):
            key, op, period = next_move(chain, value)
            value, honest = value % 3, True
        rs, role = chain.rs, ROLE.get(key, "agent1")
        s = secret(period, ROLES.index(role)) if honest else secret(99)
        calls: dict[str, dict[str, Any]] = {
            "commit": {"period": period, "commitment": commitment(chain.cid, period, role, s)},
            "report": {"period": period, "report": value},
            "reveal": {"period": period, "secret": s},
            "audit": {"period": period, "income": value},
            "deposit": {"amount": rs.required(role) - rs.collateral[ROLES.index(role)]},
        }
        args = calls.get(op, {})
        if op in ("wait", "next"):
            chain.wait(max(value, 1))
        else:
            assert chain.call(key, op, **args) in REASONS
        chain.check_books()
    chain.wait(4 * 5 * 12)  # every window runs out: the contract must end
    kinds = {e.kind for e in chain.rs.history}
    event(
        "reached: "
        + ", ".join(k for k in ("transfer", "audit", "withheld", "breach") if k in kinds)
    )
    event(f"periods completed: {sum(e.kind == 'transfer' for e in chain.rs.history)}")
    rs = chain.rs
    assert rs.stage in ("closed", "cancelled") and rs.collateral == (0, 0)
    for key in (AGENT1, AGENT2):
        assert chain.balance(key) == 100_000 + money(rs, ROLE[key])
    assert chain.balance(AUDITOR) == money(rs, "auditor")
    assert len(rs.reports) <= 3 and all(0 <= r <= 2 for r in rs.reports)


# -- truth-telling, re-checked by the contract (issue 16) -----------------------------------

PUBLIC = schedule_from_design(design_risk(RiskProblem(**{**BASE.__dict__, "public": True})), 100)


def test_the_honest_private_designs_are_incentive_compatible_and_accepted() -> None:
    for schedule in (TWO_PERIODS, AUDITED):
        assert schedule.truth_telling() == []
        chain = Chain()
        assert chain.create(schedule) == "ok"


def test_a_full_information_design_cannot_be_created() -> None:
    lies = PUBLIC.truth_telling()
    assert "period 1 after reports []: income 300 gains 0.154701 by reporting 100" in lies
    with pytest.raises(ContractError) as info:
        PUBLIC.check_truth_telling()
    assert info.value.reason == "not_incentive_compatible"
    chain = Chain()
    before = chain.state.root()
    assert chain.create(PUBLIC) == "not_incentive_compatible"
    assert chain.state.contracts == {} and chain.state.root() == before


def _edited(change: Any) -> dict[str, Any]:
    args = schedule_args(TWO_PERIODS)
    change(args)
    return args


HAND_EDITED = {
    # period 1: a report of 3 now pays the villager 2, the most on the grid
    "richer top report": lambda a: next(
        lot for lot in a["lotteries"] if lot[:3] == [1, [2], 0]
    ).__setitem__(3, [10**6] + [0] * 8),
    # period 2 after a report of 1: a report of 1 pays her 2 (and an income of 3 says 1)
    "period 2 after 1": lambda a: next(
        lot for lot in a["lotteries"] if lot[:3] == [2, [0, 0], 0]
    ).__setitem__(3, [10**6] + [0] * 8),
    # the declared utility makes an income of 3 prefer the lowest consumption
    "inverted utility": lambda a: a["utility"].__setitem__(2, [-x for x in a["utility"][2]]),
}


@pytest.mark.parametrize("edit", list(HAND_EDITED), ids=list(HAND_EDITED))
def test_a_hand_edited_schedule_that_breaks_truth_telling_is_refused(edit: str) -> None:
    args = _edited(HAND_EDITED[edit])
    schedule = schedule_from_args(args)  # well formed
    with pytest.raises(ContractError, match=r"gains .* by reporting") as info:
        schedule.check_truth_telling()
    assert info.value.reason == "not_incentive_compatible"
    chain = Chain()
    assert chain.call(AGENT1, "create", **_terms(args)) == "not_incentive_compatible"
    assert chain.state.contracts == {}


def test_a_schedule_without_agent_1s_utility_is_malformed() -> None:
    for key, value in (("utility", []), ("beliefs", [[1, 2]] * 3), ("discount", [2, 1])):
        args = schedule_args(TWO_PERIODS) | {key: value}
        with pytest.raises(ContractError) as info:
            schedule_from_args(args)
        assert info.value.reason == "bad_schedule"
