"""A deterministic in-process cluster: the production driver and replicas on a virtual clock.

Each node is the node process's own `Driver` (node/process/driver.py) over a
replica from the same factory, with the simulator's network, timers, miner and
clock injected.  Its durable part is a real `Store` (SQLite in memory) holding
its blocks and the consensus records it persisted; a crash throws the driver
and replica away and a restart rebuilds them from that store, exactly as the
node process does after kill -9.
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
    BlockMined,
    ClientTx,
    Event,
    MessageReceived,
    TimerFired,
)
from consensus.pbft.config import PbftConfig
from consensus.pbft.messages import Commit, Prepare, PrePrepare
from consensus.pow.config import PowConfig
from consensus.pow.seal import search
from consensus.replica import ConsensusReplica
from ledger.block import Block, Genesis, Member
from ledger.crypto import KeyPair
from ledger.encoding import DecodeError, Struct, decode_any
from ledger.store import Store
from ledger.tx import Tx
from node.engines import chain_engines
from node.faults.byzantine import Byzantine
from node.faults.controller import FaultController
from node.faults.network import NetworkRules
from node.faults.spec import FaultSpec
from node.process.driver import Driver, Shell
from node.process.factory import open_replica
from node.sim.faults import FaultPlan
from node.sim.params import SimParams, sim_config


@dataclass
class _Pending:
    at_ms: int
    order: int
    target: str = field(compare=False)
    event: Event = field(compare=False)
    timer: _TimerRef | None = field(compare=False, default=None)


@dataclass
class SimNode:
    """One process: its durable store survives crashes, its driver and replica do not.

    `member` is the identity it acts as: its own id, or the member it is a twin of.
    """

    node_id: str
    member: str
    key: KeyPair
    store: Store
    faults: FaultController
    driver: Driver | None = None
    up: bool = True
    paused_until: int = 0

    @property
    def replica(self) -> ConsensusReplica | None:
        return self.driver.replica if self.driver is not None else None

    def durable_records(self) -> list[Struct]:
        return [decode_any(r) for r in self.store.consensus_records()]


class SimulationError(Exception):
    """The code under test raised: the simulation stops at the event that caused it."""


class SimCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        accounts: dict[str, int] | None = None,
        plan: FaultPlan | None = None,
        config: SimParams = None,
        keep_trace: bool = False,
        faults: tuple[FaultSpec, ...] = (),
        consensus: str = "pbft",
        hash_share: dict[str, float] | None = None,
        open_store: Callable[[Genesis], Store] | None = None,
    ) -> None:
        """`consensus` "pow": members mine; each finds blocks as a Poisson process on virtual
        time at `hash_share` of the cluster's hash rate (equal shares by default).
        `open_store` opens each process's durable store (SQLite in memory by default)."""
        self.open_store = open_store or _memory_store
        self.rng = random.Random(seed)
        self.plan = plan or FaultPlan()
        keys = {f"n{i}": KeyPair(bytes([i + 1]) * 32) for i in range(n)}
        names = list(accounts or {})
        self.accounts = {name: KeyPair(bytes([0x80 + i]) * 32) for i, name in enumerate(names)}
        members = tuple(Member(nid, k.public_key) for nid, k in keys.items())
        balances = {self.accounts[a].address.hex(): v for a, v in (accounts or {}).items()}
        self.genesis = Genesis(f"sim-{seed}", 0, members, balances)
        # the cluster.toml schemas, with the simulator's overrides (node/sim/params.py)
        self.config: PbftConfig | PowConfig = sim_config(
            consensus, self.genesis.chain_id, members, config
        )
        shares = hash_share or {nid: 1 / n for nid in keys}
        # hashes per virtual ms per member: at the initial difficulty, one block per target time
        self.hash_rate = {
            nid: shares.get(nid, 0.0)
            * getattr(self.config, "initial_difficulty", 0)
            / getattr(self.config, "target_block_ms", 1)
            for nid in keys
        }
        self.on_reorg: list[Callable[[str, int, int], None]] = []  # (node, fork, depth)
        self.members = list(keys)
        self.nodes = {nid: self._node(nid, nid, k) for nid, k in keys.items()}
        self.twins: dict[str, str] = {}  # member -> the sim id of its twin process
        self.now = 0
        self.bad_frames = 0
        self.sent = self.dropped = self.duplicated = self.delivered = 0
        self.trace_hash = hashlib.sha256()
        self.trace: list[str] | None = [] if keep_trace else None
        self.on_commit: list[Callable[[str, Block], None]] = []
        self.on_send: list[Callable[[str, str, Struct], None]] = []  # (sender, to, message)
        # every vote each node ever sent, across restarts: (node, tag, view, seq) -> digest
        self.votes_sent: dict[tuple[str, int, int, int], bytes] = {}
        self.conflicting_votes: list[str] = []
        self._was_byzantine: set[str] = set()
        # (at_ms, order, pending): tuples compare in C, and `order` is unique, so a heap
        # comparison never reaches the pending event itself.
        self._queue: list[tuple[int, int, _Pending]] = []
        self._order = itertools.count()
        for node in list(self.nodes.values()):
            self._boot(node)
        for spec in faults:
            self.inject(spec)
        for crash in self.plan.crashes:
            self.schedule(crash.at_ms, functools.partial(self.crash, crash.node))
            if crash.restart_ms is not None:
                self.schedule(crash.restart_ms, functools.partial(self.restart, crash.node))

    # -- control ---------------------------------------------------------------------------

    def inject(self, spec: FaultSpec) -> None:
        """Apply a fault description the way a live cluster would, on virtual time."""
        targets = self.members if spec.node == "*" else [spec.node]
        start = int((spec.at_seconds or 0) * 1000)
        end = None if spec.duration_seconds is None else start + int(spec.duration_seconds * 1000)
        if spec.category == "process" or spec.kind == "twins":
            for nid in targets:
                self._process_fault(spec.kind, nid, start, end)
            return
        for nid in targets:
            self.nodes[nid].faults.inject(spec, self.now / 1000, self.height(nid))
            for t in (start, end):
                if t is not None:
                    self.schedule(t, functools.partial(self._tick_faults, nid))

    def byzantine_nodes(self) -> set[str]:
        """Members that misbehave at some point: the checker judges only the others."""
        bad = set(self.twins)
        for nid in self.members:
            f = self.nodes[nid].faults
            if f.byzantine.active or any(s.category == "byzantine" for s in f.pending.values()):
                bad.add(nid)
        return bad | self._was_byzantine

    def pause(self, node_id: str, until_ms: int) -> None:
        self.nodes[node_id].paused_until = until_ms
        self._log(f"pause {node_id} until {until_ms}")

    @property
    def replicas(self) -> dict[str, ConsensusReplica]:
        return {nid: n.replica for nid, n in self.nodes.items() if n.up and n.replica}

    def submit(self, node_id: str, tx: Tx, at_ms: int | None = None) -> None:
        self._push(self.now if at_ms is None else at_ms, node_id, ClientTx(tx))

    def schedule(self, at_ms: int, fn: Callable[[], None]) -> None:
        self._push(at_ms, "", _Call(fn))

    def _process_fault(self, kind: str, nid: str, start: int, end: int | None) -> None:
        if kind == "kill":
            self.schedule(start, functools.partial(self.crash, nid))
            if end is not None:
                self.schedule(end, functools.partial(self.restart, nid))
        elif kind == "restart":
            self.schedule(start, functools.partial(self.crash, nid))
            self.schedule(start + 1, functools.partial(self.restart, nid))
        elif kind == "pause":
            self.schedule(start, functools.partial(self.pause, nid, end or 10**12))
        elif kind == "twins":
            self.schedule(start, functools.partial(self._start_twin, nid))

    def _start_twin(self, member: str) -> None:
        """A second process with the member's key: each message reaches one of the two."""
        twin = self._node(f"{member}~", member, self.nodes[member].key)
        self.nodes[twin.node_id] = twin
        self.twins[member] = twin.node_id
        self._boot(twin)
        self._log(f"twin of {member} starts")

    def _node(self, sim_id: str, member: str, key: KeyPair) -> SimNode:
        store = self.open_store(self.genesis)
        if isinstance(self.config, PowConfig):  # its reorganisations need older states
            store.keep_states = max(store.keep_states, self.config.kept_blocks)
        byzantine = Byzantine(member, self.members, self.rng.randrange(2**32))
        controller = FaultController(member, NetworkRules(member), byzantine)
        return SimNode(sim_id, member, key, store, controller)

    def _tick_faults(self, nid: str) -> None:
        node = self.nodes[nid]
        before = bool(node.faults.byzantine.active)
        node.faults.tick(self.now / 1000, node.store.height)
        if before or node.faults.byzantine.active:
            self._was_byzantine.add(nid)

    def crash(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.up, node.driver = False, None  # its timers and mining die with it
        self._log(f"crash {node_id}")

    def restart(self, node_id: str) -> None:
        node = self.nodes[node_id]
        if not node.up:
            self._boot(node)
            self._log(f"restart {node_id} at height {node.store.height}")

    def run_until(self, done: Callable[[], bool], max_ms: int) -> bool:
        """Deliver events in time order until `done()` or virtual time passes `max_ms`."""
        while not done():
            if not self._queue or self._queue[0][0] > max_ms:
                self.now = max(self.now, max_ms)
                return False
            self._deliver(heapq.heappop(self._queue)[2])
        return True

    def height(self, node_id: str) -> int:
        return self.nodes[node_id].store.height

    # -- internals -------------------------------------------------------------------------

    def _boot(self, node: SimNode) -> None:
        timers = _SimTimers(self, node.node_id)
        shell = Shell(
            network=_SimNetwork(self, node.member),
            timers=timers,
            clock=lambda: self.now,
            enqueue=functools.partial(self._enqueue, node.node_id),
            mine=functools.partial(self._mine, node, timers),
            on_commit=[functools.partial(self._committed, node.node_id)],
            on_reorg=[functools.partial(self._reorganised, node.node_id)],
        )
        replica = open_replica(self.config, node.member, node.key, node.store)
        node.driver = Driver(replica, node.store, node.key, node.faults, shell)
        node.up = True
        node.driver.start()
        self._check(node)

    def _deliver(self, p: _Pending) -> None:
        self.now = max(self.now, p.at_ms)
        if isinstance(p.event, _Call):
            p.event.fn()
            return
        node = self.nodes[p.target]
        driver = node.driver
        if not node.up or driver is None:
            return
        if node.paused_until > self.now:  # frozen: everything waits until it resumes
            self._push(node.paused_until, p.target, p.event, p.timer)
            return
        if p.timer is not None and not p.timer.live(driver):
            return  # cancelled, replaced, or set by an earlier life of the process
        self.delivered += 1
        self._log(f"{p.target} <- {_describe(p.event)}")
        event: Event | None = p.event
        if isinstance(event, MessageReceived):
            event = driver.receive(event.sender, event.message)
        if event is not None:
            driver.turn([event])
        self._check(node)

    def _check(self, node: SimNode) -> None:
        """A replica that raises is a bug: the driver logs and counts it, the simulation stops."""
        error = node.driver.last_error if node.driver else None
        if error is not None:
            raise SimulationError(f"{node.node_id} at {self.now} ms: {error!r}") from error

    def _enqueue(self, node_id: str, event: Event) -> bool:
        self._push(self.now, node_id, event)
        return True

    def _committed(self, node_id: str, block: Block, receipts: tuple[object, ...]) -> None:
        if self.nodes[node_id].faults.pending:
            self._tick_faults(node_id)  # faults due at a height
        for callback in self.on_commit:
            callback(node_id, block)

    def _reorganised(self, node_id: str, fork: int, depth: int) -> None:
        for hook in self.on_reorg:
            hook(node_id, fork, depth)

    def _mine(
        self, node: SimNode, timers: _SimTimers, job: int, prefix: bytes, target: int
    ) -> None:
        """The time to a proof is exponential with rate hashes/ms x P(hash <= target); a new
        job replaces the old one (memoryless, so redrawing is exact)."""
        timer = timers.bump("mine")
        rate = self.hash_rate.get(node.member, 0.0) * (target + 1) / 2**256
        if rate <= 0:
            return
        at = self.now + max(1, round(self.rng.expovariate(rate)))
        self.schedule(at, functools.partial(self._mined, node, timer, job, prefix, target))

    def _mined(self, node: SimNode, timer: _TimerRef, job: int, prefix: bytes, target: int) -> None:
        if node.driver is None or not timer.live(node.driver):
            return  # crashed, or the job was replaced
        nonce = search(prefix, target, 0, 1 << 30)  # a real proof: cheap at sim difficulty
        assert nonce is not None
        self._push(self.now, node.node_id, BlockMined(job, nonce))

    def _transmit_frame(self, sender: str, to: str | None, data: bytes) -> None:
        """Bytes a driver sent (to one peer, or to all with `to` None): what the receiving
        node's decoder makes of them, then the network's faults."""
        try:
            message = decode_any(data)
        except DecodeError:
            self.sent += 1
            self.bad_frames += 1
            return
        for peer in [to] if to is not None else [m for m in self.members if m != sender]:
            self._transmit(sender, peer, message)

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
        extra = self.nodes[sender].faults.network.route(to, self.rng)  # the sender's faults
        if not extra or self.nodes[to].faults.network.blocks_inbound(sender):
            self.dropped += 1
            return
        copies = (2 if self.rng.random() < plan.duplicate else 1) * len(extra)
        self.duplicated += copies - 1
        for i in range(copies):
            if self.rng.random() < plan.drop:
                self.dropped += 1
                continue
            delay = plan.delay_ms + self.rng.randint(0, plan.jitter_ms) + extra[i % len(extra)]
            target = to
            if to in self.twins and self.rng.random() < 0.5:
                target = self.twins[to]  # twins split what the network delivers
            self._push(self.now + delay, target, MessageReceived(sender, message))

    def _push(
        self, at: int, target: str, event: Event | _Call, timer: _TimerRef | None = None
    ) -> None:
        order = next(self._order)
        pending = _Pending(at, order, target, event, timer)  # type: ignore[arg-type]
        heapq.heappush(self._queue, (at, order, pending))

    def _log(self, line: str) -> None:
        entry = f"{self.now} {line}"
        self.trace_hash.update(entry.encode() + b"\n")
        if self.trace is not None:
            self.trace.append(entry)


@dataclass(frozen=True)
class _Call:
    """A scheduled change to the simulation itself (a crash, a restart, a submission)."""

    fn: Callable[[], None]


@dataclass(frozen=True)
class _TimerRef:
    """One setting of one named timer in one life of a process."""

    timers: _SimTimers
    name: str
    generation: int

    def live(self, driver: Driver) -> bool:
        """Not cancelled or set again since, and the process has not restarted."""
        return driver.shell.timers is self.timers and self.timers.current(self.name) == self


class _SimTimers:
    """A driver's timers on virtual time: each setting is a pending event, and a timer set
    again, cancelled or left behind by a crash simply never fires."""

    def __init__(self, cluster: SimCluster, node_id: str) -> None:
        self.cluster, self.node_id = cluster, node_id
        self._generation: dict[str, int] = {}

    def bump(self, name: str) -> _TimerRef:
        generation = self._generation.get(name, 0) + 1
        self._generation[name] = generation
        return _TimerRef(self, name, generation)

    def current(self, name: str) -> _TimerRef:
        return _TimerRef(self, name, self._generation.get(name, 0))

    def set(self, name: str, delay_ms: int) -> None:
        c = self.cluster
        c._push(c.now + delay_ms, self.node_id, TimerFired(name), self.bump(name))

    def cancel(self, name: str) -> None:
        self.bump(name)


class _SimNetwork:
    """A driver's network: frames from `member` into the simulator's faulty network."""

    def __init__(self, cluster: SimCluster, member: str) -> None:
        self.cluster, self.member = cluster, member

    def send(self, to: str, data: bytes) -> None:
        self.cluster._transmit_frame(self.member, to, data)

    def broadcast(self, data: bytes) -> None:
        self.cluster._transmit_frame(self.member, None, data)


def _memory_store(genesis: Genesis) -> Store:
    return Store(":memory:", genesis, engines=chain_engines())


def _describe(event: Event) -> str:
    match event:
        case MessageReceived(sender, message):
            return f"{sender} {type(message).__name__} {message.sha256().hex()[:16]}"
        case TimerFired(name):
            return f"timer {name}"
        case ClientTx(tx):
            return f"tx {tx.tx_id.hex()[:16]}"
    return repr(event)
