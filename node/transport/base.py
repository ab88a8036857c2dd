"""Transport interface shared by the node: authenticated, framed, best-effort peer messaging."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

# (peer_id, payload). The reader awaits it before reading the next frame, which gives
# TCP backpressure to a peer that sends faster than we can process.
FrameHandler = Callable[[str, bytes], Awaitable[None]]


class Authenticator(Protocol):
    """Proves our identity to a listener and checks a dialer's proof.

    Implemented elsewhere with Ed25519 keys.
    """

    def make_hello(self, challenge: bytes, listener_id: str) -> bytes:
        """Return our proof of identity for `listener_id`, bound to its `challenge`."""
        ...

    def check_hello(self, challenge: bytes, hello: bytes) -> str | None:
        """Return the peer id proven by `hello` for our `challenge`, or None if invalid."""
        ...


@dataclass
class TransportStats:
    """Counters exposed as `transport.stats`. Byte counts are payload bytes (no framing)."""

    frames_sent: int = 0
    frames_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_dropped: int = 0  # send() refused: peer queue full (or payload over max_frame)
    bad_handshakes: int = 0  # inbound connections that failed to authenticate
    oversize_frames: int = 0  # authenticated peers that announced a frame over max_frame
    connections_accepted: int = 0
    reconnects: int = 0  # outbound dial attempts after a failure or a lost connection
    # Messages refused after the connection was authenticated, by reason (MQTT envelopes:
    # garbage, foreign, misrouted, stale, replayed, forged, oversize).
    rejected: dict[str, int] = field(default_factory=dict)


class Transport(Protocol):
    """Delivers opaque payloads between authenticated peers; delivery is best-effort."""

    stats: TransportStats

    async def start(self, on_frame: FrameHandler) -> None:
        """Start listening and dialing; every received frame is passed to `on_frame`."""
        ...

    def send(self, peer_id: str, payload: bytes) -> None:
        """Queue `payload` for `peer_id`; never blocks. Drops (and counts) if the queue is full."""
        ...

    def broadcast(self, payload: bytes) -> None:
        """Send `payload` to every peer except ourselves."""
        ...

    async def stop(self) -> None:
        """Cancel all tasks and close every connection."""
        ...
