"""`tally dashboard`: one live page for the whole cluster.

The browser talks only to this server, and this server to the nodes (so the nodes need no
CORS).  Each tick (model.TICK_S) it asks every node for its `status` and `/metrics`, and
every few ticks one node for its open contracts (`list_contracts`); it follows a `blocks`
subscription from one live member, resuming on the next one after the last block it saw
(as `tally watch` does), and each node's `events` stream for the faults injected and
healed there.  It pushes a snapshot each tick, and each block as it arrives, to every
browser over one Server-Sent Events stream (`GET /api/stream`).

Admin calls (`/api/faults`, `/api/fault/inject`, `/api/fault/heal`) carry the browser's
`Authorization` header, which is forwarded to the nodes as it came and never kept or
logged: without the token, the page shows the nodes' refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp_sse import sse_response

from node.cluster.config import ClusterConfig
from node.dashboard import model
from node.dashboard.model import Contracts, NodeView, Point, Rate, Scrape
from node.faults.spec import CATALOGUE
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.failover import FailoverClient
from node.rpc.jsonrpc import METHOD_NOT_FOUND, UNAUTHORIZED, RpcError
from node.rpc.subscribe import subscription as node_subscription

STATIC = Path(__file__).parent / "static"
RETRY_PAUSE_S = 1.0
# The faults the page offers: those a node's admin RPC carries out (process faults and
# twins are the launcher's: `tally fault inject`)
PAGE_FAULTS = {k: v for k, v in CATALOGUE.items() if v.category != "process" and k != "twins"}


class Dashboard:
    """The cluster's live state, as this server last saw it, and the browsers to tell."""

    def __init__(self, cfg: ClusterConfig) -> None:
        self.members = cfg.rpc_members()
        self.clients = {
            nid: RpcClient(url, timeout=model.RPC_TIMEOUT_S) for nid, url in self.members
        }
        self.reads = FailoverClient(self.members, timeout=model.RPC_TIMEOUT_S)
        self.scrapes: dict[str, Scrape] = {}
        self.history: deque[Point] = deque(maxlen=model.HISTORY_POINTS)
        self.blocks: deque[dict[str, Any]] = deque(maxlen=model.BLOCKS_KEPT)
        self.faults: dict[str, dict[str, dict[str, Any]]] = {nid: {} for nid, _ in self.members}
        self.contracts = Contracts(error="not read yet")
        self.last: dict[str, Any] | None = None
        self.browsers: set[asyncio.Queue[tuple[str, str]]] = set()

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()
        await self.reads.close()

    def push(self, event: str, data: dict[str, Any]) -> None:
        """Queue a message for every browser; one that fell this far behind is dropped (its
        EventSource reconnects and starts again from a snapshot)."""
        text = json.dumps(data)
        for queue in list(self.browsers):
            if queue.full():
                self.browsers.discard(queue)
                queue.put_nowait(("close", ""))  # room kept for it: see subscribe
            else:
                queue.put_nowait((event, text))

    def subscribe(self) -> asyncio.Queue[tuple[str, str]]:
        queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(model.BROWSER_QUEUE + 1)
        if self.last is not None:
            queue.put_nowait(("snapshot", json.dumps(self.last)))
        for block in self.blocks:
            queue.put_nowait(("block", json.dumps(block)))
        self.browsers.add(queue)
        return queue

    # -- the tick ------------------------------------------------------------------------

    async def tick(self, session: aiohttp.ClientSession, count: int) -> None:
        polled = await asyncio.gather(*(self.poll(session, nid) for nid, _ in self.members))
        rates = [r for _, r in polled if r is not None]
        self.history.append(model.cluster_point(time.time(), rates))
        if count % model.CONTRACTS_EVERY_TICKS == 0:
            self.contracts = await self.open_contracts()
        nodes = [view for view, _ in polled]
        self.last = model.snapshot(nodes, self.history, self.faults, self.contracts)
        self.push("snapshot", self.last)

    async def poll(self, session: aiohttp.ClientSession, nid: str) -> tuple[NodeView, Rate | None]:
        """One node's row, and its rate since the last tick (None if it is down)."""
        total = len(self.members) - 1
        try:
            status = await self.clients[nid].call("status")
            scrape = await self.scrape(session, nid)
        except (RpcUnavailable, RpcError, aiohttp.ClientError, TimeoutError, ValueError) as e:
            self.scrapes.pop(nid, None)
            return model.node_view(nid, str(e) or type(e).__name__, None, total), None
        before, self.scrapes[nid] = self.scrapes.get(nid), scrape
        step = model.rate(before, scrape) if before is not None else None
        return model.node_view(nid, status, scrape.peers_connected, total), step

    async def scrape(self, session: aiohttp.ClientSession, nid: str) -> Scrape:
        url = self.clients[nid].url.removesuffix("/rpc") + "/metrics"
        timeout = aiohttp.ClientTimeout(total=model.RPC_TIMEOUT_S)
        async with session.get(url, timeout=timeout) as resp:
            resp.raise_for_status()
            text = await resp.text()
        return model.parse_metrics(text, time.monotonic())

    async def open_contracts(self) -> Contracts:
        try:
            answer = await self.reads.call("list_contracts", active=True)
        except RpcError as e:
            return Contracts(error=model.NO_LISTING if e.code == METHOD_NOT_FOUND else e.message)
        except RpcUnavailable as e:
            return Contracts(error=str(e))
        return Contracts(items=tuple(answer.get("contracts", [])))

    # -- subscriptions -------------------------------------------------------------------

    async def follow_blocks(self, session: aiohttp.ClientSession) -> None:
        """The `blocks` stream from the first member that serves it, resumed on the next one
        after the last block seen."""
        params: dict[str, Any] = {"stream": "blocks", "from_height": 0}
        turn = 0
        while True:
            _, url = self.members[turn % len(self.members)]
            try:
                async for place, event in subscription(session, url, params):
                    params = {"stream": "blocks", "after": place}
                    row = model.block_row(event)
                    self.blocks.append(row)
                    self.push("block", row)
            except (aiohttp.ClientError, ConnectionError, RpcError, TimeoutError):
                turn += 1
                await asyncio.sleep(RETRY_PAUSE_S / len(self.members))

    async def follow_events(self, session: aiohttp.ClientSession, nid: str) -> None:
        """One node's `events` stream: the faults injected and healed there (what a node
        saw is its own, so this is not failed over)."""
        url = dict(self.members)[nid]
        params: dict[str, Any] = {"stream": "events", "from_height": 0}
        while True:
            try:
                async for place, event in subscription(session, url, params):
                    params = {"stream": "events", "after": place}
                    model.apply_fault_event(self.faults[nid], event)
            except (aiohttp.ClientError, ConnectionError, RpcError, TimeoutError):
                await asyncio.sleep(RETRY_PAUSE_S)


async def subscription(
    session: aiohttp.ClientSession, url: str, params: dict[str, Any]
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(place, event) of one subscription on one node, until it closes or overflows
    (resume after the last place)."""
    async for item in node_subscription(session, url, params):
        yield item
    raise ConnectionError("the subscription closed")


# -- HTTP ----------------------------------------------------------------------------------

DASHBOARD = web.AppKey("dashboard", Dashboard)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(cfg: ClusterConfig) -> web.Application:
    app = web.Application()
    app[DASHBOARD] = Dashboard(cfg)
    app.cleanup_ctx.append(_background)
    app.router.add_get("/", _index)
    app.router.add_static("/static", STATIC)
    app.router.add_get("/api/config", _config)
    app.router.add_get("/api/stream", _stream)
    app.router.add_get("/api/block/{height}", _block)
    app.router.add_get("/api/tx/{tx_id}", _tx)
    app.router.add_get("/api/faults", _faults)
    app.router.add_post("/api/fault/inject", _inject)
    app.router.add_post("/api/fault/heal", _heal)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    dash = app[DASHBOARD]
    session = aiohttp.ClientSession()

    async def ticks() -> None:
        count = 0
        while True:
            started = time.monotonic()
            await dash.tick(session, count)
            count += 1
            await asyncio.sleep(max(0.0, model.TICK_S - (time.monotonic() - started)))

    tasks = [asyncio.create_task(ticks()), asyncio.create_task(dash.follow_blocks(session))]
    tasks += [asyncio.create_task(dash.follow_events(session, nid)) for nid, _ in dash.members]
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await session.close()
    await dash.close()


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _config(request: web.Request) -> web.Response:
    dash = request.app[DASHBOARD]
    kinds = {k: {"params": v.params, "shows": v.shows} for k, v in PAGE_FAULTS.items()}
    return web.json_response({"nodes": [nid for nid, _ in dash.members], "faults": kinds})


async def _stream(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASHBOARD]
    queue = dash.subscribe()
    try:
        async with sse_response(request) as resp:
            while (item := await queue.get())[0] != "close":
                await resp.send(item[1], event=item[0])
        return resp
    finally:
        dash.browsers.discard(queue)


async def _read(request: web.Request, method: str, **params: Any) -> web.Response:
    try:
        return web.json_response(await request.app[DASHBOARD].reads.call(method, **params))
    except RpcError as e:
        return web.json_response({"error": e.message, "code": e.code}, status=404)
    except RpcUnavailable as e:
        return web.json_response({"error": str(e)}, status=502)


async def _block(request: web.Request) -> web.Response:
    height = request.match_info["height"]
    if not height.isdigit():
        return web.json_response({"error": f"not a height: {height!r}"}, status=400)
    return await _read(request, "get_block", height=int(height))


async def _tx(request: web.Request) -> web.Response:
    return await _read(request, "get_tx", tx_id=request.match_info["tx_id"])


# -- admin: forwarded with the browser's token ----------------------------------------------


async def _admin(
    request: web.Request, target: str, method: str, params: dict[str, Any]
) -> web.Response:
    """`method` on one node or every node (`*`), with the request's bearer token; per node,
    the answer or the node's error text.  HTTP 200 if every node agreed, 403 if one refused
    the token, else 400 (the node's own refusal) or 502 (unreachable)."""
    dash = request.app[DASHBOARD]
    urls = dict(dash.members)
    ids = list(urls) if target == "*" else [target]
    if not set(ids) <= set(urls):
        return web.json_response({"error": f"no node {target!r}"}, status=400)
    token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() or None

    async def one(nid: str) -> tuple[int, Any]:
        try:
            async with RpcClient(urls[nid], timeout=model.RPC_TIMEOUT_S, token=token) as c:
                return 200, await c.call(method, **params)
        except RpcError as e:
            return (403 if e.code == UNAUTHORIZED else 400), {"error": e.message}
        except RpcUnavailable as e:
            return 502, {"error": str(e)}

    answers = await asyncio.gather(*(one(n) for n in ids))
    status = max(code for code, _ in answers)
    return web.json_response(
        {"results": dict(zip(ids, [a for _, a in answers], strict=True))}, status=status
    )


async def _body(request: web.Request) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        body = await request.json()
        if isinstance(body, dict):
            return body
    raise web.HTTPBadRequest(text="expected a JSON object")


async def _faults(request: web.Request) -> web.Response:
    return await _admin(request, "*", "fault_list", {})


async def _inject(request: web.Request) -> web.Response:
    body = await _body(request)
    target = str(body.get("node", "*"))
    spec = {"kind": body.get("kind"), "node": target, "params": body.get("params") or {}}
    if body.get("duration_seconds") is not None:
        spec["duration_seconds"] = body["duration_seconds"]
    return await _admin(request, target, "fault_inject", spec)


async def _heal(request: web.Request) -> web.Response:
    body = await _body(request)
    return await _admin(request, str(body.get("node", "*")), "fault_heal", {"id": body.get("id")})
