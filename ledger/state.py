"""Ledger state and the pure state transition `apply_block(state, block)`.

A State carries the contract engines it executes (name -> engine), given by whoever
builds it: the ledger never imports `contracts/`, and no engine registers itself, so a
block's outcome depends only on (state, block), never on what was imported.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, cast

from ledger import smt
from ledger.block import Batch, Block, BlockHeader, Genesis, tx_root
from ledger.contract import (
    BURN_ADDRESS,
    NO_ENGINES,
    Context,
    ContractError,
    ContractRecord,
    Effect,
    Engine,
    Engines,
)
from ledger.encoding import Struct, Tag, hash_bytes
from ledger.errors import InvalidBlock, MalformedTx
from ledger.merkle import merkle_root
from ledger.smt import MemoryNodeStore, NodeStore
from ledger.tx import CONTRACT, EVIDENCE, TRANSFER, Tx, check_payload

OK = "ok"
BAD_NONCE = "bad_nonce"
INSUFFICIENT_FUNDS = "insufficient_funds"
MALFORMED = "malformed"
UNKNOWN_ENGINE = "unknown_engine"
UNKNOWN_CONTRACT = "unknown_contract"


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
    """Balances and nonces by address, contracts by id, and the engines that run them.
    Immutable: transitions return a new State, with the same engines.

    Accounts and contracts are two sparse Merkle trees (ledger/smt.py) whose nodes live in
    `nodes`, shared by every State of a chain.  A transition writes only the nodes on the
    paths of the keys it changes, O(k log N) for k changes among N, and an older State
    stays readable for as long as its nodes are kept.  The root is
    H(STATE_ROOT | accounts root | contracts root), itself kept in `nodes`, so that `State.at`
    reopens a State from its root alone.  Contracts are also held whole in memory: they are
    few, and every block scans them for deadlines; accounts are read from the tree.

    The engines are not part of the root: they are the code the chain runs, not its data.
    A call to an engine the state was not given fails with `unknown_engine`.
    """

    __slots__ = (
        "_accounts_root",
        "_changed",
        "_contracts",
        "_delta",
        "_engines",
        "_nodes",
        "_parent",
        "_root",
    )

    def __init__(
        self,
        accounts: Mapping[bytes, Account] = {},
        contracts: Mapping[bytes, ContractRecord] = {},
        *,
        engines: Engines,
        nodes: NodeStore | None = None,
    ) -> None:
        """A State holding exactly `accounts` and `contracts`, its trees built in `nodes`
        (a fresh in-memory store by default)."""
        self._init(nodes if nodes is not None else MemoryNodeStore(), smt.EMPTY, contracts, engines)
        self._accounts_root = smt.update(self._nodes, smt.EMPTY, _account_leaves(accounts))
        self._root = self._seal(smt.update(self._nodes, smt.EMPTY, _contract_leaves(contracts)))

    def _init(
        self,
        nodes: NodeStore,
        accounts_root: bytes,
        contracts: Mapping[bytes, ContractRecord],
        engines: Engines,
    ) -> None:
        self._nodes, self._accounts_root = nodes, accounts_root
        self._contracts = MappingProxyType(dict(contracts))
        self._engines = (
            engines if isinstance(engines, MappingProxyType) else MappingProxyType(dict(engines))
        )
        self._changed: dict[bytes, Account] = {}  # a read cache: what the transition wrote
        # Set by `evolve`: the root this State came from, and the tree nodes that made it
        # and that it retired (so a store need not compare the two trees to find them).
        self._parent: bytes | None = None
        self._delta = smt.Delta()

    def _seal(self, contracts_root: bytes) -> bytes:
        """The state root over both trees, stored so that `State.at` can find them again."""
        blob = _STATE + self._accounts_root + contracts_root
        root = hash_bytes(blob)
        self._nodes.put_many({root: blob})
        return root

    @classmethod
    def at(cls, nodes: NodeStore, root: bytes, engines: Engines) -> State:
        """The State whose root is `root`, read from `nodes` (MissingNode if not there)."""
        blob = nodes.get(root)
        if blob is None or len(blob) != 65 or blob[:1] != _STATE:
            raise smt.MissingNode(f"no state root {root.hex()}")
        state = cls.__new__(cls)
        records = [ContractRecord.decode(v) for _, v in smt.items(nodes, blob[33:])]
        state._init(nodes, blob[1:33], {c.contract_id: c for c in records}, engines)
        state._root = root
        return state

    def evolve(
        self, accounts: Mapping[bytes, Account], contracts: Mapping[bytes, ContractRecord]
    ) -> State:
        """This State with `accounts` and `contracts` replaced (or added): only their paths
        in the trees are rewritten."""
        state = State.__new__(State)
        delta = smt.Delta()
        state._init(
            self._nodes,
            smt.update(self._nodes, self._accounts_root, _account_leaves(accounts), delta),
            {**self._contracts, **contracts},
            self._engines,
        )
        state._changed = dict(accounts)
        blob = self._nodes.get(self._root)
        assert blob is not None
        contracts_root = smt.update(self._nodes, blob[33:], _contract_leaves(contracts), delta)
        state._root = state._seal(contracts_root)
        if state._root != self._root:
            delta.made.add(state._root)
            delta.retired.add(self._root)
        state._parent, state._delta = self._root, delta
        return state

    @classmethod
    def from_genesis(
        cls, genesis: Genesis, engines: Engines, nodes: NodeStore | None = None
    ) -> State:
        accounts = {a: Account(a, b, 0) for a, b in genesis.balances().items()}
        return cls(accounts, engines=engines, nodes=nodes)

    @property
    def engines(self) -> Engines:
        return self._engines

    @property
    def nodes(self) -> NodeStore:
        return self._nodes

    def delta_from(self, parent: State) -> smt.Delta | None:
        """The tree nodes this State made and retired against `parent`, when it is
        `parent.evolve(...)` in the same node store (else None: compare the trees)."""
        if self._parent == parent._root and self._nodes is parent._nodes:
            return self._delta
        return None

    def release_delta(self) -> None:
        """Forget the delta once a store has used it (it holds a block's worth of node
        hashes); `delta_from` then answers None.  The State's contents do not change."""
        self._parent, self._delta = None, smt.Delta()

    @property
    def accounts(self) -> Mapping[bytes, Account]:
        """Every account, read from the tree: iterating it walks all of them (audits, tests)."""
        return _Accounts(self)

    def account(self, address: bytes) -> Account:
        found = self._changed.get(address)
        if found is not None:
            return found
        value = smt.get(self._nodes, self._accounts_root, smt.account_key(address))
        return Account.decode(value) if value is not None else Account(address, 0, 0)

    def prove_account(self, address: bytes) -> StateProof:
        """The proof that `address` holds `self.account(address)` (absent: a zero account)
        under this state's root; `verify_account` checks it offline."""
        blob = self._nodes.get(self._root)
        assert blob is not None
        path = smt.prove(self._nodes, self._accounts_root, smt.account_key(address))
        return StateProof(self._accounts_root, blob[33:], path)

    def balance(self, address: bytes) -> int:
        return self.account(address).balance

    @property
    def contracts(self) -> Mapping[bytes, ContractRecord]:
        return self._contracts

    def total_supply(self) -> int:
        """All money: balances plus what contracts hold in escrow (burnt money is a balance)."""
        balances = sum(a.balance for a in self.accounts.values())
        return balances + sum(c.escrow for c in self._contracts.values())

    def root(self) -> bytes:
        return self._root


_STATE = bytes([Tag.STATE_ROOT])


def _account_leaves(accounts: Mapping[bytes, Account]) -> dict[bytes, bytes | None]:
    return {smt.account_key(a): acc.encode() for a, acc in accounts.items()}


def _contract_leaves(contracts: Mapping[bytes, ContractRecord]) -> dict[bytes, bytes | None]:
    return {smt.contract_key(c): rec.encode() for c, rec in contracts.items()}


class _Accounts(Mapping[bytes, Account]):
    """A State's accounts as a read-only mapping over its tree (an absent key: KeyError)."""

    def __init__(self, state: State) -> None:
        self._state = state

    def __getitem__(self, address: bytes) -> Account:
        s = self._state
        value = smt.get(s.nodes, s._accounts_root, smt.account_key(address))
        if value is None:
            raise KeyError(address)
        return Account.decode(value)

    def __iter__(self) -> Iterator[bytes]:
        s = self._state
        return (Account.decode(v).address for _, v in smt.items(s.nodes, s._accounts_root))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def values(self) -> Iterator[Account]:  # type: ignore[override]
        """One walk of the tree, not one walk plus a lookup per account."""
        s = self._state
        return (Account.decode(v) for _, v in smt.items(s.nodes, s._accounts_root))


@dataclass(frozen=True)
class StateProof(Struct):
    """What shows an account's record under a state root: the roots of both trees (the
    state root is their hash) and the account's path in the accounts tree."""

    TAG = Tag.STATE_PROOF
    accounts_root: bytes
    contracts_root: bytes
    path: smt.Proof


def verify_account(root: bytes, account: Account, proof: StateProof) -> bool:
    """Whether `proof` shows `account` under state root `root`.  An address never paid holds
    the zero account: it is shown by its absence from the tree."""
    if hash_bytes(_STATE + proof.accounts_root + proof.contracts_root) != root:
        return False
    key = smt.account_key(account.address)
    if smt.verify_proof(proof.accounts_root, key, account.encode(), proof.path):
        return True
    zero = account == Account(account.address, 0, 0)
    return zero and smt.verify_proof(proof.accounts_root, key, None, proof.path)


class Unfunded(ContractError):
    """A contract call whose debits (into escrow) a balance cannot cover."""

    def __init__(self, message: str) -> None:
        super().__init__(INSUFFICIENT_FUNDS, message)


@dataclass(frozen=True)
class Call:
    """A contract call that would execute: the contract's id, its record (None when the call
    creates it), the engine, and the effect to settle."""

    cid: bytes
    record: ContractRecord | None
    engine: Engine
    effect: Effect


class CallView(Protocol):
    """What checking a contract call reads: a State, or a block's working copy of one."""

    @property
    def engines(self) -> Engines: ...

    @property
    def contracts(self) -> Mapping[bytes, ContractRecord]: ...

    def balance(self, address: bytes) -> int: ...


def check_call(view: CallView, tx: Tx, height: int, time_ms: int = 0) -> Call:
    """The one check of a contract tx (its payload already well-formed) in the block at
    `height` with timestamp `time_ms`: it runs
    the engine and raises ContractError with the reason its receipt would carry (`Unfunded`
    for a debit the balance cannot cover).  Block execution settles the returned Call; a node
    calls this to refuse a doomed call before ordering it."""
    p = tx.payload
    engine = view.engines.get(p["engine"])
    if engine is None:
        raise ContractError(UNKNOWN_ENGINE, f"no contract engine {p['engine']!r}")
    record = view.contracts.get(p["id"]) if p["id"] else None
    if p["id"] and record is None:
        raise ContractError(UNKNOWN_CONTRACT, f"no contract {p['id'].hex()}")
    ctx = Context(height, tx.sender_address, tx.tx_id, view.balance, time_ms)
    effect = engine.apply(record, p["op"], p["args"], ctx)
    for address, amount in effect.debits.items():
        if view.balance(address) < amount:
            raise Unfunded(
                f"this call needs {amount} in escrow; the balance is {view.balance(address)}"
            )
    # A new contract is named by the tx that creates it.
    return Call(p["id"] or tx.tx_id, record, engine, effect)


class _Working:
    """One block's transition: the accounts and contracts it changed, over the State it
    started from (read through, never copied)."""

    def __init__(self, state: State, height: int, time_ms: int) -> None:
        self.state = state
        self.accounts: dict[bytes, Account] = {}
        self.changed: dict[bytes, ContractRecord] = {}
        # Reads fall through to the state's contracts; writes go to `changed` only.
        self.contracts = ChainMap(self.changed, cast(dict[bytes, ContractRecord], state.contracts))
        self.engines = state.engines
        self.height = height
        self.time_ms = time_ms

    def account(self, address: bytes) -> Account:
        return self.accounts.get(address) or self.state.account(address)

    def balance(self, address: bytes) -> int:
        return self.account(address).balance

    def add(self, address: bytes, amount: int, bump_nonce: bool = False) -> None:
        a = self.account(address)
        self.accounts[address] = Account(address, a.balance + amount, a.nonce + bump_nonce)

    def settle(
        self,
        record: ContractRecord | None,
        cid: bytes,
        engine: str,
        effect: Effect,
        payer: bytes | None = None,
    ) -> str:
        """Move an effect's money; fail (changing nothing) if a debit cannot be paid."""
        if any(self.account(a).balance < amount for a, amount in effect.debits.items()):
            return INSUFFICIENT_FUNDS
        escrow = (record.escrow if record else 0) + sum(effect.debits.values())
        escrow -= sum(effect.credits.values()) + effect.burn
        if (
            escrow < 0
            or min([*effect.debits.values(), *effect.credits.values(), effect.burn, 0]) < 0
        ):
            return "contract_error"
        for a, amount in effect.debits.items():
            self.add(a, -amount)
        for a, amount in effect.credits.items():
            self.add(a, amount)
        if effect.burn:
            self.add(BURN_ADDRESS, effect.burn)
        if payer is not None:
            self.add(payer, 0, bump_nonce=True)
        self.contracts[cid] = ContractRecord(cid, engine, effect.data, escrow, effect.active)
        return OK

    def call(self, tx: Tx) -> str:
        try:
            c = check_call(self, tx, self.height, self.time_ms)
        except ContractError as e:
            return e.reason
        return self.settle(c.record, c.cid, c.engine.name, c.effect, payer=tx.sender_address)

    def deadlines(self) -> None:
        """Defaults for moves not made in time (deadlines are ledger time: the block's
        timestamp), in contract-id order (deterministic)."""
        for cid in sorted(c for c, r in self.contracts.items() if r.active):
            record = self.contracts[cid]
            engine = self.engines.get(record.engine)
            due = engine.deadline(record) if engine else None
            while engine and record.active and due is not None and due <= self.time_ms:
                ctx = Context(self.height, b"", b"", self.balance, self.time_ms)
                effect = engine.on_deadline(record, ctx)
                self.settle(record, cid, engine.name, effect)
                record = self.contracts[cid]
                due = engine.deadline(record)


def apply_tx(w: _Working, tx: Tx) -> str:
    """Apply one tx to the working state, or leave it untouched and return why not."""
    sender = w.account(tx.sender_address)
    if tx.nonce != sender.nonce:
        return BAD_NONCE
    try:
        check_payload(tx.kind, tx.payload)
    except MalformedTx:
        return MALFORMED
    if tx.kind == EVIDENCE:  # recorded in the chain; moves no funds
        w.add(sender.address, 0, bump_nonce=True)
        return OK
    if tx.kind == CONTRACT:
        return w.call(tx)
    if tx.kind == TRANSFER:
        to, amount = tx.payload["to"], tx.payload["amount"]
        if sender.balance < amount:
            return INSUFFICIENT_FUNDS
        w.add(sender.address, -amount, bump_nonce=True)
        w.add(to, amount)
    return OK


def apply_txs(
    state: State, txs: Iterable[Tx], height: int = 0, time_ms: int = 0
) -> tuple[State, tuple[Receipt, ...]]:
    """The txs of the block at `height` with timestamp `time_ms`, then the contract
    deadlines that passed by `time_ms`."""
    w = _Working(state, height, time_ms)
    receipts = tuple(Receipt(tx.tx_id, apply_tx(w, tx)) for tx in txs)
    w.deadlines()
    return state.evolve(w.accounts, w.changed), receipts


def receipts_root(receipts: Iterable[Receipt]) -> bytes:
    return merkle_root([r.encode() for r in receipts])


def execute_batch(
    state: State, parent: BlockHeader, batch: Batch
) -> tuple[Block, State, tuple[Receipt, ...]]:
    """Execute a committed batch on top of `parent`: the block every replica derives."""
    timestamp_ms = max(batch.proposed_ms, parent.timestamp_ms)
    new_state, receipts = apply_txs(state, batch.txs, parent.height + 1, timestamp_ms)
    header = BlockHeader(
        chain_id=parent.chain_id,
        height=parent.height + 1,
        parent=parent.sha256(),
        timestamp_ms=timestamp_ms,
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
    new_state, receipts = apply_txs(state, block.txs, header.height, header.timestamp_ms)
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
        state_root=State.from_genesis(genesis, NO_ENGINES).root(),  # engines are not in roots
    )
