"""The client side of a node's subscriptions (`GET /ws`, node/process/streaming.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from node.rpc.jsonrpc import RpcError


async def subscription(
    session: aiohttp.ClientSession,
    url: str,
    params: dict[str, Any],
    on_overflow: Callable[[dict[str, Any]], None] | None = None,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(place, event) of one subscription on the node whose RPC is at `url`, until the
    node closes it (after an overflow, `on_overflow` is given the notice): resume after
    the last place seen."""
    ws_url = url.removesuffix("/rpc") + "/ws"
    async with session.ws_connect(ws_url, heartbeat=30) as ws:
        await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": params})
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "error" in data:
                raise RpcError(data["error"]["code"], data["error"]["message"])
            note = data.get("params", {})
            if "overflow" in note:
                if on_overflow is not None:
                    on_overflow(note["overflow"])
                break
            for item in note.get("events", []):
                yield item["id"], item["event"]
