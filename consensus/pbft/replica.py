"""A PBFT replica (Castro & Liskov, OSDI 1999 / TOCS 2002) as a sans-IO state machine.

Normal case: the primary of view v (member v mod n) orders client txs in
batches with PRE-PREPARE(v, n, d); backups check the batch and broadcast
PREPARE; with 2f matching prepares a replica is *prepared* and broadcasts
COMMIT; with 2f+1 matching commits it is *committed-local*.  Batches execute
strictly in sequence order, and each becomes a block that carries its 2f+1
commits as its certificate.  Ordering comes first and execution after, so a
view change can re-propose or null any sequence number without breaking the
hash chain.

Checkpoints every K blocks move the low watermark and garbage-collect the log.
Request timers on backups trigger VIEW-CHANGE; the new primary's NEW-VIEW is
recomputed and checked by every replica (see proofs.py).  A replica that falls
behind fetches blocks from peers and checks each one's certificate, so no
single peer is trusted.  Everything a replica signs is handed to the runtime
as `Persist` before it is sent, and a restarted replica reloads it so it
never signs anything contradicting what it signed before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from consensus.events import (
    Action,
    Broadcast,
    CancelTimer,
    ClientTx,
    CommitBlock,
    Event,
    Evidence,
    MessageReceived,
    Persist,
    PruneLog,
    Send,
    SetTimer,
    TimerFired,
)
from consensus.mempool import Mempool
from consensus.messages import Blocks, FetchBlocks, ForwardTxs
from consensus.pbft.config import PbftConfig
from consensus.pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Status,
    ViewChange,
    Vote,
    sign,
)
from consensus.pbft.proofs import (
    contradicts,
    new_view_plan,
    signed_by_member,
    valid_checkpoint_proof,
    valid_evidence,
    valid_new_view,
    valid_view_change,
    verify_certificate,
)
from consensus.replica import PbftStatus
from ledger.block import Batch, Block, BlockHeader
from ledger.crypto import KeyPair
from ledger.encoding import Struct
from ledger.errors import LedgerError, MalformedTx
from ledger.state import Receipt, State, execute_batch
from ledger.tx import EVIDENCE, Tx

log = logging.getLogger("tally.pbft")

BATCH_TIMER, FORWARD_TIMER, REQUEST_TIMER = "batch", "forward", "request"
VIEW_CHANGE_TIMER, STATUS_TIMER, FETCH_TIMER = "view-change", "status", "fetch"
RECENT_COMMITTED = 100_000  # committed tx ids remembered to drop late duplicates
MAX_VERIFIED = 1_000_000  # verified-signature cache entries before it is reset
MAX_FUTURE = 4_096  # votes for a view we have not entered yet, kept for when we do
MAX_BACKOFF = 4  # view-change timeouts double at most this many times
PACE_FACTOR, MAX_PACE = 4, 8  # request timer: 4x the pace of progress, at most 8x the base
FETCH_MAX = 64  # blocks asked for in one FETCH-BLOCKS


V = TypeVar("V", PrePrepare, Prepare, Commit)


def _bare(v: Vote) -> Vote:
    """The vote without a batch: the signature does not cover it, evidence does not need it."""
    return dataclasses.replace(v, batch=None) if isinstance(v, PrePrepare) else v


def nonces(state: State, ahead: dict[bytes, int]) -> Callable[[bytes], int]:
    return lambda address: ahead.get(address, state.account(address).nonce)


@dataclass
class Slot:
    """One sequence number in the current view."""

    pre_prepare: PrePrepare | None = None
    prepares: dict[int, Prepare] = field(default_factory=dict)
    commits: dict[int, Commit] = field(default_factory=dict)
    prepared: bool = False

    def matching_prepares(self) -> list[Prepare]:
        pp = self.pre_prepare
        return [] if pp is None else [p for p in self.prepares.values() if p.digest == pp.digest]

    def matching_commits(self) -> list[Commit]:
        pp = self.pre_prepare
        return [] if pp is None else [c for c in self.commits.values() if c.digest == pp.digest]


class Replica:
    def __init__(
        self,
        config: PbftConfig,
        node_id: str,
        key: KeyPair,
        state: State,
        last_header: BlockHeader,
        records: Iterable[Struct] = (),
    ) -> None:
        self.config = config
        self.me = config.index_of(node_id)
        if config.members[self.me].public_key != key.public_key:
            raise ValueError(f"key does not match member {node_id}'s public key")
        self.node_id, self.key = node_id, key
        self._index = {m.node_id: i for i, m in enumerate(config.members)}
        self._bad_block_from: dict[int, int] = {}
        self.state, self.last_header = state, last_header
        self.view, self.active = 0, True
        self.log: dict[int, Slot] = {}
        self.prepared: dict[int, PreparedCert] = {}  # highest-view certificate per seq
        self.signed: dict[tuple[int, int, int], bytes] = {}  # (tag, view, seq) -> digest
        self.stable_seq, self.stable_proof = 0, ()  # type: tuple[int, tuple[Checkpoint, ...]]
        self.checkpoint_votes: dict[int, dict[int, Checkpoint]] = {}
        self.view_changes: dict[int, dict[int, ViewChange]] = {}
        self.last_new_view: NewView | None = None
        self.failed_views = 0
        self.next_seq = last_header.height + 1  # the primary's next sequence number
        self.mempool = Mempool()
        self.stats: Counter[str] = Counter()
        self.peer_heights: dict[int, int] = {}
        self.fetch_target = 0
        self._fetch_peer: int | None = None
        self._fetch_progress = -1
        self._last_progress_ms = 0
        # The pace of progress while work waits (ms between executions, averaged): the request
        # timer adapts to it, so an overloaded but working primary is not replaced.
        self._pace_ms = 0
        self._busy_since_ms: int | None = None
        self._vote_seen_ms = 0  # the last accepted vote of the current view
        self._ahead: dict[bytes, int] = {}  # sender -> next nonce after batches in flight
        self._inflight: dict[bytes, int] = {}  # tx id -> seq of the batch holding it
        self._verified: set[bytes] = set()
        self._recent: OrderedDict[bytes, None] = OrderedDict()
        self._future: list[Vote] = []
        self._seen: dict[tuple[int, int, int], Vote] = {}  # (member, view, seq) -> first vote
        self._reported: set[tuple[int, int, int]] = set()
        self._shown: set[tuple[int, int, int]] = set()  # (peer, view, seq) shown our pp
        self._forward: list[Tx] = []
        self._timers: set[str] = set()
        self._rebroadcast = False  # pending txs re-shared since the last progress
        self._now = 0
        self._restore(list(records))

    # -- queries ---------------------------------------------------------------------------

    @property
    def height(self) -> int:
        return self.last_header.height

    @property
    def primary(self) -> int:
        return self.config.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.me

    @property
    def high_watermark(self) -> int:
        return self.stable_seq + self.config.log_size

    def footprint(self) -> dict[str, int]:
        """Entries held per in-memory structure: bounded by the watermarks, not by history."""
        return {
            "log_slots": len(self.log),
            "log_votes": sum(
                len(s.prepares) + len(s.commits) + (s.pre_prepare is not None)
                for s in self.log.values()
            ),
            "prepared_certs": len(self.prepared),
            "signed": len(self.signed),
            "pace_ms": self._pace_ms,
            "checkpoint_votes": sum(len(v) for v in self.checkpoint_votes.values()),
            "view_changes": sum(len(v) for v in self.view_changes.values()),
            "future_votes": len(self._future),
            "recent_tx_ids": len(self._recent),
            "verified_tx_ids": len(self._verified),
            "inflight_txs": len(self._inflight),
            "mempool": len(self.mempool),
        }

    def status(self) -> PbftStatus:
        return PbftStatus(
            role="primary" if self.is_primary else "backup",
            view=self.view,
            view_active=self.active,
            primary=self.config.members[self.primary].node_id,
            stable_checkpoint=self.stable_seq,
            low_watermark=self.stable_seq,
            high_watermark=self.high_watermark,
        )

    def inspect(self) -> dict[str, Any]:
        """The log, certificates and votes in flight, for debugging."""
        members = self.config.members
        slots = {
            str(seq): {
                "digest": slot.pre_prepare.digest.hex() if slot.pre_prepare else None,
                "txs": len(slot.pre_prepare.batch.txs)
                if slot.pre_prepare and slot.pre_prepare.batch
                else None,
                "prepares": sorted(slot.prepares),
                "commits": sorted(slot.commits),
                "prepared": slot.prepared,
            }
            for seq, slot in sorted(self.log.items())
        }
        return {
            "view": self.view,
            "active": self.active,
            "height": self.height,
            "next_seq": self.next_seq,
            "stable_checkpoint": self.stable_seq,
            "high_watermark": self.high_watermark,
            "log": slots,
            "prepared_certs": sorted(self.prepared),
            "checkpoint_votes": {str(s): sorted(v) for s, v in self.checkpoint_votes.items()},
            "view_changes": {str(v): sorted(d) for v, d in self.view_changes.items()},
            "peer_heights": {members[r].node_id: h for r, h in self.peer_heights.items()},
            "fetch_target": self.fetch_target,
            "memory": self.footprint(),
            "mempool": len(self.mempool),
        }

    def evidence_refused(self, payload: dict[str, Any]) -> str | None:
        if valid_evidence(payload, self.config):
            return None
        return "evidence does not show one member signing two digests for a slot"

    def next_nonce(self, address: bytes) -> int:
        """The nonce a sender's next tx should carry, counting txs in flight and pending here."""
        nonce = self.state.account(address).nonce
        for slot in self.log.values():
            batch = slot.pre_prepare.batch if slot.pre_prepare else None
            for tx in batch.txs if batch else ():
                if tx.sender_address == address and tx.nonce >= nonce:
                    nonce = tx.nonce + 1
        return self.mempool.next_nonce(address, nonce)

    # -- the entry points ------------------------------------------------------------------

    def start(self, now_ms: int) -> list[Action]:
        """Call once at (re)start: heartbeats begin, and a pending view change resumes."""
        self._now = self._last_progress_ms = now_ms
        out: list[Action] = []
        self._broadcast_status(out)
        if not self.active:
            self._send_view_change(out)
        return out

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
                self._timers.discard(name)
                self.on_timer(name, out)
        return out

    def on_message(self, sender: str, message: object, out: list[Action]) -> None:
        match message:
            case PrePrepare() | Prepare() | Commit():
                self.on_vote(message, out)
            case Checkpoint():
                self.on_checkpoint(message, out)
            case ViewChange():
                self.on_view_change(message, out)
            case NewView():
                self.on_new_view(message, out)
            case Status():
                self.on_status(message, out)
            case Blocks(blocks):
                self.on_blocks(sender, blocks, out)
            case ForwardTxs(txs):
                if not self.is_primary:
                    self._rebroadcast = True  # a backup's rebroadcast: these are shared already
                self.on_request([tx for tx in txs if self._tx_ok(tx)], out)
            case _:
                self.stats["unexpected_message"] += 1
                log.warning("unexpected %s from %s", type(message).__name__, sender)

    def on_timer(self, name: str, out: list[Action]) -> None:
        if name == BATCH_TIMER:
            self._propose(out, flush=True)
        elif name == FORWARD_TIMER:
            self._flush_forward(out)
        elif name == STATUS_TIMER:
            self._broadcast_status(out)
        elif name == REQUEST_TIMER and self._catch_up_target() > self.height:
            self._maybe_fetch(out)  # others are making progress: we are behind, not stuck
            self._arm_request_timer(out, restart=True)
        elif name == REQUEST_TIMER and self.active and self._waiting():
            self.on_request_timeout(out)
        elif name == VIEW_CHANGE_TIMER and not self.active:
            self.failed_views += 1
            self._start_view_change(self.view + 1, out)
        elif name == FETCH_TIMER:
            self._on_fetch_timeout(out)

    def on_request_timeout(self, out: list[Action]) -> None:
        """First expiry: the forward may have been lost, so share the waiting txs with every
        replica (as a PBFT client rebroadcasts), and wait once more.  Second: the primary is
        faulty or cut off, so ask for a view change."""
        self.stats["request_timeouts"] += 1
        base = self.config.view_change_timeout_ms
        if self._now - self._vote_seen_ms < base and (
            self._now - self._last_progress_ms < MAX_PACE * base
        ):
            # Votes of this view keep arriving: the quorum is slow (overloaded), not the
            # primary silent.  Wait on, but not past MAX_PACE timeouts without progress.
            self.stats["request_timer_deferred"] += 1
            self._arm_request_timer(out, restart=True)
            return
        if not self._rebroadcast:
            self._rebroadcast = True
            ready = self.mempool.ready(nonces(self.state, {}), self.config.batch_size_max)
            out.append(Broadcast(ForwardTxs(tuple(ready))))
            self._arm_request_timer(out, restart=True)
            return
        log.info("%s: no progress in view %d, asking for a view change", self.node_id, self.view)
        self._start_view_change(self.view + 1, out)

    # -- requests and batching -------------------------------------------------------------

    def on_request(self, txs: list[Tx], out: list[Action]) -> None:
        """Client txs: the primary batches them; a backup keeps them and forwards them."""
        fresh = [
            tx
            for tx in txs
            if tx.tx_id not in self._recent
            and tx.tx_id not in self._inflight
            and self.mempool.add(tx)
        ]
        self.stats["duplicate_tx"] += len(txs) - len(fresh)
        if not fresh or not self.active:
            self._arm_request_timer(out, restart=False)
            return
        if self.is_primary:
            self._propose(out, flush=False)
        else:
            self._forward.extend(fresh)
            if len(self._forward) >= self.config.batch_size_max:
                self._flush_forward(out)
            else:
                self._set_timer(FORWARD_TIMER, max(1, self.config.batch_wait_ms // 2), out)
            self._arm_request_timer(out, restart=False)

    def _flush_forward(self, out: list[Action]) -> None:
        if self._forward and self.active and not self.is_primary:
            primary = self.config.members[self.primary].node_id
            size = self.config.batch_size_max
            for i in range(0, len(self._forward), size):
                out.append(Send(primary, ForwardTxs(tuple(self._forward[i : i + size]))))
        self._forward = []

    def _propose(self, out: list[Action], *, flush: bool) -> None:
        """Propose full batches now; a partial batch only when the batch wait has passed and
        fewer than `partial_in_flight` batches are in flight."""
        cfg = self.config
        limit = min(self.height + cfg.window, self.high_watermark)
        if any(s.pre_prepare and s.pre_prepare.batch is None for s in self.log.values()):
            return  # a NEW-VIEW holds batches we have not seen: our mempool may repeat them
        while self.active and self.is_primary and self.next_seq <= limit and self.mempool:
            if len(self.mempool) < cfg.batch_size_max:
                if not flush:
                    self._set_timer(BATCH_TIMER, cfg.batch_wait_ms, out)
                    return
                if self.next_seq - 1 - self.height >= cfg.partial_in_flight:
                    return  # it grows until a batch executes (_on_progress proposes it)
            txs = self.mempool.take(nonces(self.state, self._ahead), cfg.batch_size_max)
            if not txs:
                return  # only txs waiting for a lower nonce: nothing to propose yet
            batch = Batch(cfg.chain_id, self.next_seq, self.node_id, self._now, tuple(txs))
            pp = self._sign_vote(
                PrePrepare(self.view, self.next_seq, batch.digest, self.me, b"", batch), out
            )
            if pp is None:
                return
            self._install(pp)
            out.append(Broadcast(pp))
            self.next_seq += 1
            self.stats["proposed_batches"] += 1
            flush = False

    # -- normal case: the three phases -----------------------------------------------------

    def on_vote(self, v: Vote, out: list[Action]) -> None:
        if not self._vote_ok(v, out):
            return
        self._vote_seen_ms = self._now
        match v:
            case PrePrepare():
                self.on_pre_prepare(v, out)
            case Prepare():
                self.on_prepare(v, out)
            case Commit():
                self.on_commit(v, out)

    def on_pre_prepare(self, pp: PrePrepare, out: list[Action]) -> None:
        if pp.replica != self.primary or pp.batch is None or not self._batch_ok(pp, fresh=True):
            self.stats["bad_pre_prepare"] += 1
            return
        slot = self._slot(pp.seq)
        if slot.pre_prepare is not None:
            if slot.pre_prepare.digest != pp.digest:
                self.stats["conflicting_pre_prepare"] += 1  # equivocation: evidence comes later
            return
        self._install(pp)
        self._send_prepare(pp, out)
        self._advance(pp.seq, out)
        self._arm_request_timer(out, restart=False)  # a batch in flight is waiting work too

    def on_prepare(self, p: Prepare, out: list[Action]) -> None:
        if p.replica == self.primary:
            self.stats["prepare_from_primary"] += 1
            return
        self._slot(p.seq).prepares.setdefault(p.replica, p)
        self._share_if_split(p, out)
        self._advance(p.seq, out)

    def on_commit(self, c: Commit, out: list[Action]) -> None:
        self._slot(c.seq).commits.setdefault(c.replica, c)
        self._share_if_split(c, out)
        self._advance(c.seq, out)

    def _share_if_split(self, vote: Prepare | Commit, out: list[Action]) -> None:
        """A peer votes for another digest at our slot: maybe the primary told us different
        things.  Show that peer the pre-prepare we hold; if the primary equivocated, the
        peer now holds two it signed, and reports them."""
        pp = self.log[vote.seq].pre_prepare
        if pp is not None and vote.digest != pp.digest and vote.replica != self.me:
            key = (vote.replica, pp.view, pp.seq)
            if key not in self._shown:
                self._shown.add(key)
                out.append(Send(self.config.members[vote.replica].node_id, _bare(pp)))

    def _vote_ok(self, v: Vote, out: list[Action]) -> bool:
        """Current view, inside the watermarks, from a member, correctly signed."""
        if v.seq <= self.height and v.view <= self.view:
            self.stats["late_vote"] += 1  # normal: the last votes arrive after execution
            return False
        if not signed_by_member(v, self.config):
            self.stats["bad_signature"] += 1
            return False
        self._watch(v, out)
        if v.view > self.view or (v.view == self.view and not self.active):
            if len(self._future) < MAX_FUTURE:
                self._future.append(v)  # replayed if we enter that view
            return False
        if v.view < self.view or not self.stable_seq < v.seq <= self.high_watermark:
            self.stats["out_of_window_vote"] += 1
            return False
        return True

    def _batch_ok(self, pp: PrePrepare, *, fresh: bool) -> bool:
        """A batch is well formed; `fresh` ones (not re-proposed) also name the primary and a
        plausible time."""
        batch = pp.batch
        if batch is None or batch.digest != pp.digest or batch.height != pp.seq:
            return False
        if batch.chain_id != self.config.chain_id:
            return False
        if fresh and (
            batch.proposer != self.config.members[self.primary].node_id
            or batch.proposed_ms > self._now + self.config.max_clock_skew_ms
            or self._repeats_txs(pp.seq, batch)
        ):
            return False
        return all(self._tx_ok(tx) for tx in batch.txs)

    def _repeats_txs(self, seq: int, batch: Batch) -> bool:
        """A fresh batch must not repeat a tx that is committed or in flight at another seq.
        Two prepare quorums share an honest replica, so no tx can then commit twice; batches
        re-proposed by a NEW-VIEW are exempt, as safety requires them to be accepted."""
        ids = [tx.tx_id for tx in batch.txs]
        if len(set(ids)) != len(ids):
            return True
        return any(i in self._recent or self._inflight.get(i, seq) != seq for i in ids)

    def _install(self, pp: PrePrepare) -> None:
        """Accept `pp` for its slot; its txs are in flight, out of the mempool."""
        self._slot(pp.seq).pre_prepare = pp
        if pp.batch is not None:
            self.mempool.remove(pp.batch.txs, lambda _: 0)
            for tx in pp.batch.txs:
                self._inflight[tx.tx_id] = pp.seq
                self._ahead[tx.sender_address] = max(
                    self._ahead.get(tx.sender_address, 0), tx.nonce + 1
                )

    def _send_prepare(self, pp: PrePrepare, out: list[Action]) -> None:
        if self.is_primary:
            return
        prepare = self._sign_vote(Prepare(self.view, pp.seq, pp.digest, self.me, b""), out)
        if prepare is not None:
            self.log[pp.seq].prepares[self.me] = prepare
            out.append(Broadcast(prepare))

    def _advance(self, seq: int, out: list[Action]) -> None:
        slot = self.log.get(seq)
        if slot is None or slot.pre_prepare is None or slot.pre_prepare.batch is None:
            return
        if not slot.prepared and len(slot.matching_prepares()) >= self.config.quorum - 1:
            slot.prepared = True
            pp = slot.pre_prepare
            cert = PreparedCert(
                pp, tuple(sorted(slot.matching_prepares(), key=lambda p: p.replica))
            )
            self.prepared[seq] = cert
            out.append(Persist(cert, seq, cert.view))  # a restarted replica still knows it
            commit = self._sign_vote(Commit(self.view, seq, pp.digest, self.me, b""), out)
            if commit is not None:
                slot.commits[self.me] = commit
                out.append(Broadcast(commit))
        self._execute(out)

    def _execute(self, out: list[Action]) -> None:
        """Execute every committed-local batch that is next in sequence."""
        start = self.height
        while (slot := self.log.get(self.height + 1)) is not None and self._committed_local(slot):
            pp = slot.pre_prepare
            assert pp is not None and pp.batch is not None
            commits = tuple(sorted(slot.matching_commits(), key=lambda c: c.replica))
            cert = CommitCertificate(self.view, pp.seq, pp.digest, commits)
            block, state, receipts = execute_batch(self.state, self.last_header, pp.batch)
            self._commit_block(block.with_proof(cert.encode()), state, receipts, out)
        if self.height > start:
            self._on_progress(out)

    def _on_progress(self, out: list[Action]) -> None:
        """Blocks executed: restart the request timer, and the primary may propose again."""
        if self._busy_since_ms is not None:  # only gaps while work waited measure the pace
            self._pace_ms = (3 * self._pace_ms + self._now - self._busy_since_ms) // 4
        self._busy_since_ms = self._now if self._waiting() else None
        self._rebroadcast = False
        self._arm_request_timer(out, restart=True)
        self._propose(out, flush=BATCH_TIMER not in self._timers)

    def _committed_local(self, slot: Slot) -> bool:
        return slot.prepared and len(slot.matching_commits()) >= self.config.quorum

    def _commit_block(
        self, block: Block, state: State, receipts: tuple[Receipt, ...], out: list[Action]
    ) -> None:
        """A block is final here: hand it to storage, then checkpoint every K blocks."""
        out.append(CommitBlock(block, receipts, state))
        self.state, self.last_header = state, block.header
        self._last_progress_ms = self._now
        slot = self.log.get(block.height)
        if slot and slot.pre_prepare and slot.pre_prepare.digest == block.header.batch_digest():
            del self.log[block.height]
        else:
            self._drop_slot(block.height)  # another batch won this height: requeue ours
        if block.height in self.prepared:
            cert = self.prepared[block.height]  # executed: the body can be fetched from now on
            pp = cert.pre_prepare
            self.prepared[block.height] = PreparedCert(
                PrePrepare(pp.view, pp.seq, pp.digest, pp.replica, pp.signature, None),
                cert.prepares,
            )
        self._forget(block.txs)
        self.next_seq = max(self.next_seq, block.height + 1)
        self.stats["committed_blocks"] += 1
        self.stats["committed_txs"] += len(block.txs)
        if block.height % self.config.checkpoint_interval == 0:
            cp = sign(Checkpoint(block.height, block.hash, state.root(), self.me, b""), self.key)
            out.append(Broadcast(cp))
            self.on_checkpoint(cp, out)

    # -- checkpoints and garbage collection ------------------------------------------------

    def on_checkpoint(self, cp: Checkpoint, out: list[Action]) -> None:
        if cp.seq <= self.stable_seq or not signed_by_member(cp, self.config):
            return
        self._note_height(cp.replica, cp.seq)
        votes = self.checkpoint_votes.setdefault(cp.seq, {})
        votes[cp.replica] = cp
        key = (cp.block_hash, cp.state_root)
        matching = [c for c in votes.values() if (c.block_hash, c.state_root) == key]
        if len(matching) >= self.config.quorum:
            self._stabilize(cp.seq, tuple(sorted(matching, key=lambda c: c.replica)), out)
            self._propose(out, flush=BATCH_TIMER not in self._timers)  # the window moved
        elif cp.seq > self.height:
            self._maybe_fetch(out)

    def _stabilize(self, seq: int, proof: tuple[Checkpoint, ...], out: list[Action]) -> None:
        """A stable checkpoint: move the low watermark and drop everything below it."""
        self.stable_seq, self.stable_proof = seq, proof
        for cp in proof:
            out.append(Persist(cp, seq, 0))
        for old in [s for s in self.log if s <= seq]:
            self._drop_slot(old)
        self.prepared = {s: c for s, c in self.prepared.items() if s > seq}
        self.checkpoint_votes = {s: v for s, v in self.checkpoint_votes.items() if s > seq}
        self.signed = {k: d for k, d in self.signed.items() if k[2] > seq}
        self._seen = {k: v for k, v in self._seen.items() if k[2] > seq}
        self._reported = {k for k in self._reported if k[2] > seq}
        self._shown = {k for k in self._shown if k[2] > seq}
        out.append(PruneLog(seq, self.view))
        if seq > self.height:
            self.fetch_target = max(self.fetch_target, seq)
            self._maybe_fetch(out)

    # -- view change -----------------------------------------------------------------------

    def _start_view_change(self, view: int, out: list[Action]) -> None:
        if view <= self.view:
            return  # views only go up: re-entering this one could sign a second NEW-VIEW
        self.view, self.active = view, False
        self._requeue_inflight()
        for name in (REQUEST_TIMER, BATCH_TIMER):
            self._cancel_timer(name, out)
        self.stats["view_changes_started"] += 1
        self._send_view_change(out)

    def _send_view_change(self, out: list[Action]) -> None:
        prepared = tuple(c for s, c in sorted(self.prepared.items()) if s > self.stable_seq)
        vc = ViewChange(self.view, self.stable_seq, self.stable_proof, prepared, self.me, b"")
        vc = sign(vc, self.key)
        out.append(Persist(vc, -1, self.view))
        out.append(Broadcast(vc))
        self.view_changes.setdefault(self.view, {})[self.me] = vc
        self._cancel_timer(VIEW_CHANGE_TIMER, out)
        self._try_new_view(out)

    def on_view_change(self, vc: ViewChange, out: list[Action]) -> None:
        if vc.new_view < self.view or (vc.new_view == self.view and self.active):
            return
        if vc.replica in self.view_changes.get(vc.new_view, {}):
            return
        if not valid_view_change(vc, self.config):
            self.stats["bad_view_change"] += 1
            return
        for cert in vc.prepared:  # certificates carry other members' signed votes
            self._watch(cert.pre_prepare, out)
        self.view_changes.setdefault(vc.new_view, {})[vc.replica] = vc
        # f+1 replicas want a later view: at least one honest one timed out, so join them.
        wanting: dict[int, int] = {}
        for view, senders in self.view_changes.items():
            if view > self.view:
                for r in senders:
                    if r != self.me:
                        wanting[r] = min(wanting.get(r, view), view)
        if len(wanting) >= self.config.weak:
            self._start_view_change(min(wanting.values()), out)
        self._try_new_view(out)

    def _try_new_view(self, out: list[Action]) -> None:
        vcs = self.view_changes.get(self.view, {})
        if self.active or len(vcs) < self.config.quorum:
            return
        if VIEW_CHANGE_TIMER not in self._timers:
            # Castro & Liskov: the clock for the new primary starts once 2f+1 replicas
            # agree to change, so an early replica does not give up before the others join.
            timeout = self.config.view_change_timeout_ms << min(self.failed_views, MAX_BACKOFF)
            self._set_timer(VIEW_CHANGE_TIMER, timeout, out)
        if not self.is_primary:
            return
        chosen = tuple(vcs[r] for r in sorted(vcs))
        plan = new_view_plan(self.view, chosen, self.config)
        pps = tuple(
            sign(PrePrepare(self.view, seq, digest, self.me, b"", batch), self.key)
            for seq, digest, batch in plan.entries
        )
        nv = sign(NewView(self.view, chosen, pps, self.me, b""), self.key)
        for pp in pps:
            self.signed[(PrePrepare.TAG, pp.view, pp.seq)] = pp.digest
        out.append(Persist(nv, -1, self.view))
        out.append(Broadcast(nv))
        self._enter_view(nv, out)

    def on_new_view(self, nv: NewView, out: list[Action]) -> None:
        if nv.view < self.view or (nv.view == self.view and self.active):
            return
        if not valid_new_view(nv, self.config):
            self.stats["bad_new_view"] += 1
            return
        out.append(Persist(nv, -1, nv.view))
        self._enter_view(nv, out)

    def _enter_view(self, nv: NewView, out: list[Action]) -> None:
        log.info(
            "%s: entering view %d (primary %s)",
            self.node_id,
            nv.view,
            self.config.members[self.config.primary(nv.view)].node_id,
        )
        self.view, self.active, self.failed_views = nv.view, True, 0
        self._rebroadcast = False
        self.last_new_view = nv
        self.stats["views_entered"] += 1
        self._cancel_timer(VIEW_CHANGE_TIMER, out)
        self._requeue_inflight()
        self.view_changes = {v: d for v, d in self.view_changes.items() if v > nv.view}
        plan = new_view_plan(nv.view, nv.view_changes, self.config)
        if plan.stable_seq > self.stable_seq:
            self._stabilize(plan.stable_seq, plan.checkpoint_proof, out)
        for pp in nv.pre_prepares:
            self.next_seq = max(self.next_seq, pp.seq + 1)
            if pp.seq <= self.height:
                continue
            if pp.batch is None:  # committed before: fetch it with its certificate
                self.fetch_target = max(self.fetch_target, pp.seq)
                self._install(pp)  # holds the place: no other batch may take this seq
                continue
            if not self._batch_ok(pp, fresh=False):
                self.stats["bad_pre_prepare"] += 1
                continue
            self._install(pp)
            self._send_prepare(pp, out)
        self._maybe_fetch(out)
        future, self._future = self._future, []
        for v in future:
            if v.view == self.view:
                self.on_vote(v, out)
            elif v.view > self.view:
                self._future.append(v)
        for seq in sorted(self.log):
            self._advance(seq, out)
        self._forward = list(self.mempool.pending())
        self._flush_forward(out)
        self._arm_request_timer(out, restart=True)
        self._propose(out, flush=True)

    def _requeue_inflight(self) -> None:
        """Leaving a view: batches not executed go back to the mempool, the log starts over."""
        for seq in list(self.log):
            self._drop_slot(seq)
        self._inflight.clear()
        self._ahead.clear()
        self.next_seq = self.height + 1

    def _drop_slot(self, seq: int) -> None:
        """Forget a sequence number; the txs of its batch wait in the mempool again (a batch
        that lost its slot to another, or to a view change, must not take its txs along)."""
        slot = self.log.pop(seq, None)
        batch = slot.pre_prepare.batch if slot and slot.pre_prepare else None
        for tx in batch.txs if batch else ():
            self._inflight.pop(tx.tx_id, None)
            self.mempool.add(tx)

    # -- heartbeats and state transfer -----------------------------------------------------

    def _broadcast_status(self, out: list[Action]) -> None:
        status = Status(self.view, self.active, self.height, self.stable_seq, self.me, b"")
        status = sign(status, self.key)
        out.append(Broadcast(status))
        if self.active:
            # Only when execution has stalled: resending every batch in flight each interval
            # while it is merely slow (n = 10 on 2 cores) multiplied the load that made it slow.
            if self._now - self._last_progress_ms >= 2 * self.config.status_interval_ms:
                self._retransmit(out)
            self._tick_contracts(out)
        else:  # retransmit: a lost VIEW-CHANGE must not stall the change
            own = self.view_changes.get(self.view, {}).get(self.me)
            if own is not None:
                out.append(Broadcast(own))
            # Clients' txs must not wait on our view change: replicas still in the old
            # view can get them ordered.
            ready = self.mempool.ready(nonces(self.state, {}), self.config.batch_size_max)
            if ready:
                out.append(Broadcast(ForwardTxs(tuple(ready))))
        self._set_timer(STATUS_TIMER, self.config.status_interval_ms, out)
        self._maybe_fetch(out)

    def _tick_contracts(self, out: list[Action]) -> None:
        """Contract deadlines are ledger time (block timestamps): once our clock is past the
        earliest active deadline, an idle primary proposes an empty batch, so that a block
        stamped after it runs the default.  Before that, an idle cluster adds no block."""
        idle = not self.log and not self.mempool
        due = self._earliest_deadline() if self.is_primary and idle else None
        if due is not None and self._now > due:
            batch = Batch(self.config.chain_id, self.next_seq, self.node_id, self._now, ())
            pp = self._sign_vote(
                PrePrepare(self.view, self.next_seq, batch.digest, self.me, b"", batch), out
            )
            if pp is not None:
                self._install(pp)
                out.append(Broadcast(pp))
                self.next_seq += 1

    def _earliest_deadline(self) -> int | None:
        """The earliest deadline (ledger time, ms) of an active contract, or None."""
        dues = []
        for record in self.state.contracts.values():
            engine = self.state.engines.get(record.engine) if record.active else None
            due = engine.deadline(record) if engine else None
            if due is not None:
                dues.append(due)
        return min(dues, default=None)

    def _retransmit(self, out: list[Action]) -> None:
        """Resend our votes for batches still in flight: PBFT's quorums are exactly as large
        as they must be, so one lost message can otherwise stall a sequence number."""
        for seq in sorted(self.log):
            slot = self.log[seq]
            own: list[Vote] = [
                v for v in (slot.prepares.get(self.me), slot.commits.get(self.me)) if v
            ]
            if self.is_primary and slot.pre_prepare and slot.pre_prepare.batch is not None:
                own.insert(0, slot.pre_prepare)
            out.extend(Broadcast(v) for v in own)
            self.stats["retransmitted_votes"] += len(own)

    def on_status(self, st: Status, out: list[Action]) -> None:
        if not signed_by_member(st, self.config):
            self.stats["bad_signature"] += 1
            return
        self._note_height(st.replica, st.height)
        peer = self.config.members[st.replica].node_id
        behind = st.view < self.view or (st.view == self.view and not st.active)
        if behind and self.active and self.last_new_view is not None:
            out.append(Send(peer, self.last_new_view))  # it missed our NEW-VIEW
        elif st.view < self.view and not self.active:
            own = self.view_changes.get(self.view, {}).get(self.me)
            if own is not None:
                out.append(Send(peer, own))
        if st.stable_seq < self.stable_seq:
            # It missed the CHECKPOINTs that made ours stable (it was down, or they were
            # lost): the proof lets it move its watermarks once it has caught up.
            out.extend(Send(peer, cp) for cp in self.stable_proof)
        self._maybe_fetch(out)

    def _note_height(self, replica: int, height: int) -> None:
        if replica != self.me and height > self.peer_heights.get(replica, -1):
            self.peer_heights[replica] = height

    def _catch_up_target(self) -> int:
        """The highest height a peer claims.  Fetched blocks prove themselves with their
        certificates, so one honest claim is enough, and a false one only costs a request:
        a peer that does not deliver loses its claim."""
        return max([self.fetch_target, *self.peer_heights.values()])

    def _distrust(self, peer: int) -> None:
        if self.peer_heights.get(peer, 0) > self.height:
            self.peer_heights[peer] = self.height

    def _maybe_fetch(self, out: list[Action]) -> None:
        """Start state transfer when we are behind and normal operation will not close the gap."""
        target = self._catch_up_target()
        if target <= self.height or FETCH_TIMER in self._timers:
            return
        stalled = self._now - self._last_progress_ms >= 2 * self.config.status_interval_ms
        far = target > self.height + self.config.window or target <= self.stable_seq
        if not (stalled or far or target <= self.fetch_target or not self.active):
            return
        self._fetch_progress = self.height
        self._send_fetch(self._next_fetch_peer(), target, out)

    def _next_fetch_peer(self) -> int:
        """Rotate through the peers that claim to be ahead of us, then through everyone."""
        ahead = [r for r, h in sorted(self.peer_heights.items()) if h > self.height]
        others = [r for r in range(self.config.n) if r != self.me]
        candidates = ahead or others
        last = self._fetch_peer if self._fetch_peer is not None else self.me
        later = [r for r in candidates if r > last]
        return (later or candidates)[0]

    def _send_fetch(self, peer: int, target: int, out: list[Action]) -> None:
        self._fetch_peer = peer
        last = min(target, self.height + FETCH_MAX)
        out.append(Send(self.config.members[peer].node_id, FetchBlocks(self.height + 1, last)))
        self._set_timer(FETCH_TIMER, self.config.fetch_timeout_ms, out, replace=True)
        self.stats["fetch_requests"] += 1

    def _on_fetch_timeout(self, out: list[Action]) -> None:
        if self._catch_up_target() <= self.height:
            return
        if self.height == self._fetch_progress:
            self.stats["fetch_timeouts"] += 1  # silent or slow: ask someone else
            if self._fetch_peer is not None:
                self._distrust(self._fetch_peer)
        self._fetch_progress = self.height
        self._send_fetch(self._next_fetch_peer(), self._catch_up_target(), out)

    def on_blocks(self, sender: str, blocks: tuple[Block, ...], out: list[Action]) -> None:
        """Blocks from state transfer: each must carry a valid certificate and re-execute to
        the same hash, so a lying peer can only waste our time."""
        for block in blocks:
            if block.height <= self.height:
                continue
            if block.height != self.height + 1 or not self._apply_fetched(block, out):
                self.stats["bad_fetched_block"] += 1
                peer = self._index.get(sender)
                if peer is not None and self._bad_block_from.get(peer) != block.height:
                    self._bad_block_from[peer] = block.height  # say it once, not every retry
                    log.warning("%s: bad block %d from %s", self.node_id, block.height, sender)
                if peer is not None:
                    self._distrust(peer)
                self._cancel_timer(FETCH_TIMER, out)
                self._send_fetch(self._next_fetch_peer(), self._catch_up_target(), out)
                return
        self.stats["fetched_blocks"] += len(blocks)
        if self._catch_up_target() > self.height and blocks:
            peer = self._fetch_peer if self._fetch_peer is not None else self._next_fetch_peer()
            self._send_fetch(peer, self._catch_up_target(), out)
        elif self._catch_up_target() <= self.height:
            self.fetch_target = 0
            self._cancel_timer(FETCH_TIMER, out)
        self._execute(out)

    def _apply_fetched(self, block: Block, out: list[Action]) -> bool:
        """Commit a fetched block if its certificate and re-execution check out."""
        h = block.header
        try:
            cert = verify_certificate(block, self.config)
        except LedgerError:
            return False
        for commit in cert.commits:  # a fetched certificate can expose an equivocator
            self._watch(commit, out)
        if not all(self._tx_ok(tx) for tx in block.txs):
            return False
        batch = Batch(h.chain_id, h.height, h.proposer, h.proposed_ms, block.txs)
        ours, state, receipts = execute_batch(self.state, self.last_header, batch)
        if ours.hash != block.hash:
            return False
        self._commit_block(ours.with_proof(block.proof), state, receipts, out)
        return True

    # -- crash recovery --------------------------------------------------------------------

    def _sign_vote(self, msg: V, out: list[Action]) -> V | None:
        """Sign and persist a vote, unless we signed a different digest for its slot before."""
        key = (msg.TAG, msg.view, msg.seq)
        earlier = self.signed.get(key)
        if earlier is not None and earlier != msg.digest:
            self.stats["refused_conflicting_vote"] += 1
            log.error("%s: refusing to sign a second digest for %s", self.node_id, key)
            return None
        self.signed[key] = msg.digest
        signed = sign(msg, self.key)
        out.append(Persist(signed, msg.seq, msg.view))
        return signed

    def _restore(self, records: list[Struct]) -> None:
        """Reload what this replica persisted before a crash."""
        vc_view, nv_view, proofs = -1, 0, {}  # type: int, int, dict[int, list[Checkpoint]]
        own_pre_prepares: list[PrePrepare] = []
        for rec in records:
            match rec:
                case PrePrepare() | Prepare() | Commit():
                    self.signed[(rec.TAG, rec.view, rec.seq)] = rec.digest
                    nv_view = max(nv_view, rec.view)
                    if isinstance(rec, PrePrepare) and rec.batch is not None:
                        own_pre_prepares.append(rec)
                case PreparedCert():
                    old = self.prepared.get(rec.seq)
                    if old is None or old.view < rec.view:
                        self.prepared[rec.seq] = rec
                case ViewChange():
                    vc_view = max(vc_view, rec.new_view)
                    self.view_changes.setdefault(rec.new_view, {})[self.me] = rec
                case NewView():
                    if rec.view >= nv_view:
                        nv_view, self.last_new_view = rec.view, rec
                    for pp in rec.pre_prepares:
                        if pp.replica == self.me:
                            self.signed[(pp.TAG, pp.view, pp.seq)] = pp.digest
                case Checkpoint():
                    proofs.setdefault(rec.seq, []).append(rec)
        for seq in sorted(proofs, reverse=True):
            if valid_checkpoint_proof(seq, proofs[seq], self.config):
                self.stable_seq, self.stable_proof = seq, tuple(proofs[seq])
                break
        self.view, self.active = max(vc_view, nv_view), vc_view <= nv_view
        if self.active:
            self.view_changes = {v: d for v, d in self.view_changes.items() if v > self.view}
        self.prepared = {s: c for s, c in self.prepared.items() if s > self.stable_seq}
        if self.active and self.last_new_view is not None and self.last_new_view.view == self.view:
            own_pre_prepares += [p for p in self.last_new_view.pre_prepares if p.batch is not None]
        for pp in own_pre_prepares:  # a primary keeps the sequence numbers it already used
            if pp.view == self.view and pp.seq > self.height:
                self._install(pp)
        used = [seq for tag, v, seq in self.signed if tag == PrePrepare.TAG and v == self.view]
        self.next_seq = max([self.next_seq, *(seq + 1 for seq in used)])

    # -- evidence ----------------------------------------------------------------------------

    def _watch(self, v: Vote, out: list[Action]) -> None:
        """Remember the first vote each member signed per (view, seq); a contradicting one is
        equivocation, reported once as evidence for the ledger."""
        if not self.stable_seq < v.seq <= self.high_watermark:
            return  # bounded memory: only the live window is watched
        key = (v.replica, v.view, v.seq)
        first = self._seen.setdefault(key, v)
        if contradicts(first, v) and key not in self._reported:
            self._reported.add(key)
            self.stats["equivocations_seen"] += 1
            member = self.config.members[v.replica].node_id
            log.warning(
                "%s: %s signed two digests for view %d seq %d", self.node_id, member, v.view, v.seq
            )
            out.append(Evidence(member, _bare(first), _bare(v)))

    # -- helpers ---------------------------------------------------------------------------

    def _waiting(self) -> bool:
        """Work this replica expects the primary to order: ready txs or batches in flight."""
        in_flight = any(
            s.pre_prepare is not None and s.pre_prepare.batch is not None for s in self.log.values()
        )
        return in_flight or self.mempool.has_ready(nonces(self.state, {}))

    def _arm_request_timer(self, out: list[Action], *, restart: bool) -> None:
        """Castro's request timer: started when work waits, restarted on progress only, so a
        stream of new requests cannot postpone replacing a silent primary."""
        if not self.active or self.is_primary:
            return
        if self._waiting():
            base = self.config.view_change_timeout_ms
            # Four times the recent pace, within [base, 8 base]: a faulty primary that slows
            # down can stretch the timer by at most 8x (Aardvark's concern), not forever.
            paced = min(max(base, PACE_FACTOR * self._pace_ms), MAX_PACE * base)
            timeout = paced << min(self.failed_views, MAX_BACKOFF)
            self._set_timer(REQUEST_TIMER, timeout, out, replace=restart)
        else:
            self._cancel_timer(REQUEST_TIMER, out)

    def _set_timer(
        self, name: str, delay_ms: int, out: list[Action], replace: bool = False
    ) -> None:
        if name not in self._timers or replace:
            self._timers.add(name)
            out.append(SetTimer(name, delay_ms))

    def _cancel_timer(self, name: str, out: list[Action]) -> None:
        if name in self._timers:
            self._timers.discard(name)
            out.append(CancelTimer(name))

    def _slot(self, seq: int) -> Slot:
        slot = self.log.get(seq)
        if slot is None:
            slot = self.log[seq] = Slot()
        return slot

    def _tx_ok(self, tx: Tx) -> bool:
        if tx.tx_id in self._verified:
            return True
        try:
            tx.check_stateless(self.config.chain_id)
            if tx.kind == EVIDENCE and not valid_evidence(tx.payload, self.config):
                raise MalformedTx("evidence does not prove equivocation")
        except LedgerError as e:
            self.stats["bad_tx"] += 1
            log.warning("dropping tx %s: %s", tx.tx_id.hex()[:16], e)
            return False
        if len(self._verified) >= MAX_VERIFIED:
            self._verified.clear()  # only a cache: txs dropped from the mempool never leave it
        self._verified.add(tx.tx_id)
        return True

    def _forget(self, txs: tuple[Tx, ...]) -> None:
        self.mempool.remove(txs, nonces(self.state, {}))
        for tx in txs:
            self._verified.discard(tx.tx_id)
            self._inflight.pop(tx.tx_id, None)
            self._recent[tx.tx_id] = None
            if self._ahead.get(tx.sender_address, 0) <= self.state.account(tx.sender_address).nonce:
                self._ahead.pop(tx.sender_address, None)
        while len(self._recent) > RECENT_COMMITTED:
            self._recent.popitem(last=False)
