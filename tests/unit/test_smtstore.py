"""The SQLite node store's write-back (ledger/smtstore.py): `put_many` buffers, `flush` writes
the buffer into the caller's transaction, and the LRU stays bounded."""

from __future__ import annotations

import sqlite3

import pytest

from ledger import smt
from ledger.encoding import Tag, hash_bytes
from ledger.smtstore import SqliteNodeStore, part_of


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
    assert store.pending == 0 and store.cached == 0  # written nodes are not cached
    for h, blob in nodes.items():
        assert store.get(h) == blob  # from SQLite or the cache
        assert store.cached <= 3
    store.get_many(list(nodes))
    assert store.cached == 3


def test_the_cache_evicts_the_least_recently_used() -> None:
    db = autocommit()
    store = SqliteNodeStore(db, cache_nodes=2)
    (a, blob_a), (b, blob_b), (c, blob_c) = node(1), node(2), node(3)
    store.put_many({a: blob_a, b: blob_b, c: blob_c})
    store.flush()
    assert store.get(b) == blob_b and store.get(a) == blob_a  # a is now the most recent
    assert store.get(c) == blob_c
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


def test_write_takes_one_slice_and_a_rollback_keeps_it_buffered() -> None:
    """`write(part)` writes exactly that slice of the hash space; its nodes leave the buffer
    only once the caller says the transaction committed (`written`), not on a rollback."""
    db = autocommit()
    store = SqliteNodeStore(db, parts=4)
    nodes = dict(node(i) for i in range(40))
    store.put_many(nodes)
    by_part = {p: {h for h in nodes if part_of(h, 4) == p} for p in range(4)}
    assert all(by_part.values())  # 40 random hashes fill every slice
    db.execute("BEGIN")
    assert store.write(2) == len(by_part[2])
    db.execute("ROLLBACK")
    store.unwritten()
    assert rows(db) == set() and store.pending == 40
    db.execute("BEGIN")
    store.write(2)
    db.execute("COMMIT")
    store.written()
    assert {h for h, _ in rows(db)} == by_part[2] and store.pending == 40 - len(by_part[2])
    assert all(store.get(h) == blob for h, blob in nodes.items())  # buffered or stored


def test_nodes_buffered_between_two_writes_of_one_transaction_stay_buffered() -> None:
    """Two blocks in one transaction: the second's nodes join slices after the first wrote
    its slice, so they are not counted written with it."""
    db = autocommit()
    store = SqliteNodeStore(db, parts=2)
    first = dict(node(i) for i in range(20))
    second = dict(node(i) for i in range(20, 40))
    store.put_many(first)
    db.execute("BEGIN")
    store.write(0)
    store.put_many(second)
    store.write(1)
    db.execute("COMMIT")
    store.written()
    on_disk = {h for h, _ in rows(db)}
    unwritten = {h for h in second if part_of(h, 2) == 0}
    assert unwritten and not unwritten & on_disk
    assert store.pending == len(unwritten)
    db.execute("BEGIN")
    store.write()
    db.execute("COMMIT")
    store.written()
    assert {h for h, _ in rows(db)} == set(first) | set(second) and store.pending == 0


def test_the_slices_of_the_hash_space_are_equal_ranges() -> None:
    assert [part_of(bytes([b, 0]) + bytes(30), 4) for b in (0, 63, 64, 191, 192, 255)] == [
        0,
        0,
        1,
        2,
        3,
        3,
    ]
    assert part_of(b"\xff" * 32, 1 << 16) == (1 << 16) - 1 and part_of(b"\xff" * 32, 1) == 0
    with pytest.raises(ValueError, match="parts"):
        SqliteNodeStore(autocommit(), parts=0)
