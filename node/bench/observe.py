"""What `tally bench pbft --observe` adds to a load: on every node, a subscriber to `blocks`
and one to `txs` (over the WebSocket, resuming after the last event on an overflow), and a
scrape of every node's `/metrics` each second; so that their cost shows in the figures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

from node.cluster.config import ClusterConfig, load_config

SCRAPE_EVERY_S = 1.0
STREAMS = ("blocks", "txs")
POLL_S = 0.5  # how often a quiet subscriber looks at the stop flag


@dataclass
class Observed:
    events: int = 0
    overflows: int = 0  # a subscriber that fell behind, and resumed after its last event
    scrapes: int = 0
    failures: int = 0  # connections or scrapes that failed

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def observe(cfg: ClusterConfig, stop: asyncio.Event) -> Observed:
    """Subscribe and scrape until `stop` is set."""
    seen = Observed()
    bases = [n.rpc_url.removesuffix("/rpc") for n in cfg.nodes]
    async with aiohttp.ClientSession() as session:
        followers = [_follow(session, b, s, stop, seen) for b in bases for s in STREAMS]
        await asyncio.gather(*followers, _scrape(session, bases, stop, seen))
    return seen


async def _follow(
    session: aiohttp.ClientSession, base: str, stream: str, stop: asyncio.Event, seen: Observed
) -> None:
    after: str | None = None
    while not stop.is_set():
        params: dict[str, Any] = {"stream": stream} | ({"after": after} if after else {})
        try:
            async with session.ws_connect(base + "/ws") as ws:
                request = {"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": params}
                await ws.send_json(request)
                while not stop.is_set():
                    try:
                        msg = await ws.receive(timeout=POLL_S)
                    except TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    note = json.loads(msg.data).get("params", {})
                    if note.get("events"):
                        seen.events += len(note["events"])
                        after = note["events"][-1]["id"]
                    elif "overflow" in note:
                        seen.overflows += 1
                        break
        except aiohttp.ClientError:
            seen.failures += 1
            await asyncio.sleep(POLL_S)


async def _scrape(
    session: aiohttp.ClientSession, bases: list[str], stop: asyncio.Event, seen: Observed
) -> None:
    while not stop.is_set():
        for base in bases:
            try:
                async with session.get(base + "/metrics") as resp:
                    await resp.read()
                    seen.scrapes += 1
            except aiohttp.ClientError:
                seen.failures += 1
        with contextlib.suppress(TimeoutError):  # a second passed: scrape again
            await asyncio.wait_for(stop.wait(), SCRAPE_EVERY_S)


def main(argv: list[str] | None = None) -> int:
    """Its own process beside the load generator, so that its work does not slow the load;
    it stops on SIGTERM and writes what it saw."""
    p = argparse.ArgumentParser(prog="python -m node.bench.observe", description=__doc__)
    p.add_argument("-c", "--config", required=True)
    p.add_argument("--out", required=True, help="JSON result file")
    args = p.parse_args(argv)
    cfg = load_config(args.config)

    async def run() -> Observed:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await observe(cfg, stop)

    seen = asyncio.run(run()).as_dict()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seen["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # the observer's own cost
    Path(args.out).write_text(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
