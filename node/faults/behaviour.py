"""What a Byzantine behaviour is: a rewrite of one replica's actions, inputs and fetch answers.

The behaviours themselves live in `byzantine` (PBFT) and `powattacks` (proof of work).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from consensus.events import Action, Event
from consensus.messages import Blocks
from node.faults.spec import FaultSpec


@dataclass(frozen=True)
class SendRaw:
    """Bytes that are not a valid message, straight onto the wire (flooding)."""

    to: str
    data: bytes
    unchecked: bool = False  # bypass the sender's frame-size check


RawAction = Action | SendRaw


@dataclass
class Context:
    # A PBFT Replica or a PowReplica: each behaviour disturbs one kind and reads it as such.
    replica: Any
    peers: list[str]  # every other member, in member order
    rng: random.Random

    def halves(self, colluders: set[str]) -> tuple[list[str], list[str]]:
        """Honest peers split in two; colluders are in on it and get both versions."""
        honest = [p for p in self.peers if p not in colluders]
        cut = len(honest) // 2
        return honest[:cut], honest[cut:]


class Behaviour:
    def __init__(self, spec: FaultSpec) -> None:
        self.spec = spec

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        return actions

    def serve(self, ctx: Context, blocks: Blocks) -> Blocks:
        return blocks

    def admit(self, ctx: Context, event: Event) -> bool:
        """Whether the replica gets to see this input (a private fork ignores the others)."""
        return True
