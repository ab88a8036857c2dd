"""Start and stop a cluster's node processes, tracked by PID files in data_dir."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from node.bootstrap import ensure_initialized
from node.config import ClusterConfig, NodeSpec
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError


class LaunchError(Exception):
    """The cluster could not be started; the message says why and what to do."""


@dataclass(frozen=True)
class Stopped:
    node_id: str
    pid: int
    how: str  # "terminated", "killed", "not running"


def running_pid(cfg: ClusterConfig, node_id: str) -> int | None:
    """The PID recorded for `node_id` if that process is alive and is our node.

    `node_id` may also name a helper process: "n3-twin" or "supervisor"."""
    try:
        pid = int(cfg.pid_path(node_id).read_text())
    except (FileNotFoundError, ValueError):
        return None
    cmdline = _cmdline(pid)
    if cmdline is None:
        return None
    # A recycled PID belongs to someone else: only claim our own node process.
    ours = b"node.main" in cmdline or b"node.supervisor" in cmdline
    name = node_id.removesuffix("-twin").encode()
    return pid if ours and (name in cmdline or node_id == "supervisor") else None


def _cmdline(pid: int) -> list[bytes] | None:
    """/proc/PID/cmdline, split.  It reads empty for a zombie, and also for a moment while a
    process just started is still in exec: then it is read again."""
    for _ in range(20):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if cmdline or _state(pid) in ("Z", ""):
            return cmdline.split(b"\0")
        time.sleep(0.005)
    return []


def start_node(
    cfg: ClusterConfig, node: NodeSpec, log_level: str = "INFO", twin: bool = False
) -> int:
    name = f"{node.id}-twin" if twin else node.id
    cmd = [
        sys.executable,
        "-m",
        "node.main",
        "-c",
        str(cfg.path),
        "--node",
        node.id,
        "--log-level",
        log_level,
        *(["--twin"] if twin else []),
    ]
    return spawn(cfg, name, cmd)


def spawn(cfg: ClusterConfig, name: str, cmd: list[str]) -> int:
    """Start a detached process logging to logs/NAME.log, its PID in pids/NAME.pid."""
    cfg.log_path(name).parent.mkdir(parents=True, exist_ok=True)
    cfg.pid_path(name).parent.mkdir(parents=True, exist_ok=True)
    with open(cfg.log_path(name), "ab") as logf:
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the node outlives the CLI and ignores its Ctrl-C
        )
    cfg.pid_path(name).write_text(str(proc.pid))
    return proc.pid


def check_ports_free(cfg: ClusterConfig, nodes: list[NodeSpec]) -> None:
    for node in nodes:
        for port in (node.port, node.rpc_port):
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
    ensure_initialized(cfg)
    to_start = [n for n in cfg.nodes if running_pid(cfg, n.id) is None]
    check_ports_free(cfg, to_start)
    pids = {n.id: start_node(cfg, n, log_level) for n in to_start}
    try:
        asyncio.run(wait_healthy(cfg, timeout_s))
    except LaunchError:
        down(cfg)
        raise
    scheduled = [f for f in cfg.faults if f.category == "process" or f.kind == "twins"]
    if scheduled and running_pid(cfg, "supervisor") is None:
        cmd = [sys.executable, "-m", "node.supervisor", "-c", str(cfg.path)]
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


def log_tail(cfg: ClusterConfig, node_id: str, lines: int = 15) -> str:
    try:
        text = cfg.log_path(node_id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def down(cfg: ClusterConfig, grace_s: float = 5.0) -> list[Stopped]:
    """Stop exactly the processes `up` started (by recorded PID): SIGTERM, then SIGKILL."""
    result = []
    # The supervisor first: it must not restart a node that is being stopped.
    names = ["supervisor", *(f"{n.id}-twin" for n in cfg.nodes), *(n.id for n in cfg.nodes)]
    for name in names:
        pid = running_pid(cfg, name)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)  # a paused process cannot handle SIGTERM
            result.append(Stopped(name, pid, stop_pid(pid, grace_s)))
        cfg.pid_path(name).unlink(missing_ok=True)
    return [r for r in result if not r.node_id.endswith("-twin") or r.how != "not running"]


def stop_pid(pid: int, grace_s: float) -> str:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return "terminated"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.02)
    return "killed"


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (the CLI that ran `up` may still be the parent).
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return _state(pid) not in ("Z", "")


def _state(pid: int) -> str:
    """The process state letter from /proc (R, S, T for stopped, Z for zombie...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return ""
