"""Network faults in the transport layer: the same rules for TCP, MQTT and the simulator.

A node applies its rules to its own traffic: what it sends (drop, delay,
duplicate, reorder, partition) and what it receives (partition, isolate).  A
cluster-wide partition is the same rule injected into every node.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from node.faults.spec import FaultSpec
from node.transport.base import FrameHandler, Transport, TransportStats


class NetworkRules:
    def __init__(self, me: str) -> None:
        self.me = me
        self.active: dict[str, FaultSpec] = {}
        self.counts: Counter[str] = Counter()

    def route(self, peer: str, rng: random.Random) -> list[int]:
        """Delays (ms) of the copies of one message to `peer`; [] means it is lost."""
        delays = [0]
        for f in self.active.values():
            match f.kind:
                case "isolate":
                    return self._lost("isolated")
                case "partition" if not self._same_side(f, peer):
                    return self._lost("partitioned")
                case "drop" if rng.random() < f.param("probability"):
                    return self._lost("dropped")
                case "duplicate" if rng.random() < f.param("probability"):
                    delays.append(delays[0])
                    self.counts["duplicated"] += 1
                case "delay":
                    extra = f.param("ms")
                    delays = [d + extra + rng.randint(0, f.param("jitter_ms")) for d in delays]
                case "reorder" if rng.random() < f.param("probability"):
                    delays = [d + rng.randint(1, max(1, f.param("window_ms"))) for d in delays]
                    self.counts["reordered"] += 1
        return delays

    def blocks_inbound(self, peer: str) -> bool:
        for f in self.active.values():
            if f.kind == "isolate" or (f.kind == "partition" and not self._same_side(f, peer)):
                self.counts["refused_inbound"] += 1
                return True
        return False

    def _same_side(self, f: FaultSpec, peer: str) -> bool:
        groups = [{m.strip() for m in g.split(",")} for g in str(f.param("groups")).split("|")]
        mine = next((g for g in groups if self.me in g), {self.me})
        return peer in mine

    def _lost(self, why: str) -> list[int]:
        self.counts[why] += 1
        return []


class FaultyTransport:
    """A Transport that applies NetworkRules around another one (live clusters)."""

    def __init__(self, inner: Transport, rules: NetworkRules, peers: list[str], seed: int) -> None:
        self.inner, self.rules, self.peers = inner, rules, [p for p in peers if p != rules.me]
        self.rng = random.Random(seed)
        self.stats: TransportStats = inner.stats  # the same object: counts stay in one place

    async def start(self, on_frame: FrameHandler) -> None:
        async def filtered(peer: str, payload: bytes) -> None:
            if not self.rules.blocks_inbound(peer):
                await on_frame(peer, payload)

        await self.inner.start(filtered)

    def send(self, peer_id: str, payload: bytes) -> None:
        if not self.rules.active:
            self.inner.send(peer_id, payload)
            return
        loop = asyncio.get_running_loop()
        for delay in self.rules.route(peer_id, self.rng):
            if delay:
                loop.call_later(delay / 1000, self.inner.send, peer_id, payload)
            else:
                self.inner.send(peer_id, payload)

    def broadcast(self, payload: bytes) -> None:
        if not self.rules.active:  # one publish on MQTT's broadcast topic, not one per peer
            self.inner.broadcast(payload)
            return
        for peer in self.peers:  # the rules are per peer
            self.send(peer, payload)

    def send_unchecked(self, peer_id: str, payload: bytes) -> None:
        send = getattr(self.inner, "send_unchecked", self.inner.send)
        send(peer_id, payload)

    async def stop(self) -> None:
        await self.inner.stop()
