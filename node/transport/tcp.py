"""TCP transport: length-prefixed frames over one-directional, challenge-authenticated connections.

Each node dials every peer for what it sends and accepts connections for what it receives, so a
connection carries frames in one direction only. On accept the listener sends a random challenge
frame; the dialer answers with `auth.make_hello(challenge, listener_id)`; every later frame on that
connection is attributed to the peer id proven by the hello.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct

from node.transport.base import Authenticator, FrameHandler, TransportStats

log = logging.getLogger("tally.transport")

Address = tuple[str, int]

_HEADER = struct.Struct(">I")
CHALLENGE_SIZE = 32
HANDSHAKE_TIMEOUT = 5.0
MAX_HELLO = 64 << 10  # a hello is a signature and an id; don't let strangers make us buffer more
BACKOFF_START = 0.05
BACKOFF_CAP = 2.0
STABLE_AFTER = 1.0  # a connection must last this long to reset the backoff (see _dial_loop)
MAX_BATCH_FRAMES = 256
MAX_BATCH_BYTES = 1 << 20
STOP_TIMEOUT = 0.5


class FrameTooLarge(Exception):
    """The remote announced a frame longer than we accept."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes exceeds limit of {limit}")
        self.length = length
        self.limit = limit


class HandshakeRejected(Exception):
    """The authenticator did not accept the dialer's hello."""


async def _drop_frame(peer_id: str, payload: bytes) -> None:
    """Placeholder handler until start() installs the real one."""


class TcpTransport:
    """Transport over TCP; see the module docstring for the wire protocol."""

    def __init__(
        self,
        me: str,
        listen: Address,
        peers: dict[str, Address],
        auth: Authenticator,
        max_frame: int = 4 << 20,
        queue_size: int = 10000,
    ) -> None:
        self.me = me
        self.stats = TransportStats()
        self._listen = listen
        self._peers = {pid: addr for pid, addr in peers.items() if pid != me}
        self._auth = auth
        self._max_frame = max_frame
        self._queues: dict[str, asyncio.Queue[bytes]] = {
            pid: asyncio.Queue(maxsize=queue_size) for pid in self._peers
        }
        # Frames taken from a queue but not written because the connection was already gone.
        self._carry: dict[str, list[bytes]] = {}
        self._on_frame: FrameHandler = _drop_frame
        self._server: asyncio.Server | None = None
        self._dial_tasks: list[asyncio.Task[None]] = []
        self._conn_tasks: set[asyncio.Task[object]] = set()
        self._inbound: dict[str, asyncio.StreamWriter] = {}
        # Set when a peer proves itself on an inbound connection: it is back, so its dial loop
        # stops backing off and dials now (a restarted peer hears from us at once, not up to
        # BACKOFF_CAP later).
        self._peer_back: dict[str, asyncio.Event] = {pid: asyncio.Event() for pid in self._peers}
        self._closing = False

    # ----------------------------------------------------------------- public API

    async def start(self, on_frame: FrameHandler) -> None:
        if self._server is not None:
            raise RuntimeError("transport already started")
        self._on_frame = on_frame
        host, port = self._listen
        self._server = await asyncio.start_server(self._on_accept, host, port)
        for peer_id, addr in self._peers.items():
            task = asyncio.create_task(self._dial_loop(peer_id, addr), name=f"dial-{peer_id}")
            self._dial_tasks.append(task)
        log.info("%s listening on %s:%d", self.me, host, port)

    def send(self, peer_id: str, payload: bytes) -> None:
        queue = self._queues.get(peer_id)
        if queue is None:
            if peer_id != self.me:
                log.warning("send to unknown peer %r dropped", peer_id)
            return
        if len(payload) > self._max_frame:
            self.stats.frames_dropped += 1
            log.warning("dropped %d-byte frame for %s: over max_frame", len(payload), peer_id)
            return
        try:
            queue.put_nowait(payload)
        except asyncio.QueueFull:
            self._count_drop(peer_id)

    def broadcast(self, payload: bytes) -> None:
        for peer_id in self._queues:
            self.send(peer_id, payload)

    def send_unchecked(self, peer_id: str, payload: bytes) -> None:
        """Queue a frame without the size check: for fault injection (a flooding node) only."""
        queue = self._queues.get(peer_id)
        if queue is not None:
            try:
                queue.put_nowait(payload)
            except asyncio.QueueFull:
                self._count_drop(peer_id)

    async def stop(self) -> None:
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = [*self._dial_tasks, *self._conn_tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            # Each task closes its own connection in a finally block.
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), STOP_TIMEOUT)
        self._dial_tasks.clear()
        log.info("%s transport stopped", self.me)

    # ----------------------------------------------------------------- inbound

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        addr = _peer_address(writer)
        try:
            if self._closing:
                return
            self.stats.connections_accepted += 1
            _set_nodelay(writer)
            peer_id = await self._accept_handshake(reader, writer, addr)
            if peer_id is not None:
                await self._serve_peer(peer_id, reader, writer, addr)
        except asyncio.CancelledError:
            # Only stop() cancels us. Python 3.11's start_server logs a cancelled callback task
            # as an error, so end normally; this is the task's top level, nothing else waits.
            pass
        except Exception:
            log.exception("inbound connection from %s failed", addr)
        finally:
            if task is not None:
                self._conn_tasks.discard(task)
            writer.close()

    async def _accept_handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: str
    ) -> str | None:
        """Challenge the dialer; return its proven id, or None (counted and logged)."""
        challenge = os.urandom(CHALLENGE_SIZE)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                await _write_frame(writer, challenge)
                hello = await _read_frame(reader, min(MAX_HELLO, self._max_frame))
            peer_id = self._auth.check_hello(challenge, hello)
            if peer_id is None:
                raise HandshakeRejected("hello rejected")
        except Exception as exc:
            # Includes timeouts, garbage (usually FrameTooLarge from a random length prefix, or
            # IncompleteReadError) and an authenticator that raises on a malformed hello.
            self.stats.bad_handshakes += 1
            log.warning("bad handshake from %s: %s", addr, _describe(exc))
            return None
        return peer_id

    async def _serve_peer(
        self, peer_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, addr: str
    ) -> None:
        old = self._inbound.get(peer_id)
        if old is not None:
            old.close()  # the peer reconnected; its old connection is dead or about to be
        self._inbound[peer_id] = writer
        log.info("%s: inbound from %s at %s", self.me, peer_id, addr)
        if peer_id in self._peer_back:
            self._peer_back[peer_id].set()
        try:
            await self._read_frames(peer_id, reader)
        except FrameTooLarge as exc:
            self.stats.oversize_frames += 1
            log.warning("oversize frame from %s at %s (%s); closing", peer_id, addr, exc)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("inbound from %s at %s closed: %s", peer_id, addr, _describe(exc))
        finally:
            if self._inbound.get(peer_id) is writer:
                del self._inbound[peer_id]

    async def _read_frames(self, peer_id: str, reader: asyncio.StreamReader) -> None:
        while True:
            payload = await _read_frame(reader, self._max_frame)
            self.stats.frames_received += 1
            self.stats.bytes_received += len(payload)
            try:
                await self._on_frame(peer_id, payload)
            except Exception:
                # A handler bug must not cost us the connection (and every frame behind it).
                log.exception("frame handler failed on a frame from %s", peer_id)

    # ----------------------------------------------------------------- outbound

    async def _dial_loop(self, peer_id: str, addr: Address) -> None:
        """Keep one outbound connection to `peer_id` alive for as long as we run."""
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_START
        back = self._peer_back[peer_id]
        while True:
            back.clear()  # an inbound connection from here on ends the wait below
            up_since = await self._connect_and_pump(peer_id, addr)
            # Reset only after a connection that lasted: a peer that accepts and then rejects
            # our hello would otherwise be redialed every 50 ms forever.
            if up_since is not None and loop.time() - up_since >= STABLE_AFTER:
                backoff = BACKOFF_START
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await back.wait()
            backoff = min(backoff * 2, BACKOFF_CAP)
            self.stats.reconnects += 1

    async def _connect_and_pump(self, peer_id: str, addr: Address) -> float | None:
        """Run one outbound connection until it fails; return when it came up, if it did."""
        up_since: float | None = None
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await self._dial(peer_id, addr)
            up_since = asyncio.get_running_loop().time()
            log.info("%s: connected to %s at %s:%d", self.me, peer_id, *addr)
            await self._pump(peer_id, reader, writer)
        except (OSError, asyncio.IncompleteReadError, FrameTooLarge) as exc:
            level = logging.DEBUG if up_since is None else logging.INFO  # refused = peer down
            log.log(level, "%s: outbound to %s: %s", self.me, peer_id, _describe(exc))
        except Exception:
            log.exception("%s: outbound to %s failed", self.me, peer_id)
        finally:
            if writer is not None:
                writer.close()
        return up_since

    async def _dial(
        self, peer_id: str, addr: Address
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            reader, writer = await asyncio.open_connection(*addr)
            try:
                _set_nodelay(writer)
                challenge = await _read_frame(reader, MAX_HELLO)
                await _write_frame(writer, self._auth.make_hello(challenge, peer_id))
            except BaseException:
                writer.close()
                raise
        return reader, writer

    async def _pump(
        self, peer_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write queued frames to an established connection until it breaks."""
        queue = self._queues[peer_id]
        closed = asyncio.create_task(_wait_eof(reader))
        try:
            while True:
                batch = self._carry.pop(peer_id, None) or await _next_batch(queue, closed)
                if closed.done():
                    if batch:
                        self._carry[peer_id] = batch  # not written: send on the next connection
                    raise ConnectionResetError("closed by peer")
                for payload in batch:
                    writer.write(_HEADER.pack(len(payload)) + payload)
                await writer.drain()
                self.stats.frames_sent += len(batch)
                self.stats.bytes_sent += sum(len(p) for p in batch)
        finally:
            closed.cancel()
            await asyncio.wait([closed])  # leave no task behind

    def _count_drop(self, peer_id: str) -> None:
        self.stats.frames_dropped += 1
        dropped = self.stats.frames_dropped
        if dropped & (dropped - 1) == 0:  # log at powers of two: visible but not a flood
            log.warning("queue for %s full; %d frames dropped so far", peer_id, dropped)


# --------------------------------------------------------------------- helpers


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (length,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if length > limit:
        raise FrameTooLarge(length, limit)  # checked before reading: never buffer a bogus size
    return await reader.readexactly(length)


async def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(_HEADER.pack(len(payload)) + payload)
    await writer.drain()


async def _wait_eof(reader: asyncio.StreamReader) -> None:
    """Return when the listener closes: it never sends anything after its challenge."""
    with contextlib.suppress(OSError):
        await reader.read(1)


async def _next_batch(queue: asyncio.Queue[bytes], closed: asyncio.Task[None]) -> list[bytes]:
    """Wait for at least one frame (or for `closed`), then take what is ready, up to a limit."""
    batch: list[bytes] = []
    if queue.empty():
        getter = asyncio.create_task(queue.get())
        try:
            await asyncio.wait([getter, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            getter.cancel()  # no-op if it finished; an item not yet taken stays in the queue
            await asyncio.wait([getter])
        if getter.cancelled():
            return batch
        batch.append(getter.result())
    size = sum(len(p) for p in batch)
    while not queue.empty() and len(batch) < MAX_BATCH_FRAMES and size < MAX_BATCH_BYTES:
        batch.append(queue.get_nowait())
        size += len(batch[-1])
    return batch


def _set_nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
