"""The MQTT transport against a real Mosquitto on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest
from cryptography.hazmat.primitives import serialization

from ledger.block import Member
from ledger.crypto import KeyPair
from node.bench.pbft import free_ports
from node.cluster import broker as spawned
from node.cluster.config import load_config, local_cluster_toml
from node.cluster.tlscerts import _self_signed_ca, _write_pair, client_context, issue
from node.faults.network import FaultyTransport, NetworkRules
from node.faults.spec import FaultSpec
from node.transport.envelope import Envelope, Opener, Sealer
from node.transport.mqtt import MqttLink, MqttTransport, now_ms
from tests.helpers.mosquitto import Broker, running_broker
from tests.helpers.wait import wait_for

CHAIN = "mqtt-test"
IDS = ["n0", "n1", "n2"]
KEYS = {n: KeyPair(bytes([i + 7]) * 32) for i, n in enumerate(IDS)}
MEMBERS = tuple(Member(n, k.public_key) for n, k in KEYS.items())
PREFIX = "tally/test"


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path) as b:
        yield b


class Node:
    """One transport and what it received."""

    def __init__(self, me: str, port: int, **link: object) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()
        self.t = MqttTransport(
            me,
            IDS,
            MqttLink("127.0.0.1", port, PREFIX, **link),  # type: ignore[arg-type]
            Sealer(CHAIN, me, KEYS[me], epoch=1),
            Opener(CHAIN, me, MEMBERS, 60_000),
            max_frame=1024,
        )

    async def on_frame(self, peer: str, payload: bytes) -> None:
        self.got.append((peer, payload))
        self.arrived.set()

    async def until(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def nodes(
    port: int,
    ports: dict[str, int] | None = None,
    own: dict[str, dict[str, object]] | None = None,
    **link: object,
) -> AsyncIterator[dict[str, Node]]:
    """The transports of IDS, connected; `ports` sends some nodes to another port, `own`
    gives each node its own link settings (credentials, TLS)."""
    cluster = {
        me: Node(me, (ports or {}).get(me, port), **link, **(own or {}).get(me, {})) for me in IDS
    }
    for n in cluster.values():
        await n.t.start(n.on_frame)
    try:
        async with asyncio.timeout(10):
            for n in cluster.values():
                await n.t.connected.wait()
        yield cluster
    finally:
        for n in cluster.values():
            await n.t.stop()


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
async def test_unicast_and_broadcast_arrive_in_order_and_never_echo(
    mosquitto: Broker, protocol: str
) -> None:
    async with nodes(mosquitto.port, protocol=protocol) as c:
        for i in range(50):
            c["n0"].t.send("n1", b"to n1 %d" % i)
        c["n0"].t.broadcast(b"to all")
        await c["n1"].until(51)
        await c["n2"].until(1)
        assert c["n1"].got[:50] == [("n0", b"to n1 %d" % i) for i in range(50)]
        assert ("n0", b"to all") in c["n1"].got and c["n2"].got == [("n0", b"to all")]
        await asyncio.sleep(0.2)
        assert c["n0"].got == []  # not our own broadcast, under either protocol
        assert all(n.t.stats.rejected == {} for n in c.values())
        assert c["n0"].t.stats.frames_sent == 51
        # Frames queued together travel in few envelopes: one signature covers many.
        assert c["n1"].t.stats.frames_received == 51


async def test_oversize_frames_are_dropped_at_the_sender(mosquitto: Broker) -> None:
    async with nodes(mosquitto.port) as c:
        c["n0"].t.send("n1", b"x" * 1025)
        c["n0"].t.send("n1", b"fits")
        await c["n1"].until(1)
        assert c["n1"].got == [("n0", b"fits")]
        assert c["n0"].t.stats.frames_dropped == 1


async def test_nodes_reconnect_after_the_broker_restarts(mosquitto: Broker) -> None:
    """n0 reaches the broker through a proxy that is closed while the broker is down and opens
    only once n1 has subscribed again.  Otherwise n0's queued frame could reach the restarted
    broker before n1's subscription and be dropped (nobody subscribed): that is MQTT, not a
    lost reconnection."""

    async def pipe_to_broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", mosquitto.port)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

    proxy = await asyncio.start_server(pipe_to_broker, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    try:
        async with nodes(mosquitto.port, {"n0": port}) as c:
            c["n0"].t.send("n1", b"before")
            await c["n1"].until(1)
            proxy.close()  # refused: n0 cannot reconnect until it opens again
            mosquitto.kill()
            await wait_for(
                lambda: not (c["n0"].t.connected.is_set() or c["n1"].t.connected.is_set()),
                "n0 and n1 to see the broker gone",
                interval=0.02,
            )
            c["n0"].t.send("n1", b"while down")  # queued until the broker is back
            mosquitto.start()
            await wait_for(c["n1"].t.connected.is_set, "n1 to subscribe again", interval=0.02)
            proxy = await asyncio.start_server(pipe_to_broker, "127.0.0.1", port)
            await c["n1"].until(2)
            assert c["n1"].got[1] == ("n0", b"while down")
            assert c["n0"].t.stats.reconnects >= 1 and c["n1"].t.stats.reconnects >= 1
    finally:
        proxy.close()


async def test_a_rogue_client_changes_nothing_and_is_counted(mosquitto: Broker) -> None:
    async with nodes(mosquitto.port) as c:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as rogue:
            await rogue.subscribe(f"{PREFIX}/#", qos=1)
            c["n0"].t.send("n1", b"genuine")
            await c["n1"].until(1)
            captured = (await anext(rogue.messages)).payload
            assert isinstance(captured, bytes)
            env = Envelope.decode(captured)
            inbox = f"{PREFIX}/inbox/n1/n0"
            await rogue.publish(inbox, b"garbage", qos=1)
            await rogue.publish(f"{PREFIX}/all/n0", b"\x28\x90", qos=1)
            await rogue.publish(inbox, captured, qos=1)  # replayed
            forged = replace(env, seq=env.seq + 1, frames=(b"forged",))  # a seq not yet seen
            await rogue.publish(inbox, forged.encode(), qos=1)
            await rogue.publish(f"{PREFIX}/inbox/n2/n0", captured, qos=1)  # redirected
            other = Sealer("another-chain", "n0", KEYS["n0"], 1).seal("n1", [b"x"], env.sent_ms)
            await rogue.publish(inbox, other, qos=1)
        async with asyncio.timeout(5):
            while sum(c["n1"].t.stats.rejected.values()) < 5:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
    assert c["n1"].got == [("n0", b"genuine")] and c["n2"].got == []
    # The garbage on the broadcast topic reaches everyone; the rest was aimed at n1 or n2.
    assert c["n1"].t.stats.rejected == {"garbage": 2, "replayed": 1, "forged": 1, "foreign": 1}
    assert c["n2"].t.stats.rejected == {"garbage": 1, "misrouted": 1}
    assert c["n0"].t.stats.rejected == {"garbage": 1}


async def test_auto_falls_back_to_3_1_1_when_the_broker_refuses_5(mosquitto: Broker) -> None:
    """A proxy in front of Mosquitto that answers an MQTT 5 CONNECT like a 3.1.1-only broker."""
    levels: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.readexactly(1)
        length, size, shift = b"", 0, 0
        while True:
            byte = await reader.readexactly(1)
            length += byte
            size |= (byte[0] & 0x7F) << shift
            shift += 7
            if byte[0] < 0x80:
                break
        body = await reader.readexactly(size)
        levels.append(body[6])  # after the protocol name "MQTT"
        if body[6] == 5:
            writer.write(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
            writer.close()
            return
        up_r, up_w = await asyncio.open_connection("127.0.0.1", mosquitto.port)
        up_w.write(first + length + body)
        with contextlib.suppress(asyncio.CancelledError):  # the server closing at the end
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with nodes(port) as c:
            c["n0"].t.broadcast(b"hello")
            await c["n1"].until(1)
            await c["n2"].until(1)
            await asyncio.sleep(0.2)
            assert c["n0"].got == []
        # Each node asked for MQTT 5 once, then spoke 3.1.1 (protocol level 4) from then on.
        assert sorted(levels) == [4, 4, 4, 5, 5, 5]
    finally:
        server.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


def spawn_config(tmp_path: Path, **mqtt: object) -> Path:
    path = tmp_path / "cluster.toml"
    toml = local_cluster_toml("tls", free_ports(8), {"a": 1}, {}, mqtt={"broker": "spawn", **mqtt})
    path.write_text(toml)
    return path


async def _connects(port: int, timeout: float = 5, **kw: object) -> bool:
    """Whether a client gets its CONNACK.  A broker that refuses a client certificate closes
    the connection after the TLS handshake, which the client only sees as no CONNACK."""
    try:
        async with aiomqtt.Client("127.0.0.1", port, timeout=timeout, **kw):  # type: ignore[arg-type]
            return True
    except aiomqtt.MqttError:
        return False


async def test_with_tls_only_clients_with_a_cluster_certificate_connect(tmp_path: Path) -> None:
    cfg = load_config(spawn_config(tmp_path, tls=True, prefix=PREFIX))
    assert spawned.start(cfg) is not None
    try:
        port = spawned.address(cfg).port
        ca, cert, key = cfg.tls_paths("n0")
        assert await _connects(port, tls_context=client_context(ca, cert, key))
        # Members, each with its own certificate (its name the broker's user name for the
        # ACL), reach each other.
        own: dict[str, dict[str, object]] = {
            n: {"tls": client_context(*cfg.tls_paths(n))} for n in IDS
        }
        async with nodes(port, own=own) as c:
            c["n0"].t.send("n1", b"to n1")
            c["n2"].t.broadcast(b"to all")
            await c["n1"].until(2)
            await c["n0"].until(1)
        # No client certificate at all.
        assert not await _connects(port, 1, tls_context=client_context(ca, None, None))
        # A certificate from another CA, even one with a member's name.
        other_ca, other_key = _self_signed_ca("impostor CA")
        _write_pair(
            tmp_path / "x.crt", tmp_path / "x.key", *issue(other_ca, other_key, "n0", False)
        )
        impostor = client_context(ca, tmp_path / "x.crt", tmp_path / "x.key")
        assert not await _connects(port, 1, tls_context=impostor)
        # Plain TCP to the TLS listener.
        assert not await _connects(port, 1)
        # And the client checks the broker: a CA that did not sign it refuses the connection.
        (tmp_path / "other-ca.crt").write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
        assert not await _connects(
            port, tls_context=client_context(tmp_path / "other-ca.crt", cert, key)
        )
    finally:
        spawned.stop(cfg)


async def test_a_password_protected_broker_refuses_a_wrong_password(tmp_path: Path) -> None:
    cfg = load_config(spawn_config(tmp_path, username="tally", password="s3cret"))
    spawned.start(cfg)
    try:
        port = spawned.address(cfg).port
        assert await _connects(port, username="tally", password="s3cret")
        assert not await _connects(port, username="tally", password="guess")
        assert not await _connects(port)
    finally:
        assert spawned.stop(cfg) is not None
    assert spawned.stop(cfg) is None


async def test_network_faults_apply_to_mqtt_as_to_tcp(mosquitto: Broker) -> None:
    """The fault layer wraps the MQTT transport: a partition cuts both directions, a delay
    holds frames back, and healing restores the broadcast topic."""
    partition = FaultSpec.from_dict({"kind": "partition", "groups": "n0|n1,n2"})
    delay = FaultSpec.from_dict({"kind": "delay", "ms": 300, "jitter_ms": 0})
    async with nodes(mosquitto.port) as c:
        rules = {me: NetworkRules(me) for me in IDS}
        faulty = {me: FaultyTransport(c[me].t, rules[me], IDS, seed=1) for me in IDS}
        for me in IDS:
            await c[me].t.stop()  # restart each inside its fault wrapper
            await faulty[me].start(c[me].on_frame)
        async with asyncio.timeout(10):
            for me in IDS:
                await c[me].t.connected.wait()
        for me in IDS:
            rules[me].active["p"] = partition
        faulty["n0"].broadcast(b"from the minority")
        faulty["n1"].broadcast(b"from the majority")
        await c["n2"].until(1)
        await asyncio.sleep(0.3)
        assert c["n2"].got == [("n1", b"from the majority")]
        assert c["n0"].got == [] and c["n1"].got == []
        assert rules["n0"].counts["partitioned"] == 2
        for me in IDS:
            del rules[me].active["p"]
        rules["n0"].active["d"] = delay
        start = asyncio.get_running_loop().time()
        faulty["n0"].send("n1", b"late")
        await c["n1"].until(1)
        assert asyncio.get_running_loop().time() - start >= 0.29
        del rules["n0"].active["d"]
        faulty["n0"].broadcast(b"healed")
        await c["n1"].until(2)
        await c["n2"].until(2)
        assert c["n2"].got[-1] == ("n0", b"healed")


# -- who the spawned broker lets in, and what it lets each client do ---------------------------


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
async def test_the_spawned_broker_admits_only_members_each_under_its_own_topics(
    tmp_path: Path, protocol: str
) -> None:
    cfg = load_config(spawn_config(tmp_path, prefix=PREFIX))
    spawned.start(cfg)
    try:
        port = spawned.address(cfg).port
        users = {n: spawned.credentials(cfg, n) for n in IDS}
        assert users["n1"][0] == "n1" and users["n1"][1] != users["n0"][1]
        for n in cfg.node_ids():
            assert spawned.password_path(cfg, n).stat().st_mode & 0o777 == 0o600
        assert not await _connects(port)  # anonymous
        assert not await _connects(port, username="n1", password="guess")
        assert not await _connects(port, username="n1", password=users["n0"][1])
        own: dict[str, dict[str, object]] = {
            n: {"username": user, "password": password} for n, (user, password) in users.items()
        }
        async with nodes(port, own=own, protocol=protocol) as c:
            # The members' own topics work, unicast and broadcast.
            c["n0"].t.send("n1", b"to n1")
            c["n0"].t.broadcast(b"to all")
            await c["n1"].until(2)
            await c["n2"].until(1)
            assert c["n2"].got == [("n0", b"to all")]
            v5 = protocol == "auto"
            n1_user, n1_password = users["n1"]
            async with aiomqtt.Client(
                "127.0.0.1",
                port,
                username=n1_user,
                password=n1_password,
                protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            ) as spy:
                # n1's password reads nothing of n0's inbox, even subscribed to everything.
                await spy.subscribe("#", qos=1)
                await spy.subscribe(f"{PREFIX}/inbox/n0/+", qos=1)
                c["n2"].t.send("n0", b"for n0 only")
                c["n2"].t.broadcast(b"for everyone")
                await c["n0"].until(1)
                first = await anext(_messages(spy))
                assert str(first.topic) == f"{PREFIX}/all/n2"  # the unicast never came
                # Nor may it publish as n0, or into n0's inbox as anyone but n1.
                for topic in (f"{PREFIX}/all/n0", f"{PREFIX}/inbox/n2/n0", f"{PREFIX}/inbox/n0/n2"):
                    await spy.publish(topic, b"not n1's topic", qos=1)
                await spy.publish(f"{PREFIX}/all/n1", b"n1's own topic", qos=1)  # allowed
            # That last message reached everyone and came after the others: had the broker let
            # any of those through, n0 or n2 would have counted it first.
            for n in IDS:
                await wait_for(counts(c[n], {"garbage": 1}), f"{n} to count")
            await asyncio.sleep(0.2)
            assert c["n0"].got == [("n2", b"for n0 only"), ("n2", b"for everyone")]
            assert c["n0"].t.stats.frames_received == 2
            assert all(c[n].t.stats.rejected == {"garbage": 1} for n in IDS)
    finally:
        spawned.stop(cfg)


def counts(node: Node, rejected: dict[str, int]) -> Callable[[], bool]:
    return lambda: node.t.stats.rejected == rejected


async def _messages(client: aiomqtt.Client, timeout: float = 10) -> AsyncIterator[aiomqtt.Message]:
    async with asyncio.timeout(timeout):
        async for message in client.messages:
            yield message


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
async def test_a_retained_message_is_dropped_and_counted(mosquitto: Broker, protocol: str) -> None:
    """A broker that keeps retained messages hands them to every new subscriber: a genuine,
    fresh envelope left there must not reach a node that subscribes later."""
    left = Sealer(CHAIN, "n0", KEYS["n0"], epoch=1).seal("n1", [b"left behind"], now_ms())
    async with aiomqtt.Client("127.0.0.1", mosquitto.port) as stranger:
        await stranger.publish(f"{PREFIX}/inbox/n1/n0", left, qos=1, retain=True)
        await stranger.publish(f"{PREFIX}/all/n2", b"junk", qos=1, retain=True)
    async with nodes(mosquitto.port, protocol=protocol) as c:
        await wait_for(lambda: c["n1"].t.stats.rejected == {"retained": 2}, "n1 to count both")
        for n in ("n0", "n2"):  # the retained broadcast; a retained message is anyone's
            await wait_for(counts(c[n], {"retained": 1}), f"{n} to count")
        c["n0"].t.send("n1", b"live")
        await c["n1"].until(1)
        assert c["n1"].got == [("n0", b"live")]  # not the retained one
        assert c["n0"].got == c["n2"].got == []


async def test_anonymous_true_lets_anyone_in_but_no_message_is_retained(tmp_path: Path) -> None:
    cfg = load_config(spawn_config(tmp_path, prefix=PREFIX, anonymous=True))
    spawned.start(cfg)
    try:
        port = spawned.address(cfg).port
        assert spawned.credentials(cfg, "n0") == (None, None)
        assert await _connects(port)
        left = Sealer(CHAIN, "n0", KEYS["n0"], epoch=1).seal("n1", [b"left behind"], now_ms())
        async with aiomqtt.Client("127.0.0.1", port) as stranger:
            with contextlib.suppress(aiomqtt.MqttError):  # the broker hangs up on it
                await stranger.publish(f"{PREFIX}/inbox/n1/n0", left, qos=1, retain=True, timeout=1)
        async with nodes(port) as c:
            c["n0"].t.send("n1", b"live")
            await c["n1"].until(1)
            await asyncio.sleep(0.2)
            assert c["n1"].got == [("n0", b"live")]
            assert c["n1"].t.stats.rejected == {}  # the broker kept nothing to hand over
    finally:
        spawned.stop(cfg)
