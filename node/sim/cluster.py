"""A deterministic in-process cluster: the same Replica objects on a virtual clock.

Each node's durable part is a real `Store` (SQLite in memory) holding its blocks
and the consensus records it persisted; a crash throws the Replica away and a
restart rebuilds it from that store, exactly as the runtime does after kill -9.
Every message goes through the canonical encoding.  Loss, delay, duplication,
partitions and crashes come from a FaultPlan and one seeded RNG, so a seed
reproduces a run event for event.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.events import (
    Action,
    Broadcast,
    CancelTimer,
    ClientTx,
    CommitBlock,
    Event,
    MessageReceived,
    Persist,
    PruneLog,
    Send,
    SetTimer,
    TimerFired,
)
from consensus.pbft.config import PbftConfig
from consensus.pbft.messages import Commit, FetchBlocks, Prepare, PrePrepare
from consensus.pbft.replica import Replica
from ledger.block import Block, Genesis, Member
from ledger.crypto import KeyPair
from ledger.encoding import Struct, decode_any
from ledger.store import Store
from ledger.tx import Tx
from node.blockserver import serve_fetch
from node.sim.faults import FaultPlan


@dataclass(order=True)
class _Pending:
    at_ms: int
    order: int
    target: str = field(compare=False)
    event: Event = field(compare=False)
    timer: tuple[str, int] | None = field(compare=False, default=None)  # (name, generation)


@dataclass
class SimNode:
    """One member: its durable store survives crashes, its replica does not."""

    node_id: str
    key: KeyPair
    store: Store
    replica: Replica | None = None
    up: bool = True

    def durable_records(self) -> list[Struct]:
        return [decode_any(r) for r in self.store.consensus_records()]


class SimCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        accounts: dict[str, int] | None = None,
        plan: FaultPlan | None = None,
        config: dict[str, int] | None = None,
        keep_trace: bool = False,
    ) -> None:
        self.rng = random.Random(seed)
        self.plan = plan or FaultPlan()
        keys = {f"n{i}": KeyPair(bytes([i + 1]) * 32) for i in range(n)}
        names = list(accounts or {})
        self.accounts = {name: KeyPair(bytes([0x80 + i]) * 32) for i, name in enumerate(names)}
        members = tuple(Member(nid, k.public_key) for nid, k in keys.items())
        balances = {self.accounts[a].address.hex(): v for a, v in (accounts or {}).items()}
        self.genesis = Genesis(f"sim-{seed}", 0, members, balances)
        settings = {"batch_size_max": 50, "batch_wait_ms": 5} | (config or {})
        self.config = PbftConfig(self.genesis.chain_id, members, **settings)
        self.nodes = {
            nid: SimNode(nid, k, Store(":memory:", self.genesis)) for nid, k in keys.items()
        }
        self.now = 0
        self.sent = self.dropped = self.duplicated = self.delivered = 0
        self.trace_hash = hashlib.sha256()
        self.trace: list[str] | None = [] if keep_trace else None
        self.on_commit: list[Callable[[str, Block], None]] = []
        self.on_send: list[Callable[[str, str, Struct], None]] = []  # (sender, to, message)
        # every vote each node ever sent, across restarts: (node, tag, view, seq) -> digest
        self.votes_sent: dict[tuple[str, int, int, int], bytes] = {}
        self.conflicting_votes: list[str] = []
        self._queue: list[_Pending] = []
        self._order = itertools.count()
        self._timer_gen: dict[tuple[str, str], int] = {}
        for node in self.nodes.values():
            self._boot(node)
        for crash in self.plan.crashes:
            self.schedule(crash.at_ms, functools.partial(self.crash, crash.node))
            if crash.restart_ms is not None:
                self.schedule(crash.restart_ms, functools.partial(self.restart, crash.node))

    # -- control ---------------------------------------------------------------------------

    @property
    def replicas(self) -> dict[str, Replica]:
        return {nid: n.replica for nid, n in self.nodes.items() if n.up and n.replica}

    def submit(self, node_id: str, tx: Tx, at_ms: int | None = None) -> None:
        self._push(self.now if at_ms is None else at_ms, node_id, ClientTx(tx))

    def schedule(self, at_ms: int, fn: Callable[[], None]) -> None:
        self._push(at_ms, "", _Call(fn))

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.up, node.replica = False, None
        self._log(f"crash {node_id}")

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up:
            self._boot(node)
            self._log(f"restart {node_id} at height {node.store.height}")

    def run_until(self, done: Callable[[], bool], max_ms: int) -> bool:
        """Deliver events in time order until `done()` or virtual time passes `max_ms`."""
        while not done():
            if not self._queue or self._queue[0].at_ms > max_ms:
                self.now = max(self.now, max_ms)
                return False
            self._deliver(heapq.heappop(self._queue))
        return True

    def height(self, node_id: str) -> int:
        return self.nodes[node_id].store.height

    # -- internals -------------------------------------------------------------------------

    def _boot(self, node: SimNode) -> None:
        for name in ("batch", "forward", "request", "view-change", "status", "fetch"):
            self._bump_timer(node.node_id, name)  # timers of the previous life never fire
        s = node.store
        node.replica = Replica(
            self.config, node.node_id, node.key, s.state, s.last_header, node.durable_records()
        )
        node.up = True
        self._carry_out(node, node.replica.start(self.now))

    def _deliver(self, p: _Pending) -> None:
        self.now = max(self.now, p.at_ms)
        if isinstance(p.event, _Call):
            p.event.fn()
            return
        node = self.nodes[p.target]
        if not node.up or node.replica is None:
            return
        if p.timer is not None and self._timer_gen.get((p.target, p.timer[0])) != p.timer[1]:
            return  # cancelled or replaced
        self.delivered += 1
        self._log(f"{p.target} <- {_describe(p.event)}")
        if isinstance(p.event, MessageReceived) and isinstance(p.event.message, FetchBlocks):
            reply = serve_fetch(node.store, p.event.message)
            self._transmit(p.target, p.event.sender, _wire(reply))
            return
        self._carry_out(node, node.replica.step(p.event, self.now))

    def _carry_out(self, node: SimNode, actions: list[Action]) -> None:
        records = [(a.seq, a.view, a.message.encode()) for a in actions if isinstance(a, Persist)]
        if records:
            node.store.persist(records)
        for action in actions:
            match action:
                case Send(to, message):
                    self._transmit(node.node_id, to, _wire(message))
                case Broadcast(message):
                    decoded = _wire(message)
                    for to in self.nodes:
                        if to != node.node_id:
                            self._transmit(node.node_id, to, decoded)
                case SetTimer(name, delay):
                    gen = self._bump_timer(node.node_id, name)
                    self._push(self.now + delay, node.node_id, TimerFired(name), (name, gen))
                case CancelTimer(name):
                    self._bump_timer(node.node_id, name)
                case CommitBlock(block, receipts, state):
                    node.store.append(block, receipts, state)
                    for callback in self.on_commit:
                        callback(node.node_id, block)
                case PruneLog(below_seq, below_view):
                    node.store.prune_consensus(below_seq, below_view)

    def _record_vote(self, sender: str, message: Struct) -> None:
        if isinstance(message, PrePrepare | Prepare | Commit):
            key = (sender, message.TAG, message.view, message.seq)
            earlier = self.votes_sent.setdefault(key, message.digest)
            if earlier != message.digest:
                self.conflicting_votes.append(f"{sender} {type(message).__name__} {key[2:]}")

    def _transmit(self, sender: str, to: str, message: Struct) -> None:
        self.sent += 1
        self._record_vote(sender, message)
        for hook in self.on_send:
            hook(sender, to, message)
        plan = self.plan
        if any(p.separates(sender, to, self.now) for p in plan.partitions):
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < plan.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            if self.rng.random() < plan.drop:
                self.dropped += 1
                continue
            delay = plan.delay_ms + self.rng.randint(0, plan.jitter_ms)
            self._push(self.now + delay, to, MessageReceived(sender, message))

    def _bump_timer(self, node_id: str, name: str) -> int:
        gen = self._timer_gen.get((node_id, name), 0) + 1
        self._timer_gen[(node_id, name)] = gen
        return gen

    def _push(
        self, at: int, target: str, event: Event | _Call, timer: tuple[str, int] | None = None
    ) -> None:
        heapq.heappush(self._queue, _Pending(at, next(self._order), target, event, timer))  # type: ignore[arg-type]

    def _log(self, line: str) -> None:
        entry = f"{self.now} {line}"
        self.trace_hash.update(entry.encode() + b"\n")
        if self.trace is not None:
            self.trace.append(entry)


@dataclass(frozen=True)
class _Call:
    """A scheduled change to the simulation itself (a crash, a restart, a submission)."""

    fn: Callable[[], None]


def _wire(message: Struct) -> Struct:
    """Exactly what the wire carries: the message encoded, then decoded again."""
    return decode_any(message.encode())


def _describe(event: Event) -> str:
    match event:
        case MessageReceived(sender, message):
            return f"{sender} {type(message).__name__} {message.sha256().hex()[:16]}"
        case TimerFired(name):
            return f"timer {name}"
        case ClientTx(tx):
            return f"tx {tx.tx_id.hex()[:16]}"
    return repr(event)
