"""One node's faults: pending ones wait for their time or height, active ones for their end.

Pure bookkeeping driven by `tick(now_s, height)`, so the asyncio runtime (wall
clock) and the simulator (virtual clock) schedule faults the same way.
Process faults are not a node's own business: the launcher or simulator
applies them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from node.faults.byzantine import Byzantine
from node.faults.network import NetworkRules
from node.faults.spec import POW_ONLY, FaultError, FaultSpec


@dataclass
class FaultController:
    node_id: str
    network: NetworkRules
    byzantine: Byzantine
    pending: dict[str, FaultSpec] = field(default_factory=dict)
    active: dict[str, tuple[FaultSpec, float | None]] = field(default_factory=dict)  # id -> ends
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def inject(self, spec: FaultSpec, now_s: float, height: int) -> FaultSpec:
        """Schedule (or start) a network or Byzantine fault on this node; returns it with its id."""
        if spec.category == "process":
            raise FaultError(f"{spec.kind} is a process fault: the launcher applies it")
        if spec.node not in ("*", self.node_id):
            raise FaultError(f"fault for {spec.node} sent to {self.node_id}")
        if spec.kind == "twins":
            raise FaultError("twins needs a second process: `tally fault inject twins` starts it")
        self._check_consensus(spec)
        spec = replace(spec, id=spec.id or f"{self.node_id}-{next(self._ids)}")
        self.pending[spec.id] = spec
        self.tick(now_s, height)
        return spec

    def _check_consensus(self, spec: FaultSpec) -> None:
        """Byzantine behaviours disturb one kind of replica: refuse the others clearly."""
        if spec.category != "byzantine" or self.byzantine.replica is None:
            return
        pow_node = self.byzantine.replica.status().kind == "pow"
        if pow_node and spec.kind not in POW_ONLY | {"mute"}:
            raise FaultError(f"{spec.kind} disturbs PBFT; this node runs proof of work")
        if not pow_node and spec.kind in POW_ONLY:
            raise FaultError(f"{spec.kind} is a proof-of-work attack; this node runs PBFT")

    def heal(self, fault_id: str | None = None) -> list[str]:
        """End one fault (or all); returns the ids ended."""
        ids = [fault_id] if fault_id else [*self.active, *self.pending]
        ended = []
        for i in ids:
            if self.pending.pop(i, None) is not None or i in self.active:
                self._stop(i)
                ended.append(i)
        if fault_id and not ended:
            raise FaultError(f"no fault {fault_id!r} on {self.node_id}")
        return ended

    def tick(self, now_s: float, height: int) -> None:
        for spec in list(self.pending.values()):
            due_time = spec.at_seconds is None or now_s >= spec.at_seconds
            due_height = spec.at_height is None or height >= spec.at_height
            if due_time and due_height:
                del self.pending[spec.id]
                ends = None if spec.duration_seconds is None else now_s + spec.duration_seconds
                self._start(spec, ends)
        for fault_id, (_, ends) in list(self.active.items()):
            if ends is not None and now_s >= ends:
                self._stop(fault_id)

    def listing(self) -> list[dict[str, object]]:
        rows = [
            spec.to_dict() | {"state": "active", "ends_at_s": ends}
            for spec, ends in self.active.values()
        ]
        rows += [spec.to_dict() | {"state": "pending"} for spec in self.pending.values()]
        return rows

    def next_deadline(self) -> float | None:
        """The next time (seconds) at which tick() would change something."""
        times = [s.at_seconds for s in self.pending.values() if s.at_seconds is not None]
        times += [ends for _, ends in self.active.values() if ends is not None]
        return min(times, default=None)

    def _start(self, spec: FaultSpec, ends: float | None) -> None:
        self.active[spec.id] = (spec, ends)
        if spec.category == "byzantine":
            self.byzantine.add(spec)
        else:
            self.network.active[spec.id] = spec

    def _stop(self, fault_id: str) -> None:
        self.active.pop(fault_id, None)
        self.byzantine.remove(fault_id)
        self.network.active.pop(fault_id, None)
