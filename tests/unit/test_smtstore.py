"""The SQLite node store's write-back (ledger/smtstore.py): `put_many` buffers, `flush` writes
the buffer into the caller's transaction, and the LRU stays bounded."""

from __future__ import annotations

import sqlite3

import pytest

from ledger import smt
from ledger.encoding import Tag, hash_bytes
from ledger.smtstore import SqliteNodeStore


def key(i: int) -> bytes:
    return hash_bytes(i.to_bytes(8, "big"))


def autocommit() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None)  # as ledger/store.py opens it


def node(i: int) -> tuple[bytes, bytes]:
    """A real leaf node (its hash, its bytes): what the store checks nodes read from disk by."""
    blob = bytes([Tag.SMT_LEAF]) + key(i) + b"v%d" % i
    return smt.node_hash(blob), blob


def rows(db: sqlite3.Connection) -> set[tuple[bytes, bytes]]:
    return set(db.execute("SELECT hash, node FROM smt_nodes").fetchall())


def test_buffered_nodes_are_readable_before_any_flush() -> None:
    db = autocommit()
    store = SqliteNodeStore(db, cache_nodes=0)
    store.put_many({b"a": b"1", b"b": b"2"})
    assert store.pending == 2 and rows(db) == set()
    assert store.get(b"a") == b"1"
    assert store.get_many([b"a", b"b", b"zz"]) == {b"a": b"1", b"b": b"2"}
    root = smt.update(store, smt.EMPTY, {key(i): b"v%d" % i for i in range(30)})
    assert rows(db) == set()  # an update writes no SQL
    assert smt.get(store, root, key(7)) == b"v7"
    assert smt.get(store, smt.update(store, root, {key(7): b"w"}), key(7)) == b"w"


def test_flush_writes_exactly_the_buffer_into_the_callers_transaction() -> None:
    db = autocommit()
    store = SqliteNodeStore(db)
    store.put_many({b"a": b"1"})
    store.put_many({b"b": b"2", b"a": b"1"})
    db.execute("BEGIN IMMEDIATE")
    assert store.flush() == 2
    assert db.in_transaction  # the store neither commits nor begins
    db.execute("COMMIT")
    assert rows(db) == {(b"a", b"1"), (b"b", b"2")}
    assert store.pending == 0 and store.flush() == 0
    store.put_many({b"c": b"3"})
    db.execute("BEGIN")
    assert store.flush() == 1
    db.execute("COMMIT")
    assert rows(db) == {(b"a", b"1"), (b"b", b"2"), (b"c", b"3")}
    assert store.count() == 3


def test_a_rolled_back_flush_leaves_the_table_and_its_nodes_can_be_written_again() -> None:
    db = autocommit()
    store = SqliteNodeStore(db)
    db.execute("BEGIN")
    store.put_many({b"kept": b"0"})
    store.flush()
    db.execute("COMMIT")
    before = rows(db)
    root = smt.update(store, smt.EMPTY, {key(i): b"v%d" % i for i in range(20)})
    db.execute("BEGIN IMMEDIATE")
    written = store.flush()
    db.execute("ROLLBACK")
    assert rows(db) == before and store.pending == 0
    smt.update(store, smt.EMPTY, {key(i): b"v%d" % i for i in range(20)})  # the same nodes
    db.execute("BEGIN")
    assert store.flush() == written  # buffered again, though the cache still holds them
    db.execute("COMMIT")
    fresh = SqliteNodeStore(db, cache_nodes=0)
    assert dict(smt.items(fresh, root)) == {key(i): b"v%d" % i for i in range(20)}


def test_buffered_nodes_are_outside_the_lru_bound() -> None:
    db = autocommit()
    store = SqliteNodeStore(db, cache_nodes=3)
    nodes = dict(node(i) for i in range(10))
    store.put_many(nodes)
    assert store.pending == 10 and store.cached == 0  # none evicted before it is written
    assert all(store.get(h) == blob for h, blob in nodes.items())
    db.execute("BEGIN")
    assert store.flush() == 10
    db.execute("COMMIT")
    assert store.cached == 3
    for h, blob in nodes.items():
        assert store.get(h) == blob  # from SQLite or the cache
        assert store.cached <= 3
    store.get_many(list(nodes))
    assert store.cached == 3


def test_the_cache_evicts_the_least_recently_used() -> None:
    db = autocommit()
    store = SqliteNodeStore(db, cache_nodes=2)
    (a, blob_a), (b, blob_b), (c, blob_c) = node(1), node(2), node(3)
    store.put_many({a: blob_a, b: blob_b})
    store.flush()
    assert store.get(a) == blob_a  # a is now the most recent
    store.put_many({c: blob_c})
    store.flush()
    assert list(store._cache) == [a, c]
    assert store.get(b) == blob_b  # from SQLite
    assert list(store._cache) == [c, b]
    assert store.get(b"zz") is None


def test_prune_reaches_buffered_nodes_too() -> None:
    db = autocommit()
    store = SqliteNodeStore(db)
    first = smt.update(store, smt.EMPTY, {key(i): b"v%d" % i for i in range(100)})
    db.execute("BEGIN")
    store.flush()
    db.execute("COMMIT")
    second = smt.update(store, first, {key(1): None, key(2): b"x"})  # buffered, not written
    assert store.count() == len(smt.reachable(store, [first, second]))
    assert smt.prune(store, [second]) > 0
    assert store.count() == len(smt.reachable(store, [second]))
    with pytest.raises(smt.MissingNode):
        smt.get(store, first, key(1))
    db.execute("BEGIN")
    store.flush()
    db.execute("COMMIT")
    assert smt.get(SqliteNodeStore(db, cache_nodes=0), second, key(2)) == b"x"


def test_a_negative_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="cache_nodes"):
        SqliteNodeStore(autocommit(), cache_nodes=-1)
