"""SQLite store of blocks, txs, receipts and state.  One SQL transaction per block.

WAL mode with synchronous=FULL: once `append` returns, the block survives a
crash or power loss, so the node may acknowledge it.  The state is a sparse Merkle tree
whose nodes are in the same file (ledger/smtstore.py).  The state is derived data, a pure
function of the blocks, so it is written less eagerly than they are: each block's
transaction writes one of `parts` slices of the buffered nodes (by hash), so the state of
`parts - 1` blocks ago is always whole on disk (`meta.state_height`).  On reopen the store
opens that state at its root (read as it is used) and executes the blocks after it again,
so a crash loses no acknowledged state: it costs at most `parts - 1` blocks of execution.

Opened with `verify`, the store is checked before anything is read from it: SQLite's own
check of the file (`PRAGMA quick_check`, or the full `integrity_check`), then the stored
chain's head (`check_head`).  A damaged file is a StoreDamaged, never an answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ledger import index, smt
from ledger.block import Block, BlockHeader, Genesis, check_successor, tx_root
from ledger.contract import Engines
from ledger.encoding import DecodeError, Tag
from ledger.errors import InvalidBlock
from ledger.smt import EMPTY, MissingNode, NodeStore
from ledger.smtstore import CorruptNode, SqliteNodeStore, part_of
from ledger.state import Receipt, State, apply_block, genesis_header, receipts_root
from ledger.tx import EVIDENCE, Tx

IDS_PER_QUERY = 500  # bound parameters in one query, far below SQLite's limit (32766)

# States kept readable behind the head by default (proofs at a height); a proof-of-work node
# keeps what its reorganisations need (PowParams.kept_blocks)
STATE_HISTORY = 64

# Slices of the tree's nodes written a block (ledger/smtstore.py): at 1M accounts a block
# writes ~12k nodes to as many random pages; one slice in 32 lets each page gather 32 blocks'
# nodes before it is written.  The cost: the nodes of up to 32 blocks in memory (~100 MB at
# 1M accounts), and up to 31 blocks to execute again after a crash.  Never more slices than
# kept states (a node is deleted only once the state on disk no longer needs it).
STATE_PARTS = 32
# ...and more while the buffer holds more than this many nodes (~115 MB; a bulk load, or
# blocks far bigger than 1,000 changes: 32 of those at 1M accounts buffer ~400k): a block
# then also writes the fullest slices, so a fill slows down smoothly instead of stalling.
STATE_BUFFER_NODES = 1 << 19
# SQLite's page cache, in KiB (its default is 2 MiB).  At 1M accounts the node table's
# interior B-tree pages alone are ~4 MB, so with the default every node read and every
# slice write fetched them again from the OS.  Measured there (1,000 random changes a
# block, after the build's deletions): Store.append p50 562 -> 449 ms for 34 MB more RSS.
SQLITE_CACHE_KIB = 32 * 1024

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks(
    height INTEGER PRIMARY KEY, hash BLOB NOT NULL UNIQUE,
    header BLOB NOT NULL, proof BLOB NOT NULL, n_txs INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS txs(
    height INTEGER NOT NULL, idx INTEGER NOT NULL, tx_id BLOB NOT NULL,
    raw BLOB NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (height, idx));
CREATE INDEX IF NOT EXISTS txs_by_id ON txs(tx_id);
CREATE TABLE IF NOT EXISTS smt_stale(
    part INTEGER NOT NULL, height INTEGER NOT NULL, hashes BLOB NOT NULL,
    PRIMARY KEY (part, height));
CREATE TABLE IF NOT EXISTS smt_stale_leaves(height INTEGER PRIMARY KEY, leaves BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS evidence(
    height INTEGER NOT NULL, idx INTEGER NOT NULL, member TEXT NOT NULL,
    PRIMARY KEY (height, idx));
CREATE TABLE IF NOT EXISTS consensus_log(
    id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, view INTEGER NOT NULL,
    record BLOB NOT NULL);
"""


class StoreError(Exception):
    """The database does not belong to this chain or is inconsistent."""


class StoreDamaged(StoreError):
    """The file is damaged: what it holds cannot be trusted, so nothing may be served from
    it.  (A store of another chain is a plain StoreError: not damaged, just not ours.)"""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path, self.problem = str(path), " ".join(problem.split())  # one line
        super().__init__(f"store {self.path} is damaged: {self.problem}")


class StoreCorrupt(StoreDamaged):
    """SQLite finds the file malformed: not a database, truncated, or a failed check."""


class BrokenChain(StoreDamaged):
    """The stored blocks do not hang together: a header that is not its hash, a parent link
    that does not hold, or a block whose stored txs or receipts are not its header's roots."""


class StateMismatch(StoreDamaged):
    """The stored state is not the state root of the last stored block."""


# `check_head` re-checks the txs and receipts of this many blocks at the head; the headers'
# hash chain it checks down to genesis (1-2 s per 100,000 blocks on 2 shared cores).
HEAD_TX_BLOCKS = 64
Verify = Literal["quick", "full"]
_CORRUPT = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


@dataclass(frozen=True)
class TxRecord:
    tx: Tx
    height: int
    index: int
    reason: str


class Store:
    """The durable chain, and the committed state (its tree on disk, behind a cache)."""

    def __init__(
        self,
        path: str | Path,
        genesis: Genesis,
        *,
        engines: Engines,
        synchronous: str = "FULL",
        verify: Verify | None = None,
        keep_states: int = STATE_HISTORY,
    ) -> None:
        """`engines` are the contract engines its state executes (see ledger.state.State).
        `verify`: check the file first ("quick": PRAGMA quick_check, "full": integrity_check)
        and the head after loading (`check_head`); any damage raises a StoreDamaged.
        `keep_states`: the states of the last that many blocks stay readable (`state_at`);
        older tree nodes are deleted as the chain grows."""
        self.path = str(path)
        self.genesis = genesis
        self.engines = engines
        if keep_states < 1:
            raise ValueError("keep_states must be >= 1")
        self.keep_states = keep_states  # may grow later, never below `parts`
        self.parts = min(STATE_PARTS, keep_states)
        self._depth = 0  # nesting of open transactions (see _Transaction)
        self._appended = False  # this process added blocks (close writes their state)
        self._state_height = 0  # the state of this block is whole on disk (committed)
        self._whole: int | None = None  # what it becomes when the open transaction commits
        self._stale_leaves: dict[int, set[bytes]] = {}  # smt_stale_leaves, by height
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            self._open(genesis, synchronous, verify)
        except BaseException:
            self._db.close()
            raise

    def _open(self, genesis: Genesis, synchronous: str, verify: Verify | None) -> None:
        try:
            if verify is not None:
                self.check_integrity(full=verify == "full")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            self._db.executescript(SCHEMA + index.SCHEMA)
            self.nodes = SqliteNodeStore(self._db, parts=self.parts)
            stored = self._db.execute("SELECT value FROM meta WHERE key='genesis'").fetchone()
            if stored is None:
                self._init(genesis)
            elif bytes(stored[0]) != genesis.encode():
                raise StoreError(
                    f"{self.path} holds a different chain than genesis {genesis.chain_id!r}"
                )
            self._reslice_stale()
            self._stale_leaves = self._load_stale_leaves()
            self.state, self.last_header = self._load()
            if not index.is_built(self._db):  # a store written before the indexes existed
                with self._transaction():
                    index.build(self._db, self.engines, self.state.contracts)
            self.tx_count: int = self._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0]
            if verify is not None:
                self.check_head()
            if verify == "full":
                self.check_state()
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorcode", 0) & 0xFF in _CORRUPT:
                raise StoreCorrupt(self.path, str(e)) from e
            raise
        except DecodeError as e:
            raise StoreCorrupt(self.path, f"a stored record does not decode: {e}") from e

    def check_integrity(self, full: bool = False) -> None:
        """SQLite's own check of the whole file: every page, b-tree and record is well formed
        (`PRAGMA quick_check`); with `full`, also every index against its table
        (`PRAGMA integrity_check`).  Raises StoreCorrupt."""
        pragma = "integrity_check" if full else "quick_check"
        try:
            rows = self._db.execute(f"PRAGMA {pragma}(5)").fetchall()
        except sqlite3.DatabaseError as e:
            raise StoreCorrupt(self.path, f"{pragma}: {e}") from e
        if [r[0] for r in rows] != ["ok"]:
            raise StoreCorrupt(self.path, f"{pragma}: " + "; ".join(str(r[0]) for r in rows))

    def check_head(self, tx_blocks: int = HEAD_TX_BLOCKS) -> None:
        """The stored chain hangs together: heights 0..last with no gap; block 0 is the
        genesis header; every stored hash is its header's hash and every header links to the
        one before (check_successor), down to genesis; the last header is the one loaded; and
        the last `tx_blocks` blocks' stored txs and receipts are their headers' roots.  (The
        state against the last state root `_load` checks.)  Raises BrokenChain."""
        parent: BlockHeader | None = None
        rows = self._db.execute("SELECT height, hash, header, n_txs FROM blocks ORDER BY height")
        counts: dict[int, int] = {}
        first_tx_block = self.last_header.height - tx_blocks + 1
        for height, stored_hash, raw, n_txs in rows:
            try:
                header = BlockHeader.decode(bytes(raw))
            except DecodeError as e:
                raise BrokenChain(self.path, f"block {height}'s header does not decode: {e}") from e
            if header.height != height:
                raise BrokenChain(self.path, f"block {height} holds the header of {header.height}")
            if header.sha256() != bytes(stored_hash):
                raise BrokenChain(self.path, f"block {height}'s stored hash is not its header's")
            if parent is None:
                if header != genesis_header(self.genesis):
                    raise BrokenChain(self.path, f"block {height} is not the genesis header")
            else:
                try:
                    check_successor(parent, header)
                except InvalidBlock as e:
                    raise BrokenChain(self.path, str(e)) from None
            if height >= first_tx_block:
                counts[height] = n_txs
            parent = header
        if parent is None or parent != self.last_header:
            raise BrokenChain(self.path, "the last stored header is not the one loaded")
        for height, n_txs in counts.items():
            self._check_block_body(height, n_txs)

    def _check_block_body(self, height: int, n_txs: int) -> None:
        header = self.last_header if height == self.height else None
        if header is None:
            row = self._db.execute("SELECT header FROM blocks WHERE height=?", (height,))
            header = BlockHeader.decode(bytes(row.fetchone()[0]))
        rows = self._db.execute(
            "SELECT idx, tx_id, raw, reason FROM txs WHERE height=? ORDER BY idx", (height,)
        ).fetchall()
        if [r[0] for r in rows] != list(range(n_txs)):
            raise BrokenChain(self.path, f"block {height} lacks stored txs ({len(rows)}/{n_txs})")
        try:
            txs = [Tx.decode(bytes(r[2])) for r in rows]
        except DecodeError as e:
            raise BrokenChain(self.path, f"a tx of block {height} does not decode: {e}") from e
        if [t.tx_id for t in txs] != [bytes(r[1]) for r in rows]:
            raise BrokenChain(self.path, f"block {height}: a stored tx id is not its tx's")
        if tx_root(txs) != header.tx_root:
            raise BrokenChain(self.path, f"block {height}'s stored txs are not its tx root")
        receipts = [Receipt(bytes(r[1]), r[3]) for r in rows]
        if receipts_root(receipts) != header.receipts_root:
            raise BrokenChain(self.path, f"block {height}'s receipts are not its receipts root")

    def _init(self, genesis: Genesis) -> None:
        State.from_genesis(genesis, self.engines, self.nodes)  # its trees, into self.nodes
        with self._transaction():
            self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (genesis.encode(),))
            self._db.execute("INSERT INTO meta VALUES ('state_parts', ?)", (self.parts,))
            self._insert_block(Block(genesis_header(genesis), (), b""), ())
            self._write_state(0)
            index.mark_built(self._db)

    def _meta_int(self, key: str, default: int) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            return default
        if not isinstance(row[0], int):
            raise StoreDamaged(self.path, f"meta.{key} is {row[0]!r}, not a number")
        return row[0]

    def _load(self) -> tuple[State, BlockHeader]:
        """The last block's header and its state: the state whole on disk, opened at its root
        (no account is read until it is asked for), and the blocks after it executed again
        (after a crash: at most `parts - 1` of them), then written whole."""
        row = self._db.execute("SELECT header FROM blocks ORDER BY height DESC LIMIT 1").fetchone()
        header = BlockHeader.decode(bytes(row[0]))
        whole = self._meta_int("state_height", header.height)  # older stores: every block
        if not 0 <= whole <= header.height:
            raise StateMismatch(self.path, f"the state is said to be whole at block {whole}")
        row = self._db.execute("SELECT header FROM blocks WHERE height=?", (whole,)).fetchone()
        try:
            state = State.at(self.nodes, BlockHeader.decode(bytes(row[0])).state_root, self.engines)
        except (MissingNode, CorruptNode) as e:
            problem = f"the stored state tree lacks block {whole}'s state root ({e})"
            raise StateMismatch(self.path, problem) from None
        self._state_height = whole
        if whole < header.height:
            state = self._replay(state, whole + 1)
            with self._transaction():
                self._write_state(header.height)
        return state, header

    def _replay(self, state: State, start: int) -> State:
        """`state` with the stored blocks from `start` on executed again (each checked
        against its roots): a StateMismatch if one does not give its header's state."""
        for block in self.iter_blocks(start):
            try:
                state, _ = apply_block(state, block)
            except (InvalidBlock, MissingNode, CorruptNode) as e:
                problem = f"block {block.height} does not execute to its state root again ({e})"
                raise StateMismatch(self.path, problem) from None
            state.release_delta()
        return state

    @property
    def height(self) -> int:
        return self.last_header.height

    def iter_blocks(self, start: int = 1) -> Iterator[Block]:
        """The stored blocks from `start` on, streamed in height order (for replay)."""
        txs = self._db.cursor().execute(
            "SELECT height, raw FROM txs WHERE height >= ? ORDER BY height, idx", (start,)
        )
        pending = txs.fetchone()
        rows = self._db.cursor().execute(
            "SELECT height, header, proof FROM blocks WHERE height >= ? ORDER BY height", (start,)
        )
        for height, header, proof in rows:
            body = []
            while pending is not None and pending[0] == height:
                body.append(Tx.decode(bytes(pending[1])))
                pending = txs.fetchone()
            yield Block(BlockHeader.decode(bytes(header)), tuple(body), bytes(proof))

    def append(self, block: Block, receipts: tuple[Receipt, ...], state: State) -> None:
        """Durably add the next block with its receipts and the state after it."""
        check_successor(self.last_header, block.header)
        if state.root() != block.header.state_root:
            raise InvalidBlock(f"block {block.height}: state does not match its state root")
        state = self._adopt(state)
        with self._transaction():
            self._insert_block(block, receipts)
            self._retire(
                block.height, [self.state.root()], state.root(), state.delta_from(self.state)
            )
            self._write_state(block.height, block.height % self.parts)
            while self.nodes.waiting > STATE_BUFFER_NODES:
                self.nodes.write(self.nodes.fullest())
            self._db.executemany(
                "INSERT INTO evidence VALUES (?, ?, ?)",
                [
                    (block.height, i, tx.payload["member"])
                    for i, (tx, r) in enumerate(zip(block.txs, receipts, strict=True))
                    if tx.kind == EVIDENCE and r.ok
                ],
            )
            index.index_contracts(self._db, self.engines, self.state.contracts, state.contracts)
        self.state, self.last_header = state, block.header
        state.release_delta()  # used: a kept State need not hold its block's node hashes
        self.tx_count += len(block.txs)
        self._appended = True

    def switch(
        self,
        fork_height: int,
        blocks: Iterable[tuple[Block, tuple[Receipt, ...]]],
        state: State,
    ) -> None:
        """A reorganisation, in one SQL transaction: drop the blocks above `fork_height`,
        append `blocks` in their place, and make `state` (the state after the last of them)
        the stored state.  A crash leaves either the old chain or the new one."""
        blocks = list(blocks)
        parent_row = self._db.execute(
            "SELECT header FROM blocks WHERE height=?", (fork_height,)
        ).fetchone()
        if parent_row is None:
            raise InvalidBlock(f"no stored block at fork height {fork_height}")
        parent = BlockHeader.decode(bytes(parent_row[0]))
        for block, _ in blocks:
            check_successor(parent, block.header)
            parent = block.header
        if state.root() != parent.state_root:
            raise InvalidBlock("the state after a reorganisation does not match its last block")
        state = self._adopt(state)
        with self._transaction():
            for table in ("blocks", "txs", "evidence", "smt_stale", "smt_stale_leaves"):
                self._db.execute(f"DELETE FROM {table} WHERE height > ?", (fork_height,))
            self._stale_leaves = self._load_stale_leaves()
            index.forget_above(self._db, fork_height)
            for block, receipts in blocks:
                self._insert_block(block, receipts)
            kept = index.indexed(self._db, self.state.contracts)
            index.index_contracts(self._db, self.engines, kept, state.contracts)
            # What the fork's state and the abandoned head had that the new head has not.
            # (Nodes that abandoned blocks wrote and replaced within their branch are not
            # tracked, and stay: a reorganisation is rare and short.)
            was = [self.header(fork_height).state_root, self.state.root()]
            self._retire(parent.height, was, state.root())
            self._write_state(parent.height)
        self.state, self.last_header = state, parent
        self._appended = True
        self.tx_count = self._db.execute("SELECT COUNT(*) FROM txs").fetchone()[0]

    def _insert_block(self, block: Block, receipts: tuple[Receipt, ...]) -> None:
        h = block.height
        self._db.execute(
            "INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
            (h, block.hash, block.header.encode(), block.proof, len(block.txs)),
        )
        self._db.executemany(
            "INSERT INTO txs VALUES (?, ?, ?, ?, ?)",
            [
                (h, i, tx.tx_id, tx.encode(), r.reason)
                for i, (tx, r) in enumerate(zip(block.txs, receipts, strict=True))
            ],
        )
        index.index_txs(self._db, h, block.txs)

    def state_at(self, height: int) -> State:
        """The state after the block at `height`, if it is still kept (else MissingNode)."""
        if height == self.height:
            return self.state
        if not self.height - self.keep_states <= height < self.height:
            raise MissingNode(f"the state at height {height} is not kept")
        return State.at(self.nodes, self.header(height).state_root, self.engines)

    def _retire(
        self, height: int, old_roots: list[bytes], new_root: bytes, delta: smt.Delta | None = None
    ) -> None:
        """Record the tree nodes that the state at `height` no longer has (a row per slice of
        the hash space: they are deleted once `height` is `keep_states` behind the head, by
        `_write_state`), after taking back such a record for a node the new state has again.
        `delta`, when the transition recorded it, saves walking the old and new trees."""
        if delta is not None:
            gone, made = delta.retired - delta.made, delta.made
            gone_leaves, made_leaves = delta.retired_leaves - made, delta.made_leaves
        else:
            gone, made = set(), set()
            for old in old_roots:
                g, m = _tree_diff(self.nodes, old, new_root)
                gone |= g
                made |= m
            gone -= made
            gone_leaves, made_leaves = self._leaves(gone), self._leaves(made)
        self._revive(made, made_leaves)
        self._record_stale(height, gone, gone_leaves)

    def _leaves(self, hashes: Iterable[bytes]) -> set[bytes]:
        return {h for h in hashes if (self.nodes.get(h) or b"\0")[0] == Tag.SMT_LEAF}

    def _record_stale(self, height: int, gone: set[bytes], leaves: set[bytes]) -> None:
        """A row per slice of the nodes retired at `height`, and one of the leaves among them,
        which stays until every slice's row is deleted (see `_revive`)."""
        rows: dict[int, list[bytes]] = {}
        for h in sorted(gone):
            rows.setdefault(part_of(h, self.parts), []).append(h)
        self._db.executemany(
            "INSERT OR REPLACE INTO smt_stale VALUES (?, ?, ?)",
            [(p, height, b"".join(hs)) for p, hs in rows.items()],
        )
        if leaves:
            known = self._stale_leaves.setdefault(height, set())
            known |= leaves
            row = (height, b"".join(sorted(known)))
            self._db.execute("INSERT OR REPLACE INTO smt_stale_leaves VALUES (?, ?)", row)

    def _revive(self, made: set[bytes], made_leaves: set[bytes]) -> None:
        """A node is named by its content, so a node a block made may be one an older block
        retired (a record back to an earlier value): its retirement no longer holds.  Only a
        leaf can come back on its own: the state never deletes a key, so an inner node comes
        back only when a leaf below it takes back its old value, in the same block.  That
        leaf's retirement is no older than the node's, and the leaves retired at each height
        stay known until all of that height's rows are deleted (heights in order), so they
        tell when; the rows are then rewritten without the nodes made again (a node already
        deleted is simply written again, being made).  Rare."""
        heights = [h for h, leaves in self._stale_leaves.items() if made_leaves & leaves]
        if not heights:
            return
        rows = self._db.execute("SELECT part, height, hashes FROM smt_stale").fetchall()
        for part, height, hashes in rows:
            named = _split(hashes)
            if made.intersection(named):
                kept = b"".join(h for h in named if h not in made)
                update = "UPDATE smt_stale SET hashes = ? WHERE part = ? AND height = ?"
                self._db.execute(update, (kept, part, height))
        for height in heights:
            leaves = self._stale_leaves[height] - made_leaves
            self._stale_leaves[height] = leaves
            row = (b"".join(sorted(leaves)), height)
            self._db.execute("UPDATE smt_stale_leaves SET leaves = ? WHERE height = ?", row)

    def _write_state(self, height: int, part: int | None = None) -> None:
        """In the open transaction: delete the nodes of slice `part` (of every slice for
        None) retired `keep_states` blocks before `height`, write that slice of the buffered
        nodes, and record which block's state is then whole on disk: `height` once every
        slice is written, else the block `parts - 1` before (each of the last `parts`
        blocks wrote its own slice, `height % parts`, of everything buffered until then).
        A retired node is deleted only once the whole state is past it: `parts <= keep_states`."""
        horizon = height - self.keep_states
        for p in range(self.parts) if part is None else (part,):
            due = "SELECT hashes FROM smt_stale WHERE part = ? AND height <= ?"
            for (hashes,) in self._db.execute(due, (p, horizon)).fetchall():
                self.nodes.delete_many(_split(hashes))
            self._db.execute("DELETE FROM smt_stale WHERE part = ? AND height <= ?", (p, horizon))
        if any(h <= horizon for h in self._stale_leaves):
            left = {h for (h,) in self._db.execute("SELECT DISTINCT height FROM smt_stale")}
            for h in [h for h in self._stale_leaves if h <= horizon and h not in left]:
                self._db.execute("DELETE FROM smt_stale_leaves WHERE height = ?", (h,))
                del self._stale_leaves[h]
        self.nodes.write(part)
        whole = height if part is None else max(self._state_height, height - self.parts + 1)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('state_height', ?)", (whole,))
        self._whole = whole

    def _finished(self, committed: bool) -> None:
        """The outermost transaction ended: what it wrote of the state is durable, or (rolled
        back) still buffered, and the stale leaves are the table's again."""
        if committed:
            self.nodes.written()
            if self._whole is not None:
                self._state_height = self._whole
        else:
            self.nodes.unwritten()
            self._stale_leaves = self._load_stale_leaves()
        self._whole = None

    def _load_stale_leaves(self) -> dict[int, set[bytes]]:
        rows = self._db.execute("SELECT height, leaves FROM smt_stale_leaves").fetchall()
        return {height: set(_split(leaves)) for height, leaves in rows}

    def _reslice_stale(self) -> None:
        """Rewrite the stale rows of an older layout into this store's slices: one row a
        block (`smt_retired`, whose leaves are found by reading its nodes), or another
        number of slices (a store reopened with another `keep_states`)."""
        old = self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'smt_retired'").fetchone()
        if old is None and self._meta_int("state_parts", self.parts) == self.parts:
            return
        by_height: dict[int, set[bytes]] = {}
        for height, hashes in self._db.execute("SELECT height, hashes FROM smt_stale").fetchall():
            by_height.setdefault(height, set()).update(_split(hashes))
        retired = "SELECT height, hashes FROM smt_retired" if old else "SELECT 0, x'' LIMIT 0"
        leaves = {}
        for height, hashes in self._db.execute(retired).fetchall():
            by_height.setdefault(height, set()).update(_split(hashes))
            leaves[height] = self._leaves(_split(hashes))
        with self._transaction():
            self._db.execute("DELETE FROM smt_stale")
            self._db.execute("DROP TABLE IF EXISTS smt_retired")
            for height, named in by_height.items():
                self._record_stale(height, named, leaves.get(height, set()))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('state_parts', ?)", (self.parts,))

    def _adopt(self, state: State) -> State:
        """`state` with its tree in this store's nodes.  A state derived from `self.state`
        is there already (its new nodes wait for the next flush); one built elsewhere (a
        test, a replay) has its missing nodes copied: a walk from its root that stops at
        every node already here, whose subtree is then here too (nodes are named by hash)."""
        if state.nodes is self.nodes:
            return state
        stack, new = [state.root()], {}
        while stack:
            node = stack.pop()
            if node == EMPTY or node in new or self.nodes.get(node) is not None:
                continue
            blob = state.nodes.get(node)
            if blob is None:
                raise MissingNode(node.hex())
            new[node] = blob
            if blob[0] != Tag.SMT_LEAF:  # an inner node, or the root over both trees
                stack += (blob[1:33], blob[33:65])
        self.nodes.put_many(new)
        return State.at(self.nodes, state.root(), state.engines)

    def check_state(self) -> None:
        """Every stored tree node is the node its hash names (one scan of the table, so the
        node cache is not flooded).  A node that is missing is found when it is read.
        Raises StateMismatch."""
        for node_hash, blob in self._db.execute("SELECT hash, node FROM smt_nodes"):
            if smt.node_hash(bytes(blob)) != bytes(node_hash):
                problem = f"state tree node {bytes(node_hash).hex()} is not the node its hash names"
                raise StateMismatch(self.path, problem)

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    def batch(self) -> _Transaction:
        """Everything written inside is one SQL transaction: durable together, at the end."""
        return _Transaction(self)

    def get_block(self, height: int) -> Block | None:
        row = self._db.execute(
            "SELECT header, proof FROM blocks WHERE height=?", (height,)
        ).fetchone()
        if row is None:
            return None
        raws = self._db.execute(
            "SELECT raw FROM txs WHERE height=? ORDER BY idx", (height,)
        ).fetchall()
        txs = tuple(Tx.decode(bytes(r[0])) for r in raws)
        return Block(BlockHeader.decode(bytes(row[0])), txs, bytes(row[1]))

    def header(self, height: int) -> BlockHeader:
        """The header of the stored block at `height` (KeyError if there is none)."""
        if height == self.height:
            return self.last_header
        row = self._db.execute("SELECT header FROM blocks WHERE height=?", (height,)).fetchone()
        if row is None:
            raise KeyError(height)
        return BlockHeader.decode(bytes(row[0]))

    def block_hash(self, height: int) -> bytes | None:
        row = self._db.execute("SELECT hash FROM blocks WHERE height=?", (height,)).fetchone()
        return None if row is None else bytes(row[0])

    def repeated_tx_ids(self) -> list[bytes]:
        """Tx ids included more than once in this chain (there should be none)."""
        rows = self._db.execute(
            "SELECT tx_id FROM txs GROUP BY tx_id HAVING COUNT(*) > 1"
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def evidence(self, member: str | None = None) -> list[TxRecord]:
        """Committed evidence txs, oldest first, optionally against one member."""
        rows = self._db.execute(
            "SELECT t.raw, t.height, t.idx, t.reason FROM evidence e JOIN txs t "
            "ON t.height = e.height AND t.idx = e.idx WHERE ? IS NULL OR e.member = ? "
            "ORDER BY e.height, e.idx",
            (member, member),
        ).fetchall()
        return [TxRecord(Tx.decode(bytes(r[0])), r[1], r[2], r[3]) for r in rows]

    def get_tx_ids(self, height: int) -> list[bytes]:
        rows = self._db.execute(
            "SELECT tx_id FROM txs WHERE height=? ORDER BY idx", (height,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    def get_receipts(self, height: int) -> tuple[Receipt, ...]:
        rows = self._db.execute(
            "SELECT tx_id, reason FROM txs WHERE height=? ORDER BY idx", (height,)
        ).fetchall()
        return tuple(Receipt(bytes(t), r) for t, r in rows)

    def get_tx(self, tx_id: bytes) -> TxRecord | None:
        """The latest inclusion of `tx_id` (a failed tx may be included again later)."""
        row = self._db.execute(
            "SELECT raw, height, idx, reason FROM txs WHERE tx_id=? ORDER BY height DESC LIMIT 1",
            (tx_id,),
        ).fetchone()
        if row is None:
            return None
        return TxRecord(Tx.decode(bytes(row[0])), row[1], row[2], row[3])

    def get_txs(self, tx_ids: Sequence[bytes]) -> dict[bytes, TxRecord]:
        """The latest inclusion of each of `tx_ids` that was ever included: one query for up
        to IDS_PER_QUERY ids, so a batch of submissions costs one round trip, not one per tx."""
        found: dict[bytes, TxRecord] = {}
        for i in range(0, len(tx_ids), IDS_PER_QUERY):
            chunk = tx_ids[i : i + IDS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT tx_id, raw, height, idx, reason FROM txs "
                f"WHERE tx_id IN ({marks}) ORDER BY height",  # later inclusions overwrite
                chunk,
            ).fetchall()
            for tx_id, raw, height, idx, reason in rows:
                found[bytes(tx_id)] = TxRecord(Tx.decode(bytes(raw)), height, idx, reason)
        return found

    # -- the indexed queries (ledger/index.py) ----------------------------------------------

    def account_txs(self, address: bytes, start: tuple[int, int], limit: int) -> list[TxRecord]:
        """`address`'s txs (signed by it, or transfers to it) from place (height, index)
        `start` on, in chain order: at most `limit`."""
        return [
            TxRecord(Tx.decode(raw), height, i, reason)
            for height, i, raw, reason in index.account_page(self._db, address, start, limit)
        ]

    def contracts(self, query: index.ContractQuery) -> list[index.ContractEntry]:
        return index.contract_page(self._db, query)

    def block_summaries(self, first: int, last: int) -> list[tuple[BlockHeader, bytes, int]]:
        """(header, proof, tx count) of the blocks first..last, at most index.MAX_PAGE."""
        rows = self._db.execute(
            "SELECT header, proof, n_txs FROM blocks WHERE height BETWEEN ? AND ? "
            "ORDER BY height LIMIT ?",
            (first, last, index.MAX_PAGE),
        )
        return [(BlockHeader.decode(bytes(h)), bytes(p), n) for h, p, n in rows]

    # -- what consensus signed, kept so a restarted replica never contradicts itself ---------

    def persist(self, records: list[tuple[int, int, bytes]]) -> None:
        """Durably add (seq, view, encoded message) records in one SQL transaction."""
        with self._transaction():
            self._db.executemany(
                "INSERT INTO consensus_log(seq, view, record) VALUES (?, ?, ?)", records
            )

    def prune_consensus(self, below_seq: int, below_view: int) -> None:
        """Drop votes for sequence numbers below `below_seq` (seq >= 0) and view-change
        records (seq < 0) of views below `below_view`."""
        with self._transaction():
            self._db.execute(
                "DELETE FROM consensus_log WHERE (seq >= 0 AND seq < ?) OR (seq < 0 AND view < ?)",
                (below_seq, below_view),
            )

    def consensus_records(self) -> list[bytes]:
        rows = self._db.execute("SELECT record FROM consensus_log ORDER BY id").fetchall()
        return [bytes(r[0]) for r in rows]

    def close(self) -> None:
        """Close the file, first writing the whole state if this process added blocks (so a
        clean restart executes none again; should that fail, the next open will)."""
        try:
            if self._appended and self._depth == 0 and self.nodes.pending:
                with self._transaction():
                    self._write_state(self.height)
        except sqlite3.Error:
            pass
        finally:
            self._db.close()


def _split(hashes: bytes) -> list[bytes]:
    """The 32-byte hashes of a stale row, in order."""
    return [hashes[i : i + 32] for i in range(0, len(hashes), 32)]


def _tree_diff(nodes: NodeStore, old: bytes, new: bytes) -> tuple[set[bytes], set[bytes]]:
    """(nodes under `old` that are not under `new`, nodes under `new` not under `old`), for
    a state root or a tree root.  Both trees are walked in step, position by position, only
    where they differ: O(k log N) for k changed keys.  A leaf that moved (lifted or pushed
    down by a neighbour) is met on both sides and is in neither set."""
    gone: set[bytes] = set()
    made: set[bytes] = set()
    stack = [(old, new)]
    while stack:
        o, n = stack.pop()
        if o == n:
            continue
        below = []
        for node, seen in ((o, gone), (n, made)):
            children = (EMPTY, EMPTY)
            if node != EMPTY:
                seen.add(node)
                blob = nodes.get(node)
                if blob is None:
                    raise MissingNode(node.hex())
                if blob[0] != Tag.SMT_LEAF:  # an inner node, or the root over both trees
                    children = (blob[1:33], blob[33:65])
            below.append(children)
        stack += [(below[0][0], below[1][0]), (below[0][1], below[1][1])]
    both = gone & made
    return gone - both, made - both


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error.  Nested ones join the outermost,
    so `Store.batch()` makes several writes one transaction (one fsync)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __enter__(self) -> None:
        if self._store._depth == 0:
            self._store._db.execute("BEGIN IMMEDIATE")
        self._store._depth += 1

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        store = self._store
        store._depth -= 1
        if store._depth:
            return
        committed = exc_type is None
        try:
            store._db.execute("COMMIT" if committed else "ROLLBACK")
        except BaseException:
            committed = False
            if store._db.in_transaction:
                store._db.execute("ROLLBACK")
            raise
        finally:
            store._finished(committed)
