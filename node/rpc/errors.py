"""The JSON-RPC application codes of the typed ledger errors (README: "Ledger errors").

The ledger names its errors (`ledger/errors.py`); the numbers on the wire are the RPC
layer's, and live only here.  A ledger error answers with its code, its message, and
`data: {"error": NAME}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from ledger.errors import (
    BadNonce,
    BadSignature,
    ContractRejected,
    InsufficientFunds,
    InvalidBlock,
    LedgerError,
    MalformedTx,
    Overloaded,
    UnknownBlock,
    UnknownContract,
    UnknownTx,
    WrongChain,
)
from node.rpc.jsonrpc import RpcError

CODES: Mapping[type[LedgerError], int] = MappingProxyType(
    {
        LedgerError: -32000,  # any ledger error without a code of its own
        MalformedTx: -32010,
        BadSignature: -32011,
        WrongChain: -32012,
        BadNonce: -32013,
        InsufficientFunds: -32014,
        UnknownTx: -32015,
        UnknownBlock: -32016,
        Overloaded: -32017,
        InvalidBlock: -32018,
        ContractRejected: -32019,
        UnknownContract: -32020,
    }
)


def rpc_code(error: LedgerError) -> int:
    """The code of `error`'s class, or of its nearest ancestor that has one."""
    return next(CODES[c] for c in type(error).__mro__ if c in CODES)


def rpc_error(error: LedgerError) -> RpcError:
    """The JSON-RPC error a caller receives for `error`."""
    return RpcError(rpc_code(error), str(error), {"error": error.name})
