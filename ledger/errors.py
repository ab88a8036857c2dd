"""Typed ledger errors.  Each has a stable name and a JSON-RPC application code."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error a ledger operation reports to a caller."""

    code = -32000
    name = "ledger_error"


class MalformedTx(LedgerError):
    code, name = -32010, "malformed_tx"


class BadSignature(LedgerError):
    code, name = -32011, "bad_signature"


class WrongChain(LedgerError):
    code, name = -32012, "wrong_chain_id"


class BadNonce(LedgerError):
    code, name = -32013, "bad_nonce"


class InsufficientFunds(LedgerError):
    code, name = -32014, "insufficient_funds"


class UnknownTx(LedgerError):
    code, name = -32015, "unknown_tx"


class UnknownBlock(LedgerError):
    code, name = -32016, "unknown_block"


class Overloaded(LedgerError):
    code, name = -32017, "overloaded"


class InvalidBlock(LedgerError):
    code, name = -32018, "invalid_block"


class UnknownContract(LedgerError):
    code, name = -32020, "unknown_contract"


class ContractRejected(LedgerError):
    """A contract would refuse this call now; `reason` is the receipt it would get."""

    code, name = -32019, "contract_rejected"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


ALL_ERRORS: tuple[type[LedgerError], ...] = (
    MalformedTx,
    BadSignature,
    WrongChain,
    BadNonce,
    InsufficientFunds,
    UnknownTx,
    UnknownBlock,
    Overloaded,
    InvalidBlock,
    ContractRejected,
    UnknownContract,
)
