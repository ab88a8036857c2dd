"""What makes a block a proof-of-work block: its work header, its seal, and the tip beacon.

The ledger's `BlockHeader` already commits to the height, the parent hash, the
Merkle root of the txs, the receipts and state roots, the timestamp and the
miner.  The work header adds the compact target and the nonce:

    PowWork(header_hash, bits, nonce)      proof: dsha256(encoding) <= target(bits)

Its canonical encoding ends with the 8 nonce bytes, so a miner hashes a fixed
prefix and only the nonce changes.  The seal, stored as the block's `proof`,
carries bits, nonce and the miner's signature over (header hash, bits): only a
member can mine, and no one can re-attribute a member's block.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ledger.block import Block
from ledger.crypto import KeyPair, verify
from ledger.encoding import Struct, Tag

NONCE_SIZE = 8


@dataclass(frozen=True)
class PowWork(Struct):
    TAG = Tag.POW_WORK
    header_hash: bytes
    bits: int
    nonce: bytes  # NONCE_SIZE bytes, last in the encoding


@dataclass(frozen=True)
class PowSeal(Struct):
    """A PoW block's proof: the target it met, the nonce, and the miner's signature."""

    TAG = Tag.POW_SEAL
    bits: int
    nonce: bytes
    signature: bytes

    UNSIGNED = ("nonce", "signature")  # the miner signs before it searches for a nonce


@dataclass(frozen=True)
class PowTip(Struct):
    """A miner's best chain, announced periodically, so a node that missed blocks asks."""

    TAG = Tag.POW_TIP
    height: int
    hash: bytes
    total_work: bytes  # big-endian: cumulative work can outgrow a 64-bit integer

    @property
    def work(self) -> int:
        return int.from_bytes(self.total_work, "big")

    @staticmethod
    def of(height: int, block_hash: bytes, total_work: int) -> PowTip:
        return PowTip(height, block_hash, total_work.to_bytes(32, "big"))


def dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def work_prefix(header_hash: bytes, bits: int) -> bytes:
    """The work header's encoding without its nonce bytes."""
    return PowWork(header_hash, bits, bytes(NONCE_SIZE)).encode()[:-NONCE_SIZE]


def pow_value(prefix: bytes, nonce: bytes) -> int:
    return int.from_bytes(dsha256(prefix + nonce), "big")


def search(prefix: bytes, target: int, start: int, count: int) -> int | None:
    """The first nonce in [start, start + count) whose proof meets `target`, if any."""
    first = hashlib.sha256(prefix)
    for n in range(start, start + count):
        h = first.copy()
        h.update(n.to_bytes(NONCE_SIZE, "big"))
        if int.from_bytes(hashlib.sha256(h.digest()).digest(), "big") <= target:
            return n
    return None


def seal_signing_bytes(header_hash: bytes, bits: int) -> bytes:
    return PowSeal(bits, b"", b"").signing_bytes() + header_hash


def make_seal(block: Block, bits: int, nonce: int, key: KeyPair) -> PowSeal:
    signature = key.sign(seal_signing_bytes(block.hash, bits))
    return PowSeal(bits, nonce.to_bytes(NONCE_SIZE, "big"), signature)


def seal_signed_by(seal: PowSeal, header_hash: bytes, public_key: bytes) -> bool:
    return verify(public_key, seal_signing_bytes(header_hash, seal.bits), seal.signature)
