"""The block tree of a proof-of-work node: every valid block it knows, with cumulative work,
and the states needed to roll back and forward.

Checks a block must pass, each with the reason it is refused:

- size, seal encoding, miner is a member, the miner's signature;
- the proof: dsha256(work header) <= target(bits);
- the time: at most `max_future_ms` ahead of this node's clock;
- (with its parent known) bits equal the retarget rule's for that height, the
  header links to the parent, and executing the txs gives its roots.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.pow.config import PowConfig
from consensus.pow.difficulty import BadBits, bits_to_target, retarget, work
from consensus.pow.seal import PowSeal, pow_value, seal_signed_by, work_prefix
from ledger.block import Block, check_successor
from ledger.encoding import DecodeError
from ledger.errors import InvalidBlock
from ledger.state import Receipt, State, apply_block


class Rejected(Exception):
    """A block that is not valid (as opposed to one that waits for its parent)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass
class Entry:
    block: Block
    bits: int
    total_work: int
    state: State | None  # dropped for blocks far below the tip
    receipts: tuple[Receipt, ...]

    @property
    def height(self) -> int:
        return self.block.height

    @property
    def parent(self) -> bytes:
        return self.block.header.parent


def seal_of(block: Block) -> PowSeal:
    try:
        return PowSeal.decode(block.proof)
    except DecodeError as e:
        raise Rejected("bad_seal", f"block {block.height}: unreadable seal ({e})") from None


def check_standalone(config: PowConfig, block: Block, now_ms: int) -> PowSeal:
    """Everything that can be checked without the parent."""
    size = len(block.encode())
    if size > config.max_block_bytes or len(block.txs) > config.max_block_txs:
        raise Rejected(
            "oversize_block",
            f"block {block.height}: {size} bytes, {len(block.txs)} txs (limits "
            f"{config.max_block_bytes} bytes, {config.max_block_txs} txs)",
        )
    if block.header.chain_id != config.chain_id:
        raise Rejected("wrong_chain", f"block for chain {block.header.chain_id!r}")
    seal = seal_of(block)
    key = config.member_key(block.header.proposer)
    if key is None:
        raise Rejected("not_a_member", f"block {block.height} mined by {block.header.proposer!r}")
    if not seal_signed_by(seal, block.hash, key):
        raise Rejected("bad_signature", f"block {block.height}: the miner's signature is wrong")
    try:
        target = bits_to_target(seal.bits)
    except BadBits as e:
        raise Rejected("wrong_target", str(e)) from None
    if len(seal.nonce) != 8 or pow_value(work_prefix(block.hash, seal.bits), seal.nonce) > target:
        raise Rejected("invalid_proof", f"block {block.height}: the hash is above its target")
    if block.header.proposed_ms > now_ms + config.max_future_ms:
        ahead = block.header.proposed_ms - now_ms
        raise Rejected("timestamp_ahead", f"block {block.height} is {ahead} ms in the future")
    return seal


class BlockTree:
    """Known blocks by hash; the best tip is the one with the most cumulative work (the first
    seen among equals)."""

    def __init__(self, config: PowConfig, base: Entry, recent: list[Entry]) -> None:
        self.config = config
        self.entries: dict[bytes, Entry] = {}
        self.active: dict[int, bytes] = {}  # height -> hash on the best chain
        for e in [base, *recent]:
            self.entries[e.block.hash] = e
            self.active[e.height] = e.block.hash
        self.base_height = base.height
        self.tip = (recent[-1] if recent else base).block.hash

    @property
    def tip_entry(self) -> Entry:
        return self.entries[self.tip]

    def expected_bits(self, parent: Entry) -> int:
        """The retarget rule: every `retarget_interval` blocks, scale the target by the time
        the last interval took against `target_block_ms`."""
        height, n = parent.height + 1, self.config.retarget_interval
        if height % n:
            return parent.bits
        first = self.ancestor(parent, max(height - 1 - n, 0))
        if first is None:
            return parent.bits
        actual = parent.block.header.timestamp_ms - first.block.header.timestamp_ms
        expected = (parent.height - first.height) * self.config.target_block_ms
        return retarget(parent.bits, actual, expected, self.config.limit_bits)

    def ancestor(self, entry: Entry, height: int) -> Entry | None:
        while entry.height > height:
            parent = self.entries.get(entry.parent)
            if parent is None:
                return None
            entry = parent
        return entry

    def add(self, block: Block, seal: PowSeal) -> Entry:
        """Validate `block` against its (known) parent and add it."""
        parent = self.entries[block.header.parent]
        want = self.expected_bits(parent)
        if seal.bits != want:
            raise Rejected(
                "wrong_target",
                f"block {block.height} claims bits {seal.bits:#010x}; the rule says {want:#010x}",
            )
        if parent.state is None:
            raise Rejected("below_horizon", f"block {block.height} forks below the reorg horizon")
        try:
            check_successor(parent.block.header, block.header)
            state, receipts = apply_block(parent.state, block)
        except InvalidBlock as e:
            raise Rejected("invalid_block", str(e)) from None
        entry = Entry(block, seal.bits, parent.total_work + work(seal.bits), state, receipts)
        self.entries[block.hash] = entry
        return entry

    def branch(self, tip: bytes) -> tuple[int, list[Entry]]:
        """The fork height with the best chain, and the entries from there up to `tip`."""
        path: list[Entry] = []
        entry = self.entries[tip]
        while self.active.get(entry.height) != entry.block.hash:
            path.append(entry)
            entry = self.entries[entry.parent]
        return entry.height, path[::-1]

    def switch(self, tip: bytes) -> tuple[int, list[Entry], list[Entry]]:
        """Make `tip` the best chain: (fork height, entries added, entries abandoned)."""
        fork, added = self.branch(tip)
        dropped = [self.entries[self.active.pop(h)] for h in sorted(self.active) if h > fork]
        for e in added:
            self.active[e.height] = e.block.hash
        self.tip = tip
        self.prune()
        return fork, added, dropped

    def prune(self) -> None:
        """Keep states only within the reorg horizon; forget side blocks below it."""
        floor = self.tip_entry.height - self.config.reorg_horizon
        for h, e in list(self.entries.items()):
            if e.height < floor and self.active.get(e.height) != h:
                del self.entries[h]
            elif e.height < floor:
                e.state = None
        for height in [h for h in self.active if h < floor - self.config.retarget_interval - 1]:
            self.entries.pop(self.active.pop(height), None)
