"""The asyncio runtime of one node: one task drives the replica from one bounded queue.

Peer frames, client txs and timers all become events on `queue`; the replica
answers with actions, carried out in order.  A `CommitBlock` is written to
SQLite (fsync) before any later action runs and before any client hears
"committed", so nothing acknowledged is ever lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from consensus.events import (
    Action,
    BlockMined,
    Broadcast,
    CancelTimer,
    ClientTx,
    CommitBlock,
    Event,
    Evidence,
    MessageReceived,
    Mine,
    Persist,
    PruneLog,
    Send,
    SetTimer,
    SwitchChain,
    TimerFired,
)
from consensus.pbft.messages import FetchBlocks
from consensus.pbft.proofs import valid_evidence
from consensus.pbft.replica import Replica
from consensus.pow.replica import PowReplica
from ledger.block import Genesis
from ledger.contract import ContractError
from ledger.crypto import KeyPair
from ledger.encoding import DecodeError, decode_any
from ledger.errors import (
    BadNonce,
    ContractRejected,
    InsufficientFunds,
    LedgerError,
    MalformedTx,
    Overloaded,
)
from ledger.state import Unfunded, check_call
from ledger.store import Store
from ledger.tx import CONTRACT, EVIDENCE, TRANSFER, Tx, evidence
from node.faults.behaviour import SendRaw
from node.faults.controller import FaultController
from node.process.blockserver import serve_fetch
from node.process.miner import Miner
from node.transport.base import Transport

log = logging.getLogger("tally.node")

QUEUE_SIZE = 20_000
MAX_EVENTS_PER_TURN = 512  # events stepped before their votes are persisted together
MAX_NONCE_GAP = 10_000  # how far ahead of its account a tx's nonce may be


def now_ms() -> int:
    return int(time.time() * 1000)


class NodeRuntime:
    def __init__(
        self,
        node_id: str,
        genesis: Genesis,
        replica: Replica | PowReplica,
        store: Store,
        transport: Transport,
        key: KeyPair,
        faults: FaultController,
        miner: Miner | None = None,
    ) -> None:
        self.node_id, self.genesis, self.key = node_id, genesis, key
        self.miner = miner
        self.replica, self.store, self.transport = replica, store, transport
        self.faults = faults
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.errors: Counter[str] = Counter()
        self.started_ms = now_ms()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._waiters: dict[bytes, list[asyncio.Future[dict[str, Any]]]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    async def start(self) -> None:
        await self.transport.start(self._on_frame)
        if self.miner is not None:
            self.miner.start(self._on_mined)
        self._carry_out(self.replica.start(now_ms()))
        self._task = asyncio.create_task(self._run(), name=f"replica-{self.node_id}")
        self._fault_task = asyncio.create_task(self._tick_faults(), name="faults")

    def uptime_s(self) -> float:
        return (now_ms() - self.started_ms) / 1000

    async def _tick_faults(self) -> None:
        """Faults scheduled by time or height start and end on this clock."""
        while True:
            self.faults.tick(self.uptime_s(), self.store.height)
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._fault_task.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.transport.stop()
        if self.miner is not None:
            self.miner.stop()
        for futures in self._waiters.values():
            for f in futures:
                f.cancel()
        self.store.close()

    # -- the loop --------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            events = [await self.queue.get()]
            while len(events) < MAX_EVENTS_PER_TURN and not self.queue.empty():
                events.append(self.queue.get_nowait())
            actions: list[Action] = []
            byz = self.faults.byzantine
            for event in events:
                if byz.active and not byz.admit(event):
                    continue  # a private-fork attacker does not listen
                try:
                    actions += self.replica.step(event, now_ms())
                except Exception:
                    # A bug must not silently stop consensus on this node: log loudly, go on.
                    self.errors["internal_error"] += 1
                    log.exception("error handling %s", type(event).__name__)
            self._carry_out(actions)

    def _carry_out(self, honest: list[Action]) -> None:
        """Persist everything signed and every block committed in this turn in one SQL
        transaction (group commit: one fsync), then carry out the rest in order: nothing is
        sent or acknowledged before what it depends on is on disk."""
        byz = self.faults.byzantine
        actions = byz.rewrite(honest) if byz.active else honest
        records = [(a.seq, a.view, a.message.encode()) for a in actions if isinstance(a, Persist)]
        commits = [a for a in actions if isinstance(a, CommitBlock)]
        if any(isinstance(a, SwitchChain) for a in actions):
            commits = []  # a reorganisation in this turn: blocks go in order (below)
        written = {id(c) for c in commits}
        if records or commits:
            with self.store.batch():
                if records:
                    self.store.persist(records)
                for commit in commits:
                    self.store.append(commit.block, commit.receipts, commit.state)
        for action in actions:
            match action:
                case Send(to, message):
                    self.transport.send(to, message.encode())
                case Broadcast(message):
                    self.transport.broadcast(message.encode())
                case SetTimer(name, delay_ms):
                    self._set_timer(name, delay_ms)
                case CancelTimer(name):
                    handle = self._timers.pop(name, None)
                    if handle is not None:
                        handle.cancel()
                case CommitBlock(block, receipts, state):
                    if id(action) not in written:
                        self.store.append(block, receipts, state)  # durable before acknowledged
                    self._notify(block.height, block.txs, receipts)
                case PruneLog(below_seq, below_view):
                    self.store.prune_consensus(below_seq, below_view)
                case Persist():
                    pass  # written above
                case Evidence(member, a, b):
                    self._report(member, a.encode(), b.encode())
                case Mine(job, prefix, target):
                    if self.miner is not None:
                        self.miner.submit(job, prefix, target)
                case SwitchChain(fork, blocks, state):
                    log.info("reorganisation: %d blocks above %d", self.store.height - fork, fork)
                    self.store.switch(fork, blocks, state)  # atomic: old chain or new
                    for block, receipts in blocks:
                        self._notify(block.height, block.txs, receipts)
                case SendRaw(to, data, unchecked):
                    send = getattr(self.transport, "send_unchecked", None)
                    (send if unchecked and send else self.transport.send)(to, data)

    def _on_mined(self, job: int, nonce: int) -> None:
        try:
            self.queue.put_nowait(BlockMined(job, nonce))
        except asyncio.QueueFull:
            self.errors["mined_block_dropped"] += 1

    def _set_timer(self, name: str, delay_ms: int) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay_ms / 1000, self._fire, name)

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        try:
            self.queue.put_nowait(TimerFired(name))
        except asyncio.QueueFull:
            self._set_timer(name, 1)  # a timer must not be lost: try again shortly

    async def _on_frame(self, peer_id: str, payload: bytes) -> None:
        try:
            message = decode_any(payload)
        except DecodeError as e:
            self.errors["bad_frame"] += 1
            log.warning("undecodable frame from %s: %s", peer_id, e)
            return
        if isinstance(message, FetchBlocks):  # state transfer is served from the store
            blocks = self.faults.byzantine.serve(serve_fetch(self.store, message))
            self.transport.send(peer_id, blocks.encode())
            return
        await self.queue.put(MessageReceived(peer_id, message))

    # -- client transactions ---------------------------------------------------------------

    def check_tx(self, raw: bytes) -> Tx:
        """Every check a tx can fail before ordering; raises a typed LedgerError."""
        try:
            tx = Tx.decode(raw)
        except DecodeError as e:
            raise MalformedTx(f"not a canonical signed tx: {e}") from None
        tx.check_stateless(self.chain_id)
        if tx.kind == EVIDENCE:
            self._check_evidence(tx)
        account = self.store.state.account(tx.sender_address)
        if tx.nonce < account.nonce:
            raise BadNonce(f"nonce {tx.nonce} already used; the account's next is {account.nonce}")
        if tx.nonce > account.nonce + MAX_NONCE_GAP:
            raise BadNonce(f"nonce {tx.nonce} is too far ahead of the account's {account.nonce}")
        if tx.kind == CONTRACT:
            self._dry_run(tx)
        if tx.kind == TRANSFER and tx.payload["amount"] > account.balance:
            raise InsufficientFunds(
                f"balance {account.balance} is less than the amount {tx.payload['amount']}"
            )
        return tx

    def _check_evidence(self, tx: Tx) -> None:
        if isinstance(self.replica, PowReplica):
            raise MalformedTx("evidence of equivocation is for PBFT; this chain is proof of work")
        if not valid_evidence(tx.payload, self.replica.config):
            raise MalformedTx("evidence does not show one member signing two digests for a slot")

    def _dry_run(self, tx: Tx) -> None:
        """A contract call checked against the committed state, so the caller learns at once
        why it would fail (it is checked again when it executes): the ledger's own check."""
        try:
            check_call(self.store.state, tx, self.store.height + 1)
        except Unfunded as e:
            raise InsufficientFunds(str(e)) from None
        except ContractError as e:
            raise ContractRejected(e.reason, str(e)) from None

    def submit(self, tx: Tx, *, wait: bool) -> asyncio.Future[dict[str, Any]] | None:
        """Queue a checked tx for ordering; with `wait`, a future resolved once it commits."""
        future: asyncio.Future[dict[str, Any]] | None = None
        if wait:
            future = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(tx.tx_id, []).append(future)
        try:
            self.queue.put_nowait(ClientTx(tx))
        except asyncio.QueueFull:
            self.errors["overloaded"] += 1
            if future is not None:
                self._waiters[tx.tx_id].remove(future)
            raise Overloaded("the node's input queue is full; retry later") from None
        return future

    def forget_waiter(self, tx_id: bytes, future: asyncio.Future[dict[str, Any]]) -> None:
        futures = self._waiters.get(tx_id, [])
        if future in futures:
            futures.remove(future)
        if not futures:
            self._waiters.pop(tx_id, None)

    def _notify(self, height: int, txs: tuple[Tx, ...], receipts: tuple[Any, ...]) -> None:
        for tx, receipt in zip(txs, receipts, strict=True):
            for future in self._waiters.pop(tx.tx_id, []):
                if not future.done():
                    result = {"tx_id": tx.tx_id.hex(), "height": height, "status": receipt.reason}
                    future.set_result(result)

    def _report(self, member: str, a: bytes, b: bytes) -> None:
        """Put evidence of equivocation on the ledger, signed with this node's key."""
        nonce = self.replica.next_nonce(self.key.address)
        tx = evidence(self.key, self.chain_id, nonce, member, a, b)
        log.warning("reporting equivocation by %s (evidence tx %s)", member, tx.tx_id.hex()[:16])
        try:
            self.queue.put_nowait(ClientTx(tx))
        except asyncio.QueueFull:
            self.errors["evidence_dropped"] += 1

    def count_error(self, error: LedgerError | str) -> None:
        self.errors[error if isinstance(error, str) else error.name] += 1
