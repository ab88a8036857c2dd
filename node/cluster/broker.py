"""The cluster's MQTT broker.  With [mqtt] broker = "spawn", `tally up` starts a Mosquitto on a
free loopback port (config, port and password file in data_dir/broker; TLS material from
`tally keys` in data_dir/tls) and `tally down` stops it.  Otherwise [mqtt] broker names one."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from node.cluster.config import ClusterConfig, ConfigError
from node.cluster.procs import LaunchError, log_tail, running_pid, spawn, stop_pid
from node.cluster.tlscerts import ensure_tls
from node.transport.envelope import OVERHEAD

INSTALL_HINT = (
    'Mosquitto is needed for [mqtt] broker = "spawn" but {what} was not found. Install it '
    "(Debian/Ubuntu: sudo apt-get install -y mosquitto; macOS: brew install mosquitto), or set "
    "[mqtt] broker to the URL of a running broker (mqtt://host:port)."
)
SBIN = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")  # often not on a user's PATH
START_TIMEOUT = 5.0


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def address(cfg: ClusterConfig) -> BrokerAddress:
    """Where the nodes of `cfg` connect."""
    if not cfg.mqtt.spawn:
        url = urlsplit(cfg.mqtt.broker)
        tls = cfg.mqtt.tls or url.scheme == "mqtts"
        return BrokerAddress(url.hostname or "127.0.0.1", url.port or (8883 if tls else 1883), tls)
    try:
        port = int((cfg.broker_dir / "port").read_text())
    except (FileNotFoundError, ValueError):
        raise ConfigError(
            f"the spawned broker of {cfg.name!r} has not been started: run `tally up`"
        ) from None
    return BrokerAddress("127.0.0.1", port, cfg.mqtt.tls)


def find_program(name: str) -> str:
    found = shutil.which(name)
    for directory in SBIN:
        if found is None and os.access(f"{directory}/{name}", os.X_OK):
            found = f"{directory}/{name}"
    if found is None:
        raise LaunchError(INSTALL_HINT.format(what=f"`{name}`"))
    return found


def start(cfg: ClusterConfig) -> int | None:
    """Start the spawned broker unless it runs; return its PID (None for an external one)."""
    if not cfg.mqtt.spawn:
        return None
    pid = running_pid(cfg, "broker")
    if pid is not None:
        return pid
    binary = find_program("mosquitto")
    if cfg.mqtt.tls:
        ensure_tls(cfg)
    port = _pick_port(cfg)
    conf = write_conf(cfg, port)
    pid = spawn(cfg, "broker", [binary, "-c", str(conf)])
    deadline = time.monotonic() + START_TIMEOUT
    while not _accepts(port):
        if running_pid(cfg, "broker") is None or time.monotonic() > deadline:
            raise LaunchError(f"Mosquitto did not start on port {port}:\n{log_tail(cfg, 'broker')}")
        time.sleep(0.02)
    (cfg.broker_dir / "port").write_text(str(port))
    return pid


def stop(cfg: ClusterConfig, grace_s: float = 5.0) -> tuple[int, str] | None:
    pid = running_pid(cfg, "broker")
    cfg.pid_path("broker").unlink(missing_ok=True)
    return None if pid is None else (pid, stop_pid(pid, grace_s))


def write_conf(cfg: ClusterConfig, port: int) -> Path:
    """Mosquitto's config: loopback only, no persistence, anonymous only without TLS or a
    password, packets capped at the largest envelope."""
    directory = cfg.broker_dir
    directory.mkdir(parents=True, exist_ok=True)
    m = cfg.mqtt
    lines = [
        "# Written by `tally up` at every start of the broker: edit cluster.toml instead.",
        f"listener {port} 127.0.0.1",
        "set_tcp_nodelay true",  # small consensus messages must not wait for Nagle
        f"allow_anonymous {'false' if m.tls or m.username else 'true'}",
        "persistence false",
        f"max_packet_size {cfg.max_frame_bytes + 2 * OVERHEAD}",
        "max_inflight_messages 100",
        "max_queued_messages 20000",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        # As root, Mosquitto would switch to a `mosquitto` user that cannot read our keys.
        f"user {pwd.getpwuid(os.getuid()).pw_name}",
    ]
    if m.username:
        lines.append(f"password_file {_password_file(cfg)}")
    if m.tls:
        tls = cfg.tls_dir
        lines += [
            f"cafile {tls / 'ca.crt'}",
            f"certfile {tls / 'broker.crt'}",
            f"keyfile {tls / 'broker.key'}",
            "require_certificate true",
            "use_identity_as_username true",
            "tls_version tlsv1.2",
        ]
    conf = directory / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _password_file(cfg: ClusterConfig) -> Path:
    path = cfg.broker_dir / "passwd"
    path.unlink(missing_ok=True)
    tool = find_program("mosquitto_passwd")
    cmd = [tool, "-c", "-b", str(path), cfg.mqtt.username, cfg.mqtt.password]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LaunchError(f"mosquitto_passwd failed: {done.stderr.strip() or done.stdout}")
    path.chmod(0o600)
    return path


def _pick_port(cfg: ClusterConfig) -> int:
    """The port of the last start if it is still free (nodes that keep running find the
    broker again), else a free one."""
    try:
        port = int((cfg.broker_dir / "port").read_text())
    except (FileNotFoundError, ValueError):
        port = 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0
