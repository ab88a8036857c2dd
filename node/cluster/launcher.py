"""Start, stop and restart a cluster's node processes, tracked by PID files in data_dir."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
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


def up(
    cfg: ClusterConfig,
    timeout_s: float = 30.0,
    log_level: str = "INFO",
    nodes: Sequence[str] | None = None,
) -> dict[str, int]:
    """Start every node (or only `nodes`) that is not running; return once they all answer
    `status`.  A whole-cluster start with process faults in cluster.toml also gets the
    supervisor that applies them.

    If a node fails to start, this stops only what this call started (its nodes, and the
    broker if it started it), never a process that was already running, and raises a
    LaunchError naming the node, with the last lines of its log."""
    wanted = [cfg.node(n) for n in nodes] if nodes is not None else list(cfg.nodes)
    to_start = [n for n in wanted if running_pid(cfg, n.id) is None]
    check_ports_free(cfg, to_start)  # before anything is written to data_dir
    ensure_initialized(cfg)
    pids: dict[str, int] = {}
    try:
        if cfg.transport == "mqtt" and running_pid(cfg, "broker") is None:
            broker_pid = broker.start(cfg)  # nodes read its port at start
            if broker_pid is not None:
                pids["broker"] = broker_pid
        for n in to_start:
            pids[n.id] = start_node(cfg, n, log_level)
        asyncio.run(wait_healthy(cfg, timeout_s, wanted))
    except BaseException as e:  # a LaunchError, or Ctrl-C while waiting
        stopped = stop_started(cfg, pids)
        if isinstance(e, LaunchError) and stopped:
            raise LaunchError(f"{e}\n{stopped}", e.node_id) from None
        raise
    scheduled = [f for f in cfg.faults if f.category == "process" or f.kind == "twins"]
    if nodes is None and scheduled and running_pid(cfg, "supervisor") is None:
        cmd = [sys.executable, "-m", "node.cluster.supervisor", "-c", str(cfg.path)]
        pids["supervisor"] = spawn(cfg, "supervisor", cmd)
    return pids


def stop_started(cfg: ClusterConfig, pids: dict[str, int], grace_s: float = 5.0) -> str:
    """Stop the processes one `up` started (nodes, then the broker); say which were stopped."""
    stopped = []
    for name in sorted(pids, key=lambda name: name == "broker"):
        if running_pid(cfg, name) == pids[name]:
            stop_pid(pids[name], grace_s)
            stopped.append(f"{name} (pid {pids[name]})")
        cfg.pid_path(name).unlink(missing_ok=True)
    if not stopped:
        return ""
    return "stopped what this start had started: " + ", ".join(stopped)


def restart(
    cfg: ClusterConfig,
    node_id: str,
    grace_s: float = 5.0,
    timeout_s: float = 30.0,
    log_level: str = "INFO",
) -> tuple[Stopped, int]:
    """Stop one node (SIGTERM, then SIGKILL after `grace_s`), start it again, and return once
    it answers `status`: how it stopped, and its new PID.  No other process is touched."""
    cfg.node(node_id)  # an unknown node is a ConfigError before anything is stopped
    pid = running_pid(cfg, node_id)
    how = "not running"
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
        how = stop_pid(pid, grace_s)
    started = up(cfg, timeout_s, log_level, nodes=[node_id])
    return Stopped(node_id, pid or 0, how), started[node_id]


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


async def wait_healthy(
    cfg: ClusterConfig, timeout_s: float, nodes: Sequence[NodeSpec] | None = None
) -> None:
    """Wait until every one of `nodes` (default: all) answers `status`; a LaunchError with the
    node's log tail if one exits first or is not answering after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    pending = list(cfg.nodes if nodes is None else nodes)
    while pending:
        for node in pending:  # an exit is noticed at once, whichever node it is
            if running_pid(cfg, node.id) is None:
                raise LaunchError(
                    f"{node.id} exited during start-up; the last lines of "
                    f"{cfg.log_path(node.id)}:\n{log_tail(cfg, node.id)}",
                    node.id,
                )
        node = pending[0]
        try:
            async with RpcClient(node.rpc_url, timeout=1.0) as client:
                await client.call("status")
            pending.pop(0)
            continue
        except (RpcUnavailable, RpcError):
            pass
        if time.monotonic() > deadline:
            raise LaunchError(
                f"{node.id} not answering `status` after {timeout_s:.0f}s; the last lines of "
                f"{cfg.log_path(node.id)}:\n{log_tail(cfg, node.id)}",
                node.id,
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
