"""Tests for the TCP transport over real localhost sockets, with a fake HMAC authenticator."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from node.transport import tcp
from node.transport.base import Authenticator, Transport
from node.transport.tcp import TcpTransport
from tests.helpers.wait import wait_for

SECRET = b"cluster-secret"
MAC_SIZE = 32
Address = tuple[str, int]


class FakeAuth:
    """hello = HMAC(secret, challenge | listener | dialer) + dialer id."""

    def __init__(self, me: str, secret: bytes = SECRET) -> None:
        self.me = me
        self.secret = secret

    def _mac(self, challenge: bytes, listener: str, dialer: str) -> bytes:
        msg = challenge + listener.encode() + b"\x00" + dialer.encode()
        return hmac.new(self.secret, msg, hashlib.sha256).digest()

    def make_hello(self, challenge: bytes, listener_id: str) -> bytes:
        return self._mac(challenge, listener_id, self.me) + self.me.encode()

    def check_hello(self, challenge: bytes, hello: bytes) -> str | None:
        mac, dialer = hello[:MAC_SIZE], hello[MAC_SIZE:].decode(errors="replace")
        ok = hmac.compare_digest(mac, self._mac(challenge, self.me, dialer))
        return dialer if ok else None


class Inbox:
    """Frame handler that records (peer, payload) pairs; raises on `fail_on` like a buggy one."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.frames: list[tuple[str, bytes]] = []
        self.fail_on = fail_on

    async def __call__(self, peer_id: str, payload: bytes) -> None:
        if payload == self.fail_on:
            raise ValueError("handler bug")
        self.frames.append((peer_id, payload))

    def payloads_from(self, peer_id: str) -> list[bytes]:
        return [p for src, p in self.frames if src == peer_id]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def eventually(cond: Callable[[], bool]) -> None:
    await wait_for(cond, "the condition", interval=0.01)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


@dataclass
class Cluster:
    addrs: dict[str, Address]
    nodes: dict[str, TcpTransport]
    inboxes: dict[str, Inbox]


@asynccontextmanager
async def cluster(ids: list[str], **kwargs: int) -> AsyncIterator[Cluster]:
    """Started transports that all list each other (including themselves) as peers."""
    addrs = {pid: ("127.0.0.1", free_port()) for pid in ids}
    nodes = {pid: TcpTransport(pid, addrs[pid], addrs, FakeAuth(pid), **kwargs) for pid in ids}
    inboxes = {pid: Inbox(fail_on=b"boom") for pid in ids}
    try:
        for pid, node in nodes.items():
            await node.start(inboxes[pid])
        yield Cluster(addrs, nodes, inboxes)
    finally:
        for node in nodes.values():
            await node.stop()


async def raw_connect(addr: Address) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Connect like a dialer would, returning the listener's challenge."""
    reader, writer = await asyncio.open_connection(*addr)
    (length,) = struct.unpack(">I", await reader.readexactly(4))
    return reader, writer, await reader.readexactly(length)


def test_tcp_transport_satisfies_protocol() -> None:
    transport: Transport = TcpTransport("a", ("127.0.0.1", 0), {}, FakeAuth("a"))
    auth: Authenticator = FakeAuth("a")
    assert transport.stats.frames_sent == 0 and auth is not None


async def test_three_nodes_exchange_and_broadcast() -> None:
    async with cluster(["a", "b", "c"]) as c:
        c.nodes["a"].send("b", b"a->b")
        c.nodes["b"].send("a", b"b->a")
        c.nodes["c"].broadcast(b"from c")
        a_in, b_in = c.inboxes["a"], c.inboxes["b"]
        await eventually(lambda: len(a_in.frames) == 2 and len(b_in.frames) == 2)
        assert sorted(a_in.frames) == [("b", b"b->a"), ("c", b"from c")]
        assert sorted(b_in.frames) == [("a", b"a->b"), ("c", b"from c")]
        assert c.inboxes["c"].frames == []  # broadcast skips ourselves
        assert c.nodes["c"].stats.frames_sent == 2
        assert c.nodes["c"].stats.bytes_sent == 2 * len(b"from c")
        assert c.nodes["a"].stats.frames_received == 2
        assert c.nodes["a"].stats.bytes_received == len(b"b->a") + len(b"from c")
        assert c.nodes["a"].stats.connections_accepted == 2


async def test_frames_arrive_in_order_per_peer() -> None:
    async with cluster(["a", "b", "c"]) as c:
        expected = [i.to_bytes(4, "big") * (1 + i % 50) for i in range(2000)]
        for payload in expected:
            c.nodes["a"].send("c", payload)
            c.nodes["b"].send("c", payload)
        await eventually(lambda: len(c.inboxes["c"].frames) == 4000)
        assert c.inboxes["c"].payloads_from("a") == expected
        assert c.inboxes["c"].payloads_from("b") == expected


async def test_frame_of_exactly_max_frame_is_delivered() -> None:
    async with cluster(["a", "b"], max_frame=1 << 20) as c:
        big = bytes(range(256)) * 4096
        c.nodes["a"].send("b", big)
        c.nodes["a"].send("b", b"")
        await eventually(lambda: c.inboxes["b"].payloads_from("a") == [big, b""])


async def test_oversize_frame_closes_only_that_connection() -> None:
    async with cluster(["a", "b"], max_frame=1024) as c:
        reader, writer, challenge = await raw_connect(c.addrs["a"])
        writer.write(frame(FakeAuth("evil").make_hello(challenge, "a")))
        writer.write(frame(b"ok first"))
        writer.write(struct.pack(">I", 0xFFFFFFFF))  # claims 4 GiB; must not be allocated
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by a
        writer.close()
        assert c.inboxes["a"].frames == [("evil", b"ok first")]
        assert c.nodes["a"].stats.oversize_frames == 1
        c.nodes["b"].send("a", b"still fine")
        await eventually(lambda: ("b", b"still fine") in c.inboxes["a"].frames)


async def test_sender_refuses_frames_over_max_frame() -> None:
    async with cluster(["a", "b"], max_frame=1024) as c:
        c.nodes["a"].send("b", b"x" * 1025)
        c.nodes["a"].send("b", b"small")
        await eventually(lambda: c.inboxes["b"].frames == [("a", b"small")])
        assert c.nodes["a"].stats.frames_dropped == 1


async def test_garbage_is_a_bad_handshake() -> None:
    async with cluster(["a", "b"]) as c:
        garbage = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x09short", b""]
        for junk in garbage:
            with socket.create_connection(c.addrs["a"]) as sock:
                sock.sendall(junk)
        await eventually(lambda: c.nodes["a"].stats.bad_handshakes == 3)
        c.nodes["b"].send("a", b"after garbage")
        await eventually(lambda: c.inboxes["a"].frames == [("b", b"after garbage")])


async def test_wrong_hello_is_rejected() -> None:
    async with cluster(["a"]) as c:
        a_addr, a_stats = c.addrs["a"], c.nodes["a"].stats
        bad_auth = FakeAuth("b", b"wrong secret")
        impostor = TcpTransport("b", ("127.0.0.1", free_port()), {"a": a_addr}, bad_auth)
        await impostor.start(Inbox())
        try:
            impostor.send("a", b"let me in")
            await eventually(lambda: a_stats.bad_handshakes >= 1)
        finally:
            await impostor.stop()
        reader, writer, _challenge = await raw_connect(a_addr)
        writer.write(frame(FakeAuth("b").make_hello(b"\x00" * 32, "a")))  # not our challenge
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert a_stats.bad_handshakes >= 2
        assert c.inboxes["a"].frames == []


async def test_silent_dialer_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tcp, "HANDSHAKE_TIMEOUT", 0.2)
    async with cluster(["a"]) as c:
        reader, writer, _challenge = await raw_connect(c.addrs["a"])
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert c.nodes["a"].stats.bad_handshakes == 1


async def test_late_peer_is_reached_after_backoff() -> None:
    addrs = {"a": ("127.0.0.1", free_port()), "b": ("127.0.0.1", free_port())}
    a = TcpTransport("a", addrs["a"], addrs, FakeAuth("a"))
    b = TcpTransport("b", addrs["b"], addrs, FakeAuth("b"))
    inbox = Inbox()
    await a.start(Inbox())
    try:
        a.send("b", b"sent before b was up")
        await asyncio.sleep(0.4)  # several refused dials
        await b.start(inbox)
        await eventually(lambda: inbox.frames == [("a", b"sent before b was up")])
        assert a.stats.reconnects >= 2
    finally:
        await a.stop()
        await b.stop()


async def test_restarted_peer_is_reconnected() -> None:
    async with cluster(["a", "b"]) as c:
        c.nodes["a"].send("b", b"one")
        await eventually(lambda: c.nodes["b"].stats.frames_received == 1)
        await c.nodes["b"].stop()
        b2 = TcpTransport("b", c.addrs["b"], {}, FakeAuth("b"))
        inbox = Inbox()
        await b2.start(inbox)
        try:
            c.nodes["a"].send("b", b"two")
            await eventually(lambda: inbox.frames == [("a", b"two")])
        finally:
            await b2.stop()


async def test_a_restarted_peer_that_dials_in_is_dialed_back_at_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer back from a crash dials us first; our own dial loop, deep in its backoff, must
    not leave it unreached until the backoff ends (restarts took up to BACKOFF_CAP longer)."""
    monkeypatch.setattr(tcp, "BACKOFF_CAP", 3600.0)
    monkeypatch.setattr(tcp, "BACKOFF_START", 600.0)  # every wait: longer than any test
    addrs = {"a": ("127.0.0.1", free_port()), "b": ("127.0.0.1", free_port())}
    a = TcpTransport("a", addrs["a"], addrs, FakeAuth("a"))
    b = TcpTransport("b", addrs["b"], addrs, FakeAuth("b"))
    inbox = Inbox()
    await a.start(Inbox())
    try:
        caplog.set_level(logging.DEBUG, logger="tally.transport")
        refused = "a: outbound to b"
        await eventually(lambda: any(refused in r.getMessage() for r in caplog.records))
        # a's first dial was refused: it now waits 600 s before the next
        a.send("b", b"sent while b was down")
        await b.start(inbox)  # b dials a at once
        await eventually(lambda: inbox.frames == [("a", b"sent while b was down")])
    finally:
        await a.stop()
        await b.stop()


async def test_send_drops_when_queue_full() -> None:
    peers = {"b": ("127.0.0.1", 1)}
    t = TcpTransport("a", ("127.0.0.1", 0), peers, FakeAuth("a"), queue_size=2)
    for i in range(5):
        t.send("b", bytes([i]))
    t.send("nobody", b"x")  # unknown peers are ignored, not counted
    t.send("a", b"x")  # nor is sending to ourselves
    assert t.stats.frames_dropped == 3


async def test_handler_exception_does_not_drop_connection() -> None:
    async with cluster(["a", "b"]) as c:
        c.nodes["a"].send("b", b"0")
        await eventually(lambda: c.inboxes["b"].frames == [("a", b"0")])
        accepted = c.nodes["b"].stats.connections_accepted
        for payload in [b"1", b"boom", b"2"]:
            c.nodes["a"].send("b", payload)
        await eventually(lambda: c.inboxes["b"].payloads_from("a") == [b"0", b"1", b"2"])
        assert c.nodes["b"].stats.frames_received == 4
        assert c.nodes["b"].stats.connections_accepted == accepted  # same connection throughout


async def test_stop_is_prompt_and_leaves_no_tasks() -> None:
    async with cluster(["a", "b", "c"]) as c:
        c.nodes["a"].broadcast(b"hi")
        await eventually(lambda: all(len(c.inboxes[p].frames) == 1 for p in "bc"))
        # Also an idle connection mid-handshake, and a dialer stuck in backoff.
        _reader, raw_writer, _challenge = await raw_connect(c.addrs["a"])
        down = {"down": ("127.0.0.1", free_port())}
        lonely = TcpTransport("x", ("127.0.0.1", free_port()), down, FakeAuth("x"))
        await lonely.start(Inbox())
        lonely.send("down", b"never")
        await asyncio.sleep(0.1)
        for node in [*c.nodes.values(), lonely]:
            await node.stop()
        # stop() cancels what runs (the backoff sleep too) instead of waiting it out
        running = asyncio.all_tasks() - {asyncio.current_task()}
        assert not running, f"stop() returned with tasks still running: {running}"
        raw_writer.close()
    leftovers = asyncio.all_tasks() - {asyncio.current_task()}
    assert not leftovers, leftovers
