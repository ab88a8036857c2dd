"""A live cluster of real node processes on free loopback ports, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node import launcher
from node.bench import free_ports
from node.config import ClusterConfig, load_config, local_cluster_toml


@contextmanager
def live_cluster(
    directory: Path,
    name: str,
    accounts: dict[str, int],
    pbft: dict[str, int],
    extra_toml: str = "",
    nodes: int = 4,
) -> Iterator[ClusterConfig]:
    """Write a cluster.toml, start it, and stop exactly its processes afterwards."""
    path = directory / "cluster.toml"
    path.write_text(local_cluster_toml(name, free_ports(2 * nodes), accounts, pbft) + extra_toml)
    cfg = load_config(path)
    launcher.up(cfg, timeout_s=30)
    try:
        yield cfg
    finally:
        launcher.down(cfg)


def kill9(cfg: ClusterConfig, node: str) -> None:
    """SIGKILL one node and wait until it is gone."""
    pid = launcher.running_pid(cfg, node)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while launcher.running_pid(cfg, node) is not None:
        time.sleep(0.02)
