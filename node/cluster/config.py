"""cluster.toml: the description of a local cluster, and where its files live.

Each table has one typed schema with its defaults and rules: `[cluster]` is ClusterSection,
`[[node]]` NodeSpec, `[mqtt]` MqttSettings, `[rpc]` RpcSettings, and `[pbft]` and `[pow]` are
the consensus package's own PbftParams and PowParams.  `load_config` checks every value before
anything uses it; a broken rule is one line, `cluster.toml: [pbft] window = 0: must be >= 1`.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from consensus.params import ParamError, check, rule, show
from consensus.pbft.config import PbftParams
from consensus.pow.config import PowParams
from node.faults.spec import FaultError, FaultSpec

SAFE_NAME = r"[A-Za-z0-9_.-]+"  # node ids and names: file names and MQTT topic levels
SAFE_DOC = "letters, digits, '_', '.', '-'"
NAME_RULE = rule(pattern=SAFE_NAME, pattern_doc=SAFE_DOC)
RESERVED_IDS = ("broker", "supervisor")  # data_dir/pids/<name>.pid of the other processes
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class ConfigError(Exception):
    """cluster.toml is missing, unreadable or inconsistent (`tally` exits with 2)."""


class SchemaError(ConfigError):
    """One value breaks a rule of its section: `file: [section] key = value: rule`."""

    def __init__(
        self, file: str, section: str, key: str, rule: str, value: object = MISSING
    ) -> None:
        self.file, self.section, self.key, self.rule, self.value = file, section, key, rule, value
        where = " ".join(filter(None, (section, key)))
        shown = "" if value is MISSING else f" = {show(value)}"
        super().__init__(" ".join(f"{file}: {where}{shown}: {rule}".split()))  # one line


@dataclass(frozen=True, kw_only=True)
class ClusterSection:
    """[cluster]"""

    name: str = field(default="local", metadata=NAME_RULE)
    consensus: str = field(default="pbft", metadata=rule(choices=("pbft", "pow")))
    transport: str = field(default="tcp", metadata=rule(choices=("tcp", "mqtt")))
    data_dir: str = ""  # relative to cluster.toml; "" means .tally/<name>
    max_frame_bytes: int = field(default=4 << 20, metadata=rule(min=1024))
    sqlite_synchronous: str = field(
        default="FULL", metadata=rule(choices=("OFF", "NORMAL", "FULL", "EXTRA"))
    )
    # a store that fails its check at start: "refuse" to start, or "rebuild" (move it aside
    # and fetch the chain from peers); see ledger.store.StoreDamaged
    damaged_store: str = field(default="refuse", metadata=rule(choices=("refuse", "rebuild")))

    def __post_init__(self) -> None:
        check(self, ClusterSection)


@dataclass(frozen=True, kw_only=True)
class NodeSpec:
    """[[node]]: one member."""

    id: str = field(metadata=NAME_RULE)
    host: str = field(default="127.0.0.1", metadata=rule(pattern=r"\S+", pattern_doc="a host"))
    port: int = field(default=0, metadata=rule(min=0, max=65535))  # 0: none (MQTT)
    rpc_port: int = field(metadata=rule(min=1, max=65535))
    hash_share: float | None = field(default=None, metadata=rule(min=0, max=1))  # PoW, sim

    def __post_init__(self) -> None:
        check(self, NodeSpec)

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.rpc_port}/rpc"


TOPIC_RULE = rule(
    pattern=r"([^/+#\s$][^/+#\s]*(/[^/+#\s]+)*)?", pattern_doc="topic levels without + # or spaces"
)


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """[mqtt]: the broker and how nodes reach it (transport = "mqtt")."""

    broker: str = "spawn"  # "spawn" (tally up runs Mosquitto), or mqtt://host:port, mqtts://...
    tls: bool = False
    ca: str = ""  # PEM paths, relative to cluster.toml; "{node}" stands for the node id
    cert: str = ""
    key: str = ""
    username: str = ""
    password: str = ""
    # spawn only: let clients in without credentials (otherwise one password per node)
    anonymous: bool = False
    prefix: str = field(default="", metadata=TOPIC_RULE)  # "" means tally/<cluster name>
    # MQTT 5 where the broker supports it, else 3.1.1; or "5", "3.1.1"
    protocol: str = field(default="auto", metadata=rule(choices=("auto", "5", "3.1.1")))
    keepalive_s: int = field(default=10, metadata=rule(min=1))
    max_age_ms: int = field(default=60_000, metadata=rule(min=1))  # older envelopes: stale

    def __post_init__(self) -> None:
        check(self, MqttSettings)

    @property
    def spawn(self) -> bool:
        return self.broker == "spawn"


@dataclass(frozen=True, kw_only=True)
class RpcSettings:
    """[rpc]: limits of each node's JSON-RPC server."""

    # open connections at once; more are answered 503 and closed (kept below the fd limit)
    max_connections: int = field(default=256, metadata=rule(min=1))
    # a connection that sends no complete request (or body) for this long is closed
    idle_timeout_s: float = field(default=15.0, metadata=rule(min=0.1))
    max_batch: int = field(default=1000, metadata=rule(min=1))  # calls in one batch
    # events a subscriber may fall behind by before it is told `overflow` and closed
    subscriber_queue: int = field(default=10_000, metadata=rule(min=1))

    def __post_init__(self) -> None:
        check(self, RpcSettings)


@dataclass(frozen=True)
class ClusterConfig:
    path: Path
    name: str
    consensus: str
    transport: str
    data_dir: Path
    nodes: tuple[NodeSpec, ...]
    accounts: dict[str, int]
    max_frame_bytes: int
    sqlite_synchronous: str
    damaged_store: str
    pbft: PbftParams = field(default_factory=PbftParams)
    pow: PowParams = field(default_factory=PowParams)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    rpc: RpcSettings = field(default_factory=RpcSettings)
    faults: tuple[FaultSpec, ...] = ()

    def node(self, node_id: str) -> NodeSpec:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise ConfigError(f"no node {node_id!r} in {self.path} (nodes: {self.node_ids()})")

    def node_ids(self) -> list[str]:
        return [n.id for n in self.nodes]

    def rpc_members(self, node_id: str | None = None) -> list[tuple[str, str]]:
        """(id, RPC URL) of the node named, or of every member in order: whom the CLI asks
        (node/rpc/failover.py tries them until one answers)."""
        nodes = [self.node(node_id)] if node_id else self.nodes
        return [(n.id, n.rpc_url) for n in nodes]

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
    """Read and check the whole file; any broken rule is a one-line ConfigError."""
    shown = str(path)
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no cluster config at {path} (pass one with -c/--config)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{shown}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(" ".join(f"{shown}: invalid TOML: {e}".split())) from None
    return _parse(path, shown, raw)


# the tables of cluster.toml, as the README lists them
SECTIONS = ("cluster", "pbft", "pow", "mqtt", "rpc", "node", "genesis", "fault")
S = TypeVar("S")


def _parse(path: Path, file: str, raw: dict[str, Any]) -> ClusterConfig:
    for key in raw:
        if key not in SECTIONS:
            known = ", ".join(f"[[{s}]]" if s in ("node", "fault") else f"[{s}]" for s in SECTIONS)
            raise SchemaError(file, "", f"[{key}]", f"unknown table (known: {known})")
    table = dict(_table(file, "cluster", raw))
    if isinstance(sync := table.get("sqlite_synchronous"), str):
        table["sqlite_synchronous"] = sync.upper()
    cluster = _section(file, "[cluster]", table, ClusterSection)
    nodes = _nodes(file, raw.get("node", []), cluster)
    pbft = _section(file, "[pbft]", _table(file, "pbft", raw), PbftParams)
    pow_ = _section(file, "[pow]", _table(file, "pow", raw), PowParams)
    mqtt = _mqtt(file, _table(file, "mqtt", raw))
    data_dir = Path(cluster.data_dir or f".tally/{cluster.name}")
    return ClusterConfig(
        path=path,
        name=cluster.name,
        consensus=cluster.consensus,
        transport=cluster.transport,
        data_dir=(path.parent / data_dir).resolve(),
        nodes=nodes,
        accounts=_accounts(file, _table(file, "genesis", raw)),
        max_frame_bytes=cluster.max_frame_bytes,
        sqlite_synchronous=cluster.sqlite_synchronous,
        damaged_store=cluster.damaged_store,
        pbft=pbft,
        pow=pow_,
        mqtt=mqtt,
        rpc=_section(file, "[rpc]", _table(file, "rpc", raw), RpcSettings),
        faults=_faults(file, raw.get("fault", []), {n.id for n in nodes}),
    )


def _table(file: str, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise SchemaError(file, "", name, f"must be a table ([{name}])", table)
    return table


def _section(file: str, section: str, table: dict[str, Any], schema: type[S]) -> S:
    """`table` read into the dataclass `schema`: no unknown key, no required key missing,
    every value of its type and within its rules."""
    names = [f.name for f in fields(schema)]  # type: ignore[arg-type]
    for key, value in table.items():
        if key not in names:
            raise SchemaError(file, section, key, f"unknown key (known: {', '.join(names)})", value)
    for f in fields(schema):  # type: ignore[arg-type]
        if f.default is MISSING and f.default_factory is MISSING and f.name not in table:
            raise SchemaError(file, section, f.name, "required")
    try:
        return schema(**table)
    except ParamError as e:
        raise SchemaError(file, section, e.key, e.rule, e.value) from None


def _nodes(file: str, entries: Any, cluster: ClusterSection) -> tuple[NodeSpec, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SchemaError(file, "", "node", "must be an array of tables ([[node]])", entries)
    nodes: list[NodeSpec] = []
    tcp = cluster.transport == "tcp"
    for i, entry in enumerate(entries, 1):
        section = f"[[node]] #{i}"
        node = _section(file, section, entry, NodeSpec)
        if tcp and "port" not in entry:
            raise SchemaError(file, section, "port", 'required with transport = "tcp"')
        if tcp and node.port < 1:
            raise SchemaError(file, section, "port", 'must be >= 1 with transport = "tcp"', 0)
        if node.id in RESERVED_IDS or node.id.endswith("-twin"):
            rule = f"is reserved ({', '.join(RESERVED_IDS)} and *-twin name other processes)"
            raise SchemaError(file, section, "id", rule, node.id)
        for j, other in enumerate(nodes, 1):
            if other.id == node.id:
                raise SchemaError(file, section, "id", f"already used by [[node]] #{j}", node.id)
            for key in ("port", "rpc_port"):
                _distinct_ports(file, section, key, node, other, j)
        if node.port and node.port == node.rpc_port:
            raise SchemaError(file, section, "rpc_port", "must differ from port", node.port)
        nodes.append(node)
    need = {"pbft": 4, "pow": 2}[cluster.consensus]
    if len(nodes) < need:
        why = " (n = 3f+1 with f >= 1)" if cluster.consensus == "pbft" else ""
        rule = f"needs at least {need} [[node]] entries{why}, got {len(nodes)}"
        raise SchemaError(file, "[cluster]", "consensus", rule, cluster.consensus)
    return tuple(nodes)


def _distinct_ports(
    file: str, section: str, key: str, node: NodeSpec, other: NodeSpec, j: int
) -> None:
    port = getattr(node, key)
    hosts = {node.host, other.host}
    if not port or (len(hosts) > 1 and not hosts & set(WILDCARD_HOSTS)):
        return
    for other_key in ("port", "rpc_port"):
        if getattr(other, other_key) == port:
            rule = f"already the {other_key} of [[node]] #{j} ({other.id}) on the same host"
            raise SchemaError(file, section, key, rule, port)


def _mqtt(file: str, table: dict[str, Any]) -> MqttSettings:
    settings = _section(file, "[mqtt]", table, MqttSettings)
    broker = settings.broker
    if not settings.spawn:
        rule = 'must be "spawn", mqtt://host[:port] or mqtts://host[:port]'
        try:
            url = urlsplit(broker)
            ok = url.scheme in ("mqtt", "mqtts") and bool(url.hostname)
            url.port  # noqa: B018 - raises ValueError for a port that is not a port
        except ValueError:
            ok = False
        if not ok:
            raise SchemaError(file, "[mqtt]", "broker", rule, broker)
        if url.scheme == "mqtts":
            settings = replace(settings, tls=True)
    if settings.tls and not settings.spawn and not settings.ca:
        rule = "required for tls with an external broker (the broker's CA, PEM)"
        raise SchemaError(file, "[mqtt]", "ca", rule)
    if settings.anonymous and not settings.spawn:
        rule = 'only for broker = "spawn" (an external broker has its own settings)'
        raise SchemaError(file, "[mqtt]", "anonymous", rule, True)
    if settings.anonymous and settings.tls:
        rule = "cannot be true with tls (TLS admits only clients with a cluster certificate)"
        raise SchemaError(file, "[mqtt]", "anonymous", rule, True)
    return settings


def _accounts(file: str, genesis: dict[str, Any]) -> dict[str, int]:
    for key, value in genesis.items():
        if key != "accounts":
            raise SchemaError(file, "[genesis]", key, "unknown key (known: accounts)", value)
    accounts = genesis.get("accounts", {})
    if not isinstance(accounts, dict):
        raise SchemaError(file, "[genesis]", "accounts", "must be a table of balances", accounts)
    for name, balance in accounts.items():
        safe = re.fullmatch(SAFE_NAME, name)
        key = f"accounts.{name}" if safe else f"accounts.{show(name)}"
        if not safe:
            raise SchemaError(file, "[genesis]", key, f"account names must be {SAFE_DOC}")
        if type(balance) is not int:
            raise SchemaError(file, "[genesis]", key, "must be an integer", balance)
        if balance < 0:
            raise SchemaError(file, "[genesis]", key, "must be >= 0", balance)
    if sum(accounts.values()) > 2**63 - 1:
        raise SchemaError(file, "[genesis]", "accounts", "balances must sum to <= 2**63 - 1")
    return dict(accounts)


def _faults(file: str, entries: Any, ids: set[str]) -> tuple[FaultSpec, ...]:
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SchemaError(file, "", "fault", "must be an array of tables ([[fault]])", entries)
    faults = []
    for i, entry in enumerate(entries, 1):
        section = f"[[fault]] #{i}"
        try:
            spec = FaultSpec.from_dict(entry)
        except FaultError as e:
            raise SchemaError(file, section, "", str(e)) from None
        if spec.node != "*" and spec.node not in ids:
            raise SchemaError(file, section, "node", "must be a [[node]] id or *", spec.node)
        faults.append(replace(spec, id=spec.id or f"toml-{i}"))
    return tuple(faults)


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
