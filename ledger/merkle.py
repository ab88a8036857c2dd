"""Binary Merkle roots with domain-separated leaves and nodes.

An odd node at the end of a level is promoted unchanged rather than paired
with itself, so no two different leaf lists share a root (the duplicate-last
trick lets [a, b, c] and [a, b, c, c] collide).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.encoding import Tag, hash_bytes

EMPTY_ROOT = hash_bytes(bytes([Tag.MERKLE_NODE]))
_LEAF = bytes([Tag.MERKLE_LEAF])
_NODE = bytes([Tag.MERKLE_NODE])


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    level = [hash_bytes(_LEAF + leaf) for leaf in leaves]
    while len(level) > 1:
        paired = [hash_bytes(_NODE + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]
