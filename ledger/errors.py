"""Typed ledger errors.  Each has a stable name; the RPC layer (node/rpc/errors.py) gives
each its JSON-RPC code, so the ledger knows nothing of the wire."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error a ledger operation reports to a caller."""

    name = "ledger_error"


class MalformedTx(LedgerError):
    name = "malformed_tx"


class BadSignature(LedgerError):
    name = "bad_signature"


class WrongChain(LedgerError):
    name = "wrong_chain_id"


class BadNonce(LedgerError):
    name = "bad_nonce"


class InsufficientFunds(LedgerError):
    name = "insufficient_funds"


class UnknownTx(LedgerError):
    name = "unknown_tx"


class UnknownBlock(LedgerError):
    name = "unknown_block"


class Overloaded(LedgerError):
    name = "overloaded"


class InvalidBlock(LedgerError):
    name = "invalid_block"


class UnknownContract(LedgerError):
    name = "unknown_contract"


class ContractRejected(LedgerError):
    """A contract would refuse this call now; `reason` is the receipt it would get."""

    name = "contract_rejected"

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
