"""Checks of PBFT proofs and the NEW-VIEW construction, as pure functions.

The new primary and every replica that verifies a NEW-VIEW run the same
`new_view_plan` over the same view changes, so the pre-prepares of a new view
are checked by recomputing them, not trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consensus.pbft.config import PbftConfig
from consensus.pbft.messages import (
    Checkpoint,
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PreparedCert,
    PrePrepare,
    Signed,
    ViewChange,
    Vote,
    signed_by,
)
from ledger.block import Batch, Block
from ledger.encoding import DecodeError, decode_any
from ledger.errors import InvalidBlock


def signed_by_member(msg: Signed, config: PbftConfig) -> bool:
    return 0 <= msg.replica < config.n and signed_by(msg, config.members[msg.replica].public_key)


def valid_checkpoint_proof(seq: int, proof: Iterable[Checkpoint], config: PbftConfig) -> bool:
    """2f+1 distinct members signed the same (seq, block hash, state root); genesis needs none."""
    proof = tuple(proof)
    if seq == 0:
        return not proof
    if len({(c.seq, c.block_hash, c.state_root) for c in proof}) != 1 or proof[0].seq != seq:
        return False
    signers = {c.replica for c in proof}
    return len(signers) == len(proof) >= config.quorum and all(
        signed_by_member(c, config) for c in proof
    )


def valid_prepared_cert(cert: PreparedCert, config: PbftConfig) -> bool:
    pp = cert.pre_prepare
    primary = config.primary(pp.view)
    if pp.replica != primary or not signed_by_member(pp, config):
        return False
    if pp.batch is not None and (pp.batch.digest != pp.digest or pp.batch.height != pp.seq):
        return False
    signers = {p.replica for p in cert.prepares}
    return (
        len(signers) == len(cert.prepares) >= config.quorum - 1
        and primary not in signers
        and all((p.view, p.seq, p.digest) == (pp.view, pp.seq, pp.digest) for p in cert.prepares)
        and all(signed_by_member(p, config) for p in cert.prepares)
    )


def valid_view_change(vc: ViewChange, config: PbftConfig) -> bool:
    if not signed_by_member(vc, config):
        return False
    if not valid_checkpoint_proof(vc.stable_seq, vc.checkpoint_proof, config):
        return False
    seqs = [c.seq for c in vc.prepared]
    if len(set(seqs)) != len(seqs):
        return False
    high = vc.stable_seq + config.log_size
    return all(
        c.view < vc.new_view and vc.stable_seq < c.seq <= high and valid_prepared_cert(c, config)
        for c in vc.prepared
    )


@dataclass(frozen=True)
class Plan:
    """What a NEW-VIEW must contain, derived from its view changes."""

    stable_seq: int
    checkpoint_proof: tuple[Checkpoint, ...]
    entries: tuple[tuple[int, bytes, Batch | None], ...]  # (seq, digest, batch or None)


def new_view_plan(view: int, vcs: Iterable[ViewChange], config: PbftConfig) -> Plan:
    """Castro & Liskov's rule: from the highest stable checkpoint, re-propose for every
    sequence number the batch prepared in the highest view, and a null batch where none was.

    A batch comes without a body when every replica that prepared it already executed
    it; it is committed, and replicas that lack it fetch it with its certificate.
    """
    vcs = sorted(vcs, key=lambda v: v.replica)
    best = max(vcs, key=lambda v: (v.stable_seq, -v.replica))
    low = best.stable_seq
    certs: dict[int, list[PreparedCert]] = {}
    for vc in vcs:
        for cert in vc.prepared:
            if cert.seq > low:
                certs.setdefault(cert.seq, []).append(cert)
    high = max(certs, default=low)
    proposer = config.members[config.primary(view)].node_id
    entries: list[tuple[int, bytes, Batch | None]] = []
    for seq in range(low + 1, high + 1):
        if seq not in certs:
            null = Batch(config.chain_id, seq, proposer, 0, ())
            entries.append((seq, null.digest, null))
            continue
        top = max(certs[seq], key=lambda c: c.view)
        bodies = [c.pre_prepare.batch for c in certs[seq] if c.digest == top.digest]
        entries.append((seq, top.digest, next((b for b in bodies if b is not None), None)))
    return Plan(low, best.checkpoint_proof, tuple(entries))


def valid_new_view(nv: NewView, config: PbftConfig) -> bool:
    primary = config.primary(nv.view)
    if nv.replica != primary or not signed_by_member(nv, config):
        return False
    senders = {vc.replica for vc in nv.view_changes}
    if len(senders) != len(nv.view_changes) or len(senders) < config.quorum:
        return False
    if not all(vc.new_view == nv.view and valid_view_change(vc, config) for vc in nv.view_changes):
        return False
    plan = new_view_plan(nv.view, nv.view_changes, config)
    if [(s, d) for s, d, _ in plan.entries] != [(p.seq, p.digest) for p in nv.pre_prepares]:
        return False
    return all(
        p.view == nv.view
        and p.replica == primary
        and (p.batch is None or p.batch.digest == p.digest)
        and signed_by_member(p, config)
        for p in nv.pre_prepares
    )


def contradicts(a: Vote, b: Vote) -> bool:
    """Two votes by one member for the same (view, seq) with different digests: an honest
    replica never signs both (a primary's commit must match its own pre-prepare)."""
    return a.replica == b.replica and (a.view, a.seq) == (b.view, b.seq) and a.digest != b.digest


def valid_evidence(payload: Mapping[str, Any], config: PbftConfig) -> bool:
    """An evidence tx's payload proves that `member` equivocated."""
    try:
        a, b = decode_any(payload["a"]), decode_any(payload["b"])
        member = config.index_of(payload["member"])
    except (DecodeError, ValueError, KeyError):
        return False
    votes = (PrePrepare, Prepare, Commit)
    return (
        isinstance(a, votes)
        and isinstance(b, votes)
        and a.replica == member
        and contradicts(a, b)
        and signed_by_member(a, config)
        and signed_by_member(b, config)
    )


def verify_certificate(block: Block, config: PbftConfig) -> CommitCertificate:
    """Raise InvalidBlock unless 2f+1 distinct members signed COMMIT for this block's batch."""
    try:
        cert = CommitCertificate.decode(block.proof)
    except DecodeError as e:
        raise InvalidBlock(f"block {block.height}: unreadable certificate: {e}") from e
    if cert.digest != block.header.batch_digest() or cert.seq != block.height:
        raise InvalidBlock(f"block {block.height}: certificate is for another block")
    signers: set[int] = set()
    for c in cert.commits:
        if (c.view, c.seq, c.digest) != (cert.view, cert.seq, cert.digest):
            raise InvalidBlock(f"block {block.height}: certificate mixes different commits")
        if c.replica in signers or not signed_by_member(c, config):
            raise InvalidBlock(f"block {block.height}: bad or repeated signer {c.replica}")
        signers.add(c.replica)
    if len(signers) < config.quorum:
        raise InvalidBlock(f"block {block.height}: {len(signers)} commits, need {config.quorum}")
    return cert
