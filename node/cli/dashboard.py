"""`tally dashboard`: serve the cluster's live web page (node/dashboard/server.py)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aiohttp import web

from node.cluster.config import ClusterConfig
from node.dashboard import model
from node.dashboard.server import make_app


def add_dashboard_arguments(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d: argparse.ArgumentParser = sub.add_parser(
        "dashboard",
        parents=[common],
        help="serve a live web page of the cluster: nodes, charts, blocks, faults, contracts",
        description=__doc__,
    )
    d.add_argument("--host", default=model.HOST, help="address to listen on (%(default)s)")
    d.add_argument(
        "--port", type=int, default=model.PORT, help="port (%(default)s; 0: any free port)"
    )
    return d


def cmd_dashboard(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    asyncio.run(serve(cfg, args.host, args.port))
    return 0


async def serve(cfg: ClusterConfig, host: str, port: int) -> None:
    """Serve until Ctrl-C or SIGTERM."""
    runner = web.AppRunner(make_app(cfg), handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        print(f"dashboard: http://{host}:{bound}/ (Ctrl-C to stop)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
