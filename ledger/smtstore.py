"""The sparse Merkle tree's nodes in SQLite (`smt_nodes`), behind a bounded LRU read cache.

Write-back: `put_many` only buffers new nodes in memory (`pending`, readable at once), and
`flush` writes the whole buffer with one executemany into the caller's connection and open
transaction (the store never begins or commits), so a block's nodes become durable together
with the block, and an update costs no SQL writes.  Buffered nodes are outside the LRU: it
can never evict a node before it is written.

The cache holds content-addressed nodes only, so it can never be stale: a node that a
rolled-back transaction wrote is still the right bytes for its hash, and it is buffered and
written again (INSERT OR IGNORE, never skipped because it is cached) by whichever update
creates it next.  (A caller that rolls back a flush must not build on the roots it wrote.)
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

from ledger.smt import node_hash

# 2^18 nodes, ~75 MB at ~290 B a cached node (a 32-byte key, a 65-byte internal node, the
# OrderedDict's slot and links).  Every block crosses the top levels of the tree: at 1M
# accounts the 2^14 nodes of depths 0-13 are each crossed every block or two, and stay cached;
# deeper ones are crossed too rarely for any affordable cache (depths 0-17 alone are 2^18
# nodes).  Measured at 1M accounts: 2^19 saves ~15% of the reads (6.1k, not 7.2k, a block)
# for ~85 MB more RSS; 2^17 reads 8.3k.
CACHE_NODES = 1 << 18

READ_BATCH = 500  # hashes per SELECT ... IN: under SQLite's oldest 999-variable limit

# WITHOUT ROWID: one B-tree keyed by hash, not a rowid table plus an index on hash, so a
# read is one descent and a flush dirties about half the pages.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS smt_nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL) WITHOUT ROWID"
)


class CorruptNode(ValueError):
    """A node read from the file is not the node its hash names (the file was damaged)."""


def _checked(read: Mapping[bytes, bytes]) -> Mapping[bytes, bytes]:
    """Nodes read from disk, each checked against its hash: a damaged row is an error, never
    a balance (a hash per node read: a block's ~7k misses at 1M accounts cost ~7 ms)."""
    for h, blob in read.items():
        if node_hash(blob) != h:
            raise CorruptNode(f"stored node {h.hex()} is not the node its hash names")
    return read


class SqliteNodeStore:
    def __init__(self, db: sqlite3.Connection, cache_nodes: int = CACHE_NODES) -> None:
        if cache_nodes < 0:
            raise ValueError("cache_nodes must be >= 0")
        self._db = db
        self._limit = cache_nodes
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._pending: dict[bytes, bytes] = {}
        db.execute(SCHEMA)

    def get(self, node_hash: bytes) -> bytes | None:
        blob = self._pending.get(node_hash)
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
        pending, cache, touch = self._pending.get, self._cache.get, self._cache.move_to_end
        for h in hashes:
            blob = pending(h)
            if blob is None:
                blob = cache(h)
                if blob is None:
                    missing.append(h)
                    continue
                touch(h)
            found[h] = blob
        if not missing:
            return found
        missing.sort()
        read: dict[bytes, bytes] = {}
        for i in range(0, len(missing), READ_BATCH):
            chunk = missing[i : i + READ_BATCH]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT hash, node FROM smt_nodes WHERE hash IN ({marks})"
            read.update(self._db.execute(sql, chunk).fetchall())
        self._remember(_checked(read))
        found.update(read)
        return found

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        """Buffer `nodes` until `flush`: readable at once, written with the block."""
        self._pending.update(nodes)

    def flush(self) -> int:
        """Write every buffered node into the connection's open transaction, in one
        executemany, in hash order (each B-tree page is visited once, not once per node on
        it); empty the buffer into the cache; return how many nodes were written."""
        written, self._pending = self._pending, {}
        if not written:
            return 0
        try:
            rows = ((h, written[h]) for h in sorted(written))
            self._db.executemany("INSERT OR IGNORE INTO smt_nodes VALUES (?, ?)", rows)
        except BaseException:
            self._pending = written | self._pending  # not written: still buffered
            raise
        self._remember(written)
        return len(written)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def hashes(self) -> Iterator[bytes]:
        """Every node stored or buffered.  Fetched whole first: the caller may delete while
        it iterates."""
        rows = self._db.execute("SELECT hash FROM smt_nodes").fetchall()
        stored = [bytes(r[0]) for r in rows]
        known = set(stored)
        return iter(stored + [h for h in self._pending if h not in known])

    def delete_many(self, hashes: Iterable[bytes]) -> None:
        doomed = list(hashes)
        self._db.executemany("DELETE FROM smt_nodes WHERE hash = ?", ((h,) for h in doomed))
        for h in doomed:
            self._cache.pop(h, None)
            self._pending.pop(h, None)

    def count(self) -> int:
        """Nodes stored or buffered (a buffered node already in the table counts once)."""
        stored = int(self._db.execute("SELECT COUNT(*) FROM smt_nodes").fetchone()[0])
        buffered = list(self._pending)
        for i in range(0, len(buffered), READ_BATCH):
            chunk = buffered[i : i + READ_BATCH]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT COUNT(*) FROM smt_nodes WHERE hash IN ({marks})"
            stored += len(chunk) - int(self._db.execute(sql, chunk).fetchone()[0])
        return stored

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
