"""PBFT messages (Castro & Liskov).  Every consensus message is signed by its replica."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from ledger.block import Block
from ledger.crypto import KeyPair, verify
from ledger.encoding import Struct, Tag
from ledger.tx import Tx


@dataclass(frozen=True)
class PrePrepare(Struct):
    """The primary assigns `seq` to the block with hash `digest` in `view`.

    The signature covers (view, seq, digest, replica), not the block itself, so
    the signed part stays small when it is carried as proof in later messages.
    """

    TAG = Tag.PRE_PREPARE
    UNSIGNED = ("signature", "block")
    view: int
    seq: int
    digest: bytes
    replica: int
    signature: bytes
    block: Block | None


@dataclass(frozen=True)
class Prepare(Struct):
    TAG = Tag.PREPARE
    view: int
    seq: int
    digest: bytes
    replica: int
    signature: bytes


@dataclass(frozen=True)
class Commit(Struct):
    TAG = Tag.COMMIT
    view: int
    seq: int
    digest: bytes
    replica: int
    signature: bytes


@dataclass(frozen=True)
class ForwardTxs(Struct):
    """Client txs a backup passes to the primary.  Each tx carries its own signature."""

    TAG = Tag.FORWARD_TXS
    txs: tuple[Tx, ...]


@dataclass(frozen=True)
class CommitCertificate(Struct):
    """2f+1 matching signed commits: the proof that block `seq` with `digest` is final."""

    TAG = Tag.COMMIT_CERTIFICATE
    view: int
    seq: int
    digest: bytes
    commits: tuple[Commit, ...]


Vote = PrePrepare | Prepare | Commit
V = TypeVar("V", PrePrepare, Prepare, Commit)


def sign(message: V, key: KeyPair) -> V:
    return dataclasses.replace(message, signature=key.sign(message.signing_bytes()))


def signed_by(message: Vote, public_key: bytes) -> bool:
    return verify(public_key, message.signing_bytes(), message.signature)
