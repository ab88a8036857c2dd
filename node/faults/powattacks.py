"""Proof-of-work attacks as Byzantine behaviours: the miner's honest code runs unchanged; what
it publishes (and, for a private fork, what it hears) is rewritten.

- withhold: never publish its own blocks (nor tips or served blocks that reveal them):
  its hash power is wasted, so the others' blocks come slower.
- selfish_mine: Eyal and Sirer's strategy.  Keep found blocks private; when the
  public chain catches up to within one block, publish everything (a race or a
  win); while ahead by more, publish just enough to match the public height.
- double_spend: the private-fork double spend.  The payment `tx` goes to the
  victim through honest nodes; the attacker never hears it, nor any honest block
  that holds it or builds on it, so it mines a private fork from the block before
  the payment (with a conflicting spend of the same nonce, if it was given one).
  It releases the fork once the payment has `confirmations` blocks on the public
  chain and the fork is longer; it gives up and rejoins once the public chain
  leads by `give_up` blocks.
"""

from __future__ import annotations

from consensus.events import Broadcast, Event, MessageReceived
from consensus.messages import Blocks, ForwardTxs
from consensus.pow.replica import PowReplica
from consensus.pow.seal import PowTip
from ledger.block import Block
from node.faults.behaviour import Behaviour, Context, RawAction
from node.faults.spec import FaultSpec


def _own_blocks(ctx: Context, action: RawAction) -> list[Block]:
    if isinstance(action, Broadcast) and isinstance(action.message, Blocks):
        me = ctx.replica.node_id
        return [b for b in action.message.blocks if b.header.proposer == me]
    return []


class Withhold(Behaviour):
    def __init__(self, spec: FaultSpec) -> None:
        super().__init__(spec)
        self.hidden: set[bytes] = set()

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        out = []
        for action in actions:
            own = _own_blocks(ctx, action)
            if own:
                self.hidden.update(b.hash for b in own)
                continue
            if isinstance(action, Broadcast) and isinstance(action.message, PowTip):
                continue  # a tip would tell the others what to fetch
            out.append(action)
        return out

    def serve(self, ctx: Context, blocks: Blocks) -> Blocks:
        kept = []
        for b in blocks.blocks:  # stop at the first hidden block: what follows needs it
            if b.hash in self.hidden:
                break
            kept.append(b)
        return Blocks(tuple(kept))


class SelfishMine(Withhold):
    """Eyal and Sirer (2014), reacting to each event: its own new block, or the public
    chain growing.  `lead` is how far its private chain is ahead of the public one."""

    def __init__(self, spec: FaultSpec) -> None:
        super().__init__(spec)
        self.public_height = 0
        self.race = False  # its block ties the public chain's: the next one decides

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        found = any(_own_blocks(ctx, a) for a in actions)
        out = super().rewrite(ctx, actions)
        replica: PowReplica = ctx.replica
        tree = replica.tree
        private = [tree.entries[h] for h in self.hidden if h in tree.entries]
        private = [e for e in private if tree.active.get(e.height) == e.block.hash]
        self.hidden = {e.block.hash for e in private}  # blocks off its best chain are lost
        public = max((e.height for h, e in tree.entries.items() if h not in self.hidden), default=0)
        grew, self.public_height = public > self.public_height, public
        lead = replica.height - public
        if grew:  # the others found a block
            self.race = lead == 0 and bool(private)
            release = private if lead <= 1 else [e for e in private if e.height <= public]
        elif found and self.race:  # its block breaks the tie: publish and win
            self.race = False
            release = private
        else:
            release = []
        if release:
            released = {e.block.hash for e in release}
            self.hidden -= released
            out.append(Broadcast(Blocks(_in_order(replica, released))))
        return out


class DoubleSpend(Withhold):
    def __init__(self, spec: FaultSpec) -> None:
        super().__init__(spec)
        self.payment = bytes.fromhex(str(self.spec.param("tx")))
        self.public: dict[bytes, Block] = {}  # honest blocks heard, kept from the replica
        self.outcome = "mining"  # then "released" or "gave_up"

    def admit(self, ctx: Context, event: Event) -> bool:
        if self.outcome != "mining" or not isinstance(event, MessageReceived):
            return True
        message = event.message
        if isinstance(message, ForwardTxs):
            return all(tx.tx_id != self.payment for tx in message.txs)
        if isinstance(message, Blocks):
            for b in message.blocks:
                self.public[b.hash] = b
            # follow the public chain up to the payment; fork from the block before it
            return not any(self._tainted(b) for b in message.blocks)
        return not isinstance(message, PowTip)

    def _tainted(self, block: Block) -> bool:
        """Whether `block` holds the payment or builds on a block that does."""
        b: Block | None = block
        while b is not None:
            if any(tx.tx_id == self.payment for tx in b.txs):
                return True
            b = self.public.get(b.header.parent)
        return False

    def _public_tip(self) -> tuple[int, int | None]:
        """The public chain's height, and the height of the block holding the payment."""
        top = max(self.public.values(), key=lambda b: b.height, default=None)
        paid = None
        while top is not None:
            if any(tx.tx_id == self.payment for tx in top.txs):
                paid = top.height
            parent = self.public.get(top.header.parent)
            if parent is None:
                break
            top = parent
        height = max((b.height for b in self.public.values()), default=0)
        return height, paid

    def rewrite(self, ctx: Context, actions: list[RawAction]) -> list[RawAction]:
        if self.outcome != "mining":
            return actions
        # the conflicting spend stays on the private fork until it is released
        actions = [
            a
            for a in actions
            if not (isinstance(a, Broadcast) and isinstance(a.message, ForwardTxs))
        ]
        out = super().rewrite(ctx, actions)  # from the payment on, its blocks stay private
        replica: PowReplica = ctx.replica
        height, paid = self._public_tip()
        k = int(self.spec.param("confirmations"))
        if paid is not None and height - paid + 1 >= k and replica.height > height:
            self.outcome = "released"  # the whole private fork at once, oldest first
            out.append(Broadcast(Blocks(_in_order(replica, self.hidden))))
            self.hidden.clear()
        elif height - replica.height >= int(self.spec.param("give_up")):
            self.outcome = "gave_up"
            self.hidden.clear()
        return out


def _in_order(replica: PowReplica, hashes: set[bytes]) -> tuple[Block, ...]:
    entries = [replica.tree.entries[h] for h in hashes if h in replica.tree.entries]
    return tuple(e.block for e in sorted(entries, key=lambda e: e.height))


ATTACKS: dict[str, type[Behaviour]] = {
    "withhold": Withhold,
    "selfish_mine": SelfishMine,
    "double_spend": DoubleSpend,
}
