"""Applies cluster.toml's scheduled process faults (kill, pause, restart, twins) to a live
cluster: `tally up` starts it when there are any, `tally down` stops it first.

    python -m node.cluster.supervisor -c cluster.toml
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

from node.cluster import launcher
from node.cluster.config import ClusterConfig, load_config
from node.faults.spec import FaultSpec
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError

log = logging.getLogger("tally.supervisor")


async def height(cfg: ClusterConfig) -> int:
    """The highest height any node reports."""
    best = 0
    for node in cfg.nodes:
        try:
            async with RpcClient(node.rpc_url, timeout=1.0) as client:
                best = max(best, (await client.call("status"))["height"])
        except (RpcUnavailable, RpcError):
            pass
    return best


async def run(cfg: ClusterConfig) -> None:
    start = time.monotonic()
    todo = [f for f in cfg.faults if f.category == "process" or f.kind == "twins"]
    ending: list[tuple[float, FaultSpec]] = []
    while todo or ending:
        now, top = time.monotonic() - start, await height(cfg)
        for spec in [f for f in todo if (f.at_seconds or 0) <= now and (f.at_height or 0) <= top]:
            todo.remove(spec)
            await asyncio.to_thread(apply, cfg, spec)
            if spec.duration_seconds is not None:
                ending.append((now + spec.duration_seconds, spec))
        for end, spec in [e for e in ending if e[0] <= now]:
            ending.remove((end, spec))
            await asyncio.to_thread(undo, cfg, spec)
        await asyncio.sleep(0.2)


def apply(cfg: ClusterConfig, spec: FaultSpec) -> None:
    log.info("applying %s to %s", spec.kind, spec.node)
    for node in targets(cfg, spec):
        try:
            if spec.kind == "kill":
                launcher.kill_node(cfg, node)
            elif spec.kind == "pause":
                launcher.signal_node(cfg, node, signal.SIGSTOP)
            elif spec.kind == "restart":
                launcher.kill_node(cfg, node)
                launcher.up(cfg, nodes=[node])  # that node only: a failure stops no other
            elif spec.kind == "twins":
                launcher.start_twin(cfg, node)
        except launcher.LaunchError as e:
            log.warning("%s on %s: %s", spec.kind, node, e)


def undo(cfg: ClusterConfig, spec: FaultSpec) -> None:
    log.info("ending %s on %s", spec.kind, spec.node)
    for node in targets(cfg, spec):
        try:
            if spec.kind == "kill":
                launcher.up(cfg, nodes=[node])
            elif spec.kind == "pause":
                launcher.signal_node(cfg, node, signal.SIGCONT)
            elif spec.kind == "twins":
                launcher.kill_node(cfg, f"{node}-twin")
        except launcher.LaunchError as e:
            log.warning("ending %s on %s: %s", spec.kind, node, e)


def targets(cfg: ClusterConfig, spec: FaultSpec) -> list[str]:
    return cfg.node_ids() if spec.node == "*" else [spec.node]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.cluster.supervisor", description=__doc__)
    parser.add_argument("-c", "--config", default="cluster.toml")
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(load_config(args.config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
