"""A submit_txs call that fails is tried again and, failing every time, counted; refused
txs are counted by reason: the load generator never loses txs silently (issue 18)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest

from node.bench import loadgen
from node.bench.loadgen import Run
from node.rpc.client import RpcUnavailable
from node.rpc.jsonrpc import RpcError

TXS = [(bytes([i]) * 32, f"{i:02x}") for i in range(4)]


class FlakyNode:
    def __init__(self, failures: int, refuse: Sequence[str] = ()) -> None:
        self.failures, self.refuse, self.calls = failures, set(refuse), 0

    async def submit_txs(self, txs: Sequence[str], *, size: int) -> list[Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise RpcUnavailable("connection reset")
        return [RpcError(-32000, "bad_nonce") if t in self.refuse else {} for t in txs]


def submitted_to(node: FlakyNode, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.setattr(loadgen, "RETRY_PAUSE_S", 0.0)
    run = Run.__new__(Run)  # no cluster: only what submit touches
    run.clients, run.batch = [node], 500  # type: ignore[list-item]
    run.submitted, run.refused, run.unsent = {}, set(), set()
    run.refusals, run.submit_errors = Counter(), Counter()
    asyncio.run(run.submit(0, TXS))
    return run


def test_a_call_that_fails_once_is_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    node = FlakyNode(failures=1)
    run = submitted_to(node, monkeypatch)
    assert node.calls == 2 and run.expected() == len(TXS)
    assert run.submit_errors == {"n0: connection reset": 1}


def test_a_call_that_always_fails_is_counted_unsent(monkeypatch: pytest.MonkeyPatch) -> None:
    node = FlakyNode(failures=loadgen.SUBMIT_ATTEMPTS)
    run = submitted_to(node, monkeypatch)
    assert node.calls == loadgen.SUBMIT_ATTEMPTS
    assert len(run.unsent) == len(TXS) and run.expected() == 0
    assert run.submit_errors == {"n0: connection reset": loadgen.SUBMIT_ATTEMPTS}


def test_refused_txs_are_counted_with_their_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    run = submitted_to(FlakyNode(failures=0, refuse=["01", "03"]), monkeypatch)
    assert run.rejected == 2 and run.refusals == {"bad_nonce": 2}
    assert run.refused == {TXS[1][0], TXS[3][0]} and run.expected() == 2


def test_the_summary_reports_what_was_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    run = submitted_to(FlakyNode(failures=loadgen.SUBMIT_ATTEMPTS), monkeypatch)
    run.rate, run.committed = 0, {}
    summary = loadgen.summarize(run, 0.0, 1.0)
    assert (summary["submitted"], summary["unsent"], summary["committed"]) == (4, 4, 0)
    assert summary["submit_errors"] == {"n0: connection reset": loadgen.SUBMIT_ATTEMPTS}


def test_a_healthy_run_reports_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    run = submitted_to(FlakyNode(failures=0), monkeypatch)
    run.rate, run.committed = 0, dict.fromkeys(run.submitted, 0.5)
    assert "unsent" not in loadgen.summarize(run, 0.0, 1.0)


def test_txs_never_seen_committed_are_looked_up_on_every_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Node:
        def __init__(self, answer: Any) -> None:
            self.answer = answer

        async def call(self, method: str, **params: Any) -> Any:
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

    run = submitted_to(FlakyNode(failures=0, refuse=["00"]), monkeypatch)
    run.committed = {TXS[1][0]: 0.5, TXS[2][0]: 0.5}
    run.clients = [Node({"height": 3}), Node({"status": "pending"}), Node(RpcError(-1, "no tx"))]  # type: ignore[list-item]
    run.cfg = SimpleNamespace(nodes=[SimpleNamespace(id=f"n{i}") for i in range(3)])  # type: ignore[assignment]
    (only,) = asyncio.run(run.explain_missing())  # TXS[0] was refused: not missing
    assert only == {
        "tx_id": TXS[3][0].hex(),
        "nodes": {"n0": 3, "n1": "pending", "n2": "[-1] no tx"},
    }
