"""The authenticated map: a sparse Merkle tree over 256-bit keys, with path compression.

Keys are 32-byte hashes (`account_key`, `contract_key`: a domain tag plus the address or id,
so an account and a contract never share a key); values are bytes (a record's encoding).

Nodes are immutable and content-addressed, so an update writes only new nodes and every
older root stays readable: a reorg is going back to an older root; `prune` drops what no
root to keep reaches.

Node kinds and their hashes (H = sha256):
- empty subtree: the one constant EMPTY = H(SMT_NODE tag alone). It is never stored, and a
  real node cannot hash to it (a node always hashes 65 bytes, EMPTY hashes 1).
- leaf: H(SMT_LEAF | key | H(value)); stored as SMT_LEAF | key | value.
- internal: H(SMT_NODE | left | right); stored as those same 65 bytes.

Path compression (as in the Diem/Aptos Jellyfish tree): a leaf sits at the shallowest depth
where it is alone in its subtree, so an internal node always has two or more leaves below it,
and a tree of N random keys is about log2 N deep, not 256.  The shape is canonical: a set of
keys has one tree, whatever order its changes came in (deletes lift a lone leaf back up).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Protocol, runtime_checkable

from ledger.encoding import Struct, Tag, hash_bytes

KEY_BYTES = 32
KEY_BITS = 8 * KEY_BYTES
_LEAF = bytes([Tag.SMT_LEAF])
_NODE = bytes([Tag.SMT_NODE])
_LEAF_TAG = int(Tag.SMT_LEAF)  # an int compare: faster than with the enum
EMPTY = hash_bytes(_NODE)


def account_key(address: bytes) -> bytes:
    return hash_bytes(bytes([Tag.ACCOUNT]) + address)


def contract_key(contract_id: bytes) -> bytes:
    return hash_bytes(bytes([Tag.CONTRACT]) + contract_id)


class NodeStore(Protocol):
    """Where nodes live, by hash.  `put_many` of a node already there is harmless."""

    def get(self, node_hash: bytes) -> bytes | None: ...

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None: ...


@runtime_checkable
class BatchReadStore(NodeStore, Protocol):
    """A store that reads many nodes in one round trip; `update` then reads level by level."""

    def get_many(self, hashes: list[bytes]) -> dict[bytes, bytes]: ...


class PrunableStore(NodeStore, Protocol):
    def hashes(self) -> Iterator[bytes]: ...

    def delete_many(self, hashes: Iterable[bytes]) -> None: ...


class MemoryNodeStore:
    """Nodes in a dict: for tests, the simulator and benchmarks."""

    def __init__(self) -> None:
        self.nodes: dict[bytes, bytes] = {}

    def get(self, node_hash: bytes) -> bytes | None:
        return self.nodes.get(node_hash)

    def put_many(self, nodes: Mapping[bytes, bytes]) -> None:
        self.nodes.update(nodes)

    def hashes(self) -> Iterator[bytes]:
        return iter(list(self.nodes))

    def delete_many(self, hashes: Iterable[bytes]) -> None:
        for h in hashes:
            self.nodes.pop(h, None)


class MissingNode(LookupError):
    """A node a root refers to is not in the store (pruned, or never written)."""


# -- node encodings ----------------------------------------------------------------------------


def leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    return hash_bytes(_LEAF + key + value_hash)


def internal_hash(left: bytes, right: bytes) -> bytes:
    return hash_bytes(_NODE + left + right)


def node_hash(blob: bytes) -> bytes:
    """The hash that names a stored node: a leaf by its key and value hash, any other node
    (an internal one, or a root over several trees) by its bytes."""
    if blob[:1] == _LEAF:
        return leaf_hash(blob[1 : 1 + KEY_BYTES], hash_bytes(blob[1 + KEY_BYTES :]))
    return hash_bytes(blob)


def _load(store: NodeStore, node_hash: bytes) -> bytes:
    blob = store.get(node_hash)
    if blob is None:
        raise MissingNode(node_hash.hex())
    return blob


def _is_leaf(blob: bytes) -> bool:
    return blob[0] == Tag.SMT_LEAF


def _bit(key: int, depth: int) -> int:
    return (key >> (KEY_BITS - 1 - depth)) & 1


def _key_int(key: bytes) -> int:
    if len(key) != KEY_BYTES:
        raise ValueError(f"a key is {KEY_BYTES} bytes, not {len(key)}")
    return int.from_bytes(key, "big")


# -- reading -----------------------------------------------------------------------------------


def get(store: NodeStore, root: bytes, key: bytes) -> bytes | None:
    k = _key_int(key)
    node, depth = root, 0
    while node != EMPTY:
        blob = _load(store, node)
        if _is_leaf(blob):
            return blob[1 + KEY_BYTES :] if blob[1 : 1 + KEY_BYTES] == key else None
        node = blob[33:65] if _bit(k, depth) else blob[1:33]
        depth += 1
    return None


def items(store: NodeStore, root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) under `root`, in key order."""
    stack = [root]
    while stack:
        node = stack.pop()
        if node == EMPTY:
            continue
        blob = _load(store, node)
        if _is_leaf(blob):
            yield blob[1 : 1 + KEY_BYTES], blob[1 + KEY_BYTES :]
        else:
            stack += (blob[33:65], blob[1:33])  # right below left: left pops first


# -- updating ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Batch:
    """The sorted changes of one update, as ints (for bit tests and bisection) and parallel
    values (None deletes); `new` collects the nodes the update creates, `gone` the old nodes
    it replaced (a leaf among them may be made again: `new` wins); `load` reads a node (the
    prefetched paths first, when the store reads in batches)."""

    keys: list[int]
    values: list[bytes | None]
    new: dict[bytes, bytes]
    gone: list[bytes]
    load: Callable[[bytes], bytes]
    new_leaves: list[bytes]  # the leaves among `new`, and among `gone`
    gone_leaves: list[bytes]


@dataclass(frozen=True)
class Delta:
    """What updates did to the store: the nodes they made, and the old nodes they retired
    (under the old root, not under the new one: exactly, since a node's content fixes its
    place in the tree and only a leaf can move).  One Delta may gather several updates.
    `made_leaves` and `retired_leaves` are the leaves among them: a node can only come back
    (be made again after it was retired) if a leaf below it does."""

    made: set[bytes] = field(default_factory=set)
    retired: set[bytes] = field(default_factory=set)
    made_leaves: set[bytes] = field(default_factory=set)
    retired_leaves: set[bytes] = field(default_factory=set)


def update(
    store: NodeStore,
    root: bytes,
    changes: Mapping[bytes, bytes | None],
    delta: Delta | None = None,
) -> bytes:
    """Apply inserts, updates and deletes (None) to the tree at `root`; return the new root.
    Writes only the new nodes, O(k log N) of them for k changes, in one `put_many`, and
    records them and the nodes they replace in `delta`."""
    if not changes:
        return root
    ordered = sorted((_key_int(k), v) for k, v in changes.items())
    keys = [k for k, _ in ordered]
    if isinstance(store, BatchReadStore):
        load = _loader(_prefetch(store, keys, root), store)
    else:
        load = _loader({}, store)
    batch = _Batch(keys, [v for _, v in ordered], {}, [], load, [], [])
    new_root, _ = _update(batch, root, 0, 0, len(ordered))
    if batch.new:
        store.put_many(batch.new)
    if delta is not None:
        new = batch.new
        delta.made.update(new)
        delta.retired.update(h for h in batch.gone if h not in new)
        delta.made_leaves.update(batch.new_leaves)
        delta.retired_leaves.update(h for h in batch.gone_leaves if h not in new)
    return new_root


def _loader(nodes: dict[bytes, bytes], store: NodeStore) -> Callable[[bytes], bytes]:
    """Prefetched nodes first, then the store (for what a delete may need off the paths)."""
    fetched, get = nodes.get, store.get

    def load(node_hash: bytes) -> bytes:
        blob = fetched(node_hash) or get(node_hash)
        if blob is None:
            raise MissingNode(node_hash.hex())
        return blob

    return load


def _prefetch(store: BatchReadStore, keys: list[int], root: bytes) -> dict[bytes, bytes]:
    """Every node on the changed keys' paths, read one level at a time: one batch per level,
    not one read per node (a store's misses cost a round trip each)."""
    fetched: dict[bytes, bytes] = {}
    level = [(root, 0, len(keys))] if root != EMPTY else []
    depth = 0
    while level:
        blobs = store.get_many([node for node, _, _ in level])
        below = []
        shift = KEY_BITS - 1 - depth
        for node, lo, hi in level:
            blob = blobs.get(node)
            if blob is None:
                raise MissingNode(node.hex())
            fetched[node] = blob
            if blob[0] == _LEAF_TAG:
                continue
            if hi - lo == 1:  # one key below: its bit picks the child, no bisection
                child = blob[33:65] if (keys[lo] >> shift) & 1 else blob[1:33]
                if child != EMPTY:
                    below.append((child, lo, hi))
                continue
            mid = _split(keys, depth, lo, hi)
            for child, a, b in ((blob[1:33], lo, mid), (blob[33:65], mid, hi)):
                if a < b and child != EMPTY:
                    below.append((child, a, b))
        level, depth = below, depth + 1
    return fetched


def _update(batch: _Batch, node: bytes, depth: int, lo: int, hi: int) -> tuple[bytes, bool | None]:
    """The subtree at `node` (at `depth`) with changes [lo, hi) applied: (hash, is_leaf),
    is_leaf None when not known (an untouched subtree: loaded only if a delete needs it)."""
    if lo == hi:
        return node, None
    if hi - lo == 1:
        return _update_one(batch, node, depth, lo)
    if node == EMPTY:
        return _build(batch, depth, lo, hi, None)
    blob = batch.load(node)
    if blob[0] == _LEAF_TAG:
        built = _build(batch, depth, lo, hi, (node, blob))
        if built[0] != node:
            batch.gone.append(node)
            batch.gone_leaves.append(node)
        return built
    mid = _split(batch.keys, depth, lo, hi)
    old_left, old_right = blob[1:33], blob[33:65]
    left, left_leaf = _update(batch, old_left, depth + 1, lo, mid)
    right, right_leaf = _update(batch, old_right, depth + 1, mid, hi)
    if left == old_left and right == old_right:
        return node, False  # nothing changed below (same values again, absent keys deleted)
    batch.gone.append(node)
    if left == EMPTY and right_leaf is None and right != EMPTY:
        right_leaf = batch.load(right)[0] == _LEAF_TAG
    if right == EMPTY and left_leaf is None and left != EMPTY:
        left_leaf = batch.load(left)[0] == _LEAF_TAG
    return _join(batch, left, bool(left_leaf), right, bool(right_leaf))


def _update_one(batch: _Batch, node: bytes, depth: int, i: int) -> tuple[bytes, bool | None]:
    """`_update` for the one change `i`: down its path to the leaf or empty subtree that ends
    it, then back up, joining each new child with its untouched sibling (the deep levels of
    a big tree: one change per subtree, so no bisection and no recursion)."""
    k, load, start = batch.keys[i], batch.load, node
    path: list[tuple[bytes, int]] = []  # (sibling, this key's bit), from `node` down
    crossed: list[bytes] = []  # the inner nodes of the path: all replaced if its end changes
    old: tuple[bytes, bytes] | None = None
    while node != EMPTY:
        blob = load(node)
        if blob[0] == _LEAF_TAG:
            old = (node, blob)
            break
        crossed.append(node)
        if (k >> (KEY_BITS - 1 - depth)) & 1:
            path.append((blob[1:33], 1))
            node = blob[33:65]
        else:
            path.append((blob[33:65], 0))
            node = blob[1:33]
        depth += 1
    h, leaf = _build(batch, depth, i, i + 1, old)
    if h == node:
        return start, None if start == EMPTY else start == node  # unchanged all the way up
    batch.gone.extend(crossed)
    if old is not None:
        batch.gone.append(node)
        batch.gone_leaves.append(node)
    put = _put_internal
    for sibling, bit in reversed(path):
        if sibling == EMPTY:
            if h == EMPTY or leaf:
                continue  # a lone leaf (or nothing) lifts past an empty sibling
        elif h == EMPTY and load(sibling)[0] == _LEAF_TAG:
            h, leaf = sibling, True  # the sibling is alone now: it lifts
            continue
        h = put(batch, sibling, h) if bit else put(batch, h, sibling)
        leaf = False
    return h, leaf


def _split(keys: list[int], depth: int, lo: int, hi: int) -> int:
    """First index in [lo, hi) whose key has bit `depth` set; all share the bits above it."""
    shift = KEY_BITS - 1 - depth
    boundary = ((keys[lo] >> (shift + 1)) << (shift + 1)) | (1 << shift)
    return bisect_left(keys, boundary, lo, hi)


def _build(
    batch: _Batch, depth: int, lo: int, hi: int, old: tuple[bytes, bytes] | None
) -> tuple[bytes, bool]:
    """A subtree from changes [lo, hi) over an empty subtree or one lone old leaf."""
    keys, values = batch.keys[lo:hi], batch.values[lo:hi]
    if old is not None:
        old_hash, old_leaf = old
        old_key, old_value = int.from_bytes(old_leaf[1 : 1 + KEY_BYTES], "big"), old_leaf[33:]
        i = bisect_left(keys, old_key)
        if i == len(keys) or keys[i] != old_key:  # the old leaf stays: it joins the changes
            keys.insert(i, old_key)
            values.insert(i, old_value)
    present = [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
    if old is not None and present == [(old_key, old_value)]:
        return old_hash, True  # unchanged: written once already
    sub = _Batch(
        [k for k, _ in present],
        [v for _, v in present],
        batch.new,
        batch.gone,
        batch.load,
        batch.new_leaves,
        batch.gone_leaves,
    )
    return _fresh(sub, depth, 0, len(present))


def _fresh(batch: _Batch, depth: int, lo: int, hi: int) -> tuple[bytes, bool]:
    """A new subtree holding exactly the (all present) entries [lo, hi)."""
    if lo == hi:
        return EMPTY, False
    if hi - lo == 1:
        value = batch.values[lo]
        assert value is not None
        return _put_leaf(batch, batch.keys[lo].to_bytes(KEY_BYTES, "big"), value), True
    mid = _split(batch.keys, depth, lo, hi)
    left, _ = _fresh(batch, depth + 1, lo, mid)
    right, _ = _fresh(batch, depth + 1, mid, hi)
    return _put_internal(batch, left, right), False  # two or more leaves below: never lifted


def _join(
    batch: _Batch, left: bytes, left_leaf: bool, right: bytes, right_leaf: bool
) -> tuple[bytes, bool]:
    """The parent of two updated children, lifting a lone leaf to keep the shape canonical."""
    if left == EMPTY and (right == EMPTY or right_leaf):
        return right, right_leaf
    if right == EMPTY and left_leaf:
        return left, True
    return _put_internal(batch, left, right), False


def _put_leaf(batch: _Batch, key: bytes, value: bytes) -> bytes:
    h = sha256(_LEAF + key + sha256(value).digest()).digest()  # leaf_hash, inlined: hot
    batch.new[h] = _LEAF + key + value
    batch.new_leaves.append(h)
    return h


def _put_internal(batch: _Batch, left: bytes, right: bytes) -> bytes:
    blob = _NODE + left + right
    h = sha256(blob).digest()  # hash_bytes, inlined: the hottest line of an update
    batch.new[h] = blob
    return h


# -- proofs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proof(Struct):
    """The path to a key: the siblings from the root down, and what ends the path.  For a key
    that is present, the leaf is that key's; for an absent one, it is another key's leaf (one
    that shares the path) or, when `leaf_key` is None, an empty subtree.  A Struct, so a
    proof travels in the canonical encoding (an RPC answer carries its hex)."""

    TAG = Tag.SMT_PROOF
    siblings: tuple[bytes, ...]
    leaf_key: bytes | None
    leaf_value_hash: bytes | None


def prove(store: NodeStore, root: bytes, key: bytes) -> Proof:
    k = _key_int(key)
    node = root
    siblings: list[bytes] = []
    while node != EMPTY:
        blob = _load(store, node)
        if _is_leaf(blob):
            found = blob[1 : 1 + KEY_BYTES]
            return Proof(tuple(siblings), found, hash_bytes(blob[1 + KEY_BYTES :]))
        bit = _bit(k, len(siblings))
        siblings.append(blob[1:33] if bit else blob[33:65])
        node = blob[33:65] if bit else blob[1:33]
    return Proof(tuple(siblings), None, None)


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: Proof) -> bool:
    """Whether `proof` shows that `key` holds `value` (None: is absent) under `root`."""
    if len(key) != KEY_BYTES or len(proof.siblings) > KEY_BITS:
        return False
    if any(len(s) != 32 for s in proof.siblings):
        return False
    terminal = _terminal(key, value, proof)
    if terminal is None:
        return False
    k, node = _key_int(key), terminal
    for depth in range(len(proof.siblings) - 1, -1, -1):
        sibling = proof.siblings[depth]
        node = internal_hash(sibling, node) if _bit(k, depth) else internal_hash(node, sibling)
    return node == root


def _terminal(key: bytes, value: bytes | None, proof: Proof) -> bytes | None:
    """The hash the path ends in, or None when the proof's ending cannot show the claim."""
    if proof.leaf_key is None:  # an empty subtree: only an absence, and no stray value hash
        return EMPTY if value is None and proof.leaf_value_hash is None else None
    if proof.leaf_value_hash is None or len(proof.leaf_value_hash) != 32:
        return None
    if value is not None:
        if proof.leaf_key != key or hash_bytes(value) != proof.leaf_value_hash:
            return None
    elif not _shares_path(proof.leaf_key, key, len(proof.siblings)):
        return None
    return leaf_hash(proof.leaf_key, proof.leaf_value_hash)


def _shares_path(other: bytes, key: bytes, depth: int) -> bool:
    """`other` is a different key whose first `depth` bits are `key`'s (so it sits on its path)."""
    if len(other) != KEY_BYTES or other == key:
        return False
    shift = KEY_BITS - depth
    return _key_int(other) >> shift == _key_int(key) >> shift


# -- pruning -----------------------------------------------------------------------------------


def reachable(store: NodeStore, roots: Iterable[bytes]) -> set[bytes]:
    """Every stored node some root in `roots` reaches (shared subtrees are walked once)."""
    seen: set[bytes] = set()
    stack = [r for r in roots if r != EMPTY]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        blob = _load(store, node)
        if not _is_leaf(blob):
            stack += [c for c in (blob[1:33], blob[33:65]) if c != EMPTY and c not in seen]
    return seen


def prune(store: PrunableStore, keep_roots: Iterable[bytes]) -> int:
    """Delete every node no root in `keep_roots` reaches; return how many were deleted."""
    keep = reachable(store, keep_roots)
    doomed = [h for h in store.hashes() if h not in keep]
    store.delete_many(doomed)
    return len(doomed)
