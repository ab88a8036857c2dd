"""Signed envelopes (the MQTT transport's end-to-end protection against the broker)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.block import Member
from ledger.crypto import KeyPair
from node.transport.envelope import (
    BROADCAST,
    EPOCHS_KEPT,
    WINDOW,
    Envelope,
    Opener,
    Rejected,
    Sealer,
)
from node.transport.mqtt import _envelopes

CHAIN = "env-test"
KEYS = {n: KeyPair(bytes([i + 1]) * 32) for i, n in enumerate(["n0", "n1", "n2"])}
MEMBERS = tuple(Member(n, k.public_key) for n, k in KEYS.items())
NOW = 1_800_000_000_000
MAX_AGE = 60_000


def opener(me: str = "n1") -> Opener:
    return Opener(CHAIN, me, MEMBERS, MAX_AGE)


def sealer(me: str = "n0", epoch: int = 1) -> Sealer:
    return Sealer(CHAIN, me, KEYS[me], epoch)


def reason(op: Opener, data: bytes, now: int = NOW) -> str:
    with pytest.raises(Rejected) as caught:
        op.open(data, now)
    return caught.value.reason


def test_a_sealed_envelope_opens_once_with_its_frames() -> None:
    op, s = opener(), sealer()
    data = s.seal("n1", [b"a", b"bc"], NOW)
    env = op.open(data, NOW)
    assert (env.sender, env.to, env.frames) == ("n0", "n1", (b"a", b"bc"))
    assert reason(op, data) == "replayed"
    assert op.open(s.seal(BROADCAST, [b"d"], NOW), NOW).frames == (b"d",)


def test_what_the_broker_could_do_is_refused_with_its_reason() -> None:
    op, s = opener(), sealer()
    good = Envelope.decode(s.seal("n1", [b"pay 10"], NOW))
    assert reason(op, b"\x00garbage") == "garbage"
    assert reason(op, b"") == "garbage"
    # Altered frames, sender or addressee: the signature no longer matches.
    assert reason(op, replace(good, frames=(b"pay 99",)).encode()) == "forged"
    assert reason(op, replace(good, sender="n2").encode()) == "forged"
    # Signed by a key that is not the sender's.
    bad = Sealer(CHAIN, "n0", KEYS["n2"], 1).seal("n1", [b"x"], NOW)
    assert reason(op, bad) == "forged"
    # For another node, another chain, or from a stranger.
    assert reason(op, s.seal("n2", [b"x"], NOW)) == "misrouted"
    assert reason(op, Sealer("other", "n0", KEYS["n0"], 1).seal("n1", [b"x"], NOW)) == "foreign"
    assert reason(op, Sealer(CHAIN, "n9", KEYS["n0"], 1).seal("n1", [b"x"], NOW)) == "foreign"
    # Too old or from the future (a replay from long ago, or a broken clock).
    assert reason(op, s.seal("n1", [b"x"], NOW - MAX_AGE - 1)) == "stale"
    assert reason(op, s.seal("n1", [b"x"], NOW + MAX_AGE + 1)) == "stale"
    # Our own broadcast coming back (MQTT 3.1.1 has no no-local option).
    assert reason(opener("n0"), s.seal(BROADCAST, [b"x"], NOW)) == "echo"
    # The genuine envelope was never consumed by the forgeries: it still opens.
    assert op.open(good.encode(), NOW).frames == (b"pay 10",)


def test_forgeries_cannot_burn_sequence_numbers_or_evict_the_real_epoch() -> None:
    op, real = opener(), sealer(epoch=100)
    first = real.seal("n1", [b"1"], NOW)
    for epoch in range(1000, 1000 + 2 * EPOCHS_KEPT):  # forged envelopes from newer "runs"
        forged = Envelope.decode(Sealer(CHAIN, "n0", KEYS["n2"], epoch).seal("n1", [b"x"], NOW))
        assert reason(op, forged.encode()) == "forged"
    assert op.open(first, NOW).frames == (b"1",)
    assert op.open(real.seal("n1", [b"2"], NOW), NOW).frames == (b"2",)


def test_a_restart_starts_a_new_epoch_and_old_epochs_age_out() -> None:
    op = opener()
    runs = [sealer(epoch=e) for e in range(1, EPOCHS_KEPT + 3)]
    kept = [s.seal("n1", [b"x"], NOW) for s in runs]  # one envelope per run, unopened
    for s in runs[1:]:
        op.open(s.seal("n1", [b"y"], NOW), NOW)  # the later runs are heard from
    # The first run is older than every epoch remembered: its envelopes count as replays.
    assert reason(op, kept[0]) == "replayed"
    # A remembered run's unseen envelope still opens, once.
    assert op.open(kept[-1], NOW).frames == (b"x",)
    assert reason(op, kept[-1]) == "replayed"


@given(st.lists(st.integers(min_value=1, max_value=3 * WINDOW), max_size=300))
def test_each_seq_is_accepted_once_and_only_within_the_window(seqs: list[int]) -> None:
    op, s = opener(), sealer()
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
