"""Contract engines are given to a State explicitly, never registered by an import; the one
contract-call check serves block execution and the node's dry run alike; and the JSON-RPC codes
of ledger errors live in the RPC layer."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import ledger.contract
from contracts import registry
from contracts.design import exchange as designer
from contracts.exchange import ExchangeEngine
from ledger import errors
from ledger.block import Genesis
from ledger.contract import NO_ENGINES, ContractError, Engines, engine_table
from ledger.crypto import KeyPair
from ledger.errors import ContractRejected, InsufficientFunds, LedgerError
from ledger.state import (
    INSUFFICIENT_FUNDS,
    OK,
    UNKNOWN_CONTRACT,
    UNKNOWN_ENGINE,
    State,
    Unfunded,
    apply_txs,
    check_call,
)
from ledger.store import Store
from ledger.tx import Tx, contract_call
from node.engines import chain_engines
from node.process.methods import ledger_errors
from node.process.runtime import NodeRuntime
from node.rpc.errors import CODES, rpc_code
from node.rpc.jsonrpc import RpcError

ROOT = Path(__file__).resolve().parents[2]
SELLER, BUYER = KeyPair(bytes([1]) * 32), KeyPair(bytes([2]) * 32)
CHAIN = "engines-test"
GENESIS = Genesis(CHAIN, 0, (), {SELLER.address.hex(): 1_000, BUYER.address.hex(): 5})


def offer(key: KeyPair = SELLER, deposit: int = 10, contract_id: bytes = b"") -> Tx:
    """A well-formed exchange offer (price 100, each row pays 100 + both deposits)."""
    total = 100 + 2 * deposit
    args = {
        "role": "seller",
        "counterparty": (BUYER if key is SELLER else SELLER).address,
        "item": "a chair",
        "price": 100,
        "deposit_seller": deposit,
        "deposit_buyer": deposit,
        "table": [v for _ in range(8) for v in (100, total - 100, 0)],
        "windows": [3] * 5,
    }
    return contract_call(key, CHAIN, 0, "exchange", "offer", contract_id, args)


def receipt(engines: Engines, tx: Tx) -> tuple[State, str]:
    state = State.from_genesis(GENESIS, engines)
    after, (r,) = apply_txs(state, [tx], height=1)
    return after, r.reason


def dry_run(engines: Engines, tx: Tx) -> None:
    """The node's own pre-ordering check of a contract call, on a store with `engines`."""
    store = Store(":memory:", GENESIS, engines=engines)
    try:
        NodeRuntime._dry_run(SimpleNamespace(store=store), tx)  # type: ignore[arg-type]
    finally:
        store.close()


# -- engines are explicit ----------------------------------------------------------------


def test_a_state_runs_exactly_the_engines_it_was_given() -> None:
    # The exchange engine's module is imported (above, and by `contracts`): that changes nothing.
    assert "exchange" in registry.ENGINES
    without = registry.engines("risk_sharing")
    after, reason = receipt(without, offer())
    assert reason == UNKNOWN_ENGINE
    assert after.root() == State.from_genesis(GENESIS, without).root()  # nothing changed
    with pytest.raises(ContractError) as refused:
        check_call(State.from_genesis(GENESIS, without), offer(), 1)
    assert refused.value.reason == UNKNOWN_ENGINE and "'exchange'" in str(refused.value)

    after, reason = receipt(registry.engines("exchange"), offer())
    assert reason == OK
    (record,) = after.contracts.values()
    assert record.engine == "exchange" and record.escrow == 10
    assert after.engines is not None and set(after.engines) == {"exchange"}  # carried on

    _, reason = receipt(NO_ENGINES, offer())
    assert reason == UNKNOWN_ENGINE
    _, reason = receipt(engine_table(ExchangeEngine()), offer())  # any table, same outcome
    assert reason == OK


def test_the_node_runs_every_engine_of_the_registry() -> None:
    assert chain_engines() is registry.ENGINES
    assert set(chain_engines()) == {
        "exchange",
        "risk_sharing",
        "auction",
        "pivot",
        "agv",
        "bilateral",
    }
    assert State.from_genesis(GENESIS, chain_engines()).engines == registry.ENGINES


def test_nothing_registers_an_engine() -> None:
    assert not hasattr(ledger.contract, "ENGINES") and not hasattr(ledger.contract, "register")
    with pytest.raises(TypeError):
        registry.ENGINES["fake"] = ExchangeEngine()  # type: ignore[index]
    with pytest.raises(KeyError, match="no contract engine 'nope'"):
        registry.engines("nope")
    with pytest.raises(ValueError, match="two contract engines"):
        engine_table(ExchangeEngine(), ExchangeEngine())
    # Importing the packages loads no engine: nothing could register itself if it tried.
    probe = "import sys, contracts, node; print(sorted(m for m in sys.modules if '.' in m))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "contracts." not in loaded.stdout, loaded.stdout


def test_a_store_reopened_with_other_engines_executes_with_those() -> None:
    store = Store(":memory:", GENESIS, engines=NO_ENGINES)
    try:
        assert store.state.engines == {}
        _, (r,) = apply_txs(store.state, [offer()], height=1)
        assert r.reason == UNKNOWN_ENGINE
    finally:
        store.close()


# -- one contract-call check -------------------------------------------------------------


@pytest.mark.parametrize(
    ("engines", "tx", "reason", "rpc_error"),
    [
        (NO_ENGINES, offer(), UNKNOWN_ENGINE, ContractRejected),
        (chain_engines(), offer(contract_id=b"\x07" * 32), UNKNOWN_CONTRACT, ContractRejected),
        (chain_engines(), offer(BUYER), INSUFFICIENT_FUNDS, InsufficientFunds),  # 5 < 10
        (chain_engines(), offer(deposit=-1), "bad_offer", ContractRejected),  # the engine's
    ],
)
def test_execution_and_the_dry_run_refuse_for_the_same_reason(
    engines: Engines, tx: Tx, reason: str, rpc_error: type[LedgerError]
) -> None:
    _, executed = receipt(engines, tx)
    assert executed == reason
    with pytest.raises(rpc_error) as refused:
        dry_run(engines, tx)
    if isinstance(refused.value, ContractRejected):
        assert refused.value.reason == reason and str(refused.value).startswith(f"{reason}: ")
    else:
        assert "needs 10 in escrow; the balance is 5" in str(refused.value)


def test_a_debit_the_balance_cannot_cover_is_unfunded() -> None:
    with pytest.raises(Unfunded) as refused:
        check_call(State.from_genesis(GENESIS, chain_engines()), offer(BUYER), 1)
    assert refused.value.reason == INSUFFICIENT_FUNDS
    dry_run(chain_engines(), offer())  # a call that would execute passes


def test_the_dry_run_has_no_reasons_of_its_own() -> None:
    source = inspect.getsource(NodeRuntime._dry_run)
    assert "check_call" in source
    assert not {"unknown_engine", "unknown_contract", "insufficient_funds"} & set(
        _strings(ast.parse(source.strip()))
    )


def _strings(tree: ast.AST) -> list[str]:
    constants = (n.value for n in ast.walk(tree) if isinstance(n, ast.Constant))
    return [c for c in constants if isinstance(c, str)]


# -- the exchange engine owns the states it pays -------------------------------------------


def test_the_exchange_engine_does_not_import_its_designer() -> None:
    tree = ast.parse((ROOT / "contracts" / "exchange.py").read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    ]
    assert not [m for m in imported if m.startswith("contracts.design")]
    from contracts import exchange as engine

    assert designer.STATES is engine.STATES and len(engine.STATES) == 8
    assert engine.STATES[0] == "RCF" and engine.STATES[-1] == "XNN"


# -- JSON-RPC codes live in the RPC layer --------------------------------------------------

WIRE = {  # README "Ledger errors": what callers see, unchanged
    "ledger_error": -32000,
    "malformed_tx": -32010,
    "bad_signature": -32011,
    "wrong_chain_id": -32012,
    "bad_nonce": -32013,
    "insufficient_funds": -32014,
    "unknown_tx": -32015,
    "unknown_block": -32016,
    "overloaded": -32017,
    "invalid_block": -32018,
    "contract_rejected": -32019,
    "unknown_contract": -32020,
}


def test_ledger_errors_carry_names_but_no_codes() -> None:
    for cls in (LedgerError, *errors.ALL_ERRORS):
        assert not hasattr(cls, "code"), cls
    assert {cls.name for cls in CODES} == set(WIRE)
    assert set(errors.ALL_ERRORS) <= set(CODES)


def _raise(error: LedgerError) -> Any:
    async def method(params: dict[str, Any]) -> Any:
        raise error

    return ledger_errors(method)


@pytest.mark.parametrize("cls", errors.ALL_ERRORS)
async def test_each_ledger_error_answers_with_its_documented_code(
    cls: type[LedgerError],
) -> None:
    error = cls("why", "because") if cls is ContractRejected else cls("because")
    with pytest.raises(RpcError) as answer:
        await _raise(error)({})
    assert answer.value.code == WIRE[cls.name] == rpc_code(error)
    assert answer.value.message == str(error)
    assert answer.value.data == {"error": cls.name}


def test_an_error_without_a_code_of_its_own_answers_as_its_base() -> None:
    class Novel(errors.BadNonce):
        name = "novel"

    assert rpc_code(Novel("x")) == WIRE["bad_nonce"]
    assert rpc_code(LedgerError("x")) == WIRE["ledger_error"]
