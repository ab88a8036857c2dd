"""The asyncio shell of one node: one task feeds the driver from one bounded queue.

Peer frames, client txs and timers all become events on `queue`; each turn the
task takes what is queued (up to MAX_EVENTS_PER_TURN) and hands it to the
driver, which persists before it sends or acknowledges (see `driver`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from consensus.events import (
    BlockMined,
    ClientTx,
    Event,
    TimerFired,
)
from consensus.replica import ConsensusReplica, PbftStatus
from ledger.block import Block, Genesis
from ledger.contract import ContractError
from ledger.crypto import KeyPair
from ledger.encoding import DecodeError
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
from ledger.tx import CONTRACT, EVIDENCE, TRANSFER, Tx
from node.cluster.config import RpcSettings
from node.faults.controller import FaultController
from node.process.driver import Driver, Shell
from node.process.metrics import Commits, NodeMetrics
from node.process.miner import Miner
from node.process.subscriptions import Hub
from node.transport.base import Transport

log = logging.getLogger("tally.node")

QUEUE_SIZE = 20_000
MAX_EVENTS_PER_TURN = 512  # events stepped before their votes are persisted together
MAX_NONCE_GAP = 10_000  # how far ahead of its account a tx's nonce may be
# Submitted txs whose commit is timed for the latency metric; a tx that never commits
# (refused by its block, or the node's view of it lost) leaves an entry, so the oldest go
MAX_TIMED_TXS = 100_000


def now_ms() -> int:
    return int(time.time() * 1000)


class NodeRuntime:
    def __init__(
        self,
        node_id: str,
        genesis: Genesis,
        replica: ConsensusReplica,
        store: Store,
        transport: Transport,
        key: KeyPair,
        faults: FaultController,
        miner: Miner | None = None,
        subscriber_queue: int = RpcSettings().subscriber_queue,
    ) -> None:
        self.node_id, self.genesis, self.key = node_id, genesis, key
        self.miner = miner
        self.replica, self.store, self.transport = replica, store, transport
        self.faults = faults
        self.queue: asyncio.Queue[Event] = asyncio.Queue(QUEUE_SIZE)
        self.started_ms = now_ms()
        self._loop_timers = _LoopTimers(self._fire)
        self._waiters: dict[bytes, list[asyncio.Future[dict[str, Any]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.peers = [m.node_id for m in genesis.members]
        self.last_heard: dict[str, float] = {}  # peer -> Unix time of its last frame
        self.commits = Commits()
        self._timed: dict[bytes, float] = {}  # tx id -> perf_counter when submitted here
        self.metrics = NodeMetrics(self)
        self.hub = Hub(store, genesis.members, subscriber_queue)
        shell = Shell(
            network=transport,
            timers=self._loop_timers,
            clock=now_ms,
            enqueue=self._enqueue,
            mine=miner.submit if miner is not None else None,
            on_commit=[self._notify, self.commits, self._time_commit, self.hub.on_commit],
            on_reorg=[self._on_reorg],
            observe=self.metrics.observe,
        )
        self.driver = Driver(replica, store, key, faults, shell)
        self.errors = self.driver.errors
        self._seen = self._consensus_marks()

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    async def start(self) -> None:
        await self.transport.start(self._on_frame)
        if self.miner is not None:
            self.miner.start(self._on_mined)
        self.driver.start()
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
        self._loop_timers.cancel_all()
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
            self.driver.turn(events)
            self._notice_consensus()

    def _enqueue(self, event: Event) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def _on_mined(self, job: int, nonce: int) -> None:
        if not self._enqueue(BlockMined(job, nonce)):
            self.errors["mined_block_dropped"] += 1

    def _fire(self, name: str) -> None:
        if not self._enqueue(TimerFired(name)):
            self._loop_timers.set(name, 1)  # a timer must not be lost: try again shortly

    async def _on_frame(self, peer_id: str, payload: bytes) -> None:
        self.last_heard[peer_id] = time.time()
        event = self.driver.receive_frame(peer_id, payload)
        if event is not None:
            await self.queue.put(event)

    # -- client transactions ---------------------------------------------------------------

    def check_tx(self, raw: bytes) -> Tx:
        """Every check a tx can fail before ordering; raises a typed LedgerError."""
        try:
            tx = Tx.decode(raw)
        except DecodeError as e:
            raise MalformedTx(f"not a canonical signed tx: {e}") from None
        start = time.perf_counter()
        tx.check_stateless(self.chain_id)
        self.metrics.signature.observe(time.perf_counter() - start)
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
        reason = self.replica.evidence_refused(tx.payload)
        if reason is not None:
            raise MalformedTx(reason)

    def _dry_run(self, tx: Tx) -> None:
        """A contract call checked against the committed state, so the caller learns at once
        why it would fail (it is checked again when it executes): the ledger's own check."""
        try:
            # At the last block's time: the next block's is at least that (a move already
            # late by the clock but not yet by a block is refused by its block's receipt).
            last = self.store.last_header
            check_call(self.store.state, tx, last.height + 1, last.timestamp_ms)
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
            self._time_submit(tx.tx_id)
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

    def _consensus_marks(self) -> tuple[int, bool, int] | None:
        """(view, view active, stable checkpoint) of a PBFT replica; None for PoW."""
        st = self.replica.status()
        return (
            (st.view, st.view_active, st.stable_checkpoint) if isinstance(st, PbftStatus) else None
        )

    def _notice_consensus(self) -> None:
        """Tell subscribers of the view changes and stable checkpoints of the last turn."""
        marks = self._consensus_marks()
        if marks is None or marks == self._seen:
            return
        before, self._seen = self._seen, marks
        assert before is not None
        if marks[:2] != before[:2]:
            self.hub.notice({"type": "view_change", "view": marks[0], "active": marks[1]})
        if marks[2] != before[2]:
            self.hub.notice({"type": "checkpoint", "stable": marks[2]})

    def _on_reorg(self, fork: int, depth: int) -> None:
        self.metrics.reorg_depth.observe(depth)
        self.hub.notice({"type": "reorg", "fork": fork, "depth": depth})

    def _time_submit(self, tx_id: bytes) -> None:
        if tx_id not in self._timed:
            if len(self._timed) >= MAX_TIMED_TXS:
                del self._timed[next(iter(self._timed))]  # the oldest (dicts keep order)
            self._timed[tx_id] = time.perf_counter()

    def _time_commit(self, block: Block, receipts: tuple[Any, ...]) -> None:
        now, timed, latency = time.perf_counter(), self._timed, self.metrics.latency
        for tx in block.txs:
            start = timed.pop(tx.tx_id, None)
            if start is not None:
                latency.observe(now - start)

    def _notify(self, block: Block, receipts: tuple[Any, ...]) -> None:
        height = block.height
        for tx, receipt in zip(block.txs, receipts, strict=True):
            for future in self._waiters.pop(tx.tx_id, []):
                if not future.done():
                    result = {"tx_id": tx.tx_id.hex(), "height": height, "status": receipt.reason}
                    future.set_result(result)

    def count_error(self, error: LedgerError | str) -> None:
        self.errors[error if isinstance(error, str) else error.name] += 1


class _LoopTimers:
    """Named one-shot timers on the event loop: setting a name again replaces it."""

    def __init__(self, fire: Callable[[str], None]) -> None:
        self._fire = fire
        self._handles: dict[str, asyncio.TimerHandle] = {}

    def set(self, name: str, delay_ms: int) -> None:
        self.cancel(name)
        loop = asyncio.get_running_loop()
        self._handles[name] = loop.call_later(delay_ms / 1000, self._fired, name)

    def cancel(self, name: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()

    def _fired(self, name: str) -> None:
        self._handles.pop(name, None)
        self._fire(name)
