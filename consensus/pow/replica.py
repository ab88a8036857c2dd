"""A proof-of-work member as a sans-IO state machine.

Events in: client txs, peer messages (`Blocks`, `ForwardTxs`, `PowTip`), timers
and `BlockMined` from the miner.  Actions out: `Mine` jobs, `CommitBlock`
(the best chain grew), `SwitchChain` (a reorganisation), and messages.

- The template: txs from the mempool executed on the best tip, sealed with
  the retarget rule's bits; a new tip or a refresh replaces the job, so the
  miner abandons stale work.
- Fork choice: most cumulative work; the first seen wins a tie.
- A block whose parent is unknown waits in a bounded orphan pool while the node
  fetches the blocks before it from the peer that sent it.
- After a reorganisation, txs of abandoned blocks that are still valid return
  to the mempool.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any

from consensus.events import (
    Action,
    BlockMined,
    Broadcast,
    ClientTx,
    CommitBlock,
    Event,
    MessageReceived,
    Mine,
    Send,
    SetTimer,
    SwitchChain,
    TimerFired,
)
from consensus.mempool import Mempool
from consensus.messages import Blocks, FetchBlocks, ForwardTxs
from consensus.pow.chain import BlockTree, Entry, Rejected, check_standalone
from consensus.pow.config import PowConfig
from consensus.pow.difficulty import bits_to_target, work
from consensus.pow.seal import PowTip, make_seal, pow_value, work_prefix
from consensus.replica import PowStatus
from ledger.block import Block
from ledger.crypto import KeyPair
from ledger.state import Receipt, State, build_block
from ledger.tx import Tx

log = logging.getLogger("tally.pow")
FETCH_SPAN = 64  # blocks asked for at once when filling a gap


@dataclass(frozen=True)
class Recent:
    """A stored block of the best chain with its receipts and the state after it."""

    block: Block
    receipts: tuple[Receipt, ...]
    state: State
    bits: int
    total_work: int


@dataclass
class _Template:
    job: int
    block: Block
    bits: int
    tx_ids: frozenset[bytes]


class PowReplica:
    def __init__(self, config: PowConfig, node_id: str, key: KeyPair, recent: list[Recent]) -> None:
        """`recent`: the last stored blocks of the best chain, oldest first (the first may be
        genesis); their states are what a reorganisation can roll back to."""
        self.config, self.node_id, self.key = config, node_id, key
        entries = [Entry(r.block, r.bits, r.total_work, r.state, r.receipts) for r in recent]
        self.tree = BlockTree(config, entries[0], entries[1:])
        self.mempool = Mempool()
        self.orphans: OrderedDict[bytes, tuple[Block, str]] = OrderedDict()
        self.stats: Counter[str] = Counter()
        self.template: _Template | None = None
        self.jobs = 0
        self.now = 0
        self.peers = [m.node_id for m in config.members if m.node_id != node_id]
        self._relay: list[Tx] = []
        self.last_rejection = ""

    # -- views used by the node and the RPC ------------------------------------------------

    @property
    def state(self) -> State:
        state = self.tree.tip_entry.state
        assert state is not None  # the tip always keeps its state
        return state

    @property
    def height(self) -> int:
        return self.tree.tip_entry.height

    def next_nonce(self, address: bytes) -> int:
        return self.mempool.next_nonce(address, self.state.account(address).nonce)

    def status(self) -> PowStatus:
        tip = self.tree.tip_entry
        return PowStatus(
            bits=f"{tip.bits:#010x}",
            difficulty=work(tip.bits),
            total_work=str(tip.total_work),
            orphans=len(self.orphans),
            final_depth=self.config.confirmations,
        )

    def inspect(self) -> dict[str, Any]:
        tip = self.tree.tip_entry
        return {
            "height": self.height,
            "tip": tip.block.hash.hex(),
            "total_work": str(tip.total_work),
            "bits": f"{tip.bits:#010x}",
            "job": self.jobs,
            "stats": dict(self.stats),
            "last_rejection": self.last_rejection,
            "memory": self.footprint(),
            "mempool": len(self.mempool),
        }

    def evidence_refused(self, payload: dict[str, Any]) -> str | None:
        return "evidence of equivocation is for PBFT; this chain is proof of work"

    def confirmations(self, height: int) -> int:
        return max(self.height - height + 1, 0)

    # -- the state machine -----------------------------------------------------------------

    def start(self, now_ms: int) -> list[Action]:
        self.now = now_ms
        return [SetTimer("tip", self.config.tip_interval_ms), *self._new_template()]

    def step(self, event: Event, now_ms: int) -> list[Action]:
        self.now = now_ms
        match event:
            case ClientTx(tx):
                return self.on_client_tx(tx)
            case BlockMined(job, nonce):
                return self.on_block_mined(job, nonce)
            case TimerFired("tip"):
                return self.on_tip_timer()
            case TimerFired("relay"):
                return self._flush_relay()
            case MessageReceived(sender, Blocks(blocks)):
                return self.on_blocks(sender, blocks)
            case MessageReceived(_, ForwardTxs(txs)):
                admitted = [tx for tx in txs if self._admit(tx)]
                return self._template_if_idle() if admitted else []
            case MessageReceived(sender, PowTip() as tip):
                return self.on_tip(sender, tip)
        self.stats["ignored"] += 1
        return []

    def on_client_tx(self, tx: Tx) -> list[Action]:
        if not self._admit(tx):
            return []
        self._relay.append(tx)
        out: list[Action] = [SetTimer("relay", 10)] if len(self._relay) == 1 else []
        return out + self._template_if_idle()

    def _template_if_idle(self) -> list[Action]:
        """A miner working on an empty block takes new txs at once; otherwise they wait for
        the next refresh (restarting the job for every tx would waste little, but churn)."""
        if self.template is not None and not self.template.tx_ids:
            return self._new_template()
        return []

    def _admit(self, tx: Tx) -> bool:
        if tx.nonce < self.state.account(tx.sender_address).nonce:
            self.stats["stale_tx"] += 1
            return False
        return self.mempool.add(tx)

    def _flush_relay(self) -> list[Action]:
        txs, self._relay = tuple(self._relay), []
        return [Broadcast(ForwardTxs(txs))] if txs else []

    def on_tip_timer(self) -> list[Action]:
        """Announce the tip; refresh the template if txs it lacks are waiting."""
        entry = self.tree.tip_entry
        out: list[Action] = [
            Broadcast(PowTip.of(entry.height, entry.block.hash, entry.total_work)),
            SetTimer("tip", self.config.tip_interval_ms),
        ]
        ready = self.mempool.ready(self._nonce_of, self.config.max_block_txs)
        if (
            self.template is None
            or any(t.tx_id not in self.template.tx_ids for t in ready)
            or self._deadline_passed_since(self.template.block.header.timestamp_ms)
        ):
            out += self._new_template()
        return out

    def _deadline_passed_since(self, stamped_ms: int) -> bool:
        """Whether a contract deadline (ledger time) passed between the template's timestamp
        and now: a fresh template then carries a time that runs the default.  Miners mine
        empty blocks too, so blocks come every target interval; contracts never need more."""
        for record in self.state.contracts.values():
            engine = self.state.engines.get(record.engine) if record.active else None
            due = engine.deadline(record) if engine else None
            if due is not None and stamped_ms < due < self.now:
                return True
        return False

    def on_tip(self, sender: str, tip: PowTip) -> list[Action]:
        if tip.hash in self.tree.entries or tip.work <= self.tree.tip_entry.total_work:
            return []
        first = max(1, min(self.height, tip.height) - 8)
        return [Send(sender, FetchBlocks(first, min(tip.height, first + FETCH_SPAN - 1)))]

    def on_block_mined(self, job: int, nonce: int) -> list[Action]:
        t = self.template
        if t is None or job != t.job:
            self.stats["stale_job"] += 1
            return []
        proof = pow_value(work_prefix(t.block.hash, t.bits), nonce.to_bytes(8, "big"))
        if proof > bits_to_target(t.bits):
            self.stats["bad_nonce_from_miner"] += 1
            return []
        block = t.block.with_proof(make_seal(t.block, t.bits, nonce, self.key).encode())
        self.stats["mined"] += 1
        return self.on_blocks(self.node_id, (block,))

    def on_blocks(self, sender: str, blocks: tuple[Block, ...]) -> list[Action]:
        """Validate, store in the tree, connect orphans, and move to the best tip."""
        out: list[Action] = []
        accepted: list[Block] = []
        orphaned: list[Block] = []
        for block in blocks:
            if block.hash in self.tree.entries or block.hash in self.orphans:
                continue
            try:
                seal = check_standalone(self.config, block, self.now)
                if block.header.parent not in self.tree.entries:
                    self._orphan(sender, block)
                    orphaned.append(block)
                    continue
                self.tree.add(block, seal)
            except Rejected as e:
                self.stats[f"rejected_{e.reason}"] += 1
                self.last_rejection = str(e)
                log.warning("%s: refused a block from %s: %s", self.node_id, sender, e)
                continue
            accepted.append(block)
            accepted += self._connect_orphans(block.hash)
        if orphaned and sender != self.node_id:  # ask the sender for what comes before
            low = min(b.height for b in orphaned)
            out.append(Send(sender, FetchBlocks(max(1, low - FETCH_SPAN), low - 1)))
        if not accepted:
            return out
        if len(blocks) == 1:  # a new block (not a catch-up reply): pass it on
            out += [Broadcast(Blocks((b,))) for b in accepted]
        best = max(accepted, key=lambda b: self.tree.entries[b.hash].total_work)
        if self.tree.entries[best.hash].total_work > self.tree.tip_entry.total_work:
            out += self._switch(best.hash)
        return out

    def _orphan(self, sender: str, block: Block) -> None:
        """Hold a block whose parent is unknown; the pool is bounded, oldest out first."""
        self.orphans[block.hash] = (block, sender)
        self.stats["orphans"] += 1
        while len(self.orphans) > self.config.max_orphans:
            self.orphans.popitem(last=False)
            self.stats["orphans_evicted"] += 1

    def _connect_orphans(self, parent: bytes) -> list[Block]:
        connected: list[Block] = []
        queue = [parent]
        while queue:
            p = queue.pop()
            for h, (block, _) in list(self.orphans.items()):
                if block.header.parent != p:
                    continue
                del self.orphans[h]
                try:
                    self.tree.add(block, check_standalone(self.config, block, self.now))
                except Rejected as e:
                    self.stats[f"rejected_{e.reason}"] += 1
                    continue
                connected.append(block)
                queue.append(h)
        return connected

    def _switch(self, tip: bytes) -> list[Action]:
        fork, added, dropped = self.tree.switch(tip)
        new_ids = {tx.tx_id for e in added for tx in e.block.txs}
        for e in dropped:  # txs of abandoned blocks go back if they can still apply
            for tx in e.block.txs:
                if tx.tx_id not in new_ids:
                    self._admit(tx)
        for e in added:
            self.mempool.remove(e.block.txs, self._nonce_of)
        out: list[Action]
        if dropped:
            self.stats["reorgs"] += 1
            self.stats["reorg_depth_max"] = max(self.stats["reorg_depth_max"], len(dropped))
            blocks = tuple((e.block, e.receipts) for e in added)
            out = [SwitchChain(fork, blocks, self.state)]
        else:
            out = [CommitBlock(e.block, e.receipts, e.state or self.state) for e in added]
        return out + self._new_template()

    def _new_template(self) -> list[Action]:
        tip = self.tree.tip_entry
        txs = tuple(self.mempool.ready(self._nonce_of, self.config.max_block_txs))
        block, _, _ = build_block(self.state, tip.block.header, txs, self.node_id, self.now)
        bits = self.tree.expected_bits(tip)
        self.jobs += 1
        self.template = _Template(self.jobs, block, bits, frozenset(t.tx_id for t in txs))
        return [Mine(self.jobs, work_prefix(block.hash, bits), bits_to_target(bits))]

    def _nonce_of(self, address: bytes) -> int:
        return self.state.account(address).nonce

    def footprint(self) -> dict[str, int]:
        return {
            "tree_blocks": len(self.tree.entries),
            "orphans": len(self.orphans),
            "mempool": len(self.mempool),
        }
