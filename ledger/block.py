"""Blocks, their headers, and the genesis that roots a chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.crypto import ADDRESS_SIZE
from ledger.encoding import MAX_INT, Struct, Tag
from ledger.errors import InvalidBlock
from ledger.merkle import merkle_root
from ledger.tx import Tx

ZERO_HASH = bytes(32)


@dataclass(frozen=True)
class BatchHeader(Struct):
    """What consensus orders at one height: its hash is the digest replicas vote on."""

    TAG = Tag.BATCH_HEADER
    chain_id: str
    height: int
    proposer: str
    proposed_ms: int
    tx_root: bytes


@dataclass(frozen=True)
class Batch(Struct):
    """Transactions a primary proposes for one height, with the time on its clock.

    Consensus orders batches; every replica then executes the committed batch and
    derives the same block from it.  A null batch (no txs, proposed_ms 0) fills a
    height that a view change could not fill with a proposed batch.
    """

    TAG = Tag.BATCH
    chain_id: str
    height: int
    proposer: str
    proposed_ms: int
    txs: tuple[Tx, ...]

    @property
    def digest(self) -> bytes:
        cached: bytes | None = self.__dict__.get("_batch_digest")
        if cached is None:
            header = BatchHeader(
                self.chain_id, self.height, self.proposer, self.proposed_ms, tx_root(self.txs)
            )
            cached = header.sha256()
            object.__setattr__(self, "_batch_digest", cached)
        return cached


@dataclass(frozen=True)
class BlockHeader(Struct):
    """What a block's hash covers.

    `proposed_ms` is the proposer's clock as ordered; `timestamp_ms`, the block
    time, is max(proposed_ms, parent's timestamp_ms), so it never goes back.
    `state_root` is the state after applying the block.
    """

    TAG = Tag.BLOCK_HEADER
    chain_id: str
    height: int
    parent: bytes
    timestamp_ms: int
    proposed_ms: int
    proposer: str
    tx_root: bytes
    receipts_root: bytes
    state_root: bytes

    def batch_digest(self) -> bytes:
        """The digest of the batch this block executed: what its commit certificate signs."""
        batch = BatchHeader(
            self.chain_id, self.height, self.proposer, self.proposed_ms, self.tx_root
        )
        return batch.sha256()


@dataclass(frozen=True)
class Block(Struct):
    """A header, its transactions, and the consensus proof of finality.

    `proof` is opaque to the ledger (for PBFT an encoded commit certificate), so
    the ledger never depends on a consensus protocol; it is empty while proposed.
    """

    TAG = Tag.BLOCK
    header: BlockHeader
    txs: tuple[Tx, ...]
    proof: bytes

    @property
    def hash(self) -> bytes:
        return self.header.sha256()

    @property
    def height(self) -> int:
        return self.header.height

    def with_proof(self, proof: bytes) -> Block:
        return Block(self.header, self.txs, proof)


def tx_root(txs: tuple[Tx, ...] | list[Tx]) -> bytes:
    return merkle_root([tx.tx_id for tx in txs])


def check_successor(parent: BlockHeader, header: BlockHeader) -> None:
    """The header links to `parent`: same chain, next height, parent hash, block time rule."""
    if header.chain_id != parent.chain_id:
        raise InvalidBlock(f"chain id {header.chain_id!r} != {parent.chain_id!r}")
    if header.height != parent.height + 1:
        raise InvalidBlock(f"height {header.height} does not follow {parent.height}")
    if header.parent != parent.sha256():
        raise InvalidBlock(f"block {header.height} does not link to its parent's hash")
    if header.timestamp_ms != max(header.proposed_ms, parent.timestamp_ms):
        raise InvalidBlock(f"block {header.height} time is not max(proposed, parent's)")


@dataclass(frozen=True)
class Member(Struct):
    """A consensus member: a node id and its Ed25519 public key."""

    TAG = Tag.MEMBER
    node_id: str
    public_key: bytes


@dataclass(frozen=True)
class Genesis(Struct):
    """The chain's root: its id, members (in replica order) and opening balances.

    `accounts` maps hex addresses to balances (canonical maps need str keys).
    """

    TAG = Tag.GENESIS
    chain_id: str
    timestamp_ms: int
    members: tuple[Member, ...]
    accounts: dict[str, Any]

    def __post_init__(self) -> None:
        # Supply is conserved, so bounding it here bounds every balance forever.
        total = 0
        for address, balance in self.accounts.items():
            if len(bytes.fromhex(address)) != ADDRESS_SIZE:
                raise ValueError(
                    f"genesis account {address!r} is not a {ADDRESS_SIZE}-byte address"
                )
            if isinstance(balance, bool) or not isinstance(balance, int) or balance < 0:
                raise ValueError(f"genesis balance of {address} must be a non-negative integer")
            total += balance
        if total > MAX_INT:
            raise ValueError(f"genesis total supply {total} exceeds {MAX_INT}")

    def balances(self) -> dict[bytes, int]:
        return {bytes.fromhex(a): int(b) for a, b in self.accounts.items()}
