"""A real Mosquitto for tests: started on a free loopback port, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from node.bench.pbft import free_ports
from node.cluster.broker import find_program
from node.cluster.procs import LaunchError


def need_mosquitto() -> str:
    """Mosquitto's path; skip the test without it, unless CI demands it (it installs it)."""
    try:
        return find_program("mosquitto")
    except LaunchError as e:
        if os.environ.get("TALLY_REQUIRE_MOSQUITTO"):
            pytest.fail(str(e))
        pytest.skip(str(e))


class Broker:
    """One Mosquitto process; `restart` keeps the port."""

    def __init__(self, directory: Path, extra_conf: str = "") -> None:
        self.port = free_ports(1)[0]
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", "set_tcp_nodelay true"]
        lines += ["allow_anonymous true", "persistence false", extra_conf]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [need_mosquitto(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 5
        while not _accepts(self.port):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "mosquitto did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)


@contextmanager
def running_broker(directory: Path, extra_conf: str = "") -> Iterator[Broker]:
    broker = Broker(directory, extra_conf)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
