"""Subscriptions on real node processes: WebSocket JSON-RPC and Server-Sent Events, resumed
across a reconnect (to another node) exactly once, in order; and a subscriber that stops
reading is told `overflow` and closed, while consensus and another subscriber go on."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from ledger.tx import Tx, transfer
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from node.rpc.jsonrpc import RpcError
from tests.helpers.livecluster import live_cluster, wait_for_status
from tests.helpers.wait import wait_for

ACCOUNTS = {"alice": 10**9, "bob": 10**9}
QUEUE = 1000  # [rpc] subscriber_queue: more than a block's txs (batch_size_max 500)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    extra = f"\n[rpc]\nsubscriber_queue = {QUEUE}\n"
    with live_cluster(
        tmp_path_factory.mktemp("subs"), "subs", ACCOUNTS, {"batch_wait_ms": 5}, extra
    ) as cfg:
        yield cfg


def base(cfg: ClusterConfig, node: int) -> str:
    return cfg.nodes[node].rpc_url.removesuffix("/rpc")


class Sender:
    """Signed transfers from alice, in nonce order."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.cfg, self.nonce = cfg, 0
        self.chain = load_genesis(cfg).chain_id
        self.alice, self.bob = account_key(cfg, "alice"), account_key(cfg, "bob")

    async def send(self, count: int, wait: bool = True) -> list[Tx]:
        txs = [
            transfer(self.alice, self.chain, self.nonce + i, self.bob.address, 1)
            for i in range(count)
        ]
        self.nonce += count
        async with RpcClient(self.cfg.nodes[1].rpc_url, timeout=60) as client:
            answers = await client.submit_txs([t.encode() for t in txs])
            assert all(isinstance(a, dict) for a in answers), answers
        if wait:
            await committed(self.cfg, txs[-1])
        return txs


async def committed(cfg: ClusterConfig, tx: Tx) -> None:
    """Wait until every node has `tx` in a block."""
    for spec in cfg.nodes:

        async def done(url: str = spec.rpc_url) -> bool:
            async with RpcClient(url) as client:
                try:
                    answer = await client.call("get_tx", tx_id=tx.tx_id.hex())
                except RpcError:  # not there yet
                    return False
            return "height" in answer

        await wait_for(done, f"{tx.tx_id.hex()[:8]} committed on {spec.id}")


async def ws_events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    while len(out) < count:
        note = (await ws.receive_json(timeout=60))["params"]
        assert "events" in note, note
        out += [(e["id"], e["event"]) for e in note["events"]]
    return out


async def subscribe(ws: aiohttp.ClientWebSocketResponse, **params: Any) -> str:
    await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": params})
    answer = await ws.receive_json(timeout=60)
    assert "result" in answer, answer
    return str(answer["result"]["subscription"])


@pytest.fixture(scope="module")
def sender(cluster: ClusterConfig) -> Sender:
    return Sender(cluster)


async def test_websocket_resumes_on_another_node_exactly_once_in_order(
    cluster: ClusterConfig, sender: Sender
) -> None:
    start = await status_height(cluster)
    sent = await sender.send(30)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(base(cluster, 0) + "/ws") as ws:
            await subscribe(ws, stream="txs", from_height=start + 1)
            first = (await ws_events(ws, 10))[:10]  # a client that took 10 of a batch, then left
        # n0's socket is gone: go on at n2, after the last event seen there
        async with session.ws_connect(base(cluster, 2) + "/ws") as ws:
            await subscribe(ws, stream="txs", after=first[-1][0])
            rest = await ws_events(ws, 20)
            assert len(rest) == 20
            live = await sender.send(5, wait=False)
            rest += await ws_events(ws, 5)
    ids = [e["tx_id"] for _, e in first + rest]
    assert ids == [t.tx_id.hex() for t in sent + live]
    places = [p for p, _ in first + rest]
    assert len(set(places)) == len(places)


async def test_sse_resumes_with_last_event_id(cluster: ClusterConfig, sender: Sender) -> None:
    start = await status_height(cluster)
    sent = await sender.send(12)
    url = base(cluster, 1) + f"/subscribe/txs?from_height={start + 1}"
    async with aiohttp.ClientSession() as session:
        first = await sse_events(session, url, 5, {})
        rest = await sse_events(session, url, 7, {"Last-Event-ID": first[-1][0]})
    assert [e["tx_id"] for _, e in first + rest] == [t.tx_id.hex() for t in sent]


async def sse_events(
    session: aiohttp.ClientSession, url: str, count: int, headers: dict[str, str]
) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    event: dict[str, str] = {}
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line:
                key, _, value = line.partition(":")
                event[key] = value.lstrip(" ")
                continue
            if "data" in event:
                out.append((event["id"], json.loads(event["data"])))
                if len(out) == count:
                    return out
            event = {}
    raise AssertionError(f"the stream ended after {len(out)} events")


async def test_a_stalled_subscriber_is_told_overflow_and_closed_while_others_go_on(
    cluster: ClusterConfig, sender: Sender
) -> None:
    stalled = stalled_sse(cluster, "/subscribe/txs")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(base(cluster, 0) + "/ws") as ws,
        ):
            # another subscriber, reading as it comes: every block, a light stream that a
            # busy node's writer keeps up with (the stalled one asks for every tx)
            start = await status_height(cluster)
            await subscribe(ws, stream="blocks")
            await asyncio.sleep(0.5)  # the stalled one subscribed before the txs go in
            sent = await sender.send(3000)  # consensus commits all of them on every node
            end = await status_height(cluster)
            got = await ws_events(ws, end - start)
        assert [e["height"] for _, e in got] == list(range(start + 1, end + 1))  # once each
        assert sum(e["txs"] for _, e in got) >= len(sent)
        # both gone: the stalled one cut for its overflow, the other closed by us
        await wait_for_status(
            cluster, "n0", lambda s: s["subscriptions"] == {"live": 0, "overflows": 1}, "overflow"
        )
        text = await asyncio.to_thread(read_to_end, stalled)
        tail = text.rsplit("\n\n", 2)[-2]  # the last event, then the end of the stream
        assert tail.startswith("event: overflow"), tail[-300:]
        notice = json.loads(tail.split("data: ", 1)[1])
        last = int(notice["last_id"].split(".")[0])
        assert notice["last_height"] in (last, last - 1)
        assert 0 < text.count("event: tx") < len(sent)  # it got some, and then was cut
    finally:
        stalled.close()


def stalled_sse(cfg: ClusterConfig, path: str) -> socket.socket:
    """An SSE request from a socket that will not read (a 4 KB receive buffer, set before
    connecting so that the window it advertises stays small)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    spec = cfg.nodes[0]
    s.connect((spec.host, spec.rpc_port))
    # HTTP/1.0: the body is the stream itself, not chunks of it, and it ends with the socket
    s.sendall(f"GET {path} HTTP/1.0\r\nHost: {spec.host}\r\n\r\n".encode())
    return s


def read_to_end(s: socket.socket) -> str:
    s.settimeout(60)
    chunks = []
    while chunk := s.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


async def status_height(cfg: ClusterConfig) -> int:
    async with RpcClient(cfg.nodes[0].rpc_url) as client:
        return int((await client.call("status"))["height"])


async def test_a_bad_sse_subscription_is_http_400_with_why(cluster: ClusterConfig) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(base(cluster, 0) + "/subscribe/nope") as resp:
            assert resp.status == 400
            assert "unknown stream 'nope'" in await resp.text()
        url = base(cluster, 0) + "/subscribe/txs?account=beef"
        async with session.get(url) as resp:
            assert resp.status == 400
            assert "account must be 40 hex digits" in await resp.text()
