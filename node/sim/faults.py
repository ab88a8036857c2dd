"""Fault schedules for the simulator: network faults and crashes on virtual time."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Partition:
    """From `start_ms` to `end_ms` only nodes in the same group can talk."""

    start_ms: int
    end_ms: int
    groups: tuple[frozenset[str], ...]

    def separates(self, a: str, b: str, now: int) -> bool:
        if not self.start_ms <= now < self.end_ms:
            return False
        return not any(a in g and b in g for g in self.groups)


@dataclass(frozen=True)
class Crash:
    """`node` stops at `at_ms` (losing everything not persisted) and restarts at `restart_ms`."""

    node: str
    at_ms: int
    restart_ms: int | None = None


@dataclass(frozen=True)
class FaultPlan:
    drop: float = 0.0
    duplicate: float = 0.0
    delay_ms: int = 2  # base one-way delay
    jitter_ms: int = 3  # uniform extra delay: reorders messages
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = field(default=())

    def heal_ms(self) -> int:
        """When every temporary fault is over (partitions healed, crashed nodes back)."""
        ends = [p.end_ms for p in self.partitions]
        ends += [c.restart_ms for c in self.crashes if c.restart_ms is not None]
        ends += [c.at_ms for c in self.crashes]
        return max(ends, default=0)

    def down_for_good(self) -> set[str]:
        return {c.node for c in self.crashes if c.restart_ms is None}

    def describe(self) -> list[str]:
        """CLI arguments that recreate this plan."""
        args = [
            f"--drop {self.drop}",
            f"--duplicate {self.duplicate}",
            f"--delay {self.delay_ms}",
            f"--jitter {self.jitter_ms}",
        ]
        for p in self.partitions:
            groups = "|".join(",".join(sorted(g)) for g in p.groups)
            args.append(f"--partition '{groups}@{p.start_ms / 1000:g}-{p.end_ms / 1000:g}'")
        for c in self.crashes:
            end = f"-{c.restart_ms / 1000:g}" if c.restart_ms is not None else ""
            args.append(f"--crash '{c.node}@{c.at_ms / 1000:g}{end}'")
        return args


def parse_partition(spec: str) -> Partition:
    """'n0,n1|n2,n3@1.5-4' : groups, then the window in seconds."""
    try:
        groups_text, window = spec.split("@")
        start, end = (int(float(x) * 1000) for x in window.split("-"))
        groups = tuple(frozenset(g.split(",")) for g in groups_text.split("|"))
    except ValueError:
        raise ValueError(f"bad --partition {spec!r}: expected like 'n0,n1|n2,n3@1.5-4'") from None
    return Partition(start, end, groups)


def parse_crash(spec: str) -> Crash:
    """'n2@1.5-4' crashes n2 at 1.5 s and restarts it at 4 s; 'n2@1.5' keeps it down."""
    try:
        node, window = spec.split("@")
        times = [int(float(x) * 1000) for x in window.split("-")]
    except ValueError:
        raise ValueError(f"bad --crash {spec!r}: expected like 'n2@1.5-4' or 'n2@1.5'") from None
    return Crash(node, times[0], times[1] if len(times) > 1 else None)


def random_plan(rng: random.Random, nodes: list[str], f: int, duration_ms: int) -> FaultPlan:
    """Loss, delay, duplication, a partition and crash/restart of up to f replicas."""
    partitions = []
    if rng.random() < 0.6:
        shuffled = rng.sample(nodes, len(nodes))
        cut = rng.randint(1, len(nodes) - 1)
        start = rng.randint(0, duration_ms // 2)
        end = rng.randint(start + 1, duration_ms)
        partitions.append(
            Partition(start, end, (frozenset(shuffled[:cut]), frozenset(shuffled[cut:])))
        )
    crashes = []
    for node in rng.sample(nodes, rng.randint(0, f)):
        at = rng.randint(0, duration_ms - 1)
        restart = rng.randint(at + 1, duration_ms) if rng.random() < 0.8 else None
        crashes.append(Crash(node, at, restart))
    return FaultPlan(
        drop=rng.choice([0.0, 0.01, 0.05, 0.1]),
        duplicate=rng.choice([0.0, 0.02]),
        delay_ms=rng.randint(1, 10),
        jitter_ms=rng.randint(0, 20),
        partitions=tuple(partitions),
        crashes=tuple(crashes),
    )
