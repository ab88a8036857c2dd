"""The sparse Merkle tree against a dict model: random batches of inserts, updates and deletes,
with reorgs (back to an older root, then a different batch), on the memory and SQLite stores."""

from __future__ import annotations

import dataclasses
import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import smt
from ledger.encoding import Tag, hash_bytes
from ledger.smtstore import SqliteNodeStore


def _pool() -> list[bytes]:
    """Random keys, and pairs that differ only in a late bit: paths that share a long prefix."""
    keys = [hash_bytes(bytes([i])) for i in range(16)]
    for i, bit in enumerate((255, 200, 9, 1)):
        twin = bytearray(keys[i])
        twin[bit // 8] ^= 0x80 >> (bit % 8)
        keys.append(bytes(twin))
    return keys


POOL = _pool()
Model = dict[bytes, bytes]
batches = st.dictionaries(
    st.sampled_from(POOL), st.none() | st.binary(max_size=6), min_size=1, max_size=12
)
# ("apply", changes) or ("reorg", how far back among the roots seen so far)
steps = st.lists(
    st.tuples(st.just("apply"), batches) | st.tuples(st.just("reorg"), st.integers(1, 6)),
    min_size=1,
    max_size=10,
)


def applied(model: Model, changes: dict[bytes, bytes | None]) -> Model:
    out = dict(model)
    for k, v in changes.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def check(store: smt.NodeStore, root: bytes, model: Model) -> None:
    assert root == smt.update(smt.MemoryNodeStore(), smt.EMPTY, model)  # from scratch
    assert dict(smt.items(store, root)) == model
    for k in POOL:
        value = model.get(k)
        assert smt.get(store, root, k) == value
        proof = smt.prove(store, root, k)
        assert smt.verify_proof(root, k, value, proof)
        assert not smt.verify_proof(root, k, b"\xff" * 7, proof)  # longer than any drawn value
        if value is not None:
            assert not smt.verify_proof(root, k, None, proof)


@settings(max_examples=60, deadline=None)
@given(steps=steps)
def test_roots_match_a_fresh_build_and_a_model_through_reorgs(
    steps: list[tuple[str, object]],
) -> None:
    memory = smt.MemoryNodeStore()
    sqlite = SqliteNodeStore(sqlite3.connect(":memory:"), cache_nodes=4)  # mostly from SQLite
    history: list[tuple[bytes, Model]] = [(smt.EMPTY, {})]
    root: bytes = smt.EMPTY
    model: Model = {}
    for kind, arg in steps:
        if kind == "reorg":
            assert isinstance(arg, int)
            root, model = history[max(0, len(history) - 1 - arg)]
            continue
        assert isinstance(arg, dict)
        new_root = smt.update(memory, root, arg)
        assert smt.update(sqlite, root, arg) == new_root
        sqlite.flush()  # write-back: later reads come from the table, not the buffer
        root, model = new_root, applied(model, arg)
        history.append((root, model))
        check(memory, root, model)
    for old_root, old_model in history:  # every version is still readable
        check(sqlite, old_root, old_model)


@st.composite
def tamperings(draw: st.DrawFn, proof: smt.Proof) -> smt.Proof:
    field = draw(st.sampled_from(["siblings", "leaf_key", "leaf_value_hash"]))
    if field == "siblings":
        siblings = list(proof.siblings)
        if bool(siblings) and draw(st.booleans()):
            i = draw(st.integers(0, len(siblings) - 1))
            byte = draw(st.integers(0, 31))
            s = bytearray(siblings[i])
            s[byte] ^= 1 << draw(st.integers(0, 7))
            siblings[i] = bytes(s)
        elif bool(siblings) and draw(st.booleans()):
            del siblings[draw(st.integers(0, len(siblings) - 1))]
        else:
            siblings.insert(
                draw(st.integers(0, len(siblings))), draw(st.binary(min_size=32, max_size=32))
            )
        return dataclasses.replace(proof, siblings=tuple(siblings))
    replacement = draw(st.none() | st.sampled_from(POOL) | st.binary(min_size=32, max_size=32))
    if field == "leaf_key":
        return dataclasses.replace(proof, leaf_key=replacement)
    return dataclasses.replace(proof, leaf_value_hash=replacement)


@settings(max_examples=150, deadline=None)
@given(
    model=st.dictionaries(st.sampled_from(POOL), st.binary(max_size=6), max_size=20), data=st.data()
)
def test_a_tampered_proof_fails(model: Model, data: st.DataObject) -> None:
    store = smt.MemoryNodeStore()
    root = smt.update(store, smt.EMPTY, model)
    k = data.draw(st.sampled_from(POOL))
    proof = smt.prove(store, root, k)
    bad = data.draw(tamperings(proof))
    if bad != proof:
        assert not smt.verify_proof(root, k, model.get(k), bad)


def is_leaf(store: smt.MemoryNodeStore, node: bytes) -> bool:
    return store.nodes[node][0] == Tag.SMT_LEAF


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(POOL), st.binary(max_size=6), max_size=20), steps)
def test_update_reports_exactly_the_nodes_it_retired(start: Model, history: list) -> None:
    """`retired` is the old tree's nodes that the new tree lacks: no more (a node still in use
    would be deleted) and no less (a node no longer in use would stay forever); the leaves
    among the nodes made and retired are named as such (a store tracks a node that comes
    back by its leaves)."""
    store = smt.MemoryNodeStore()
    root = smt.update(store, smt.EMPTY, start)
    for kind, arg in history:
        if kind != "apply":
            continue
        delta = smt.Delta()
        new_root = smt.update(store, root, arg, delta)
        old_nodes, new_nodes = smt.reachable(store, [root]), smt.reachable(store, [new_root])
        assert delta.retired == old_nodes - new_nodes
        assert delta.made >= new_nodes - old_nodes
        assert delta.retired_leaves == {h for h in delta.retired if is_leaf(store, h)}
        assert delta.made_leaves == {h for h in delta.made if is_leaf(store, h)}
        root = new_root
