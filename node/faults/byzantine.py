"""Byzantine behaviours as rewrites of an honest replica's action stream.

The honest Replica runs unchanged; `Byzantine.rewrite` turns what it wants to
send into what a faulty member sends.  A behaviour sees the replica (read
only), the actions of one step, and the list of peers; it returns new
actions.  Proof-of-work behaviours (withholding, selfish mining, private
forks) are further subclasses of `Behaviour` over the PoW actions.
"""

from __future__ import annotations

import dataclasses
import random

from consensus.events import Action, Broadcast, Event, Send
from consensus.messages import Blocks
from consensus.pbft.messages import (
    Commit,
    NewView,
    Prepare,
    PrePrepare,
    Signed,
    Status,
    sign,
)
from consensus.replica import ConsensusReplica
from ledger.block import Batch, Block
from ledger.encoding import Struct
from node.faults import powattacks
from node.faults.behaviour import Behaviour, Context, RawAction, SendRaw
from node.faults.spec import FaultSpec


def _outgoing(action: RawAction) -> Struct | None:
    return action.message if isinstance(action, Send | Broadcast) else None


def alternative(batch: Batch) -> Batch:
    """The conflicting twin of a batch: same txs, another proposed time, another digest.
    Colluders compute it the same way, so they can vote for it."""
    return dataclasses.replace(batch, proposed_ms=batch.proposed_ms + 1)


class Split(Behaviour):
    """Sends what the honest replica broadcasts to half of the honest peers, and a conflicting
    version (`twin`) to the other half; colluders, who are in on it, get both."""

    def twin(self, ctx: Context, msg: Struct) -> Struct | None:
        raise NotImplementedError

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        colluders = set(filter(None, str(self.spec.param("colluders")).split(",")))
        first, second = ctx.halves(colluders)
        out: list[RawAction] = []
        for action in actions:
            msg = _outgoing(action)
            twin = self.twin(ctx, msg) if isinstance(action, Broadcast) and msg else None
            if twin is None or msg is None:
                out.append(action)
                continue
            out += [Send(p, msg) for p in first + sorted(colluders)]
            out += [Send(p, twin) for p in second + sorted(colluders)]
        return out


class Equivocate(Split):
    """As primary: conflicting pre-prepares (and commits) to the two halves."""

    def twin(self, ctx: Context, msg: Struct) -> Struct | None:
        r = ctx.replica
        if isinstance(msg, PrePrepare) and msg.batch is not None and r.is_primary:
            alt = alternative(msg.batch)
            return sign(dataclasses.replace(msg, digest=alt.digest, batch=alt), r.key)
        if isinstance(msg, Commit) and r.is_primary:
            return _conflicting_vote(ctx, msg)
        return None


class DoubleVote(Split):
    """Prepares and commits for one digest to one half, another digest to the other (the
    equivocating primary's alternative when colluding, otherwise a made-up one)."""

    def twin(self, ctx: Context, msg: Struct) -> Struct | None:
        return _conflicting_vote(ctx, msg) if isinstance(msg, Prepare | Commit) else None


def _conflicting_vote(ctx: Context, vote: Prepare | Commit) -> Prepare | Commit:
    slot = ctx.replica.log.get(vote.seq)
    batch = slot.pre_prepare.batch if slot and slot.pre_prepare else None
    digest = alternative(batch).digest if batch is not None else ctx.rng.randbytes(32)
    if isinstance(vote, Prepare):
        return sign(dataclasses.replace(vote, digest=digest), ctx.replica.key)
    return sign(dataclasses.replace(vote, digest=digest), ctx.replica.key)


class Mute(Behaviour):
    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        return [a for a in actions if not isinstance(a, Send | Broadcast | SendRaw)]


class SilentPrimary(Behaviour):
    """Acts as an honest backup, but as primary never proposes (nor makes a NEW-VIEW)."""

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        return [a for a in actions if not isinstance(_outgoing(a), PrePrepare | NewView)]


class Forge(Behaviour):
    """Every signature it sends is random bytes: peers must reject all of it."""

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        out: list[RawAction] = []
        for action in actions:
            msg = _outgoing(action)
            if isinstance(msg, Signed) and isinstance(action, Send | Broadcast):
                forged = dataclasses.replace(msg, signature=ctx.rng.randbytes(64))
                out.append(dataclasses.replace(action, message=forged))
            else:
                out.append(action)
        return out


class Replay(Behaviour):
    """Alongside what it sends, re-sends something it sent long ago (stale views, old seqs)."""

    def __init__(self, spec: FaultSpec) -> None:
        super().__init__(spec)
        self.history: list[Struct] = []

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        out = list(actions)
        for action in actions:
            msg = _outgoing(action)
            if isinstance(action, Broadcast) and msg is not None and not isinstance(msg, Status):
                if self.history:
                    out.append(Broadcast(ctx.rng.choice(self.history)))
                if len(self.history) < 1000:
                    self.history.append(msg)
        return out


class InvalidBlock(Behaviour):
    """As primary, proposes batches that do not match their digest (a tx root that lies);
    serves fetched blocks with a wrong state root."""

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        out: list[RawAction] = []
        for action in actions:
            msg = _outgoing(action)
            if isinstance(msg, PrePrepare) and msg.batch is not None and msg.batch.txs:
                bad = dataclasses.replace(msg.batch, txs=msg.batch.txs[:-1])  # digest now lies
                lying = dataclasses.replace(msg, batch=bad)
                out.append(Send(action.to, lying) if isinstance(action, Send) else Broadcast(lying))
            else:
                out.append(action)
        return out

    def serve(self, ctx: Context, blocks: Blocks) -> Blocks:
        def corrupt(b: Block) -> Block:
            header = dataclasses.replace(b.header, state_root=ctx.rng.randbytes(32))
            return Block(header, b.txs, b.proof)

        return Blocks(tuple(corrupt(b) for b in blocks.blocks))


class Flood(Behaviour):
    """With each heartbeat, `frames` garbage frames of `bytes` bytes to every peer (or frames
    over the receivers' size limit, with oversize=true)."""

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        if not any(isinstance(_outgoing(a), Status) for a in actions):
            return actions
        oversize = bool(self.spec.param("oversize"))
        size = (8 << 20) if oversize else int(self.spec.param("bytes"))
        frames = 1 if oversize else int(self.spec.param("frames"))
        junk: list[RawAction] = [
            SendRaw(p, ctx.rng.randbytes(size), unchecked=oversize)
            for p in ctx.peers
            for _ in range(frames)
        ]
        return actions + junk


BEHAVIOURS: dict[str, type[Behaviour]] = {
    "equivocate": Equivocate,
    "double_vote": DoubleVote,
    "mute": Mute,
    "silent_primary": SilentPrimary,
    "forge": Forge,
    "replay": Replay,
    "invalid_block": InvalidBlock,
    "flood": Flood,
}


def behaviour_class(kind: str) -> type[Behaviour]:
    """The behaviour for a Byzantine fault kind (PBFT's here, proof of work's in powattacks)."""
    if kind in BEHAVIOURS:
        return BEHAVIOURS[kind]
    return powattacks.ATTACKS[kind]


class Byzantine:
    """The active behaviours of one node; empty for an honest node."""

    def __init__(self, node_id: str, peers: list[str], seed: int) -> None:
        self.peers = [p for p in peers if p != node_id]
        self.rng = random.Random(seed)
        self.replica: ConsensusReplica | None = None
        self.active: dict[str, Behaviour] = {}

    def attach(self, replica: ConsensusReplica) -> None:
        """The replica whose actions are rewritten (again after each restart)."""
        self.replica = replica

    def add(self, spec: FaultSpec) -> None:
        self.active[spec.id] = behaviour_class(spec.kind)(spec)

    def remove(self, fault_id: str) -> None:
        self.active.pop(fault_id, None)

    def rewrite(self, actions: list[Action]) -> list[RawAction]:
        out: list[RawAction] = list(actions)
        if self.replica is not None:
            ctx = Context(self.replica, self.peers, self.rng)
            for behaviour in self.active.values():
                out = behaviour.rewrite(ctx, out)
        return out

    def admit(self, event: Event) -> bool:
        if self.replica is None:
            return True
        ctx = Context(self.replica, self.peers, self.rng)
        return all(b.admit(ctx, event) for b in list(self.active.values()))

    def serve(self, blocks: Blocks) -> Blocks:
        if self.replica is not None:
            ctx = Context(self.replica, self.peers, self.rng)
            for behaviour in self.active.values():
                blocks = behaviour.serve(ctx, blocks)
        return blocks
