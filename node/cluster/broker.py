"""The cluster's MQTT broker.  With [mqtt] broker = "spawn", `tally up` starts a Mosquitto on a
free loopback port (config, port, password and ACL files in data_dir/broker; TLS material from
`tally keys` in data_dir/tls) and `tally down` stops it.  Otherwise [mqtt] broker names one.

Who may connect to a spawned broker, and what each client may do:

    default          one user per node (its id), a random password kept 0600 in
                     data_dir/broker/credentials/<node>.password; ACL: own topics only
    tls = true       a client certificate of the cluster's CA, its name the user; same ACL
    username         that one user and password for every node; ACL: the cluster's topics
    anonymous = true anyone, anything (explicitly open)

The ACL follows the topics of node/transport/mqtt.py, which carry the sender: a node reads
P/inbox/<itself>/+ and P/all/+, and writes P/inbox/<peer>/<itself> and P/all/<itself>.  So no
node can publish as another, nor read another's inbox.  Retained messages are disabled
(`retain_available false`: a client that sends one is disconnected), and nodes drop any
retained message they are handed anyway."""

from __future__ import annotations

import os
import pwd
import secrets
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


def password_path(cfg: ClusterConfig, node_id: str) -> Path:
    return cfg.broker_dir / "credentials" / f"{node_id}.password"


def per_node_users(cfg: ClusterConfig) -> bool:
    """Whether the spawned broker gives each node its own user and password."""
    m = cfg.mqtt
    return m.spawn and not (m.tls or m.username or m.anonymous)


def credentials(cfg: ClusterConfig, node_id: str) -> tuple[str | None, str | None]:
    """The user name and password `node_id` connects with (None, None: none)."""
    m = cfg.mqtt
    if m.username:
        return m.username, m.password or None
    if not per_node_users(cfg):
        return None, None  # anonymous, an external broker without, or a TLS certificate
    try:
        return node_id, password_path(cfg, node_id).read_text().strip()
    except FileNotFoundError:
        raise ConfigError(
            f"no broker password for {node_id!r} in {cfg.broker_dir}: run `tally up`"
        ) from None


def ensure_credentials(cfg: ClusterConfig) -> dict[str, str]:
    """Each node's password, made (random, 0600) where missing."""
    passwords = {}
    for n in cfg.nodes:
        path = password_path(cfg, n.id)
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
        passwords[n.id] = path.read_text().strip()
    return passwords


def acl(cfg: ClusterConfig) -> str:
    """Mosquitto's ACL for the cluster's users; see the module docstring."""
    prefix = cfg.topic_prefix
    if cfg.mqtt.username:
        return f"user {cfg.mqtt.username}\ntopic readwrite {prefix}/#\n"
    ids = cfg.node_ids()
    lines = []
    for me in ids:
        lines += [f"user {me}", f"topic read {prefix}/inbox/{me}/+", f"topic read {prefix}/all/+"]
        lines += [f"topic write {prefix}/inbox/{to}/{me}" for to in ids if to != me]
        lines += [f"topic write {prefix}/all/{me}", ""]
    return "\n".join(lines)


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
    """Mosquitto's config: loopback only, no persistence, no retained messages, anonymous
    clients only with anonymous = true, an ACL otherwise, packets capped at the largest
    envelope."""
    directory = cfg.broker_dir
    directory.mkdir(parents=True, exist_ok=True)
    m = cfg.mqtt
    lines = [
        "# Written by `tally up` at every start of the broker: edit cluster.toml instead.",
        f"listener {port} 127.0.0.1",
        "set_tcp_nodelay true",  # small consensus messages must not wait for Nagle
        f"allow_anonymous {'true' if m.anonymous else 'false'}",
        "persistence false",
        "retain_available false",
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
        lines.append(f"password_file {_password_file(cfg, {m.username: m.password})}")
    elif per_node_users(cfg):
        lines.append(f"password_file {_password_file(cfg, ensure_credentials(cfg))}")
    if not m.anonymous:
        acl_file = directory / "acl"
        acl_file.write_text(acl(cfg))
        lines.append(f"acl_file {acl_file}")
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


def _password_file(cfg: ClusterConfig, users: dict[str, str]) -> Path:
    """Mosquitto's password file for `users` (name -> password), hashed by mosquitto_passwd."""
    path = cfg.broker_dir / "passwd"
    path.unlink(missing_ok=True)
    tool = find_program("mosquitto_passwd")
    for i, (user, password) in enumerate(users.items()):
        cmd = [tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password]
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
