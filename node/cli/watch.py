"""`tally watch blocks|txs|contract|events`: a subscription, printed as it arrives.

It subscribes over a node's WebSocket (`GET /ws`), trying the members in order; when the node
goes away it resumes on the next one after the last event it printed, so a reconnect loses
and repeats nothing (the `blocks`, `txs` and `contract` streams are the same on every node of
a PBFT cluster; the `events` stream is what one node saw).  An `overflow` (this terminal fell
too far behind) is printed and resumed after the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import aiohttp

from node.cli.output import console
from node.cluster.accounts import resolve_address
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcUnavailable
from node.rpc.subscribe import subscription

RETRY_PAUSE_S = 1.0


def add_watch_arguments(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    w: argparse.ArgumentParser = sub.add_parser(
        "watch",
        parents=[common],
        help="print a subscription as it arrives: blocks, txs, contract calls or consensus events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument("stream", choices=["blocks", "txs", "contract", "events"])
    w.add_argument("contract_id", nargs="?", help="contract: the contract's id (64 hex digits)")
    w.add_argument("--account", help="txs: only those this account sends or is paid")
    w.add_argument("--from-height", type=int, help="replay from this height first")
    w.add_argument("--count", type=int, help="stop after this many events")
    w.add_argument("--node", help="node to watch (default: the first that answers)")
    w.add_argument("--json", action="store_true", help="one JSON object a line")
    return w


def cmd_watch(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    params: dict[str, Any] = {"stream": args.stream}
    if args.stream == "contract" and args.contract_id:
        params["contract"] = args.contract_id
    if args.account:
        params["account"] = resolve_address(cfg, args.account).hex()
    if args.from_height is not None:
        params["from_height"] = args.from_height
    asyncio.run(watch(cfg.rpc_members(args.node), params, args.count, args.json))
    return 0


async def watch(
    members: list[tuple[str, str]], params: dict[str, Any], count: int | None, as_json: bool
) -> None:
    """Follow the subscription across members until `count` events (forever if None)."""
    printed, turn = 0, 0
    failures: list[str] = []
    async with aiohttp.ClientSession() as session:
        while count is None or printed < count:
            node_id, url = members[turn % len(members)]
            try:
                async for place, event in _subscription(session, url, params):
                    _show(event, as_json)
                    params = {**params, "after": place}
                    params.pop("from_height", None)
                    printed += 1
                    failures = []
                    if count is not None and printed >= count:
                        return
            except (aiohttp.ClientError, ConnectionError) as e:
                failures.append(f"{node_id}: {e}")
                turn += 1
                if len(failures) >= len(members):
                    raise RpcUnavailable(f"no node answered (tried {'; '.join(failures)})") from e
                await asyncio.sleep(RETRY_PAUSE_S if len(failures) == len(members) else 0)


def _subscription(session: aiohttp.ClientSession, url: str, params: dict[str, Any]) -> Any:
    """(place, event) of one subscription on one node, until it closes."""
    return subscription(session, url, params, on_overflow=lambda note: _show(note, False))
    raise ConnectionError("the subscription closed")


def _show(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
        return
    kind = event.get("type")
    if kind == "block":
        cert = event.get("certificate") or {}
        console.print(
            f"block {event['height']} {event['hash'][:16]} by {event['proposer']}: "
            f"{event['txs']} txs" + (f", view {cert['view']}" if "view" in cert else "")
        )
    elif kind == "tx":
        console.print(
            f"tx {event['tx_id'][:16]} at {event['height']}.{event['index']}: {event['kind']} "
            f"from {event['sender'][:12]}, {event['status']}"
        )
    elif kind == "contract":
        console.print(
            f"contract {event['contract_id'][:16]} at {event['height']}: {event['op']} "
            f"by {event['by'][:12]}, {event['status']}"
        )
    else:
        console.print(json.dumps(event))
