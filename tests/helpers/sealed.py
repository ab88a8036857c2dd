"""A one-process ledger for kernel contracts: sign calls, build a block per call, keep
each party's salts, and check after every block that money is conserved."""

from __future__ import annotations

from typing import Any

from contracts.kernel.engine import Sealed, commitment
from ledger.block import Genesis
from ledger.contract import Engines
from ledger.crypto import KeyPair
from ledger.state import State, build_block, genesis_header
from ledger.tx import Tx, contract_call

SECOND = 1000  # each block is one second of ledger time after its parent
CHAIN = "sealed-test"
WINDOW = 30  # seconds of ledger time for each phase, unless a test says otherwise


def keys(n: int, first: int = 1) -> list[KeyPair]:
    return [KeyPair(bytes([first + i]) * 32) for i in range(n)]


class SealedChain:
    def __init__(self, engines: Engines, funded: list[KeyPair], balance: int = 10_000) -> None:
        genesis = Genesis(CHAIN, 0, (), {k.address.hex(): balance for k in funded})
        self.state = State.from_genesis(genesis, engines)
        self.parent = genesis_header(genesis)
        self.nonces: dict[bytes, int] = {}
        self.cid = b""
        self.engine = ""
        self.salts: dict[bytes, bytes] = {}
        self.supply = self.state.total_supply()

    def block(self, *txs: Tx, gap: int = SECOND) -> list[str]:
        """One block, `gap` ms of ledger time after its parent."""
        block, self.state, receipts = build_block(
            self.state, self.parent, txs, "n0", self.parent.timestamp_ms + gap
        )
        self.parent = block.header
        assert self.state.total_supply() == self.supply, "money is conserved"
        return [r.reason for r in receipts]

    def tx(self, key: KeyPair, op: str, **args: Any) -> Tx:
        nonce = self.nonces.get(key.address, 0)
        tx = contract_call(key, CHAIN, nonce, self.engine, op, self.cid, args)
        self.nonces[key.address] = nonce + 1  # undone by `call` when the tx fails
        return tx

    def call(self, key: KeyPair, op: str, **args: Any) -> str:
        tx = self.tx(key, op, **args)
        (reason,) = self.block(tx)
        if reason != "ok":
            self.nonces[key.address] -= 1
        return reason

    def create(self, engine: str, creator: KeyPair, parties: list[KeyPair], **args: Any) -> str:
        self.engine, self.cid = engine, b""
        args.setdefault("windows", [WINDOW, WINDOW])
        tx = self.tx(creator, "create", parties=[k.address for k in parties], **args)
        (reason,) = self.block(tx)
        if reason == "ok":
            self.cid = tx.tx_id
        else:
            self.nonces[creator.address] -= 1
        return reason

    def seal(self, key: KeyPair, message: Any) -> bytes:
        salt = self.salts.setdefault(key.address, bytes([len(self.salts) + 1]) * 32)
        return commitment(self.cid, key.address, message, salt)

    def commit(self, key: KeyPair, message: Any) -> str:
        return self.call(key, "commit", commitment=self.seal(key, message))

    def reveal(self, key: KeyPair, message: Any) -> str:
        return self.call(key, "reveal", message=message, salt=self.salts[key.address])

    def wait(self, seconds: int) -> None:
        for _ in range(seconds):
            self.block()

    def contract(self) -> Sealed:
        return Sealed.decode(self.state.contracts[self.cid].data)

    def balance(self, key: KeyPair) -> int:
        return self.state.balance(key.address)
