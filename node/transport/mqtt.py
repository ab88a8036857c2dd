"""MQTT transport: nodes exchange signed envelopes through a broker (aiomqtt).

Topics, under the cluster's prefix P:

    P/inbox/<to>/<from>   what node <from> sends node <to>
    P/all/<from>          what node <from> broadcasts (under MQTT 5 not echoed back to it)

A node subscribes to P/inbox/<itself>/+ and P/all/+.  The sender is in the topic so that a
broker's ACL can let each node publish only as itself (node/cluster/broker.py writes one).
Everything is published with QoS 1, never retained; a retained message (left on the broker
by someone else, and handed to every new subscriber) is dropped and counted as `retained`.

Frames waiting for the same destination are batched into one envelope (envelope.py), so
one signature covers many consensus messages.  The broker is trusted for nothing but
delivery: a receiver checks every envelope's signature, sender, addressee, age and sequence
number, and counts what it refuses in `stats.rejected`.

The connection is kept up with exponential backoff; frames queued while the broker is away
are sent after the reconnection (what was in flight is lost, like a dropped TCP connection:
consensus retransmits).  Sessions are clean: a node that was away catches up by state
transfer, not from a backlog kept by the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from node.transport.base import FrameHandler, TransportStats
from node.transport.envelope import BROADCAST, OVERHEAD, Opener, Rejected, Sealer

log = logging.getLogger("tally.transport")

BACKOFF_START = 0.05
BACKOFF_CAP = 2.0
STABLE_AFTER = 1.0  # a connection must last this long to reset the backoff
MAX_BATCH_FRAMES = 512
MAX_INFLIGHT = 32  # QoS 1 publishes awaiting their PUBACK
INCOMING_QUEUE = 20_000
STOP_TIMEOUT = 1.0
REFUSED_PROTOCOL = (1, 0x84)  # CONNACK codes for an unsupported protocol (3.1.1, 5)


@dataclass(frozen=True)
class MqttLink:
    """How to reach the broker."""

    host: str
    port: int
    prefix: str
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    protocol: str = "auto"  # "auto": MQTT 5, and 3.1.1 if the broker refuses 5
    keepalive_s: int = 10


async def _drop_frame(peer_id: str, payload: bytes) -> None:
    """Placeholder handler until start() installs the real one."""


def now_ms() -> int:
    return int(time.time() * 1000)


class MqttTransport:
    """Transport through an MQTT broker; see the module docstring."""

    def __init__(
        self,
        me: str,
        peers: list[str],
        link: MqttLink,
        sealer: Sealer,
        opener: Opener,
        max_frame: int = 4 << 20,
        queue_size: int = 10000,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.me, self.link = me, link
        self.peers = [p for p in peers if p != me]
        self.stats = TransportStats()
        self.connected = asyncio.Event()
        self._sealer, self._opener, self._clock = sealer, opener, clock
        self._max_frame = max_frame
        self._max_message = max_frame + OVERHEAD
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=queue_size)
        self._carry: list[tuple[str, bytes]] = []  # taken from the outbox, not yet published
        self._protocol = (
            aiomqtt.ProtocolVersion.V311
            if link.protocol == "3.1.1"
            else (aiomqtt.ProtocolVersion.V5)
        )
        self._on_frame: FrameHandler = _drop_frame
        self._task: asyncio.Task[None] | None = None
        self._client_id = f"{link.prefix.replace('/', '-')}-{me}-{os.urandom(4).hex()}"

    def topic(self, to: str) -> str:
        """Where this node publishes what it sends `to` (a peer, or BROADCAST)."""
        if to == BROADCAST:
            return f"{self.link.prefix}/all/{self.me}"
        return f"{self.link.prefix}/inbox/{to}/{self.me}"

    # ----------------------------------------------------------------- public API

    async def start(self, on_frame: FrameHandler) -> None:
        if self._task is not None:
            raise RuntimeError("transport already started")
        self._on_frame = on_frame
        self._task = asyncio.create_task(self._run(), name=f"mqtt-{self.me}")

    def send(self, peer_id: str, payload: bytes) -> None:
        if peer_id not in self.peers:
            if peer_id != self.me:
                log.warning("send to unknown peer %r dropped", peer_id)
            return
        self._enqueue(peer_id, payload)

    def broadcast(self, payload: bytes) -> None:
        self._enqueue(BROADCAST, payload)

    def send_unchecked(self, peer_id: str, payload: bytes) -> None:
        """Queue a frame without the size check: for fault injection (a flooding node) only."""
        self._put(peer_id, payload)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()  # leaving the client's context sends DISCONNECT
            await asyncio.wait([self._task], timeout=STOP_TIMEOUT)
            self._task = None
        log.info("%s transport stopped", self.me)

    # ----------------------------------------------------------------- connection

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        while True:
            up_since: float | None = None
            try:
                async with self._client() as client:
                    up_since = loop.time()
                    await self._subscribe(client)
                    self.connected.set()
                    log.info(
                        "%s: connected to the broker at %s:%d (MQTT %s)",
                        self.me,
                        self.link.host,
                        self.link.port,
                        self._protocol.name,
                    )
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                if self._fall_back(exc, up_since):
                    continue
                level = (
                    logging.DEBUG if up_since is None and self.stats.reconnects else logging.INFO
                )
                log.log(level, "%s: broker connection: %s", self.me, exc)
            except Exception:  # a bug, or a TLS file gone: keep trying, never die silently
                log.exception("%s: broker connection failed", self.me)
            finally:
                self.connected.clear()
            if up_since is not None and loop.time() - up_since >= STABLE_AFTER:
                backoff = BACKOFF_START
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_CAP)
            self.stats.reconnects += 1

    def _fall_back(self, exc: aiomqtt.MqttError, up_since: float | None) -> bool:
        """Under "auto", a broker that refuses MQTT 5 is spoken to in 3.1.1 from now on."""
        rc = getattr(exc, "rc", None)
        code = getattr(rc, "value", rc)
        refused = isinstance(exc, MqttConnectError) and code in REFUSED_PROTOCOL
        if not (refused and up_since is None and self.link.protocol == "auto"):
            return False
        if self._protocol is aiomqtt.ProtocolVersion.V311:
            return False
        log.warning("%s: the broker refused MQTT 5 (%s); using 3.1.1", self.me, exc)
        self._protocol = aiomqtt.ProtocolVersion.V311
        return True

    def _client(self) -> aiomqtt.Client:
        v5 = self._protocol is aiomqtt.ProtocolVersion.V5
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.MaximumPacketSize = self._max_message + OVERHEAD  # the broker drops more
        client = aiomqtt.Client(
            self.link.host,
            self.link.port,
            identifier=self._client_id,
            protocol=self._protocol,
            clean_session=None if v5 else True,
            keepalive=self.link.keepalive_s,
            username=self.link.username,
            password=self.link.password,
            tls_context=self.link.tls,
            properties=properties,
            max_queued_incoming_messages=INCOMING_QUEUE,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # no Nagle delays
            timeout=10,
        )
        client.pending_calls_threshold = 4 * MAX_INFLIGHT  # aiomqtt warns above this
        return client

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        inbox, everyone = f"{self.link.prefix}/inbox/{self.me}/+", f"{self.link.prefix}/all/+"
        if self._protocol is aiomqtt.ProtocolVersion.V5:
            granted = [
                await client.subscribe(inbox, options=SubscribeOptions(qos=1)),
                await client.subscribe(everyone, options=SubscribeOptions(qos=1, noLocal=True)),
            ]
        else:  # 3.1.1 echoes our broadcasts back: _read skips them
            granted = [
                await client.subscribe(inbox, qos=1),
                await client.subscribe(everyone, qos=1),
            ]
        for topic, codes in zip((inbox, everyone), granted, strict=True):
            if any(getattr(c, "value", c) >= 0x80 for c in codes):
                log.error("%s: the broker refused the subscription to %s", self.me, topic)

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Read and publish until either side fails; that failure ends the connection."""
        tasks = [asyncio.create_task(self._read(client)), asyncio.create_task(self._pump(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise what ended it
            raise aiomqtt.MqttError("connection task ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    # ----------------------------------------------------------------- inbound

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.retain:  # not from a live sender: left on the broker for whoever comes
                self._reject("retained", f"retained message on {message.topic}")
                continue
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self._reject("garbage", "not bytes")
                continue
            if len(payload) > self._max_message:
                self._reject("oversize", f"{len(payload)} bytes")
                continue
            try:
                env = self._opener.open(bytes(payload), self._clock())
            except Rejected as r:
                if r.reason != "echo":  # our own broadcast, under 3.1.1
                    self._reject(r.reason, str(r))
                continue
            self.stats.frames_received += len(env.frames)
            self.stats.bytes_received += sum(len(f) for f in env.frames)
            for frame in env.frames:
                try:
                    await self._on_frame(env.sender, frame)
                except Exception:
                    # A handler bug must not cost us the connection (and every frame behind it).
                    log.exception("frame handler failed on a frame from %s", env.sender)

    def _reject(self, reason: str, detail: str) -> None:
        rejected = self.stats.rejected
        rejected[reason] = count = rejected.get(reason, 0) + 1
        if count & (count - 1) == 0:  # log at powers of two: visible but not a flood
            log.warning("%s: refused message (%d so far): %s", self.me, count, detail)

    # ----------------------------------------------------------------- outbound

    def _enqueue(self, to: str, payload: bytes) -> None:
        if len(payload) > self._max_frame:
            self.stats.frames_dropped += 1
            log.warning("dropped %d-byte frame for %s: over max_frame", len(payload), to)
            return
        self._put(to, payload)

    def _put(self, to: str, payload: bytes) -> None:
        try:
            self._outbox.put_nowait((to, payload))
        except asyncio.QueueFull:
            self.stats.frames_dropped += 1
            dropped = self.stats.frames_dropped
            if dropped & (dropped - 1) == 0:
                log.warning("outbox full; %d frames dropped so far", dropped)

    async def _pump(self, client: aiomqtt.Client) -> None:
        inflight = asyncio.Semaphore(MAX_INFLIGHT)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                batch, self._carry = self._carry or await self._take(), []
                groups = _envelopes(batch, self._max_message - OVERHEAD)
                for i, (to, frames) in enumerate(groups):
                    await inflight.acquire()
                    if client._disconnected.done():
                        inflight.release()
                        self._carry = [(t, f) for t, fs in groups[i:] for f in fs]
                        raise aiomqtt.MqttError("disconnected")
                    data = self._sealer.seal(to, frames, self._clock())
                    task = asyncio.create_task(self._publish(client, to, data, frames))
                    pending.add(task)

                    def done(task: asyncio.Task[None]) -> None:
                        pending.discard(task)
                        inflight.release()

                    task.add_done_callback(done)
        finally:
            for task in list(pending):
                task.cancel()

    async def _publish(
        self, client: aiomqtt.Client, to: str, data: bytes, frames: list[bytes]
    ) -> None:
        try:
            await client.publish(self.topic(to), data, qos=1)
        except aiomqtt.MqttError as exc:
            self.stats.frames_dropped += len(frames)
            log.debug("%s: publish to %s failed: %s", self.me, to, exc)
            return
        self.stats.frames_sent += len(frames)
        self.stats.bytes_sent += sum(len(f) for f in frames)

    async def _take(self) -> list[tuple[str, bytes]]:
        """Wait for one frame, then take what else is ready, up to a limit."""
        batch = [await self._outbox.get()]
        while not self._outbox.empty() and len(batch) < MAX_BATCH_FRAMES:
            batch.append(self._outbox.get_nowait())
        return batch


def _envelopes(batch: list[tuple[str, bytes]], limit: int) -> list[tuple[str, list[bytes]]]:
    """Group frames by destination (in order of first appearance, each destination's frames
    in order), splitting a group where it would pass `limit` bytes."""
    groups: dict[str, list[list[bytes]]] = {}
    sizes: dict[str, int] = {}
    for to, frame in batch:
        chunks = groups.setdefault(to, [[]])
        if chunks[-1] and sizes[to] + len(frame) > limit:
            chunks.append([])
            sizes[to] = 0
        chunks[-1].append(frame)
        sizes[to] = sizes.get(to, 0) + len(frame)
    return [(to, chunk) for to, chunks in groups.items() for chunk in chunks]
