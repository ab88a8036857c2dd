"""A PBFT replica (Castro & Liskov, OSDI 1999), normal case, as a sans-IO state machine.

The primary of view v is member v mod n.  It batches client txs into a block,
executes it speculatively on top of the blocks it already proposed, and sends
PRE-PREPARE(v, n, digest).  A backup checks the block against its own
speculative chain (links, roots, every tx signature) and broadcasts PREPARE.
With 2f matching prepares a replica is *prepared* and broadcasts COMMIT; with
2f+1 matching commits it is *committed-local*, and blocks execute strictly in
sequence order.  The 2f+1 commits become the block's commit certificate.

Several sequence numbers may be in flight at once, up to `window` beyond the
last executed one.  View changes, checkpoints and state transfer extend this
class later; messages for other views are ignored until then.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from consensus.events import (
    Action,
    Broadcast,
    ClientTx,
    CommitBlock,
    Event,
    MessageReceived,
    Send,
    SetTimer,
    TimerFired,
)
from consensus.mempool import Mempool
from consensus.pbft.config import PbftConfig
from consensus.pbft.messages import (
    Commit,
    CommitCertificate,
    ForwardTxs,
    Prepare,
    PrePrepare,
    Vote,
    sign,
    signed_by,
)
from ledger.block import Block, BlockHeader, check_successor
from ledger.crypto import KeyPair
from ledger.errors import InvalidBlock, LedgerError
from ledger.state import Receipt, State, apply_block, build_block
from ledger.tx import Tx

log = logging.getLogger("tally.pbft")

BATCH_TIMER = "batch"
FORWARD_TIMER = "forward"
RECENT_COMMITTED = 100_000  # committed tx ids remembered to drop late duplicates
MAX_VERIFIED = 1_000_000  # verified-signature cache entries before it is reset


def nonces(state: State) -> Callable[[bytes], int]:
    return lambda address: state.account(address).nonce


@dataclass
class Slot:
    """Everything known about one sequence number in the current view."""

    pre_prepare: PrePrepare | None = None
    executed: tuple[State, tuple[Receipt, ...]] | None = None  # speculative result once valid
    prepares: dict[int, Prepare] = field(default_factory=dict)
    commits: dict[int, Commit] = field(default_factory=dict)
    sent_commit: bool = False

    def matching(self, votes: dict[int, Prepare] | dict[int, Commit]) -> list[Vote]:
        pp = self.pre_prepare
        return [] if pp is None else [v for v in votes.values() if v.digest == pp.digest]


class Replica:
    def __init__(
        self,
        config: PbftConfig,
        node_id: str,
        key: KeyPair,
        state: State,
        last_header: BlockHeader,
    ) -> None:
        self.config = config
        self.me = config.index_of(node_id)
        if config.members[self.me].public_key != key.public_key:
            raise ValueError(f"key does not match member {node_id}'s public key")
        self.node_id, self.key = node_id, key
        self.view = 0
        self.state, self.last_header = state, last_header
        self.log: dict[int, Slot] = {}
        self.next_seq = last_header.height + 1  # the primary's next sequence number
        self.mempool = Mempool()
        self.stats: Counter[str] = Counter()
        self._verified: set[bytes] = set()  # tx ids whose signature this replica checked
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._forward: list[Tx] = []
        self._batch_timer = self._forward_timer = False
        self._now = 0

    # -- queries ---------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self.last_header.height

    @property
    def primary(self) -> int:
        return self.view % self.config.n

    @property
    def is_primary(self) -> bool:
        return self.primary == self.me

    def next_nonce(self, address: bytes) -> int:
        """The nonce a sender's next tx should carry, counting txs in flight and pending here."""
        seq = self.height
        while (slot := self.log.get(seq + 1)) is not None and slot.executed is not None:
            seq += 1
        return self.mempool.next_nonce(address, self._tip(seq)[1].account(address).nonce)

    # -- the one entry point ---------------------------------------------------------------

    def step(self, event: Event, now_ms: int) -> list[Action]:
        """Consume one event at time `now_ms`; return the actions to carry out, in order."""
        self._now = now_ms
        out: list[Action] = []
        match event:
            case ClientTx(tx):
                self._verified.add(tx.tx_id)
                self.on_request([tx], out)
            case MessageReceived(sender, message):
                self.on_message(sender, message, out)
            case TimerFired(name):
                self.on_timer(name, out)
        return out

    def on_message(self, sender: str, message: object, out: list[Action]) -> None:
        match message:
            case PrePrepare():
                self.on_pre_prepare(message, out)
            case Prepare():
                self.on_prepare(message, out)
            case Commit():
                self.on_commit(message, out)
            case ForwardTxs(txs):
                self.on_request([tx for tx in txs if self._tx_ok(tx)], out)
            case _:
                self.stats["unexpected_message"] += 1
                log.warning("unexpected %s from %s", type(message).__name__, sender)

    def on_timer(self, name: str, out: list[Action]) -> None:
        if name == BATCH_TIMER:
            self._batch_timer = False
            self._propose(out, flush=True)
        elif name == FORWARD_TIMER:
            self._forward_timer = False
            self._flush_forward(out)

    # -- requests and batching -------------------------------------------------------------

    def on_request(self, txs: list[Tx], out: list[Action]) -> None:
        """Client txs: the primary batches them; a backup keeps them and forwards them."""
        fresh = [tx for tx in txs if tx.tx_id not in self._recent and self.mempool.add(tx)]
        self.stats["duplicate_tx"] += len(txs) - len(fresh)
        if not fresh:
            return
        if self.is_primary:
            self._propose(out, flush=False)
        else:
            self._forward.extend(fresh)
            if len(self._forward) >= self.config.batch_size_max:
                self._flush_forward(out)
            elif not self._forward_timer:
                self._forward_timer = True
                out.append(SetTimer(FORWARD_TIMER, max(1, self.config.batch_wait_ms // 2)))

    def _flush_forward(self, out: list[Action]) -> None:
        if self._forward:
            primary = self.config.members[self.primary].node_id
            out.append(Send(primary, ForwardTxs(tuple(self._forward))))
            self._forward = []

    def _propose(self, out: list[Action], *, flush: bool) -> None:
        """Propose full batches now; a partial batch only when the batch wait has passed."""
        cfg = self.config
        while self.next_seq <= self.height + cfg.window and self.mempool:
            if len(self.mempool) < cfg.batch_size_max and not flush:
                if not self._batch_timer:
                    self._batch_timer = True
                    out.append(SetTimer(BATCH_TIMER, cfg.batch_wait_ms))
                return
            parent, state = self._tip(self.next_seq - 1)
            txs = self.mempool.take(nonces(state), cfg.batch_size_max)
            if not txs:
                return  # only txs waiting for a lower nonce: nothing to propose yet
            block, new_state, receipts = build_block(
                state, parent, tuple(txs), self.node_id, self._now
            )
            unsigned = PrePrepare(self.view, self.next_seq, block.hash, self.me, b"", block)
            pp = sign(unsigned, self.key)
            slot = self._slot(self.next_seq)
            slot.pre_prepare, slot.executed = pp, (new_state, receipts)
            out.append(Broadcast(pp))
            self.next_seq += 1
            self.stats["proposed_blocks"] += 1
            flush = False

    # -- the three phases ------------------------------------------------------------------

    def on_pre_prepare(self, pp: PrePrepare, out: list[Action]) -> None:
        if not self._vote_ok(pp):
            return
        block = pp.block
        if pp.replica != self.primary:
            self.stats["pre_prepare_from_backup"] += 1
            return
        if block is None or block.hash != pp.digest:
            self.stats["bad_pre_prepare"] += 1
            return
        slot = self._slot(pp.seq)
        if slot.pre_prepare is not None:
            if slot.pre_prepare.digest != pp.digest:
                self.stats["conflicting_pre_prepare"] += 1  # equivocation: evidence comes later
            return
        slot.pre_prepare = pp
        self._validate_in_order(out)

    def on_prepare(self, p: Prepare, out: list[Action]) -> None:
        if not self._vote_ok(p):
            return
        if p.replica == self.primary:
            self.stats["prepare_from_primary"] += 1
            return
        self._slot(p.seq).prepares.setdefault(p.replica, p)
        self._advance(p.seq, out)

    def on_commit(self, c: Commit, out: list[Action]) -> None:
        if not self._vote_ok(c):
            return
        self._slot(c.seq).commits.setdefault(c.replica, c)
        self._advance(c.seq, out)

    def _vote_ok(self, v: Vote) -> bool:
        """Current view, inside the watermarks, from a member, correctly signed."""
        if v.view == self.view and v.seq <= self.height:
            self.stats["late_vote"] += 1  # normal: the last votes arrive after execution
            return False
        if v.view != self.view or v.seq > self.height + 2 * self.config.window:
            self.stats["out_of_window_vote"] += 1
            return False
        if not 0 <= v.replica < self.config.n:
            self.stats["unknown_replica"] += 1
            return False
        if not signed_by(v, self.config.members[v.replica].public_key):
            self.stats["bad_signature"] += 1
            return False
        return True

    def _validate_in_order(self, out: list[Action]) -> None:
        """Check pre-prepared blocks against the speculative chain, lowest sequence first."""
        seq = self.height + 1
        while (slot := self.log.get(seq)) is not None and slot.pre_prepare is not None:
            if slot.executed is None:
                assert slot.pre_prepare.block is not None
                try:
                    slot.executed = self._check_block(seq, slot.pre_prepare.block)
                except LedgerError as e:
                    self.stats["invalid_block"] += 1
                    log.warning("rejecting block %d from primary: %s", seq, e)
                    slot.pre_prepare = None  # a view change will replace this primary later
                    return
                if not self.is_primary:
                    digest = slot.pre_prepare.digest
                    prepare = sign(Prepare(self.view, seq, digest, self.me, b""), self.key)
                    slot.prepares[self.me] = prepare
                    out.append(Broadcast(prepare))
                self._advance(seq, out)
            seq += 1

    def _check_block(self, seq: int, block: Block) -> tuple[State, tuple[Receipt, ...]]:
        parent, state = self._tip(seq - 1)
        check_successor(parent, block.header)
        if block.header.proposer != self.config.members[self.primary].node_id:
            raise InvalidBlock("proposer is not the primary")
        if block.header.timestamp_ms > self._now + self.config.max_clock_skew_ms:
            raise InvalidBlock("timestamp too far in the future")
        for tx in block.txs:
            if not self._tx_ok(tx):
                raise InvalidBlock(f"tx {tx.tx_id.hex()} fails its stateless checks")
        return apply_block(state, block)

    def _advance(self, seq: int, out: list[Action]) -> None:
        slot = self.log.get(seq)
        if slot is None or slot.executed is None:
            return
        if not slot.sent_commit and len(slot.matching(slot.prepares)) >= 2 * self.config.f:
            slot.sent_commit = True
            assert slot.pre_prepare is not None
            commit = sign(Commit(self.view, seq, slot.pre_prepare.digest, self.me, b""), self.key)
            slot.commits[self.me] = commit
            out.append(Broadcast(commit))
        self._execute(out)

    def _execute(self, out: list[Action]) -> None:
        """Execute every committed-local block that is next in sequence."""
        while (slot := self.log.get(self.height + 1)) is not None and self._committed_local(slot):
            seq = self.height + 1
            assert slot.pre_prepare is not None and slot.pre_prepare.block is not None
            assert slot.executed is not None
            digest = slot.pre_prepare.digest
            commits = tuple(c for _, c in sorted(slot.commits.items()) if c.digest == digest)
            cert = CommitCertificate(self.view, seq, digest, commits)
            block = slot.pre_prepare.block.with_proof(cert.encode())
            state, receipts = slot.executed
            out.append(CommitBlock(block, receipts, state))
            self.state, self.last_header = state, block.header
            del self.log[seq]
            self._forget(block.txs, state)
            self.stats["committed_blocks"] += 1
            self.stats["committed_txs"] += len(block.txs)
        if self.is_primary:
            self._propose(out, flush=not self._batch_timer)

    def _committed_local(self, slot: Slot) -> bool:
        return slot.sent_commit and len(slot.matching(slot.commits)) >= self.config.quorum

    # -- helpers ---------------------------------------------------------------------------

    def _slot(self, seq: int) -> Slot:
        slot = self.log.get(seq)
        if slot is None:
            slot = self.log[seq] = Slot()
        return slot

    def _tip(self, seq: int) -> tuple[BlockHeader, State]:
        """Header and state after `seq`: committed, or speculative from a valid pre-prepare."""
        if seq == self.height:
            return self.last_header, self.state
        slot = self.log[seq]
        assert slot.pre_prepare is not None and slot.pre_prepare.block is not None
        assert slot.executed is not None
        return slot.pre_prepare.block.header, slot.executed[0]

    def _tx_ok(self, tx: Tx) -> bool:
        if tx.tx_id in self._verified:
            return True
        try:
            tx.check_stateless(self.config.chain_id)
        except LedgerError as e:
            self.stats["bad_tx"] += 1
            log.warning("dropping tx %s: %s", tx.tx_id.hex()[:16], e)
            return False
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()  # only a cache: txs dropped from the mempool never leave it
        self._verified.add(tx.tx_id)
        return True

    def _forget(self, txs: tuple[Tx, ...], state: State) -> None:
        self.mempool.remove(txs, nonces(state))
        for tx in txs:
            self._verified.discard(tx.tx_id)
            self._recent[tx.tx_id] = None
        while len(self._recent) > RECENT_COMMITTED:
            self._recent.popitem(last=False)
