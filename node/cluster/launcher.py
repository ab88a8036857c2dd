"""Start and stop a cluster's node processes, tracked by PID files in data_dir."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from node.cluster import broker
from node.cluster.bootstrap import ensure_initialized
from node.cluster.config import ClusterConfig, NodeSpec
from node.cluster.procs import LaunchError, _alive, _state, log_tail, running_pid, spawn, stop_pid
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError

__all__ = ["LaunchError", "log_tail", "running_pid", "spawn", "stop_pid"]


@dataclass(frozen=True)
class Stopped:
    node_id: str
    pid: int
    how: str  # "terminated", "killed", "not running"


def start_node(
    cfg: ClusterConfig, node: NodeSpec, log_level: str = "INFO", twin: bool = False
) -> int:
    name = f"{node.id}-twin" if twin else node.id
    cmd = [
        sys.executable,
        "-m",
        "node.process.main",
        "-c",
        str(cfg.path),
        "--node",
        node.id,
        "--log-level",
        log_level,
        *(["--twin"] if twin else []),
    ]
    return spawn(cfg, name, cmd)


def check_ports_free(cfg: ClusterConfig, nodes: list[NodeSpec]) -> None:
    for node in nodes:
        for port in (p for p in (node.port, node.rpc_port) if p):  # an MQTT node has no port
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((node.host, port))
                except OSError:
                    raise LaunchError(
                        f"port {node.host}:{port} for {node.id} is in use; stop what holds it "
                        f"or change the port in {cfg.path.name}"
                    ) from None


def up(cfg: ClusterConfig, timeout_s: float = 30.0, log_level: str = "INFO") -> dict[str, int]:
    """Start every node that is not running; return once all answer `status`.  A cluster
    with process faults in cluster.toml also gets the supervisor that applies them."""
    to_start = [n for n in cfg.nodes if running_pid(cfg, n.id) is None]
    check_ports_free(cfg, to_start)  # before anything is written to data_dir
    ensure_initialized(cfg)
    pids: dict[str, int] = {}
    if cfg.transport == "mqtt" and running_pid(cfg, "broker") is None:
        broker_pid = broker.start(cfg)  # nodes read its port at start
        if broker_pid is not None:
            pids["broker"] = broker_pid
    pids |= {n.id: start_node(cfg, n, log_level) for n in to_start}
    try:
        asyncio.run(wait_healthy(cfg, timeout_s))
    except LaunchError:
        down(cfg)
        raise
    scheduled = [f for f in cfg.faults if f.category == "process" or f.kind == "twins"]
    if scheduled and running_pid(cfg, "supervisor") is None:
        cmd = [sys.executable, "-m", "node.cluster.supervisor", "-c", str(cfg.path)]
        pids["supervisor"] = spawn(cfg, "supervisor", cmd)
    return pids


# -- process faults ---------------------------------------------------------------------------


def signal_node(cfg: ClusterConfig, node_id: str, sig: signal.Signals) -> int:
    pid = running_pid(cfg, node_id)
    if pid is None:
        raise LaunchError(f"{node_id} is not running")
    os.kill(pid, sig)
    return pid


def kill_node(cfg: ClusterConfig, node_id: str) -> int:
    pid = signal_node(cfg, node_id, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.01)
    return pid


def is_paused(cfg: ClusterConfig, node_id: str) -> bool:
    pid = running_pid(cfg, node_id)
    return pid is not None and _state(pid) == "T"


def start_twin(cfg: ClusterConfig, node_id: str) -> int:
    """A second process with `node_id`'s key (fault injection: Twins)."""
    if running_pid(cfg, f"{node_id}-twin") is not None:
        raise LaunchError(f"{node_id} already has a twin")
    return start_node(cfg, cfg.node(node_id), twin=True)


async def wait_healthy(cfg: ClusterConfig, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(cfg.nodes)
    while pending:
        node = pending[0]
        if running_pid(cfg, node.id) is None:
            raise LaunchError(f"node {node.id} exited during start-up:\n{log_tail(cfg, node.id)}")
        try:
            async with RpcClient(node.rpc_url, timeout=1.0) as client:
                await client.call("status")
            pending.pop(0)
            continue
        except (RpcUnavailable, RpcError):
            pass
        if time.monotonic() > deadline:
            raise LaunchError(
                f"node {node.id} not healthy after {timeout_s:.0f}s:\n{log_tail(cfg, node.id)}"
            )
        await asyncio.sleep(0.1)


def down(cfg: ClusterConfig, grace_s: float = 5.0) -> list[Stopped]:
    """Stop exactly the processes `up` started (by recorded PID): SIGTERM, then SIGKILL."""
    result = []
    # The supervisor first: it must not restart a node that is being stopped.  The broker
    # last: nodes leave it with a clean DISCONNECT.
    names = ["supervisor", *(f"{n.id}-twin" for n in cfg.nodes), *(n.id for n in cfg.nodes)]
    names.append("broker")
    for name in names:
        pid = running_pid(cfg, name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            result.append(Stopped(name, pid, stop_pid(pid, grace_s)))
        cfg.pid_path(name).unlink(missing_ok=True)
    return [r for r in result if not r.node_id.endswith("-twin") or r.how != "not running"]
