"""A deterministic in-process cluster: the same Replica objects on a virtual clock.

Every message goes through the canonical encoding (encode, then decode) so the
simulator exercises exactly what the wire carries.  Delivery order, loss and
delay come from one seeded RNG, so a seed reproduces a run.
"""

from __future__ import annotations

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
    Send,
    SetTimer,
    TimerFired,
)
from consensus.pbft.config import PbftConfig
from consensus.pbft.replica import Replica
from ledger.block import Block, Genesis, Member
from ledger.crypto import KeyPair
from ledger.encoding import decode_any
from ledger.state import State, genesis_header


@dataclass(order=True)
class _Pending:
    at_ms: int
    order: int
    target: str = field(compare=False)
    event: Event = field(compare=False)
    timer: tuple[str, int] | None = field(compare=False, default=None)


class SimCluster:
    def __init__(
        self,
        n: int,
        seed: int,
        *,
        accounts: dict[str, int] | None = None,
        drop: float = 0.0,
        delay_ms: tuple[int, int] = (1, 5),
        batch_size_max: int = 50,
        batch_wait_ms: int = 5,
    ) -> None:
        self.rng = random.Random(seed)
        self.keys = {f"n{i}": KeyPair(bytes([i + 1]) * 32) for i in range(n)}
        self.accounts = {
            name: KeyPair(bytes([0x80 + i]) * 32) for i, name in enumerate(accounts or {})
        }
        members = tuple(Member(nid, k.public_key) for nid, k in self.keys.items())
        balances = {self.accounts[a].address.hex(): v for a, v in (accounts or {}).items()}
        self.genesis = Genesis(f"sim-{seed}", 0, members, balances)
        self.config = PbftConfig(self.genesis.chain_id, members, batch_size_max, batch_wait_ms)
        state, header = State.from_genesis(self.genesis), genesis_header(self.genesis)
        self.replicas = {
            nid: Replica(self.config, nid, k, state, header) for nid, k in self.keys.items()
        }
        self.chains: dict[str, list[Block]] = {nid: [] for nid in self.replicas}
        self.crashed: set[str] = set()
        self.drop, self.delay_ms = drop, delay_ms
        self.now = 0
        self.sent = self.dropped = 0
        self._queue: list[_Pending] = []
        self._order = itertools.count()
        self._timer_gen: dict[tuple[str, str], int] = {}

    def submit(self, node_id: str, tx: object) -> None:
        self._push(self.now, node_id, ClientTx(tx))  # type: ignore[arg-type]

    def run_until(self, done: Callable[[], bool], max_ms: int = 60_000) -> bool:
        while not done():
            if not self._queue or self._queue[0].at_ms > max_ms:
                return False
            self._deliver(heapq.heappop(self._queue))
        return True

    def _deliver(self, p: _Pending) -> None:
        self.now = max(self.now, p.at_ms)
        if p.target in self.crashed:
            return
        if p.timer is not None and self._timer_gen.get((p.target, p.timer[0])) != p.timer[1]:
            return  # cancelled or replaced
        actions = self.replicas[p.target].step(p.event, self.now)
        self._carry_out(p.target, actions)

    def _carry_out(self, node_id: str, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(to, message):
                    self._transmit(node_id, to, message.encode())
                case Broadcast(message):
                    data = message.encode()
                    for to in self.replicas:
                        if to != node_id:
                            self._transmit(node_id, to, data)
                case SetTimer(name, delay):
                    gen = self._timer_gen.get((node_id, name), 0) + 1
                    self._timer_gen[(node_id, name)] = gen
                    self._push(self.now + delay, node_id, TimerFired(name), (name, gen))
                case CancelTimer(name):
                    self._timer_gen[(node_id, name)] = self._timer_gen.get((node_id, name), 0) + 1
                case CommitBlock(block):
                    self.chains[node_id].append(block)

    def _transmit(self, sender: str, to: str, data: bytes) -> None:
        self.sent += 1
        if self.rng.random() < self.drop:
            self.dropped += 1
            return
        delay = self.rng.randint(*self.delay_ms)
        self._push(self.now + delay, to, MessageReceived(sender, decode_any(data)))

    def _push(
        self, at: int, target: str, event: Event, timer: tuple[str, int] | None = None
    ) -> None:
        heapq.heappush(self._queue, _Pending(at, next(self._order), target, event, timer))
