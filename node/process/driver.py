"""The driver: carries out what a replica asks for, the one piece both shells share.

A replica is a sans-IO state machine: it is fed events and answers with actions.
The driver is the code between the two.  It steps a turn's events through the
replica, lets Byzantine behaviours rewrite what comes out, and carries out the
actions in an order that makes them safe:

1. Everything the replica signed (`Persist`) and every block it committed
   (`CommitBlock`) in the turn goes to the store in one SQL transaction (group
   commit: one fsync per turn).  A reorganisation (`SwitchChain`) in the turn
   makes the blocks go one by one, in order, instead.
2. Only then are messages sent, timers set, waiters told "committed".

Nothing is sent or acknowledged before what it depends on is on disk.  The
asyncio node (`runtime.NodeRuntime`) and the deterministic simulator
(`node.sim.cluster`) each inject their own network, timers, miner, clock and
input queue; the store is whatever they open.  So the simulator's seeds test
this ordering, not a copy of it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from consensus.events import (
    Action,
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
)
from consensus.messages import FetchBlocks
from consensus.replica import ConsensusReplica
from ledger.block import Block
from ledger.crypto import KeyPair
from ledger.encoding import DecodeError, Struct, decode_any
from ledger.store import Store
from ledger.tx import evidence
from node.faults.behaviour import SendRaw
from node.faults.controller import FaultController
from node.process.blockserver import serve_fetch

log = logging.getLogger("tally.node")


class Network(Protocol):
    """Where the driver's bytes go: a transport, or the simulator's network."""

    def send(self, to: str, data: bytes) -> None: ...

    def broadcast(self, data: bytes) -> None: ...


class Timers(Protocol):
    def set(self, name: str, delay_ms: int) -> None: ...

    def cancel(self, name: str) -> None: ...


# (block, receipts) once the block is on disk; (fork height, depth) after a reorganisation
CommitHook = Callable[[Block, tuple[Any, ...]], None]
# (what, seconds) of real time, for a host's metrics: "execution" per block a replica step
# committed, "store" per turn's store transaction (its writes and fsync)
Observer = Callable[[str, float], None]
ReorgHook = Callable[[int, int], None]


@dataclass
class Shell:
    """What the driver's host provides: I/O, time and a way back into its own input."""

    network: Network
    timers: Timers
    clock: Callable[[], int]  # ms
    enqueue: Callable[[Event], bool]  # False: the input queue is full and the event dropped
    mine: Callable[[int, bytes, int], None] | None = None  # (job, prefix, target)
    on_commit: list[CommitHook] = field(default_factory=list)
    on_reorg: list[ReorgHook] = field(default_factory=list)
    # None in the simulator: its time is virtual, and nothing it decides may hang on a clock
    observe: Observer | None = None


class Driver:
    """One replica, its store and its faults, driven turn by turn."""

    def __init__(
        self,
        replica: ConsensusReplica,
        store: Store,
        key: KeyPair,
        faults: FaultController,
        shell: Shell,
    ) -> None:
        self.replica, self.store, self.key = replica, store, key
        self.faults, self.shell = faults, shell
        self.errors: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # messages by kind (a broadcast counts once)
        self.received: Counter[str] = Counter()
        self.last_error: Exception | None = None
        faults.byzantine.attach(replica)  # behaviours outlive the process they disturb

    def start(self) -> None:
        self.carry_out(self.replica.start(self.shell.clock()))

    # -- input -----------------------------------------------------------------------------

    def receive_frame(self, sender: str, payload: bytes) -> Event | None:
        """A peer's frame: the event it is for the replica, or None (undecodable, or a fetch
        served from the store at once)."""
        try:
            message = decode_any(payload)
        except DecodeError as e:
            self.errors["bad_frame"] += 1
            log.warning("undecodable frame from %s: %s", sender, e)
            return None
        return self.receive(sender, message)

    def receive(self, sender: str, message: Struct) -> Event | None:
        self.received[type(message).__name__] += 1
        if isinstance(message, FetchBlocks):  # state transfer is served from the store
            blocks = self.faults.byzantine.serve(serve_fetch(self.store, message))
            self.shell.network.send(sender, blocks.encode())
            return None
        return MessageReceived(sender, message)

    def turn(self, events: Sequence[Event]) -> None:
        """Step every event, then carry out all the actions of the turn together."""
        actions: list[Action] = []
        byz = self.faults.byzantine
        now = self.shell.clock()
        for event in events:
            if byz.active and not byz.admit(event):
                continue  # a private-fork attacker does not listen
            try:
                actions += self._step(event, now)
            except Exception as e:
                # A bug must not silently stop consensus on this node: log loudly, go on.
                self.errors["internal_error"] += 1
                self.last_error = e
                log.exception("error handling %s", type(event).__name__)
        self.carry_out(actions)

    def _step(self, event: Event, now: int) -> list[Action]:
        observe = self.shell.observe
        if observe is None:
            return self.replica.step(event, now)
        start = time.perf_counter()
        out = self.replica.step(event, now)
        blocks = sum(isinstance(a, CommitBlock) for a in out)
        if blocks:
            seconds = (time.perf_counter() - start) / blocks
            for _ in range(blocks):
                observe("execution", seconds)
        return out

    # -- output ----------------------------------------------------------------------------

    def carry_out(self, honest: list[Action]) -> None:
        byz = self.faults.byzantine
        actions = byz.rewrite(honest) if byz.active else honest
        written = self._write_ahead(actions)
        for action in actions:
            self._carry_out_one(action, written)

    def _write_ahead(self, actions: Sequence[object]) -> set[int]:
        """Persist the turn's signed records and committed blocks in one transaction; the ids
        of the CommitBlock actions written."""
        records = [(a.seq, a.view, a.message.encode()) for a in actions if isinstance(a, Persist)]
        commits = [a for a in actions if isinstance(a, CommitBlock)]
        if any(isinstance(a, SwitchChain) for a in actions):
            commits = []  # a reorganisation in this turn: blocks go in order
        if records or commits:
            start = time.perf_counter()
            with self.store.batch():
                if records:
                    self.store.persist(records)
                for commit in commits:
                    self.store.append(commit.block, commit.receipts, commit.state)
            if self.shell.observe is not None:
                self.shell.observe("store", time.perf_counter() - start)
        return {id(c) for c in commits}

    def _carry_out_one(self, action: object, written: set[int]) -> None:
        shell = self.shell
        match action:
            case Send(to, message):
                self.sent[type(message).__name__] += 1
                shell.network.send(to, message.encode())
            case Broadcast(message):
                self.sent[type(message).__name__] += 1
                shell.network.broadcast(message.encode())
            case SetTimer(name, delay_ms):
                shell.timers.set(name, delay_ms)
            case CancelTimer(name):
                shell.timers.cancel(name)
            case CommitBlock(block, receipts, state):
                if id(action) not in written:
                    self.store.append(block, receipts, state)  # durable before acknowledged
                self._committed(block, receipts)
            case PruneLog(below_seq, below_view):
                self.store.prune_consensus(below_seq, below_view)
            case Persist():
                pass  # written ahead
            case Evidence(member, a, b):
                self._report(member, a, b)
            case Mine(job, prefix, target):
                if shell.mine is not None:
                    shell.mine(job, prefix, target)
            case SwitchChain(fork, blocks, state):
                depth = self.store.height - fork
                log.info("reorganisation: %d blocks above %d", depth, fork)
                self.store.switch(fork, blocks, state)  # atomic: old chain or new
                for hook in shell.on_reorg:
                    hook(fork, depth)
                for block, receipts in blocks:
                    self._committed(block, receipts)
            case SendRaw(to, data, unchecked):
                send = getattr(shell.network, "send_unchecked", None)
                (send if unchecked and send else shell.network.send)(to, data)

    def _committed(self, block: Block, receipts: tuple[Any, ...]) -> None:
        for hook in self.shell.on_commit:
            hook(block, receipts)

    def _report(self, member: str, a: Struct, b: Struct) -> None:
        """Put evidence of equivocation on the ledger, signed with this node's key."""
        nonce = self.replica.next_nonce(self.key.address)
        tx = evidence(self.key, self.store.genesis.chain_id, nonce, member, a.encode(), b.encode())
        log.warning("reporting equivocation by %s (evidence tx %s)", member, tx.tx_id.hex()[:16])
        if not self.shell.enqueue(ClientTx(tx)):
            self.errors["evidence_dropped"] += 1
