"""The subscriptions' two doors (node/process/subscriptions.py): a WebSocket speaking
JSON-RPC (`GET /ws`: `subscribe`, `unsubscribe`, then `subscription` notifications, each
carrying a batch of events) and Server-Sent Events (`GET /subscribe/STREAM`, resumed with
`Last-Event-ID`).

One writer task per subscription sends what its queue holds, at the client's pace: a client
that reads slowly holds up only its own writer, and once its queue overflows it is told so
(`overflow`) and closed.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp_sse import sse_response

from node.process.subscriptions import (
    Event,
    Filter,
    Hub,
    Place,
    SubscribeError,
    Subscriber,
    parse_place,
)

log = logging.getLogger("tally.node")

# A batch of (place id, event): what was queued when the writer looked, at most
# SEND_BATCH; a WebSocket sends it as one message (one frame and one JSON document for a
# block's txs, not one each: most of the cost of a busy subscription)
Send = Callable[[list[tuple[str, Event]]], Awaitable[None]]
SEND_BATCH = 1000
SEND_BUFFER_BYTES = 256 << 10  # a subscriber socket's kernel send buffer (SO_SNDBUF)


def subscription(
    params: Mapping[str, Any], last_event_id: str | None = None
) -> tuple[Filter, Place | None]:
    """The filter and the place to resume after, from a subscribe call's params (or an SSE
    request's query, where every value is a string)."""
    stream = params.get("stream")
    if not isinstance(stream, str):
        raise SubscribeError("stream is required: blocks, txs, contract or events")
    f = Filter(stream, _hex(params, "account", 20), _hex(params, "contract", 32))
    after = params.get("after", last_event_id)
    if after is not None:
        return f, parse_place(str(after))
    start = params.get("from_height")
    if start is None:
        return f, None
    if isinstance(start, str) and start.isdigit():
        start = int(start)
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise SubscribeError(f"from_height must be a height (an integer >= 0), got {start!r}")
    return f, (start, -1)


def _hex(params: Mapping[str, Any], name: str, size: int) -> bytes | None:
    value = params.get(name)
    if value is None:
        return None
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != size:
        raise SubscribeError(f"{name} must be {2 * size} hex digits, got {value!r}")
    return raw


async def pump(sub: Subscriber, send: Send) -> Event | None:
    """Send `sub`'s events as they come; the overflow notice once it overflowed (None if it
    was unsubscribed first)."""
    while not sub.closed:
        await sub.wake.wait()
        sub.wake.clear()
        while sub.queue:
            # taken off only once sent: a batch on its way still counts against the bound
            batch = list(itertools.islice(sub.queue, SEND_BATCH))
            await send(batch)
            for _ in batch:
                sub.queue.popleft()
            sub.room.set()
        if sub.overflowed:
            return sub.overflow_notice()
    return None


def _bound_send_buffer(request: web.Request) -> None:
    """A subscriber's socket gets a fixed kernel send buffer: left to autotune, the kernel
    would hold up to megabytes for a client that stopped reading (tcp_wmem's maximum) before
    its writer ever waited, and its queue ever filled."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


def routes(app: web.Application, hub: Hub) -> None:
    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30)
        _bound_send_buffer(request)
        await ws.prepare(request)
        await _serve_socket(ws, hub)
        return ws

    async def sse(request: web.Request) -> web.StreamResponse:
        try:
            params = dict(request.query) | {"stream": request.match_info["stream"]}
            f, after = subscription(params, request.headers.get("Last-Event-ID"))
        except SubscribeError as e:
            raise web.HTTPBadRequest(text=f"{e}\n") from None
        sub = hub.subscribe(f, after)
        _bound_send_buffer(request)
        try:
            async with sse_response(request) as resp:

                async def send(batch: list[tuple[str, Event]]) -> None:
                    for place, event in batch:
                        await resp.send(json.dumps(event), id=place, event=event["type"])

                notice = await pump(sub, send)
                if notice is not None:
                    await resp.send(json.dumps(notice), event="overflow")
            return resp
        finally:
            hub.unsubscribe(sub)

    app.router.add_get("/ws", websocket)
    app.router.add_get("/subscribe/{stream}", sse)


async def _serve_socket(ws: web.WebSocketResponse, hub: Hub) -> None:
    """JSON-RPC over one socket: any number of subscriptions, each with its writer."""
    subs: dict[str, tuple[Subscriber, asyncio.Task[None]]] = {}
    ids = iter(range(1, 1 << 62))

    async def writer(name: str, sub: Subscriber) -> None:
        async def send(batch: list[tuple[str, Event]]) -> None:
            events = [{"id": place, "event": event} for place, event in batch]
            await ws.send_json(_note({"subscription": name, "events": events}))

        notice = await pump(sub, send)
        if notice is not None:  # a socket too slow for one subscription is too slow for all
            await ws.send_json(_note({"subscription": name, "overflow": notice}))
            await ws.close(code=1013, message=b"subscriber overflowed")

    def call(request: Any) -> dict[str, Any]:
        method, params = request.get("method"), request.get("params") or {}
        if method == "subscribe":
            f, after = subscription(params)
            name = f"s{next(ids)}"
            sub = hub.subscribe(f, after)
            subs[name] = (sub, asyncio.create_task(writer(name, sub)))
            return {"subscription": name}
        if method == "unsubscribe":
            entry = subs.pop(str(params.get("subscription")), None)
            if entry is not None:
                hub.unsubscribe(entry[0])
                entry[1].cancel()
            return {"unsubscribed": entry is not None}
        raise LookupError(f"method not found: {method!r} (subscribe, unsubscribe)")

    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            await ws.send_json(_answer(msg.data, call))
    finally:
        for sub, task in subs.values():
            hub.unsubscribe(sub)
            task.cancel()


def _answer(text: str, call: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """One JSON-RPC request's response (the codes of node/rpc/jsonrpc.py)."""
    try:
        request = json.loads(text)
    except ValueError:
        return _error(None, -32700, "parse error")
    if not isinstance(request, dict):
        return _error(None, -32600, "a request is a JSON object")
    rid = request.get("id")
    try:
        return {"jsonrpc": "2.0", "id": rid, "result": call(request)}
    except SubscribeError as e:
        return _error(rid, -32602, str(e))
    except LookupError as e:
        return _error(rid, -32601, str(e))


def _error(rid: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


def _note(params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "subscription", "params": params}
