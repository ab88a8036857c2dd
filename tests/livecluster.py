"""A live cluster of real node processes on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mosquitto import need_mosquitto

from node.bench.pbft import free_ports
from node.cluster import launcher
from node.cluster.config import ClusterConfig, load_config, local_cluster_toml


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


async def wait_for(predicate: Any, what: str, timeout: float = 60) -> Any:
    """Poll the async `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def bench_json(tmp_path: Path, *args: str, timeout: float = 300) -> Any:
    """Run `tally bench ARGS --json --out FILE`; the printed and written JSON must agree."""
    out_file = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "node.cli.main", "bench", *args, "--json", "--out", str(out_file)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result == json.loads(out_file.read_text())
    return result
