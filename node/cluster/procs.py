"""Process bookkeeping for a cluster: detached processes tracked by PID files in data_dir."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from node.cluster.config import ClusterConfig


class LaunchError(Exception):
    """The cluster could not be started; the message says why and what to do.  `node_id`
    names the node that failed, when one did."""

    def __init__(self, message: str, node_id: str | None = None) -> None:
        super().__init__(message)
        self.node_id = node_id


def running_pid(cfg: ClusterConfig, node_id: str) -> int | None:
    """The PID recorded for `node_id` if that process is alive and is our node.

    `node_id` may also name a helper process: "n3-twin", "supervisor" or "broker"."""
    try:
        pid = int(cfg.pid_path(node_id).read_text())
    except (FileNotFoundError, ValueError):
        return None
    cmdline = _cmdline(pid)
    if cmdline is None:
        return None
    # A recycled PID belongs to someone else: only claim our own process.
    if node_id == "broker":
        return pid if cmdline and cmdline[0].endswith(b"mosquitto") else None
    ours = b"node.process.main" in cmdline or b"node.cluster.supervisor" in cmdline
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


def log_tail(cfg: ClusterConfig, node_id: str, lines: int = 15) -> str:
    """The last `lines` lines of logs/NODE_ID.log, indented."""
    try:
        text = cfg.log_path(node_id).read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


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
