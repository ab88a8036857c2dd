"""The sparse Merkle tree's nodes in SQLite (`smt_nodes`), behind a bounded LRU read cache.

Write-back, in parts of the key space.  `put_many` only buffers new nodes in memory
(readable at once).  `settle` marks the end of a block: what it buffered becomes the
"older" buffer, split by the first two bytes of each hash into `parts` slices of the hash
space.  `write(part)` writes one slice (or all of them) into the caller's connection and
open transaction (the store never begins or commits), and the nodes stay buffered until
the caller says the transaction committed (`written`): a rolled-back write loses nothing.

Why slices: nodes are named by random hashes, so a block's ~12k new nodes at 1M accounts
land on ~12k different B-tree pages, and the COMMIT writes every one of them.  A block that
writes one slice in `parts` dirties only that slice's pages, having let its nodes gather
for `parts` blocks: the same pages, written once for `parts` blocks' nodes (ledger/store.py
writes slice `height % parts` with each block, so a full sweep takes `parts` blocks).

The cache holds content-addressed nodes only, so it can never be stale, and buffered nodes
are outside it: it can never evict a node before it is written.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from ledger.smt import node_hash

# 2^17 nodes, ~37 MB at ~290 B a cached node (a 32-byte key, a 65-byte internal node, the
# OrderedDict's slot and links).  Every block crosses the top levels of the tree, but those
# are made again by every block or two, so they are in the write buffer (the last 32 blocks'
# nodes), not here; deeper ones are crossed too rarely for any affordable cache.  Measured
# at 1M accounts through Store.append: 2^18 gave the same update (102 vs 99 ms) and append
# (196 vs 186 ms) for 91 MB more RSS (372 vs 281 MB).
CACHE_NODES = 1 << 17

READ_BATCH = 500  # hashes per SELECT ... IN: under SQLite's oldest 999-variable limit
MAX_PARTS = 1 << 16  # a slice is a range of the hashes' first two bytes

# WITHOUT ROWID: one B-tree keyed by hash, not a rowid table plus an index on hash, so a
# read is one descent and a flush dirties about half the pages.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS smt_nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID"
)


class CorruptNode(ValueError):
    """A node read from the file is not the node its hash names (the file was damaged)."""


def part_of(node_hash: bytes, parts: int) -> int:
    """The slice of the hash space that `node_hash` falls in, of `parts` equal ones."""
    if parts == 1:
        return 0
    return (node_hash[0] << 8 | node_hash[1]) * parts >> 16


def _checked(read: Mapping[bytes, bytes]) -> Mapping[bytes, bytes]:
    """Nodes read from disk, each checked against its hash: a damaged row is an error, never
    a balance (a hash per node read: a block's ~7k misses at 1M accounts cost ~7 ms)."""
    for h, blob in read.items():
        if node_hash(blob) != h:
            raise CorruptNode(f"stored node {h.hex()} is not the node its hash names")
    return read


class SqliteNodeStore:
    def __init__(
        self, db: sqlite3.Connection, cache_nodes: int = CACHE_NODES, parts: int = 1
    ) -> None:
        if cache_nodes < 0:
            raise ValueError("cache_nodes must be >= 0")
        if not 1 <= parts <= MAX_PARTS:
            raise ValueError(f"parts must be in 1..{MAX_PARTS}")
        self._db = db
        self._limit = cache_nodes
        self.parts = parts
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._fresh: dict[bytes, bytes] = {}  # buffered since the last settle, unsorted
        self._older: list[dict[bytes, bytes]] = [{} for _ in range(parts)]  # by slice
        # (slice, rows, settles then): what the open transaction wrote
        self._writing: list[tuple[int, list[tuple[bytes, bytes]], int]] = []
        self._settles = 0  # so `written` knows whether a slice gained nodes since
        db.execute(SCHEMA)

    def _buffered(self, h: bytes) -> bytes | None:
        blob = self._fresh.get(h)
        if blob is None:
            blob = self._older[part_of(h, self.parts)].get(h)
        return blob

    def get(self, node_hash: bytes) -> bytes | None:
        blob = self._buffered(node_hash)
        if blob is not None:
            return blob
        blob = self._cache.get(node_hash)
        if blob is not None:
            self._cache.move_to_end(node_hash)
            return blob
        row = self._db.execute("SELECT node FROM smt_nodes WHERE hash = ?", (node_hash,)).fetchone()
        if row is None:
            return None
        blob = row[0]
        self._remember(_checked({node_hash: blob}))
        return blob  # type: ignore[no-any-return]

    def get_many(self, hashes: list[bytes]) -> dict[bytes, bytes]:
        """The nodes of `hashes` that are stored: buffered or cached ones, then the rest in
        batches (in hash order, so that SQLite walks its B-tree once, left to right)."""
        found: dict[bytes, bytes] = {}
        missing = []
        buffered, cache, touch = self._buffered, self._cache.get, self._cache.move_to_end
        for h in hashes:
            blob = buffered(h)
            if blob is None:
                blob = cache(h)
                if blob is None:
                    missing.append(h)
                    continue
                touch(h)
            found[h] = blob
        if not missing:
            return found
        read = self._select("SELECT hash, node FROM smt_nodes WHERE hash IN ({})", missing)
        self._remember(_checked(dict(read)))
        found.update(read)
        return found

    def _select(self, sql: str, hashes: list[bytes]) -> list[tuple[bytes, bytes]]:
        """`sql` (with one `{}` for the marks) over `hashes`, sorted, in batches."""
        rows: list[tuple[bytes, bytes]] = []
        ordered = sorted(hashes)
        for i in range(0, len(ordered), READ_BATCH):
            chunk = ordered[i : i + READ_BATCH]
            rows += self._db.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall()
        return rows

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        """Buffer `nodes` until they are written: readable at once."""
        self._fresh.update(nodes)

    def settle(self) -> None:
        """Sort the nodes buffered since the last settle into their slices (`put_many` only
        adds them to one dict: an update's hot path)."""
        older, parts = self._older, self.parts
        for h, blob in self._fresh.items():
            older[part_of(h, parts)][h] = blob
        self._fresh = {}
        self._settles += 1

    def write(self, part: int | None = None) -> int:
        """Write the buffered nodes of slice `part` (all of them for None), settled first,
        into the connection's open transaction, in hash order (each B-tree page is visited
        once), and return how many.  They stay buffered until `written`."""
        self.settle()
        count = 0
        for p in range(self.parts) if part is None else [part]:
            rows = sorted(self._older[p].items())
            self._db.executemany("INSERT OR IGNORE INTO smt_nodes VALUES (?, ?)", rows)
            self._writing.append((p, rows, self._settles))
            count += len(rows)
        return count

    def fullest(self) -> int | None:
        """The slice with the most buffered nodes that the open transaction has not written
        (None once it wrote them all)."""
        self.settle()
        taken = {p for p, _, _ in self._writing}
        sizes = [(len(d), p) for p, d in enumerate(self._older) if p not in taken]
        return max(sizes)[1] if sizes else None

    @property
    def waiting(self) -> int:
        """Buffered nodes that the open transaction has not written."""
        taken = {p for p, _, _ in self._writing}
        return len(self._fresh) + sum(len(d) for p, d in enumerate(self._older) if p not in taken)

    def written(self) -> None:
        """The transaction that `write` wrote into committed: what it wrote (and nothing
        buffered since) leaves the buffer.  Not for the cache: a node that stayed buffered
        for a sweep is one that blocks rarely cross, and would only evict the hot ones."""
        older, parts = self._older, self.parts
        for p, rows, settles in self._writing:
            if settles == self._settles:
                older[p] = {}  # nothing joined the slice since it was written
            else:
                for h, _ in rows:
                    older[part_of(h, parts)].pop(h, None)
        self._writing = []

    def unwritten(self) -> None:
        """The transaction rolled back: its nodes stay buffered, to be written again."""
        self._writing = []

    def flush(self) -> int:
        """Write every buffered node and count it written at once: for a caller that
        commits right after (and must not build on these roots if it rolls back)."""
        count = self.write()
        self.written()
        return count

    @property
    def pending(self) -> int:
        return len(self._fresh) + sum(len(p) for p in self._older)

    def hashes(self) -> Iterator[bytes]:
        """Every node stored or buffered.  Fetched whole first: the caller may delete while
        it iterates."""
        rows = self._db.execute("SELECT hash FROM smt_nodes").fetchall()
        stored = [bytes(r[0]) for r in rows]
        known = set(stored)
        return iter(stored + [h for h in self._buffer_keys() if h not in known])

    def _buffer_keys(self) -> set[bytes]:
        return set(self._fresh).union(*self._older)

    def delete_many(self, hashes: Iterable[bytes]) -> None:
        doomed = list(hashes)
        self._db.executemany("DELETE FROM smt_nodes WHERE hash = ?", ((h,) for h in doomed))
        parts = self.parts
        for h in doomed:
            self._cache.pop(h, None)
            self._fresh.pop(h, None)
            self._older[part_of(h, parts)].pop(h, None)

    def count(self) -> int:
        """Nodes stored or buffered (a buffered node already in the table counts once)."""
        stored = int(self._db.execute("SELECT COUNT(*) FROM smt_nodes").fetchone()[0])
        buffered = list(self._buffer_keys())
        both = self._select("SELECT hash, 0 FROM smt_nodes WHERE hash IN ({})", buffered)
        return stored + len(buffered) - len(both)

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _remember(self, nodes: Mapping[bytes, bytes]) -> None:
        """Put `nodes` at the recent end of the LRU, then trim it once to its bound."""
        if self._limit == 0 or not nodes:
            return
        cache = self._cache
        cache.update(nodes)
        for h in nodes:
            cache.move_to_end(h)
        for _ in range(len(cache) - self._limit):
            cache.popitem(last=False)
