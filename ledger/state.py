"""Ledger state and the pure state transition `apply_block(state, block)`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ledger.block import Batch, Block, BlockHeader, Genesis, tx_root
from ledger.encoding import Struct, Tag
from ledger.errors import InvalidBlock, MalformedTx
from ledger.merkle import merkle_root
from ledger.tx import EVIDENCE, TRANSFER, Tx, check_payload

OK = "ok"
BAD_NONCE = "bad_nonce"
INSUFFICIENT_FUNDS = "insufficient_funds"
MALFORMED = "malformed"


@dataclass(frozen=True)
class Account(Struct):
    TAG = Tag.ACCOUNT
    address: bytes
    balance: int
    nonce: int


@dataclass(frozen=True)
class Receipt(Struct):
    """The outcome of one tx in a block: `reason` is "ok" or why it changed nothing."""

    TAG = Tag.RECEIPT
    tx_id: bytes
    reason: str

    @property
    def ok(self) -> bool:
        return self.reason == OK


class State:
    """Balances and nonces by address.  Immutable: transitions return a new State."""

    __slots__ = ("_accounts", "_root")

    def __init__(self, accounts: Mapping[bytes, Account]) -> None:
        self._accounts = MappingProxyType(dict(accounts))
        self._root: bytes | None = None

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> State:
        return cls({a: Account(a, b, 0) for a, b in genesis.balances().items()})

    @property
    def accounts(self) -> Mapping[bytes, Account]:
        return self._accounts

    def account(self, address: bytes) -> Account:
        return self._accounts.get(address) or Account(address, 0, 0)

    def total_supply(self) -> int:
        return sum(a.balance for a in self._accounts.values())

    def root(self) -> bytes:
        if self._root is None:
            leaves = [self._accounts[a].encode() for a in sorted(self._accounts)]
            self._root = merkle_root(leaves)
        return self._root


def apply_tx(accounts: dict[bytes, Account], tx: Tx) -> str:
    """Apply one tx to `accounts` in place, or leave it untouched and return why not."""
    sender = accounts.get(tx.sender_address) or Account(tx.sender_address, 0, 0)
    if tx.nonce != sender.nonce:
        return BAD_NONCE
    try:
        check_payload(tx.kind, tx.payload)
    except MalformedTx:
        return MALFORMED
    if tx.kind == EVIDENCE:  # recorded in the chain; moves no funds
        accounts[sender.address] = Account(sender.address, sender.balance, sender.nonce + 1)
        return OK
    if tx.kind == TRANSFER:
        to, amount = tx.payload["to"], tx.payload["amount"]
        if sender.balance < amount:
            return INSUFFICIENT_FUNDS
        accounts[sender.address] = Account(
            sender.address, sender.balance - amount, sender.nonce + 1
        )
        dest = accounts.get(to) or Account(to, 0, 0)
        accounts[to] = Account(to, dest.balance + amount, dest.nonce)
    return OK


def apply_txs(state: State, txs: Iterable[Tx]) -> tuple[State, tuple[Receipt, ...]]:
    accounts = dict(state.accounts)
    receipts = tuple(Receipt(tx.tx_id, apply_tx(accounts, tx)) for tx in txs)
    return State(accounts), receipts


def receipts_root(receipts: Iterable[Receipt]) -> bytes:
    return merkle_root([r.encode() for r in receipts])


def execute_batch(
    state: State, parent: BlockHeader, batch: Batch
) -> tuple[Block, State, tuple[Receipt, ...]]:
    """Execute a committed batch on top of `parent`: the block every replica derives."""
    new_state, receipts = apply_txs(state, batch.txs)
    header = BlockHeader(
        chain_id=parent.chain_id,
        height=parent.height + 1,
        parent=parent.sha256(),
        timestamp_ms=max(batch.proposed_ms, parent.timestamp_ms),
        proposed_ms=batch.proposed_ms,
        proposer=batch.proposer,
        tx_root=tx_root(batch.txs),
        receipts_root=receipts_root(receipts),
        state_root=new_state.root(),
    )
    return Block(header, batch.txs, b""), new_state, receipts


def build_block(
    state: State, parent: BlockHeader, txs: tuple[Tx, ...], proposer: str, proposed_ms: int
) -> tuple[Block, State, tuple[Receipt, ...]]:
    """Execute `txs` as a batch proposed by `proposer` at `proposed_ms`."""
    batch = Batch(parent.chain_id, parent.height + 1, proposer, proposed_ms, txs)
    return execute_batch(state, parent, batch)


def apply_block(state: State, block: Block) -> tuple[State, tuple[Receipt, ...]]:
    """The state transition: a pure function of (state, block) that checks every root.

    Signatures and chain linkage are checked elsewhere (they need the chain id and
    parent, and signature checks are cached); this checks what execution decides.
    """
    header = block.header
    if tx_root(block.txs) != header.tx_root:
        raise InvalidBlock(f"block {header.height}: tx root mismatch")
    new_state, receipts = apply_txs(state, block.txs)
    if receipts_root(receipts) != header.receipts_root:
        raise InvalidBlock(f"block {header.height}: receipts root mismatch")
    if new_state.root() != header.state_root:
        raise InvalidBlock(f"block {header.height}: state root mismatch")
    return new_state, receipts


def genesis_header(genesis: Genesis) -> BlockHeader:
    """Height 0: its parent field is the genesis digest, so members and balances are bound in."""
    return BlockHeader(
        chain_id=genesis.chain_id,
        height=0,
        parent=genesis.sha256(),
        timestamp_ms=genesis.timestamp_ms,
        proposed_ms=genesis.timestamp_ms,
        proposer="",
        tx_root=tx_root(()),
        receipts_root=receipts_root(()),
        state_root=State.from_genesis(genesis).root(),
    )
