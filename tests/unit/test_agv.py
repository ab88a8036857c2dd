"""AGV: Holmstrom's public-good numbers, the exact checks refusing tampered schedules, the
rule's messages, deposits and settlement (sums exactly 0, expectation exactly t), a run on
the ledger, and the CLI."""

from __future__ import annotations

import copy
import json
from fractions import Fraction
from typing import Any

import pytest

from contracts.design.agv import (
    AgvDesignError,
    AgvProblem,
    default_terms,
    design_agv,
    public_good,
)
from contracts.kernel import lottery
from contracts.kernel.engine import KernelEngine
from contracts.kernel.rule import BadMessage, BadTerms, Seats
from contracts.mechanisms.agv import (
    MAX_AGENTS,
    MAX_PROFILES,
    RULE,
    check_agv,
    parse_terms,
    profile_index,
)
from ledger.contract import engine_table
from node.cli import design_agv as agv_cli
from tests.helpers.contracts import design_cli
from tests.helpers.sealed import WINDOW, SealedChain, keys

F = Fraction


def example() -> dict[str, Any]:
    """Three agents, willingness to pay 0, 40 or 80 (each 1/3), building costs 120."""
    return design_agv(public_good((0, 40, 80), (F(1, 3),) * 3, 120, 3)).terms


def seats(n: int, draw: bytes = b"\0" * 32) -> Seats:
    return Seats(b"c" * 32, b"b" * 20, tuple(bytes([i]) * 20 for i in range(n)), draw)


def exact(terms: dict[str, Any], reports: list[int]) -> list[Fraction]:
    k = profile_index(terms["types"], reports)
    return [lottery.fraction(v, "t") for v in terms["transfers"][k]]


def test_public_good_numbers() -> None:
    d = design_agv(public_good((0, 40, 80), (F(1, 3),) * 3, 120, 3))
    assert d.verified and all(d.checks.values())
    t = d.terms
    # tbar^VCG(m) = E[v2 + v3; build] with v = value - 40: 80/9 at 0, 160/9 at 40 and 80
    assert d.expected_vcg[0] == (F(80, 9), F(160, 9), F(160, 9))
    assert exact(t, [2, 0, 0]) == [F(80, 9), F(-40, 9), F(-40, 9)]
    assert exact(t, [0, 1, 1]) == [F(-80, 9), F(40, 9), F(40, 9)]
    assert exact(t, [1, 1, 1]) == [0, 0, 0]
    assert d.expected_agv[0] == (F(-160, 27), F(80, 27), F(80, 27))
    assert d.interim_utility[0] == (F(-280, 27), F(80, 27), F(800, 27))  # low type: IR fails
    assert d.budget == {"agv": (F(0), F(0)), "vcg": (F(0), F(240)), "pivot": (F(-40), F(0))}
    assert d.bic_slack == 0
    names = [t["decisions"][x] for x in t["decision"]]
    assert names.count("build") == 10  # sum of values > 120: strictly (a tie skips)
    assert names[profile_index(t["types"], [0, 1, 2])] == "skip"  # 0 + 40 + 80 == 120
    j = d.to_json()
    assert j["mechanism"] == "agv" and j["terms"] == t
    assert j["interim_ir"] is False
    assert j["agv_minus_vcg"] == ["-400/27"] * 3 and j["agv_minus_pivot"] == ["80/27"] * 3


def test_terms_are_their_own_normal_form() -> None:
    t = example()
    assert check_agv(t) == []
    assert RULE.terms(t, 3) == t
    json.dumps(t)  # plain values


def refusal(terms: dict[str, Any], parties: int = 3) -> BadTerms:
    with pytest.raises(BadTerms) as e:
        RULE.terms(terms, parties)
    return e.value


def test_a_tampered_transfer_is_refused_as_unsafe() -> None:
    t = copy.deepcopy(example())
    t["transfers"][5][0] = lottery.stored(lottery.fraction(t["transfers"][5][0], "t") + 1)
    e = refusal(t)
    assert e.reason == "unsafe_design" and "budget_balanced" in str(e)
    assert any(f.startswith("budget_balanced: ") and "#5" in f for f in check_agv(t))


def test_a_balanced_tamper_that_pays_a_lie_is_refused_as_not_bic() -> None:
    t = copy.deepcopy(example())
    # agent 0 gets 100 more whenever it reports 80, agent 1 pays it: still balanced
    for k in range(18, 27):
        row = [lottery.fraction(v, "t") for v in t["transfers"][k]]
        row[0], row[1] = row[0] + 100, row[1] - 100
        t["transfers"][k] = [lottery.stored(v) for v in row]
    failures = check_agv(t)
    assert [f.split(":")[0] for f in failures] == ["bayesian_ic"]
    assert "agent 0 type 0" in failures[0]
    assert refusal(t).reason == "unsafe_design"


def test_an_inefficient_decision_is_refused() -> None:
    t = copy.deepcopy(example())
    k = profile_index(t["types"], [2, 2, 2])
    t["decision"][k] = 0  # skip although 240 > 120
    e = refusal(t)
    assert e.reason == "unsafe_design" and "efficient" in str(e)


def test_a_bad_prior_is_refused() -> None:
    t = copy.deepcopy(example())
    t["prior"][1] = [[1, 2], [1, 2], [0, 1]]
    assert refusal(t).reason == "unsafe_design"
    assert any(f.startswith("prior: agent 1") for f in check_agv(t))


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.pop("prior"),
        lambda t: t.update(extra=1),
        lambda t: t["transfers"].pop(),
        lambda t: t["decision"].__setitem__(0, 2),
        lambda t: t["types"][0].__setitem__(1, "0"),  # a repeated type name
        lambda t: t["utility"][0][0].__setitem__(0, [1, 0]),  # denominator 0
        lambda t: t["transfers"][0].__setitem__(0, [1, 10**13]),  # beyond MAX_DENOMINATOR
        lambda t: t["default_report"].__setitem__(2, 3),
        lambda t: t.update(types=[["a"]] * (MAX_AGENTS + 1)),
    ],
)
def test_malformed_terms_are_bad_terms(change: Any) -> None:
    t = copy.deepcopy(example())
    change(t)
    assert refusal(t).reason == "bad_terms"
    assert check_agv(t)[0].startswith("shape: ")


def test_limits_come_from_the_mechanism() -> None:
    with pytest.raises(AgvDesignError, match=str(MAX_PROFILES)):
        public_good((0, 40, 80), (F(1, 3),) * 3, 320, 8)  # 3**8 profiles
    assert refusal(example(), parties=4).reason == "bad_terms"
    for n in range(2, MAX_AGENTS + 1):
        assert len(parse_terms(default_terms(n)).types) == n


def test_messages_defaults_and_deposits() -> None:
    t = example()
    assert RULE.message(t, 1, 2, 0) == 2
    assert RULE.message(t, 1, "40", 0) == 1  # a type name, normalised to its index
    for bad in (3, -1, True, "50", [1]):
        with pytest.raises(BadMessage):
            RULE.message(t, 1, bad, 100)
    assert RULE.default(t, 0) == 0
    # the most anyone pays is 80/9 (reporting 0 against two higher reports): ceil is 9
    assert [RULE.min_deposit(t, i) for i in range(3)] == [9, 9, 9]


def test_settle_sums_to_zero_within_floor_and_ceil() -> None:
    t = example()
    for k, reports in enumerate(parse_terms(t).profiles()):
        want = exact(t, list(reports))
        for d in range(20):
            s = RULE.settle(t, list(reports), seats(3, bytes([k, d]) * 16))
            assert sum(s.transfers) == 0 and s.burn == 0 and not s.receipts
            assert all(v // 1 <= p <= -(-v // 1) for p, v in zip(s.transfers, want, strict=True))
            assert s.outcome["exact_transfers"] == [lottery.stored(v) for v in want]
    s = RULE.settle(t, [2, 0, None], seats(3))  # None: the default report
    assert s.outcome["reports"] == ["80", "0", "0"] and s.outcome["decision"] == "skip"


def test_settle_pays_exactly_t_in_expectation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Enumerate every offset the draw can give round_preserving: the mean is t exactly."""
    t = example()
    reports = [2, 0, 0]
    want = exact(t, reports)  # 80/9, -40/9, -40/9: common denominator 9
    total = [Fraction(0)] * 3
    for offset in range(9):
        monkeypatch.setattr(lottery, "uniform", lambda draw, label, m, o=offset: o % m)
        paid = RULE.settle(t, reports, seats(3)).transfers
        total = [a + b for a, b in zip(total, paid, strict=True)]
    assert [x / 9 for x in total] == want


def test_problem_validation() -> None:
    with pytest.raises(AgvDesignError):
        public_good((0, 40), (F(1, 2),) * 3)
    with pytest.raises(AgvDesignError):
        public_good((0, 40), (F(1, 2), F(1, 3)))
    with pytest.raises(AgvDesignError):
        AgvProblem(("a",), (("x",),), ((F(1),),), (((F(0),),),))  # one agent
    with pytest.raises(AgvDesignError, match="per decision"):
        AgvProblem(("a", "b"), (("x",),) * 2, ((F(1),),) * 2, (((F(0),),),) * 2)


CREATOR, A, B, C = keys(4)


def test_on_the_ledger_a_withheld_reveal_forfeits_and_counts_as_the_default() -> None:
    ch = SealedChain(engine_table(KernelEngine(RULE)), [CREATOR, A, B, C])
    assert ch.create("agv", CREATOR, [A, B, C], penalty=5, terms={"x": 1}) == "bad_terms"
    t = copy.deepcopy(example())
    t["decision"][26] = 0
    assert ch.create("agv", CREATOR, [A, B, C], penalty=5, terms=t) == "unsafe_design"
    assert ch.create("agv", CREATOR, [A, B, C], penalty=5, terms=example()) == "ok"
    assert ch.call(A, "deposit", amount=13) == "ok"
    assert ch.commit(A, 2) == "deposit_too_small"  # the penalty 5 plus ceil(80/9) = 9
    assert ch.call(A, "deposit", amount=1) == "ok" and ch.commit(A, 2) == "ok"
    for k, report in ((B, 0), (C, 1)):
        assert ch.call(k, "deposit", amount=14) == "ok" and ch.commit(k, report) == "ok"
    assert ch.reveal(A, 2) == "ok" and ch.reveal(B, 0) == "ok"
    ch.wait(WINDOW + 1)  # C never reveals: it forfeits 5 and counts as reporting 0
    s = ch.contract()
    assert s.phase == "settled"
    assert s.outcome["reports"] == ["80", "0", "0"] and s.outcome["forfeits"] == [0, 0, 5]
    assert sum(s.outcome["transfers"]) == 0
    assert s.outcome["exact_transfers"] == [[80, 9], [-40, 9], [-40, 9]]
    paid = s.outcome["transfers"]
    assert [ch.balance(k) for k in (A, B, C)] == [
        10_000 + paid[0],
        10_000 + paid[1],
        9_995 + paid[2],
    ]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    return design_cli(agv_cli, capsys, "agv", *argv)


def test_cli_json_and_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_cli(capsys, "--json")
    assert code == 0
    j = json.loads(out)
    assert j["terms"] == example() and all(j["checks"].values())
    code, out = run_cli(capsys, "--agents", "2", "--values", "0,10", "--probs", "1/4,3/4")
    assert code == 0 and "verified exactly" in out and "budget_balanced" in out
    code, out = run_cli(capsys, "--agents", "9")
    assert code == 1 and "no AGV design" in out
    code, out = run_cli(capsys, "--json", "--probs", "1/2,1/2,1/2")
    assert code == 1 and json.loads(out)["error"] == "no_design"
