"""Multiperiod risk sharing (Townsend) as a contract engine: a deterministic state machine.

Agent 1 (the villager) sees her income; agent 2 (the insurer) does not.  They
run a designed schedule of lotteries period by period:

    await_collateral -> commit -> report -> reveal [-> audit] -> (next period | closed)

- Both agents deposit the collateral the terms require; then period 1 begins.
- commit: each agent commits to a secret, H(contract, period, role, secret).
- report: agent 1 reports her income (an index into the schedule's incomes).
- reveal: each agent reveals its secret.  The draw u = H(contract, period,
  report, both secrets) mod resolution was fixed by the commitments before the
  report and is known to nobody until both reveal: agent 1 cannot aim her
  report at it, and neither agent can steer it.
- audit (when u falls in the report's audit range): the auditor, named at
  creation, signs the true income; agent 2 pays the audit fee; the transfer
  then comes from the lottery for (report, true income).
- The transfer is paid from the payer's balance when it covers it, otherwise
  from the payer's collateral.  After the last period the collateral returns.

Collateral covers the worst case of every period (largest payment, penalty and
audit fee), so nothing the contract owes can ever be short.  A move not made by
its window's end takes its default: a missing reveal costs the withholder the
penalty (paid to the other agent) and its commitment stands in for the secret;
a missing commitment or report is a breach: the breaching agent forfeits the
penalty plus the most the remaining periods could be expected to cost it, then
the contract closes, so walking away never pays; a missing verdict lets the
report stand, with no fee.  The penalty must exceed the largest difference a
draw or an avoided audit can make, so withholding a reveal never pays.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from contracts.risk_sharing.schedule import Schedule, schedule_from_args
from ledger.contract import (
    MAX_WINDOW,
    Context,
    ContractError,
    ContractRecord,
    ContractSummary,
    Effect,
)
from ledger.crypto import ADDRESS_SIZE
from ledger.encoding import MAX_INT, Struct, Tag, hash_bytes, pack

NAME = "risk_sharing"
WINDOWS = ("deposit", "commit", "report", "reveal", "audit")
ORDER = ("await_collateral", "commit", "report", "reveal", "audit")  # the active stages
CLOSED = ("closed", "cancelled")
OPS = {
    "deposit": "await_collateral",
    "commit": "commit",
    "report": "report",
    "reveal": "reveal",
    "audit": "audit",
}
ROLES = ("agent1", "agent2")
MAX_PERIODS = 1000
SECRET_SIZE = 32


@dataclass(frozen=True)
class RiskEvent(Struct):
    """One entry of the contract's immutable history."""

    TAG = Tag.RISK_EVENT
    height: int
    period: int
    kind: str  # create deposit start commit report reveal withheld draw audit no_verdict
    #            transfer fee penalty breach refund cancel
    by: str  # agent1, agent2, auditor, or "contract" for what the contract did itself
    tx_id: bytes  # the signed tx that caused it (empty for a deadline passing)
    amount: int  # report/verdict: income index; draw: u; transfer: tau; money otherwise
    data: bytes  # a commitment or a revealed secret
    note: str  # where a payment came from ("balance" or "collateral"), or what was drawn


@dataclass(frozen=True)
class RiskSharing(Struct):
    TAG = Tag.RISK_SHARING
    agent1: bytes
    agent2: bytes
    auditor: bytes
    schedule: Schedule
    periods: int
    windows: tuple[int, ...]  # seconds allowed for deposit, commit, report, reveal, audit
    penalty: int
    audit_fee: int
    collateral: tuple[int, ...]  # held for agent 1 and agent 2
    period: int  # the current period, from 1 (0 while collateral is awaited)
    stage: str
    deadline: int  # ledger time (ms, block timestamps) by which this stage is due
    commitments: tuple[bytes, ...]  # this period's, per agent; empty until made
    secrets: tuple[bytes, ...]  # this period's revealed secrets; empty until revealed
    reports: tuple[int, ...]  # every report so far, one per period
    draw: int  # this period's u, -1 until drawn
    history: tuple[RiskEvent, ...]

    def role(self, address: bytes) -> str | None:
        if address == self.agent1:
            return "agent1"
        if address == self.agent2:
            return "agent2"
        return "auditor" if address == self.auditor else None

    def address(self, role: str) -> bytes:
        return {"agent1": self.agent1, "agent2": self.agent2, "auditor": self.auditor}[role]

    def per_period(self, role: str) -> int:
        """The most one period can take from this agent's collateral: its largest payment,
        a withheld reveal's penalty and (agent 2, when the schedule audits) the audit fee."""
        agent = 1 if role == "agent1" else 2
        worst = self.schedule.max_payment(agent) + self.penalty
        if agent == 2 and self.schedule.audits:
            worst += self.audit_fee
        return worst

    def required(self, role: str) -> int:
        """Collateral that covers the worst case of every period for this agent."""
        return self.periods * self.per_period(role)

    def forfeit(self, role: str, period: int | None = None) -> int:
        """What walking away at `period` (default: now) costs: the penalty plus the most the
        remaining periods could be expected to cost the quitter, rounded up.  Staying costs
        at most the second part, so quitting loses at least the penalty at every history."""
        agent = 1 if role == "agent1" else 2
        remaining = self.periods - (self.period if period is None else period) + 1
        fee = self.audit_fee if agent == 2 else 0
        owed = remaining * self.schedule.worst_expected_payment(agent, fee)
        return self.penalty + -(-owed.numerator // owed.denominator)

    def round(self) -> tuple[int, tuple[int, ...]]:
        """(period within the design's horizon, this round's reports so far): a contract
        longer than the horizon renews the design every `horizon` periods."""
        horizon = self.schedule.horizon
        start = (self.period - 1) // horizon * horizon
        return self.period - start, self.reports[start : self.period]


def commitment(contract_id: bytes, period: int, role: str, secret: bytes) -> bytes:
    """What an agent commits to; binding the contract, period and role means a commitment
    cannot be copied from the other agent, another period or another contract."""
    return hash_bytes(b"tally/risk-commit" + pack([contract_id, period, role, secret]))


def draw_value(
    contract_id: bytes, period: int, report: int, seeds: tuple[bytes, ...], n: int
) -> int:
    """u in [0, n): the hash of both agents' secrets (or, for one withheld, its commitment)."""
    digest = hash_bytes(b"tally/risk-draw" + pack([contract_id, period, report, *seeds]))
    return int.from_bytes(digest, "big") % n  # bias below n / 2**256: none that matters


@dataclass
class _Flows:
    """The money one call moves, built up step by step: balance-first payments need to know
    what this call has already debited."""

    ctx: Context
    debits: dict[bytes, int] = field(default_factory=dict)
    credits: dict[bytes, int] = field(default_factory=dict)

    def debit(self, address: bytes, amount: int) -> None:
        self.debits[address] = self.debits.get(address, 0) + amount

    def credit(self, address: bytes, amount: int) -> None:
        if amount:
            self.credits[address] = self.credits.get(address, 0) + amount

    def available(self, address: bytes) -> int:
        return self.ctx.balance(address) - self.debits.get(address, 0)

    def effect(self, rs: RiskSharing) -> Effect:
        return Effect(rs.encode(), rs.stage not in CLOSED, dict(self.debits), dict(self.credits))


class RiskSharingEngine:
    name = NAME

    def apply(
        self, record: ContractRecord | None, op: str, args: Mapping[str, Any], ctx: Context
    ) -> Effect:
        if op == "create":
            if record is not None:
                raise ContractError("bad_op", "create makes a contract: send it without an id")
            return create(args, ctx)
        if record is None:
            raise ContractError("unknown_contract", "no such contract")
        if op not in OPS:
            raise ContractError(
                "bad_op", f"unknown risk-sharing op {op!r}; known: create, {', '.join(OPS)}"
            )
        rs = RiskSharing.decode(record.data)
        role = _check_move(rs, op, args, ctx)
        flows = _Flows(ctx)
        step = _Step(rs, record.contract_id, ctx, flows)
        getattr(step, "on_" + op)(role, args)
        return flows.effect(step.rs)

    def deadline(self, record: ContractRecord) -> int | None:
        rs = RiskSharing.decode(record.data)
        return rs.deadline if rs.stage not in CLOSED else None

    def describe(self, record: ContractRecord) -> ContractSummary:
        rs = RiskSharing.decode(record.data)
        return ContractSummary(rs.stage, tuple(dict.fromkeys((rs.agent1, rs.agent2, rs.auditor))))

    def on_deadline(self, record: ContractRecord, ctx: Context) -> Effect:
        """The defaults; this must never raise (it runs inside block execution)."""
        rs = RiskSharing.decode(record.data)
        flows = _Flows(ctx)
        step = _Step(rs, record.contract_id, ctx, flows)
        step.on_window_closed()
        return flows.effect(step.rs)


def create(args: Mapping[str, Any], ctx: Context) -> Effect:
    role = args.get("role")
    if role not in ROLES:
        raise ContractError("bad_terms", "'role' must be 'agent1' or 'agent2' (the creator's)")
    other, auditor = _address(args, "counterparty"), _address(args, "auditor")
    if len({ctx.sender, other, auditor}) != 3:
        raise ContractError("bad_terms", "agent 1, agent 2 and the auditor must all differ")
    schedule = schedule_from_args(args.get("schedule"))
    # reports are private: a schedule anyone could have hand-edited must make truth pay
    schedule.check_truth_telling()
    windows = args.get("windows")
    if not isinstance(windows, list) or len(windows) != len(WINDOWS):
        raise ContractError("bad_terms", f"'windows' must be {len(WINDOWS)} counts of seconds")
    periods = _int(args, "periods", 1, MAX_PERIODS, "bad_terms")
    penalty = _int(args, "penalty", 0, MAX_INT // (8 * MAX_PERIODS), "bad_terms")
    fee = _int(args, "audit_fee", 0, MAX_INT // (8 * MAX_PERIODS), "bad_terms")
    if penalty <= schedule.spread() + fee:
        raise ContractError(
            "bad_terms",
            f"'penalty' must exceed the largest transfer difference plus the audit fee "
            f"({schedule.spread() + fee}), so that withholding a reveal never pays",
        )
    a1, a2 = (ctx.sender, other) if role == "agent1" else (other, ctx.sender)
    rs = RiskSharing(
        a1,
        a2,
        auditor,
        schedule,
        periods,
        tuple(_int({"window": w}, "window", 1, MAX_WINDOW, "bad_terms") for w in windows),
        penalty,
        fee,
        (0, 0),
        0,
        "await_collateral",
        0,
        (b"", b""),
        (b"", b""),
        (),
        -1,
        (RiskEvent(ctx.height, 0, "create", role, ctx.tx_id, 0, b"", ""),),
    )
    rs = replace(rs, deadline=ctx.due(rs.windows[0]))
    _check_commitment(rs)
    return Effect(rs.encode(), True)


def _check_commitment(rs: RiskSharing) -> None:
    """Refuse terms under which walking away could pay (issue 16, finding 5).  At the start
    of period P each agent's collateral still holds at least (periods - P + 1) periods'
    worst case, and a breach at P takes `forfeit(role, P)` from it; the quitter saves at most
    the remaining periods' worst expected cost, which the forfeit exceeds by the penalty.
    Checked exactly (integers, Fractions) at every period for both agents."""
    for role in ROLES:
        for period in range(1, rs.periods + 1):
            held = (rs.periods - period + 1) * rs.per_period(role)
            forfeit = rs.forfeit(role, period)
            if rs.penalty < 1 or forfeit > held:  # staying costs at most forfeit - penalty
                raise ContractError(
                    "quitting_pays",
                    f"{role} walking away at period {period} would forfeit {forfeit} (its "
                    f"collateral then holds {held}), not more than staying could cost it",
                )


def _check_move(rs: RiskSharing, op: str, args: Mapping[str, Any], ctx: Context) -> str:
    """Who is moving, after refusing anything foreign, duplicate, early, late or stale."""
    if rs.stage in CLOSED:
        raise ContractError("contract_closed", f"the contract is {rs.stage}")
    role = rs.role(ctx.sender)
    allowed = {"report": ("agent1",), "audit": ("auditor",)}.get(op, ROLES)
    if role is None or role not in allowed:
        raise ContractError(
            "wrong_party", f"{op} is for {' or '.join(allowed)}, not {role or 'an outsider'}"
        )
    if op != "deposit":
        period = _int(args, "period", 0, MAX_INT)
        if rs.period == 0:
            raise ContractError("out_of_turn", "the contract has not begun: collateral is awaited")
        if period < rs.period:
            late = any(
                e.period == period and e.by == role and e.kind in ("withheld", "breach")
                for e in rs.history
            )
            raise ContractError(
                "deadline_passed" if late else "stale_period",
                f"period {period} is over; the contract is at period {rs.period}",
            )
        if period > rs.period:
            raise ContractError(
                "out_of_turn", f"period {period} has not begun; the contract is at {rs.period}"
            )
    wanted, now = ORDER.index(OPS[op]), ORDER.index(rs.stage)
    if wanted < now:
        raise ContractError("already_moved", f"{op} is over for this period (now {rs.stage})")
    if wanted > now:
        raise ContractError("out_of_turn", f"{op} comes later; the contract is at {rs.stage}")
    if ctx.time_ms > rs.deadline:
        raise ContractError(
            "deadline_passed", f"{rs.stage} was due by ledger time {rs.deadline} ms"
        )
    return role


class _Step:
    """One call's or one deadline's transition: the contract's new state and its money."""

    def __init__(self, rs: RiskSharing, cid: bytes, ctx: Context, flows: _Flows) -> None:
        self.rs, self.cid, self.ctx, self.flows = rs, cid, ctx, flows

    def event(self, kind: str, by: str, amount: int = 0, data: bytes = b"", note: str = "") -> None:
        e = RiskEvent(self.ctx.height, self.rs.period, kind, by, self.ctx.tx_id, amount, data, note)
        self.rs = replace(self.rs, history=(*self.rs.history, e))

    def to_stage(self, stage: str) -> None:
        window = self.rs.windows[WINDOWS.index("deposit" if stage == ORDER[0] else stage)]
        self.rs = replace(self.rs, stage=stage, deadline=self.ctx.due(window))

    # -- signed moves ------------------------------------------------------------------

    def on_deposit(self, role: str, args: Mapping[str, Any]) -> None:
        amount = _int(args, "amount", 1, MAX_INT)
        i = ROLES.index(role)
        need = self.rs.required(role) - self.rs.collateral[i]
        if need <= 0:
            raise ContractError("already_moved", f"{role}'s collateral is already complete")
        if amount > need:
            raise ContractError("bad_args", f"{role}'s collateral needs only {need} more")
        if self.flows.available(self.ctx.sender) < amount:
            raise ContractError("insufficient_funds", f"the balance does not cover {amount}")
        self.flows.debit(self.ctx.sender, amount)
        self._collateral(i, amount)
        self.event("deposit", role, amount)
        if all(self.rs.collateral[k] >= self.rs.required(r) for k, r in enumerate(ROLES)):
            self.rs = replace(self.rs, period=1)
            self.event("start", "contract")
            self.to_stage("commit")

    def on_commit(self, role: str, args: Mapping[str, Any]) -> None:
        c = _bytes(args, "commitment", 32)
        i = ROLES.index(role)
        if self.rs.commitments[i]:
            raise ContractError("already_moved", f"{role} has already committed this period")
        self.rs = replace(self.rs, commitments=_set(self.rs.commitments, i, c))
        self.event("commit", role, data=c)
        if all(self.rs.commitments):
            self.to_stage("report")

    def on_report(self, role: str, args: Mapping[str, Any]) -> None:
        n = len(self.rs.schedule.incomes)
        report = _int(args, "report", 0, n - 1)
        self.rs = replace(self.rs, reports=(*self.rs.reports, report))
        self.event("report", role, report)
        self.to_stage("reveal")

    def on_reveal(self, role: str, args: Mapping[str, Any]) -> None:
        secret = _bytes(args, "secret", SECRET_SIZE)
        i = ROLES.index(role)
        if self.rs.secrets[i]:
            raise ContractError("already_moved", f"{role} has already revealed this period")
        if commitment(self.cid, self.rs.period, role, secret) != self.rs.commitments[i]:
            raise ContractError("bad_reveal", f"the secret does not match {role}'s commitment")
        self.rs = replace(self.rs, secrets=_set(self.rs.secrets, i, secret))
        self.event("reveal", role, data=secret)
        if all(self.rs.secrets):
            self.draw()

    def on_audit(self, role: str, args: Mapping[str, Any]) -> None:
        true = _int(args, "income", 0, len(self.rs.schedule.incomes) - 1)
        self.event("audit", role, true)
        if self.rs.audit_fee:
            note = self.pay("agent2", self.rs.auditor, self.rs.audit_fee)
            self.event("fee", "agent2", self.rs.audit_fee, note=note)
        self.audited(true)

    # -- what the contract does itself -------------------------------------------------

    def on_window_closed(self) -> None:
        stage = self.rs.stage
        if stage == "await_collateral":
            self.event("cancel", "contract")
            self.close("cancelled")
        elif stage in ("commit", "report"):
            late = [r for r, c in zip(ROLES, self.rs.commitments, strict=True) if not c]
            for role in late if stage == "commit" else ["agent1"]:
                self.event("breach", role, note=f"no {stage}")
                self.penalise(role, self.rs.forfeit(role), "forfeit")
            self.close("closed")
        elif stage == "reveal":
            for role in (r for r, s in zip(ROLES, self.rs.secrets, strict=True) if not s):
                self.event("withheld", role)
                self.penalise(role)
            self.draw()
        else:  # audit: no verdict, so the report stands
            self.event("no_verdict", "auditor")
            self.audited(self.rs.reports[-1])

    def draw(self) -> None:
        rs = self.rs
        seeds = tuple(s or c for s, c in zip(rs.secrets, rs.commitments, strict=True))
        u = draw_value(self.cid, rs.period, rs.reports[-1], seeds, rs.schedule.resolution)
        t, reports = rs.round()
        j = rs.schedule.outcome(t, reports, u)
        self.rs = replace(rs, draw=u)
        self.event("draw", "contract", u, note="audit" if j is None else "transfer")
        if j is None:
            self.to_stage("audit")
        else:
            self.transfer(j)

    def audited(self, true: int) -> None:
        t, reports = self.rs.round()
        self.transfer(self.rs.schedule.audited_outcome(t, reports, true, self.rs.draw))

    def transfer(self, j: int) -> None:
        tau = self.rs.schedule.transfers[j]
        note = "none"
        if tau > 0:
            note = self.pay("agent1", self.rs.agent2, tau)
        elif tau < 0:
            note = self.pay("agent2", self.rs.agent1, -tau)
        self.event("transfer", "contract", tau, note=note)
        if self.rs.period == self.rs.periods:
            self.close("closed")
            return
        self.rs = replace(
            self.rs, period=self.rs.period + 1, commitments=(b"", b""), secrets=(b"", b""), draw=-1
        )
        self.to_stage("commit")

    def pay(self, role: str, to: bytes, amount: int) -> str:
        """From the payer's balance when it covers the amount, else from its collateral."""
        payer = self.rs.address(role)
        if self.flows.available(payer) >= amount:
            self.flows.debit(payer, amount)
            self.flows.credit(to, amount)
            return "balance"
        i = ROLES.index(role)
        take = min(amount, self.rs.collateral[i])  # the sizing of collateral makes this amount
        self._collateral(i, -take)
        self.flows.credit(to, take)
        return "collateral" if take == amount else f"collateral, short {amount - take}"

    def penalise(self, role: str, amount: int | None = None, note: str = "collateral") -> None:
        """The penalty (or a breach's forfeit) from `role`'s collateral to the other agent."""
        i = ROLES.index(role)
        take = min(self.rs.penalty if amount is None else amount, self.rs.collateral[i])
        self._collateral(i, -take)
        self.flows.credit(self.rs.address(ROLES[1 - i]), take)
        self.event("penalty", role, take, note=note)

    def close(self, stage: str) -> None:
        for i, role in enumerate(ROLES):
            back = self.rs.collateral[i]
            if back:
                self.flows.credit(self.rs.address(role), back)
                self._collateral(i, -back)
                self.event("refund", role, back)
        self.rs = replace(self.rs, stage=stage, deadline=0)

    def _collateral(self, i: int, delta: int) -> None:
        self.rs = replace(
            self.rs, collateral=_set(self.rs.collateral, i, self.rs.collateral[i] + delta)
        )


def _set(values: tuple[Any, ...], i: int, value: Any) -> tuple[Any, ...]:
    return (*values[:i], value, *values[i + 1 :])


def _address(args: Mapping[str, Any], key: str) -> bytes:
    v = args.get(key)
    if not isinstance(v, bytes) or len(v) != ADDRESS_SIZE:
        raise ContractError("bad_terms", f"{key!r} must be a {ADDRESS_SIZE}-byte address")
    return v


def _int(args: Mapping[str, Any], key: str, low: int, high: int, reason: str = "bad_args") -> int:
    v = args.get(key)
    if type(v) is not int or not low <= v <= high:
        raise ContractError(reason, f"{key!r} must be an integer in {low}..{high}")
    return v


def _bytes(args: Mapping[str, Any], key: str, size: int) -> bytes:
    v = args.get(key)
    if not isinstance(v, bytes) or len(v) != size:
        raise ContractError("bad_args", f"{key!r} must be {size} bytes")
    return v
