"""A public good decided by the pivot (Clarke) scheme.

Holmstrom, /work/shared/seeds/002_73efa823a2277c74.txt, Lecture 10: "VCG Mechanism" and
its "Example" (build or not build, social cost K, θ_i is i's willingness to pay; t_i = 0
if i is not pivotal, else i pays for the externality of its message), "Our example above
is called a pivot scheme" (h_i(m_-i) = -max_x sum_{j!=i} u_j(x, m_j)), and "Balancing the
Budget" (the pivot scheme runs a surplus, not a balanced budget).

Each agent i has a cost share c_i (the shares sum to the cost K) and reports a
willingness to pay θ_i in 0..cap.  With v_j = θ_j - c_j the good is built iff
sum_j θ_j >= K (sum_j v_j >= 0).  Agent i is pivotal when the decision without it
(build iff sum_{j!=i} v_j >= 0) differs; its Clarke tax is then |sum_{j!=i} v_j|, else 0.
Each agent pays its share when the good is built, plus its tax.  The builder
(seats.creator) receives K when the good is built, so the shares cover the cost exactly.

Where the surplus goes: the taxes are the scheme's budget surplus.  They go to the terms'
`surplus_to` account (an outsider, such as a charity or the builder) or are burnt
(`surplus_to` = b"", or when `surplus_to` is one of the agents).  The surplus is never
negative, because every tax is an absolute value (the slides: the pivot h_i guarantees
sum_i t_i <= 0, the principal never pays).  It must not go back to the agents: a rebate
to i of any part of the others' taxes depends on i's own report (through them), which
gives i a reason to misreport and breaks dominant-strategy incentive compatibility; an
outside account or a burn depends on no agent's utility.

`check_pivot` is the exact, exhaustive check on a grid of reports, run through the very
`settle_pivot` the contract runs; the designer reports it and `PivotRule.terms` re-runs
it at create for the properties the terms claim.  Ex post IR is reported but not
promised: an agent whose θ_i is below its share pays the share when others carry the
decision (the slides: "their IR may be violated").
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from contracts.kernel.checks import (
    Check,
    check_size,
    dsic_witness,
    first_failure,
    harness_seats,
    refuse_failed,
)
from contracts.kernel.rule import BadMessage, BadTerms, MissingCommit, Seats, Settlement

# The grid bounds are shared with the auction (one source).
from contracts.mechanisms.auction import MAX_CHECK_VALUES, MAX_VALUE
from ledger.crypto import ADDRESS_SIZE

MAX_AGENTS = 64
MAX_AMOUNT = MAX_VALUE  # the largest cost, share or cap
CHECKS = ("dsic", "budget", "surplus", "clarke", "deposit", "ir")


def _amount(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
        raise BadTerms(f"{what!r} must be an integer 0..{MAX_AMOUNT}, got {value!r}")
    return value


def _address(value: Any) -> bytes:
    """The surplus account: 20 bytes, or b"" to burn (a hex string is accepted too)."""
    if isinstance(value, str):
        try:
            value = bytes.fromhex(value)
        except ValueError:
            value = None
    if not isinstance(value, bytes) or len(value) not in (0, ADDRESS_SIZE):
        raise BadTerms(f"'surplus_to' must be a {ADDRESS_SIZE}-byte address or empty (burn)")
    return value


def parse_terms(args: Mapping[str, Any], parties: int) -> dict[str, Any]:
    """The terms in normal form (BadTerms when malformed; "unsafe_design" when the shares
    do not cover the cost)."""
    cost, cap = _amount(args.get("cost"), "cost"), _amount(args.get("cap"), "cap")
    shares = args.get("shares")
    if not isinstance(shares, list | tuple) or not 1 <= len(shares) <= MAX_AGENTS:
        raise BadTerms(f"'shares' must be a list of 1..{MAX_AGENTS} cost shares")
    shares = [_amount(c, "shares") for c in shares]
    if len(shares) != parties:
        raise BadTerms(f"{len(shares)} shares for {parties} parties: one share per party")
    if cost < 1:
        raise BadTerms("'cost' must be at least 1")
    if sum(shares) != cost:
        raise BadTerms(
            f"unsafe design: budget fails: the shares sum to {sum(shares)}, not the cost {cost}",
            reason="unsafe_design",
        )
    return {
        "cost": cost,
        "shares": shares,
        "cap": cap,
        "surplus_to": _address(args.get("surplus_to", b"")),
    }


def parse_verify(value: Any, cap: int) -> dict[str, Any]:
    """The optional "verify" block: the report grid a design was checked on, and its claims."""
    if not isinstance(value, Mapping):
        raise BadTerms("'verify' must be a map with values and claims")
    values, claims = value.get("values"), value.get("claims")
    if not isinstance(values, list | tuple) or not 1 <= len(values) <= MAX_CHECK_VALUES:
        raise BadTerms(f"verify 'values' must be a list of 1..{MAX_CHECK_VALUES} integers")
    if any(type(v) is not int or not 0 <= v <= cap for v in values):
        raise BadTerms(f"verify 'values' must be reports 0..cap ({cap})")
    if not isinstance(claims, list | tuple) or any(c not in CHECKS for c in claims):
        raise BadTerms(f"verify 'claims' must be a list of checks among {', '.join(CHECKS)}")
    return {"values": sorted(set(values)), "claims": [c for c in CHECKS if c in claims]}


class PivotRule:
    name: str = "pivot"
    missing_commit: MissingCommit = "cancel"  # the decision needs every agent's share

    def terms(self, args: Mapping[str, Any], parties: int) -> dict[str, Any]:
        terms = parse_terms(args, parties)
        if "verify" not in args:
            return terms
        verify = parse_verify(args["verify"], terms["cap"])
        try:
            checks = check_pivot(terms, verify["values"])
        except ValueError as e:
            raise BadTerms(str(e)) from e
        refuse_failed(checks, verify["claims"])
        return {**terms, "verify": verify}

    def min_deposit(self, terms: Mapping[str, Any], index: int) -> int:
        return min_deposit(terms, index)

    def message(self, terms: Mapping[str, Any], index: int, value: Any, deposit: int) -> Any:
        if type(value) is not int or not 0 <= value <= terms["cap"]:
            raise BadMessage(f"a report is a willingness to pay 0..{terms['cap']}, got {value!r}")
        return value

    def default(self, terms: Mapping[str, Any], index: int) -> Any | None:
        return 0  # a non-revealer is taken not to want the good

    def settle(
        self, terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
    ) -> Settlement:
        return settle_pivot(terms, messages, seats)


def min_deposit(terms: Mapping[str, Any], index: int) -> int:
    """c_i + max(c_i, cap - c_i): when built, i pays c_i plus a tax of at most
    θ_i - c_i <= cap - c_i; when not, a tax below c_i - θ_i <= c_i."""
    c = terms["shares"][index]
    return int(c + max(c, terms["cap"] - c))


def clarke(terms: Mapping[str, Any], reports: Sequence[int]) -> tuple[bool, list[bool], list[int]]:
    """The decision, who is pivotal, and each agent's Clarke tax."""
    net = [t - c for t, c in zip(reports, terms["shares"], strict=True)]
    total = sum(net)
    build = total >= 0  # ties build: the reports exactly cover the cost
    pivotal = [(total - v >= 0) != build for v in net]
    return build, pivotal, [abs(total - v) if p else 0 for v, p in zip(net, pivotal, strict=True)]


def settle_pivot(
    terms: Mapping[str, Any], messages: Sequence[Any | None], seats: Seats
) -> Settlement:
    reports = [0 if m is None else int(m) for m in messages]
    build, pivotal, taxes = clarke(terms, reports)
    pay = [c * build + tax for c, tax in zip(terms["shares"], taxes, strict=True)]
    surplus = sum(taxes)
    receipts: dict[bytes, int] = {seats.creator: terms["cost"]} if build else {}
    # A surplus account that is also an agent would hand it part of the others' taxes,
    # which its own report moves: that breaks DSIC, so the surplus is burnt instead.
    to = b"" if terms["surplus_to"] in seats.parties else terms["surplus_to"]
    if surplus and to:
        receipts[to] = receipts.get(to, 0) + surplus
    return Settlement(
        transfers=tuple(-p for p in pay),
        receipts=receipts,
        burn=0 if to else surplus,
        outcome={
            "build": build,
            "reports": reports,
            "pivotal": pivotal,
            "taxes": taxes,
            "payments": pay,
            "surplus": surplus,
            "surplus_to": to.hex(),  # "": burnt
        },
    )


# --- the exact checks: one function, run by the designer and by `terms` at create ---


def check_pivot(terms: Mapping[str, Any], values: Sequence[int]) -> dict[str, Check]:
    """Exact, exhaustive checks over every profile of reports from `values`, through
    `settle_pivot` itself: dsic (no profitable misreport at any profile), budget (when
    built, the builder gets K and the shares paid cover it; money is conserved), surplus
    (every tax >= 0, the surplus never negative, and it leaves to surplus_to or the burn,
    never to an agent), clarke (each tax equals max_x sum_{j!=i} v_j(x) minus
    sum_{j!=i} v_j(x*), the pivot h_i computed directly), deposit (every payment <=
    min_deposit), and ir (truthful utility >= 0: reported, not promised)."""
    grid = sorted(set(values))
    n = len(terms["shares"])
    check_size(len(grid), n)
    seats = harness_seats(n)
    played = {
        p: settle_pivot(terms, [grid[t] for t in p], seats)
        for p in itertools.product(range(len(grid)), repeat=n)
    }
    shares = terms["shares"]

    def utility(p: tuple[int, ...], i: int, true: int) -> int:
        s = played[p]
        return int((grid[true] - shares[i]) * s.outcome["build"] - s.outcome["taxes"][i])

    def reports(p: tuple[int, ...]) -> list[int]:
        return [grid[t] for t in p]

    lie = dsic_witness(len(grid), n, utility)
    if lie is not None:
        lie = {
            **lie,
            "profile": reports(tuple(lie["profile"])),
            "misreport": grid[lie["misreport"]],
        }
    return {
        "dsic": Check(lie is None, lie),
        "budget": first_failure(
            {"profile": reports(p)} for p, s in played.items() if not _budget_ok(terms, s, seats)
        ),
        "surplus": first_failure(
            {"profile": reports(p)} for p, s in played.items() if not _surplus_ok(terms, s, seats)
        ),
        "clarke": first_failure(
            {"profile": reports(p), "taxes": s.outcome["taxes"], "clarke": direct}
            for p, s in played.items()
            for direct in [direct_taxes(shares, reports(p))]
            if direct != s.outcome["taxes"]
        ),
        "deposit": first_failure(
            {"profile": reports(p), "payments": s.outcome["payments"]}
            for p, s in played.items()
            if any(-t > min_deposit(terms, i) for i, t in enumerate(s.transfers))
        ),
        "ir": first_failure(
            {"profile": reports(p), "agent": i, "utility": utility(p, i, p[i])}
            for p in played
            for i in range(n)
            if utility(p, i, p[i]) < 0
        ),
    }


def direct_taxes(shares: Sequence[int], reports: Sequence[int]) -> list[int]:
    """The pivot scheme's taxes straight from the slides' h_i: i pays
    max_x sum_{j!=i} v_j x - sum_{j!=i} v_j x*, x* the efficient decision (ties: build)."""
    net = [t - c for t, c in zip(reports, shares, strict=True)]
    x_star = 1 if sum(net) >= 0 else 0
    return [max(0, sum(net) - v) - (sum(net) - v) * x_star for v in net]


def _budget_ok(terms: Mapping[str, Any], s: Settlement, seats: Seats) -> bool:
    """Conserved, and when built the builder gets exactly K, which the shares paid cover."""
    cost = terms["cost"] * s.outcome["build"]
    to = bytes.fromhex(s.outcome["surplus_to"])
    surplus_too = s.outcome["surplus"] if to == seats.creator else 0
    shares_paid = sum(terms["shares"]) * s.outcome["build"]
    conserved = -sum(s.transfers) == sum(s.receipts.values()) + s.burn
    return conserved and s.receipts.get(seats.creator, 0) - surplus_too == cost == shares_paid


def _surplus_ok(terms: Mapping[str, Any], s: Settlement, seats: Seats) -> bool:
    """Every tax >= 0, and the surplus leaves to surplus_to or the burn, never to an agent."""
    surplus, to = s.outcome["surplus"], bytes.fromhex(s.outcome["surplus_to"])
    away = s.receipts.get(to, 0) if to else s.burn
    if to == seats.creator:
        away -= terms["cost"] * s.outcome["build"]
    to_agents = set(seats.parties) & set(s.receipts)
    return min(s.outcome["taxes"]) >= 0 and surplus == away >= 0 and not to_agents
