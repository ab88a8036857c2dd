"""The sparse Merkle tree's nodes in SQLite (`smt_nodes`), behind a bounded LRU read cache.

Writes go into the caller's connection and transaction: the store never begins or commits,
so a block's nodes become durable together with the block.  The cache is write-through and
holds content-addressed nodes only, so it can never be stale: a node that a rolled-back
transaction wrote is still the right bytes for its hash, and it is written again (INSERT OR
IGNORE, never skipped because it is cached) by whichever update creates it next.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping

CACHE_NODES = 1 << 18  # ~70 MB (~270 B a node): the top levels, that every block crosses

READ_BATCH = 500  # hashes per SELECT ... IN: under SQLite's oldest 999-variable limit

SCHEMA = "CREATE TABLE IF NOT EXISTS smt_nodes (hash BLOB PRIMARY KEY, node BLOB NOT NULL)"


class SqliteNodeStore:
    def __init__(self, db: sqlite3.Connection, cache_nodes: int = CACHE_NODES) -> None:
        if cache_nodes < 0:
            raise ValueError("cache_nodes must be >= 0")
        self._db = db
        self._limit = cache_nodes
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        db.execute(SCHEMA)

    def get(self, node_hash: bytes) -> bytes | None:
        blob = self._cache.get(node_hash)
        if blob is not None:
            self._cache.move_to_end(node_hash)
            return blob
        row = self._db.execute("SELECT node FROM smt_nodes WHERE hash = ?", (node_hash,)).fetchone()
        if row is None:
            return None
        blob = bytes(row[0])
        self._remember(node_hash, blob)
        return blob

    def get_many(self, hashes: list[bytes]) -> dict[bytes, bytes]:
        """The nodes of `hashes` that are stored: cached ones, then the rest in batches."""
        found: dict[bytes, bytes] = {}
        missing = []
        for h in hashes:
            blob = self._cache.get(h)
            if blob is None:
                missing.append(h)
            else:
                self._cache.move_to_end(h)
                found[h] = blob
        for i in range(0, len(missing), READ_BATCH):
            chunk = missing[i : i + READ_BATCH]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT hash, node FROM smt_nodes WHERE hash IN ({marks})"
            for h, blob in self._db.execute(sql, chunk):
                found[bytes(h)] = bytes(blob)
                self._remember(bytes(h), bytes(blob))
        return found

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        # In hash order: each index page is visited once, not once per node on it.
        rows = sorted(nodes.items())
        self._db.executemany("INSERT OR IGNORE INTO smt_nodes VALUES (?, ?)", rows)
        if self._limit:
            self._cache.update(rows)  # new nodes go to the recent end; trimmed once, below
            for _ in range(len(self._cache) - self._limit):
                self._cache.popitem(last=False)

    def hashes(self) -> Iterator[bytes]:
        # Fetched whole first: the caller may delete while it iterates.
        rows = self._db.execute("SELECT hash FROM smt_nodes").fetchall()
        return (bytes(r[0]) for r in rows)

    def delete_many(self, hashes: Iterable[bytes]) -> None:
        doomed = list(hashes)
        self._db.executemany("DELETE FROM smt_nodes WHERE hash = ?", ((h,) for h in doomed))
        for h in doomed:
            self._cache.pop(h, None)

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM smt_nodes").fetchone()[0])

    @property
    def cached(self) -> int:
        return len(self._cache)

    def _remember(self, node_hash: bytes, blob: bytes) -> None:
        if self._limit == 0:
            return
        self._cache[node_hash] = blob
        self._cache.move_to_end(node_hash)
        while len(self._cache) > self._limit:
            self._cache.popitem(last=False)
