"""cluster.toml: the description of a local cluster, and where its files live."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from node.faults.spec import FaultError, FaultSpec


class ConfigError(Exception):
    """cluster.toml is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class NodeSpec:
    id: str
    host: str
    port: int
    rpc_port: int
    hash_share: float | None = None  # proof of work, simulator: this miner's share

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.rpc_port}/rpc"


@dataclass(frozen=True)
class PbftSettings:
    batch_size_max: int = 500
    batch_wait_ms: int = 10
    window: int = 8
    partial_in_flight: int = 1
    checkpoint_interval: int = 32
    view_change_timeout_ms: int = 1000
    status_interval_ms: int = 500


@dataclass(frozen=True)
class PowSettings:
    target_block_ms: int = 1000
    retarget_interval: int = 10
    confirmations: int = 6
    initial_difficulty: int = 200_000  # expected hashes per block until the first retarget
    max_block_txs: int = 2000
    tip_interval_ms: int = 500


@dataclass(frozen=True)
class MqttSettings:
    """[mqtt]: the broker and how nodes reach it (transport = "mqtt")."""

    broker: str = "spawn"  # "spawn" (tally up runs Mosquitto), or mqtt://host:port, mqtts://...
    tls: bool = False
    ca: str = ""  # PEM paths, relative to cluster.toml; "{node}" stands for the node id
    cert: str = ""
    key: str = ""
    username: str = ""
    password: str = ""
    prefix: str = ""  # topic prefix; "" means tally/<cluster name>
    protocol: str = "auto"  # MQTT 5 where the broker supports it, else 3.1.1; or "5", "3.1.1"
    keepalive_s: int = 10
    max_age_ms: int = 60_000  # envelopes older than this are refused as stale

    @property
    def spawn(self) -> bool:
        return self.broker == "spawn"


@dataclass(frozen=True)
class ClusterConfig:
    path: Path
    name: str
    consensus: str
    transport: str
    data_dir: Path
    nodes: tuple[NodeSpec, ...]
    accounts: dict[str, int]
    pbft: PbftSettings = field(default_factory=PbftSettings)
    pow: PowSettings = field(default_factory=PowSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    max_frame_bytes: int = 4 << 20
    sqlite_synchronous: str = "FULL"
    faults: tuple[FaultSpec, ...] = ()

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"no node {node_id!r} in {self.path} (nodes: {self.node_ids()})")

    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    # where things live under data_dir
    @property
    def genesis_path(self) -> Path:
        return self.data_dir / "genesis.bin"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin.token"

    def node_key_path(self, node_id: str) -> Path:
        return self.data_dir / "keys" / "nodes" / f"{node_id}.key"

    def account_key_path(self, name: str) -> Path:
        return self.data_dir / "keys" / "accounts" / f"{name}.key"

    def db_path(self, node_id: str) -> Path:
        return self.data_dir / node_id / "chain.sqlite"

    def twin_db_path(self, node_id: str) -> Path:
        return self.data_dir / f"{node_id}-twin" / "chain.sqlite"

    def log_path(self, node_id: str) -> Path:
        return self.data_dir / "logs" / f"{node_id}.log"

    def pid_path(self, node_id: str) -> Path:
        return self.data_dir / "pids" / f"{node_id}.pid"

    @property
    def broker_dir(self) -> Path:
        """The spawned Mosquitto's config, address and password file."""
        return self.data_dir / "broker"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def topic_prefix(self) -> str:
        return self.mqtt.prefix or f"tally/{self.name}"

    def tls_paths(self, node_id: str) -> tuple[Path, Path | None, Path | None]:
        """(CA, client certificate, client key) for `node_id`: as configured, or the ones
        `tally keys` generates for a spawned broker."""

        def path(setting: str, default: Path) -> Path | None:
            if not setting:
                return default if self.mqtt.spawn else None
            return self.path.parent / setting.replace("{node}", node_id)

        ca = path(self.mqtt.ca, self.tls_dir / "ca.crt")
        assert ca is not None  # _parse requires ca for an external TLS broker
        return (
            ca,
            path(self.mqtt.cert, self.tls_dir / "nodes" / f"{node_id}.crt"),
            path(self.mqtt.key, self.tls_dir / "nodes" / f"{node_id}.key"),
        )


def load_config(path: str | Path) -> ClusterConfig:
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no cluster config at {path} (pass one with -c/--config)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    try:
        return _parse(path, raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{path}: {e}") from None


def _parse(path: Path, raw: dict[str, Any]) -> ClusterConfig:
    cluster = raw.get("cluster", {})
    consensus = cluster.get("consensus", "pbft")
    transport = cluster.get("transport", "tcp")
    if consensus not in ("pbft", "pow"):
        raise ValueError(f"consensus {consensus!r} is not supported (supported: pbft, pow)")
    if transport not in ("tcp", "mqtt"):
        raise ValueError(f"transport {transport!r} is not supported (supported: tcp, mqtt)")
    nodes = tuple(
        NodeSpec(
            str(n["id"]),
            str(n.get("host", "127.0.0.1")),
            int(n["port"] if transport == "tcp" else n.get("port", 0)),  # MQTT needs no port
            int(n["rpc_port"]),
            float(n["hash_share"]) if "hash_share" in n else None,
        )
        for n in raw.get("node", [])
    )
    if consensus == "pow" and len(nodes) < 2:
        raise ValueError(f"proof of work needs at least 2 [[node]] entries, got {len(nodes)}")
    if consensus == "pbft" and len(nodes) < 4:
        raise ValueError(
            f"PBFT needs at least 4 [[node]] entries (3f+1 with f>=1), got {len(nodes)}"
        )
    if len({n.id for n in nodes}) != len(nodes):
        raise ValueError("[[node]] ids must be unique")
    ports = [p for n in nodes for p in (n.port, n.rpc_port) if p]
    if len(set(ports)) != len(ports):
        raise ValueError("every node needs its own port and rpc_port")
    accounts = {str(k): int(v) for k, v in raw.get("genesis", {}).get("accounts", {}).items()}
    if any(v < 0 for v in accounts.values()):
        raise ValueError("genesis balances must be non-negative")
    if sum(accounts.values()) > 2**63 - 1:
        raise ValueError("genesis balances must sum to at most 2**63 - 1")
    data_dir = Path(cluster.get("data_dir", f".tally/{cluster.get('name', 'local')}"))
    pbft, pow_ = raw.get("pbft", {}), raw.get("pow", {})
    name = str(cluster.get("name", "local"))
    mqtt = _mqtt(raw.get("mqtt", {}), name, [n.id for n in nodes]) if transport == "mqtt" else None
    return ClusterConfig(
        path=path,
        name=name,
        consensus=consensus,
        transport=transport,
        data_dir=(path.parent / data_dir).resolve(),
        nodes=nodes,
        accounts=accounts,
        pbft=PbftSettings(**{k: int(v) for k, v in pbft.items() if _known(k, PbftSettings)}),
        pow=PowSettings(**{k: int(v) for k, v in pow_.items() if _known(k, PowSettings, "pow")}),
        mqtt=mqtt or MqttSettings(),
        max_frame_bytes=int(cluster.get("max_frame_bytes", 4 << 20)),
        sqlite_synchronous=str(cluster.get("sqlite_synchronous", "FULL")).upper(),
        faults=_faults(raw.get("fault", []), {n.id for n in nodes}),
    )


TOPIC_SAFE = re.compile(r"[A-Za-z0-9_.-]+")


def _mqtt(table: dict[str, Any], name: str, ids: list[str]) -> MqttSettings:
    for key in table:
        _known(key, MqttSettings, "mqtt")
    settings = MqttSettings(**table)
    for field_name, kind in (("tls", bool), ("keepalive_s", int), ("max_age_ms", int)):
        if type(getattr(settings, field_name)) is not kind:
            raise ValueError(f"[mqtt] {field_name} must be a {kind.__name__}")
    broker = settings.broker
    if not (settings.spawn or broker.startswith(("mqtt://", "mqtts://"))):
        raise ValueError(f'[mqtt] broker must be "spawn" or mqtt://host:port, got {broker!r}')
    if broker.startswith("mqtts://"):
        settings = replace(settings, tls=True)
    if settings.tls and not settings.spawn and not settings.ca:
        raise ValueError("[mqtt] tls with an external broker needs ca (the broker's CA, PEM)")
    if settings.protocol not in ("auto", "5", "3.1.1"):
        raise ValueError(
            f'[mqtt] protocol must be "auto", "5" or "3.1.1", got {settings.protocol!r}'
        )
    for what in [name, *ids]:
        if not TOPIC_SAFE.fullmatch(what):
            raise ValueError(
                f"{what!r} cannot be part of an MQTT topic: use letters, digits, '_', '.', '-'"
            )
    return settings


def _faults(entries: list[dict[str, Any]], ids: set[str]) -> tuple[FaultSpec, ...]:
    faults = []
    for i, entry in enumerate(entries):
        try:
            spec = FaultSpec.from_dict(entry)
        except FaultError as e:
            raise ValueError(f"[[fault]] #{i + 1}: {e}") from None
        if spec.node != "*" and spec.node not in ids:
            raise ValueError(f"[[fault]] #{i + 1}: no node {spec.node!r}")
        faults.append(replace(spec, id=spec.id or f"toml-{i + 1}"))
    return tuple(faults)


def _known(key: str, settings: type, table: str = "pbft") -> bool:
    fields = settings.__dataclass_fields__  # type: ignore[attr-defined]
    if key not in fields:
        raise ValueError(f"unknown [{table}] setting {key!r} (known: {', '.join(fields)})")
    return True


def local_cluster_toml(
    name: str,
    ports: list[int],
    accounts: dict[str, int],
    pbft: dict[str, int] | None = None,
    pow: dict[str, int] | None = None,
    mqtt: dict[str, Any] | None = None,
) -> str:
    """A cluster.toml for len(ports) // 2 nodes on loopback (used by bench and tests); with
    `pow` settings, a proof-of-work cluster; with `mqtt` settings, over MQTT."""
    consensus = "pow" if pow is not None else "pbft"
    lines = ["[cluster]", f'name = "{name}"', f'consensus = "{consensus}"', 'data_dir = "data"']
    if mqtt is not None:
        lines += ['transport = "mqtt"', "", "[mqtt]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in mqtt.items()]
    lines += ["", f"[{consensus}]"]
    lines += [f"{k} = {v}" for k, v in ((pow if pow is not None else pbft) or {}).items()] + [""]
    for i in range(len(ports) // 2):
        lines += [
            "[[node]]",
            f'id = "n{i}"',
            'host = "127.0.0.1"',
            f"port = {ports[2 * i]}",
            f"rpc_port = {ports[2 * i + 1]}",
            "",
        ]
    balances = ", ".join(f"{k} = {v}" for k, v in accounts.items())
    lines += ["[genesis]", f"accounts = {{ {balances} }}", ""]
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)
