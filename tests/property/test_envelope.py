"""Signed envelopes against drawn inputs: each sequence number opens once and only within the
replay window, and batching keeps each destination's order within the size limit."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.block import Member
from ledger.crypto import KeyPair
from node.transport.envelope import BROADCAST, WINDOW, Opener, Rejected, Sealer
from node.transport.mqtt import _envelopes

CHAIN = "env-test"
KEYS = {n: KeyPair(bytes([i + 1]) * 32) for i, n in enumerate(["n0", "n1"])}
MEMBERS = tuple(Member(n, k.public_key) for n, k in KEYS.items())
NOW = 1_800_000_000_000


@given(st.lists(st.integers(min_value=1, max_value=3 * WINDOW), max_size=300))
def test_each_seq_is_accepted_once_and_only_within_the_window(seqs: list[int]) -> None:
    op, s = Opener(CHAIN, "n1", MEMBERS, 60_000), Sealer(CHAIN, "n0", KEYS["n0"], 1)
    sealed = {}
    for seq in sorted(set(seqs)):
        s.seq = seq - 1
        sealed[seq] = s.seal("n1", [seq.to_bytes(4, "big")], NOW)
    accepted: set[int] = set()
    top = 0
    for seq in seqs:
        try:
            op.open(sealed[seq], NOW)
        except Rejected as r:
            assert r.reason == "replayed"
            assert seq in accepted or top - seq >= WINDOW
            continue
        assert seq not in accepted and top - seq < WINDOW
        accepted.add(seq)
        top = max(top, seq)


FRAMES = st.lists(
    st.tuples(st.sampled_from(["n1", "n2", BROADCAST]), st.binary(max_size=50)), max_size=60
)


@given(FRAMES, st.integers(min_value=1, max_value=120))
def test_batches_keep_each_destinations_order_and_respect_the_size_limit(
    batch: list[tuple[str, bytes]], limit: int
) -> None:
    groups = _envelopes(batch, limit)
    for to in {t for t, _ in batch}:
        sent = [f for t, fs in groups if t == to for f in fs]
        assert sent == [f for t, f in batch if t == to]
    for _, frames in groups:
        assert frames
        assert len(frames) == 1 or sum(len(f) for f in frames) <= limit
