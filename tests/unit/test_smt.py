"""The sparse Merkle tree (ledger/smt.py) and its SQLite node store (ledger/smtstore.py)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Mapping
from pathlib import Path

import pytest

from ledger import smt
from ledger.encoding import Tag, hash_bytes
from ledger.smtstore import SqliteNodeStore
from node.bench.state import Case, run_case


def key(i: int) -> bytes:
    return hash_bytes(i.to_bytes(8, "big"))


def tree(n: int, store: smt.PrunableStore | None = None) -> tuple[smt.PrunableStore, bytes]:
    store = store if store is not None else smt.MemoryNodeStore()
    return store, smt.update(store, smt.EMPTY, {key(i): b"v%d" % i for i in range(n)})


class CountingStore(smt.MemoryNodeStore):
    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self.written += len(nodes)
        super().put_many(nodes)


def depth(proof: smt.Proof) -> int:
    return len(proof.siblings)


# -- hashes and shape ----------------------------------------------------------------------------


def test_golden_roots() -> None:
    # Pins the node encodings: changing them changes every state root.
    # The empty subtree is the sha256 of the SMT_NODE tag alone.
    assert smt.EMPTY.hex() == "d03502c43d74a30b936740a9517dc4ea2b2ad7168caa0a774cefe793ce0b33e7"
    _, one = tree(1)
    assert one == hash_bytes(bytes([Tag.SMT_LEAF]) + key(0) + hash_bytes(b"v0"))
    _, three = tree(3)
    assert three.hex() == "28a2444317cae33cd59cbf872038428d30bdae0a383e77fcb3ef40eeb300b2af"


def test_an_empty_tree_holds_nothing() -> None:
    store = smt.MemoryNodeStore()
    assert smt.get(store, smt.EMPTY, key(1)) is None
    proof = smt.prove(store, smt.EMPTY, key(1))
    assert proof == smt.Proof((), None, None)
    assert smt.verify_proof(smt.EMPTY, key(1), None, proof)
    assert not smt.verify_proof(smt.EMPTY, key(1), b"v", proof)


def test_keys_of_accounts_and_contracts_never_collide() -> None:
    assert smt.account_key(b"\x01" * 20) != smt.contract_key(b"\x01" * 20)
    assert len(smt.account_key(b"a")) == smt.KEY_BYTES


def test_a_key_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        smt.update(smt.MemoryNodeStore(), smt.EMPTY, {b"short": b"v"})
    assert not smt.verify_proof(smt.EMPTY, b"short", None, smt.Proof((), None, None))


def test_path_compression_keeps_the_tree_about_log_n_deep() -> None:
    store, root = tree(2000)
    depths = [depth(smt.prove(store, root, key(i))) for i in range(2000)]
    assert max(depths) <= 32  # log2(2000) = 11; without compression every path would be 256
    assert sum(depths) / len(depths) <= 14


def test_an_update_writes_only_the_path_it_changes() -> None:
    store = CountingStore()
    _, root = tree(2000, store)
    before = store.written
    new_root = smt.update(store, root, {key(7): b"changed"})
    assert store.written - before == depth(smt.prove(store, new_root, key(7))) + 1


def test_no_changes_and_absent_deletes_leave_the_root_and_write_nothing() -> None:
    store = CountingStore()
    _, root = tree(50, store)
    before = store.written
    assert smt.update(store, root, {}) == root
    assert smt.update(store, root, {key(999): None}) == root
    assert smt.update(store, root, {key(3): b"v3"}) == root  # the same value again
    assert store.written == before


def test_the_root_depends_on_the_key_set_not_on_the_order_of_changes() -> None:
    store = smt.MemoryNodeStore()
    one_by_one = smt.EMPTY
    for i in reversed(range(40)):
        one_by_one = smt.update(store, one_by_one, {key(i): b"v%d" % i})
    assert one_by_one == tree(40)[1]


def test_deletes_lift_a_lone_leaf_back_up() -> None:
    store, root = tree(41)
    shrunk = smt.update(store, root, {key(40): None})
    assert shrunk == tree(40)[1]
    everything_gone = smt.update(store, root, {key(i): None for i in range(41)})
    assert everything_gone == smt.EMPTY
    only_one = smt.update(store, root, {key(i): None for i in range(1, 41)})
    assert only_one == tree(1)[1]


def test_old_roots_stay_readable() -> None:
    store, old = tree(100)
    new = smt.update(store, old, {key(5): b"new", key(6): None, key(500): b"added"})
    assert smt.get(store, old, key(5)) == b"v5"
    assert smt.get(store, old, key(6)) == b"v6"
    assert smt.get(store, old, key(500)) is None
    assert smt.get(store, new, key(5)) == b"new"
    assert smt.get(store, new, key(6)) is None
    assert smt.get(store, new, key(500)) == b"added"
    assert dict(smt.items(store, old)) == {key(i): b"v%d" % i for i in range(100)}


def test_items_come_in_key_order() -> None:
    store, root = tree(60)
    listed = [k for k, _ in smt.items(store, root)]
    assert listed == sorted(key(i) for i in range(60))


def test_a_missing_node_is_an_error_not_an_absence() -> None:
    _, root = tree(10)
    with pytest.raises(smt.MissingNode):
        smt.get(smt.MemoryNodeStore(), root, key(1))


# -- proofs --------------------------------------------------------------------------------------


def test_proofs_of_present_and_absent_keys_verify() -> None:
    store, root = tree(300)
    for i in range(300):
        proof = smt.prove(store, root, key(i))
        assert proof.leaf_key == key(i)
        assert smt.verify_proof(root, key(i), b"v%d" % i, proof)
        sent = smt.Proof.decode(proof.encode())  # what an RPC answer would carry
        assert sent == proof and smt.verify_proof(root, key(i), b"v%d" % i, sent)
        assert not smt.verify_proof(root, key(i), None, proof)
        assert not smt.verify_proof(root, key(i), b"other", proof)
    endings = set()
    for i in range(300, 400):
        proof = smt.prove(store, root, key(i))
        endings.add(proof.leaf_key is None)
        assert smt.verify_proof(root, key(i), None, smt.Proof.decode(proof.encode()))
        assert not smt.verify_proof(root, key(i), b"v", proof)
    assert endings == {True, False}  # absences shown both by an empty subtree and by a leaf


def tampered(proof: smt.Proof) -> list[smt.Proof]:
    """Every single-field change of a proof."""
    out = []
    for i, s in enumerate(proof.siblings):
        flipped = bytes([s[0] ^ 1]) + s[1:]
        out.append(
            dataclasses.replace(
                proof, siblings=(*proof.siblings[:i], flipped, *proof.siblings[i + 1 :])
            )
        )
    out.append(dataclasses.replace(proof, siblings=proof.siblings[:-1]))
    out.append(dataclasses.replace(proof, siblings=(*proof.siblings, smt.EMPTY)))
    out.append(dataclasses.replace(proof, siblings=(smt.EMPTY, *proof.siblings)))
    if proof.leaf_key is None:
        out.append(dataclasses.replace(proof, leaf_key=key(0), leaf_value_hash=hash_bytes(b"v0")))
        out.append(dataclasses.replace(proof, leaf_value_hash=hash_bytes(b"")))
    else:
        out.append(dataclasses.replace(proof, leaf_key=bytes(32)))
        out.append(dataclasses.replace(proof, leaf_key=None))
        out.append(dataclasses.replace(proof, leaf_value_hash=None))
        out.append(dataclasses.replace(proof, leaf_value_hash=hash_bytes(b"x")))
    return [t for t in out if t != proof]


def test_a_tampered_proof_fails() -> None:
    store, root = tree(300)
    for i in (*range(0, 300, 37), *range(300, 340)):
        value = b"v%d" % i if i < 300 else None
        proof = smt.prove(store, root, key(i))
        assert smt.verify_proof(root, key(i), value, proof)
        for bad in tampered(proof):
            assert not smt.verify_proof(root, key(i), value, bad), bad
        assert not smt.verify_proof(hash_bytes(root), key(i), value, proof)


def test_an_absence_cannot_be_shown_by_a_leaf_off_the_path() -> None:
    store, root = tree(2)
    proof = smt.prove(store, root, key(0))
    d = depth(proof)
    bits = int.from_bytes(key(0), "big") >> (256 - d)
    off_path = next(
        k for k in map(key, range(2, 99)) if int.from_bytes(k, "big") >> (256 - d) != bits
    )
    assert smt.verify_proof(root, key(0), b"v0", proof)
    assert not smt.verify_proof(root, off_path, None, proof)  # key(0)'s leaf, not on its path
    assert not smt.verify_proof(root, key(0), None, proof)  # the key's own leaf is no absence


# -- pruning -------------------------------------------------------------------------------------


def test_prune_keeps_what_the_kept_roots_reach_and_nothing_else() -> None:
    store, first = tree(200)
    second = smt.update(store, first, {key(i): b"w" for i in range(0, 200, 10)})
    third = smt.update(store, second, {key(i): None for i in range(0, 200, 3)})
    assert smt.prune(store, [first, second, third]) == 0
    deleted = smt.prune(store, [second, third])
    assert deleted > 0
    assert set(store.hashes()) == smt.reachable(store, [second, third])
    with pytest.raises(smt.MissingNode):
        dict(smt.items(store, first))
    assert dict(smt.items(store, third)) == {
        key(i): b"w" if i % 10 == 0 else b"v%d" % i for i in range(200) if i % 3
    }
    left = len(smt.reachable(store, [second, third]))
    assert smt.prune(store, [smt.EMPTY]) == left
    assert list(store.hashes()) == []


# -- the SQLite node store -----------------------------------------------------------------------


def test_sqlite_and_memory_stores_agree_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "nodes.sqlite"
    db = sqlite3.connect(path)
    store = SqliteNodeStore(db, cache_nodes=8)
    _, root = tree(150, store)
    store.flush()
    db.commit()
    db.close()
    reopened = SqliteNodeStore(sqlite3.connect(path), cache_nodes=8)
    assert root == tree(150)[1]
    assert dict(smt.items(reopened, root)) == {key(i): b"v%d" % i for i in range(150)}
    assert reopened.cached == 8  # bounded: 150 keys read, 8 nodes cached


def test_sqlite_prune(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "nodes.sqlite")
    store = SqliteNodeStore(db)
    _, first = tree(100, store)
    second = smt.update(store, first, {key(1): None, key(2): b"x"})
    assert smt.prune(store, [second]) > 0
    assert store.count() == len(smt.reachable(store, [second]))
    with pytest.raises(smt.MissingNode):
        smt.get(store, first, key(1))  # evicted from the cache too, not only deleted
    assert smt.get(store, second, key(2)) == b"x"
    with pytest.raises(smt.MissingNode):
        smt.update(store, first, {key(3): b"y"})  # the level-by-level read finds it gone too


# -- the benchmark (node/bench/state.py), at a toy size: it runs and counts what it claims -------


def test_the_state_bench_runs_a_case() -> None:
    row = run_case(Case(accounts=300, store="sqlite", changes=40, reps=2, seed=1))
    assert row["accounts"] == 300 and row["store"] == "sqlite"
    assert row["nodes"] >= 2 * 300 - 1  # the build: 300 leaves and the internal nodes above them
    assert 40 < row["nodes_written"] < row["nodes"]
    assert row["peak_rss_mb"] > 0


def test_the_state_bench_times_a_nodes_own_store_after_its_buffer_fills() -> None:
    """The "chain" case goes through Store.append: a block's nodes made, its append timed
    once STATE_PARTS blocks have filled the buffer, and a proof from the store's state."""
    row = run_case(Case(accounts=300, store="chain", changes=40, reps=2, seed=1))
    assert row["accounts"] == 300 and row["store"] == "chain"
    assert 40 < row["nodes_written"] < 2 * 300  # a block makes its paths, not the tree
    assert row["commit_ms_median"] > 0 and row["commit_ms_max"] >= row["commit_ms_median"]
    assert row["prove_us"] > 0 and row["peak_rss_mb"] > 0
