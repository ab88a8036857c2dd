"""Signed envelopes: what nodes publish through a broker they do not trust.

A broker (MQTT) sees and relays every message, so it must be unable to forge, alter,
redirect or replay one.  Each envelope carries frames from one node to one node (or to all),
is signed with the sender's node key over everything it says, and is numbered: `epoch` is the
sender's start time (µs) and `seq` counts its envelopes since then.  A receiver accepts each
(sender, epoch, seq) once, within a sliding window, and only for envelopes sent in the last
`max_age_ms` (which also covers a receiver that restarted and forgot what it had seen).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ledger.block import Member
from ledger.crypto import KeyPair, verify
from ledger.encoding import DecodeError, Struct, Tag

BROADCAST = "*"
WINDOW = 4096  # how far behind the newest seq an envelope may arrive and still be accepted
EPOCHS_KEPT = 4  # a sender's recent epochs remembered (a twin or a restart adds one)
OVERHEAD = 1024  # bytes an envelope adds around its frames, with room to spare


@dataclass(frozen=True)
class Envelope(Struct):
    TAG = Tag.ENVELOPE
    chain_id: str
    sender: str
    to: str  # a node id, or BROADCAST
    epoch: int  # the sender's start time (µs): orders its restarts
    seq: int  # 1, 2, ... within the epoch
    sent_ms: int
    frames: tuple[bytes, ...]
    signature: bytes


class Rejected(Exception):
    """An envelope refused; `reason` is the counter it is filed under."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class Sealer:
    """Numbers and signs the envelopes one node sends."""

    def __init__(self, chain_id: str, me: str, key: KeyPair, epoch: int) -> None:
        self.chain_id, self.me, self.key, self.epoch = chain_id, me, key, epoch
        self.seq = 0

    def seal(self, to: str, frames: Iterable[bytes], now_ms: int) -> bytes:
        self.seq += 1
        env = Envelope(self.chain_id, self.me, to, self.epoch, self.seq, now_ms, tuple(frames), b"")
        return replace(env, signature=self.key.sign(env.signing_bytes())).encode()


class _Window:
    """Which seqs of one epoch were seen: the newest, and a bitmask of the WINDOW before it."""

    def __init__(self) -> None:
        self.top = 0
        self.mask = 0  # bit i set: seq top - i was seen

    def seen(self, seq: int) -> bool:
        if seq > self.top:
            return False
        return self.top - seq >= WINDOW or bool(self.mask >> (self.top - seq) & 1)

    def mark(self, seq: int) -> None:
        if seq > self.top:
            self.mask = (self.mask << (seq - self.top) | 1) & ((1 << WINDOW) - 1)
            self.top = seq
        else:
            self.mask |= 1 << (self.top - seq)


class Opener:
    """Checks envelopes addressed to one node; see the module docstring for the rules."""

    def __init__(
        self, chain_id: str, me: str, members: tuple[Member, ...], max_age_ms: int
    ) -> None:
        self.chain_id, self.me, self.max_age_ms = chain_id, me, max_age_ms
        self.keys = {m.node_id: m.public_key for m in members if m.node_id != me}
        self._windows: dict[str, dict[int, _Window]] = {}

    def open(self, data: bytes, now_ms: int) -> Envelope:
        """The envelope, if it is authentic, fresh, new and for us; else raise Rejected."""
        try:
            env = Envelope.decode(data)
        except DecodeError as e:
            raise Rejected("garbage", str(e)) from None
        if env.sender == self.me:
            raise Rejected("echo", "our own message")
        key = self.keys.get(env.sender)
        if env.chain_id != self.chain_id or key is None:
            raise Rejected("foreign", f"from {env.sender!r} of chain {env.chain_id!r}")
        if env.to not in (self.me, BROADCAST):
            raise Rejected("misrouted", f"for {env.to!r}")
        if abs(now_ms - env.sent_ms) > self.max_age_ms:
            raise Rejected("stale", f"sent {now_ms - env.sent_ms} ms ago")
        epochs = self._windows.setdefault(env.sender, {})
        window = epochs.get(env.epoch)
        too_old = len(epochs) >= EPOCHS_KEPT and env.epoch < min(epochs)
        if too_old or (window is not None and window.seen(env.seq)):
            raise Rejected("replayed", f"{env.sender} epoch {env.epoch} seq {env.seq}")
        # Verified only now, and state changes only after: a forger must not be able to burn
        # a sender's sequence numbers or push its real epoch out of memory.
        if not verify(key, env.signing_bytes(), env.signature):
            raise Rejected("forged", f"bad signature for {env.sender}")
        if window is None:
            window = epochs[env.epoch] = _Window()
            if len(epochs) > EPOCHS_KEPT:
                del epochs[min(epochs)]
        window.mark(env.seq)
        return env
