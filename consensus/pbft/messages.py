"""PBFT messages (Castro & Liskov, with signatures).  Every protocol message is signed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeVar

from ledger.block import Batch
from ledger.crypto import KeyPair, verify
from ledger.encoding import Struct, Tag


@dataclass(frozen=True)
class PrePrepare(Struct):
    """The primary of `view` assigns the batch with `digest` to sequence number `seq`.

    The signature covers (view, seq, digest, replica), not the batch, so the signed
    part stays small when it is carried as proof inside view changes.  `batch` is
    None when only the proof is needed.
    """

    TAG = Tag.PRE_PREPARE
    UNSIGNED = ("signature", "batch")
    view: int
    seq: int
    digest: bytes
    replica: int
    signature: bytes
    batch: Batch | None


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
class Checkpoint(Struct):
    """A replica's signed claim of the chain after executing block `seq`."""

    TAG = Tag.CHECKPOINT
    seq: int
    block_hash: bytes
    state_root: bytes
    replica: int
    signature: bytes


@dataclass(frozen=True)
class PreparedCert(Struct):
    """A pre-prepare and 2f matching prepares from other replicas: `seq` was prepared."""

    TAG = Tag.PREPARED_CERT
    pre_prepare: PrePrepare
    prepares: tuple[Prepare, ...]

    @property
    def view(self) -> int:
        return self.pre_prepare.view

    @property
    def seq(self) -> int:
        return self.pre_prepare.seq

    @property
    def digest(self) -> bytes:
        return self.pre_prepare.digest


@dataclass(frozen=True)
class ViewChange(Struct):
    """VIEW-CHANGE: the sender's stable checkpoint (with its proof) and what it prepared after.

    Prepared certificates for blocks the sender already executed carry no batch: those
    blocks are committed and can be fetched with their commit certificates.
    """

    TAG = Tag.VIEW_CHANGE
    new_view: int
    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    prepared: tuple[PreparedCert, ...]
    replica: int
    signature: bytes


@dataclass(frozen=True)
class NewView(Struct):
    """NEW-VIEW: 2f+1 view changes and the pre-prepares they imply for the new view."""

    TAG = Tag.NEW_VIEW
    view: int
    view_changes: tuple[ViewChange, ...]
    pre_prepares: tuple[PrePrepare, ...]
    replica: int
    signature: bytes


@dataclass(frozen=True)
class Status(Struct):
    """A heartbeat: where the sender is.  Lets laggards find out that they are behind."""

    TAG = Tag.STATUS
    view: int
    active: bool
    height: int
    stable_seq: int
    replica: int
    signature: bytes


@dataclass(frozen=True)
class CommitCertificate(Struct):
    """2f+1 matching signed commits: the proof that block `seq` with `digest` is final."""

    TAG = Tag.COMMIT_CERTIFICATE
    view: int
    seq: int
    digest: bytes
    commits: tuple[Commit, ...]


Vote = PrePrepare | Prepare | Commit
Signed = PrePrepare | Prepare | Commit | Checkpoint | ViewChange | NewView | Status
S = TypeVar("S", PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView, Status)


def sign(message: S, key: KeyPair) -> S:
    return dataclasses.replace(message, signature=key.sign(message.signing_bytes()))


def signed_by(message: Signed, public_key: bytes) -> bool:
    return verify(public_key, message.signing_bytes(), message.signature)
