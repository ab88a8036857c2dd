"""Signed envelopes (the MQTT transport's end-to-end protection against the broker).  The replay
window and the batching of frames against drawn inputs: tests/property/test_envelope.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ledger.block import Member
from ledger.crypto import KeyPair
from node.transport.envelope import (
    BROADCAST,
    EPOCHS_KEPT,
    Envelope,
    Opener,
    Rejected,
    Sealer,
)

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
