"""A live cluster of real node processes on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.bench.pbft import free_ports
from node.cluster import launcher
from node.cluster.config import ClusterConfig, load_config, local_cluster_toml
from node.rpc.client import RpcClient, RpcUnavailable
from tests.helpers.mosquitto import need_mosquitto
from tests.helpers.wait import wait_for


@contextmanager
def live_cluster(
    directory: Path,
    name: str,
    accounts: dict[str, int],
    pbft: dict[str, int],
    extra_toml: str = "",
    nodes: int = 4,
    pow: dict[str, int] | None = None,
    transport: str = "tcp",
) -> Iterator[ClusterConfig]:
    """Write a cluster.toml (proof of work with `pow` settings; over `transport`, a key of
    TRANSPORTS), start it, and stop exactly its processes (and broker) afterwards."""
    path = directory / "cluster.toml"
    mqtt = transport_settings(transport)
    toml = local_cluster_toml(name, free_ports(2 * nodes), accounts, pbft, pow, mqtt)
    path.write_text(toml + extra_toml)
    cfg = load_config(path)
    launcher.up(cfg, timeout_s=30)
    try:
        yield cfg
    finally:
        launcher.down(cfg)


# The transports an end-to-end module can run over: [mqtt] settings (None: TCP).
TRANSPORTS: dict[str, dict[str, Any] | None] = {
    "tcp": None,
    "mqtt": {"broker": "spawn"},
    "mqtt-tls": {"broker": "spawn", "tls": True},
}


def transport_settings(transport: str) -> dict[str, Any] | None:
    """The [mqtt] table for `transport`; skips the test when Mosquitto is missing."""
    settings = TRANSPORTS[transport]
    if settings is not None:
        need_mosquitto()
    return settings


def kill9(cfg: ClusterConfig, node: str) -> None:
    """SIGKILL one node and wait until it is gone."""
    pid = launcher.running_pid(cfg, node)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while launcher.running_pid(cfg, node) is not None:
        time.sleep(0.02)


async def node_status(cfg: ClusterConfig, node: str) -> dict[str, Any] | None:
    """One node's `status`, or None while it does not answer."""
    try:
        async with RpcClient(cfg.node(node).rpc_url, timeout=10) as client:
            result: dict[str, Any] = await client.call("status")
            return result
    except RpcUnavailable:
        return None


async def wait_for_status(
    cfg: ClusterConfig, node: str, pred: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll `node`'s status until `pred` holds for it, and return that status."""

    async def matching() -> dict[str, Any] | None:
        status = await node_status(cfg, node)
        return status if status is not None and pred(status) else None

    result: dict[str, Any] = await wait_for(matching, f"{what} on {node}")
    return result


def bench_json(tmp_path: Path, *args: str, timeout: float = 300) -> Any:
    """Run `tally bench ARGS --json --out FILE`; the printed and written JSON must agree."""
    out_file = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "node.cli.main", "bench", *args, "--json", "--out", str(out_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == json.loads(out_file.read_text())
    return result
