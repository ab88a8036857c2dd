"""Offline check of a block's PBFT commit certificate against the membership."""

from __future__ import annotations

from collections.abc import Sequence

from consensus.pbft.messages import CommitCertificate, signed_by
from ledger.block import Block, Member
from ledger.encoding import DecodeError
from ledger.errors import InvalidBlock


def verify_certificate(block: Block, members: Sequence[Member]) -> CommitCertificate:
    """Raise InvalidBlock unless 2f+1 distinct members signed COMMIT for this block."""
    try:
        cert = CommitCertificate.decode(block.proof)
    except DecodeError as e:
        raise InvalidBlock(f"block {block.height}: unreadable certificate: {e}") from e
    if cert.digest != block.hash or cert.seq != block.height:
        raise InvalidBlock(f"block {block.height}: certificate is for another block")
    signers: set[int] = set()
    for c in cert.commits:
        if (c.view, c.seq, c.digest) != (cert.view, cert.seq, cert.digest):
            raise InvalidBlock(f"block {block.height}: certificate mixes different commits")
        if not 0 <= c.replica < len(members) or c.replica in signers:
            raise InvalidBlock(f"block {block.height}: bad or repeated signer {c.replica}")
        if not signed_by(c, members[c.replica].public_key):
            raise InvalidBlock(f"block {block.height}: bad commit signature by {c.replica}")
        signers.add(c.replica)
    quorum = 2 * ((len(members) - 1) // 3) + 1
    if len(signers) < quorum:
        raise InvalidBlock(f"block {block.height}: {len(signers)} commits, need {quorum}")
    return cert
