"""cluster.toml for MQTT: what is accepted, what is refused and how it says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.cluster import broker
from node.cluster.config import ClusterConfig, ConfigError, load_config
from node.cluster.procs import LaunchError

NODES = "".join(f'[[node]]\nid = "n{i}"\nrpc_port = {9100 + i}\n' for i in range(4))


def config(
    tmp_path: Path, mqtt: str, cluster: str = 'transport = "mqtt"', nodes: str = NODES
) -> ClusterConfig:
    path = tmp_path / "cluster.toml"
    path.write_text(f'[cluster]\nname = "m"\n{cluster}\n\n[mqtt]\n{mqtt}\n\n{nodes}')
    return load_config(path)


def test_an_mqtt_cluster_needs_no_peer_ports_and_defaults_to_a_spawned_broker(
    tmp_path: Path,
) -> None:
    cfg = config(tmp_path, "")
    assert cfg.transport == "mqtt" and cfg.mqtt.spawn and cfg.topic_prefix == "tally/m"
    assert cfg.tls_paths("n2") == (
        cfg.data_dir / "tls" / "ca.crt",
        cfg.data_dir / "tls" / "nodes" / "n2.crt",
        cfg.data_dir / "tls" / "nodes" / "n2.key",
    )


def test_an_external_broker_with_per_node_certificates(tmp_path: Path) -> None:
    lines = ['broker = "mqtts://broker.local:8884"', 'ca = "ca.pem"']
    lines += ['cert = "c/{node}.pem"', 'key = "c/{node}.key"']
    mqtt = "\n".join(lines)
    cfg = config(tmp_path, mqtt)
    assert cfg.mqtt.tls
    assert broker.address(cfg) == broker.BrokerAddress("broker.local", 8884, True)
    assert cfg.tls_paths("n1") == (
        tmp_path / "ca.pem",
        tmp_path / "c/n1.pem",
        tmp_path / "c/n1.key",
    )
    plain = config(tmp_path, 'broker = "mqtt://10.0.0.5"\nprefix = "lab/one"')
    assert broker.address(plain) == broker.BrokerAddress("10.0.0.5", 1883, False)
    assert plain.topic_prefix == "lab/one"


@pytest.mark.parametrize(
    ("mqtt", "cluster", "message"),
    [
        ("", 'transport = "udp"', '[cluster] transport = "udp": must be one of "tcp", "mqtt"'),
        ('brokr = "spawn"', 'transport = "mqtt"', '[mqtt] brokr = "spawn": unknown key'),
        ('broker = "tcp://x:1"', 'transport = "mqtt"', '[mqtt] broker = "tcp://x:1": must be'),
        ('broker = "mqtt://x:99999"', 'transport = "mqtt"', '[mqtt] broker = "mqtt://x:99999"'),
        ('broker = "mqtts://x"', 'transport = "mqtt"', "[mqtt] ca: required for tls"),
        ('protocol = "4"', 'transport = "mqtt"', '[mqtt] protocol = "4": must be one of'),
        ("tls = 1", 'transport = "mqtt"', "[mqtt] tls = 1: must be true or false"),
        ("keepalive_s = 0", 'transport = "mqtt"', "[mqtt] keepalive_s = 0: must be >= 1"),
        ('prefix = "a/#"', 'transport = "mqtt"', '[mqtt] prefix = "a/#": must be topic levels'),
        ("anonymous = 1", 'transport = "mqtt"', "[mqtt] anonymous = 1: must be true or false"),
        (
            'anonymous = true\nbroker = "mqtt://x"',
            'transport = "mqtt"',
            '[mqtt] anonymous = true: only for broker = "spawn"',
        ),
        ("anonymous = true\ntls = true", 'transport = "mqtt"', "[mqtt] anonymous = true: cannot"),
        ("", 'transport = "mqtt"\nname = "a/b"', '[cluster] name = "a/b": must be letters'),
    ],
)
def test_bad_mqtt_settings_are_refused_with_a_clear_error(
    tmp_path: Path, mqtt: str, cluster: str, message: str
) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(f"[cluster]\n{cluster}\n\n[mqtt]\n{mqtt}\n\n{NODES}")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_config(path)


def test_a_spawned_broker_is_closed_unless_anonymous_is_said(tmp_path: Path) -> None:
    closed = config(tmp_path, "")
    assert not closed.mqtt.anonymous and broker.per_node_users(closed)
    conf = broker.write_conf(closed, 1883).read_text()
    assert "allow_anonymous false" in conf and "retain_available false" in conf
    assert f"password_file {closed.broker_dir / 'passwd'}" in conf
    acl = (closed.broker_dir / "acl").read_text()
    # n2 reads its inbox and the broadcasts, and writes only as itself.
    n2 = acl[acl.index("user n2\n") :].split("\n\n")[0].splitlines()[1:]
    assert n2 == [
        "topic read tally/m/inbox/n2/+",
        "topic read tally/m/all/+",
        "topic write tally/m/inbox/n0/n2",
        "topic write tally/m/inbox/n1/n2",
        "topic write tally/m/inbox/n3/n2",
        "topic write tally/m/all/n2",
    ]
    mine = broker.credentials(closed, "n2")
    assert mine[0] == "n2" and mine == broker.credentials(closed, "n2")  # kept, not remade
    assert mine[1] != broker.credentials(closed, "n1")[1]
    shared = config(tmp_path, 'username = "u"\npassword = "p"')
    assert broker.credentials(shared, "n2") == ("u", "p") and not broker.per_node_users(shared)
    assert "allow_anonymous false" in broker.write_conf(shared, 1883).read_text()
    assert (shared.broker_dir / "acl").read_text() == "user u\ntopic readwrite tally/m/#\n"
    tls = config(tmp_path, "tls = true")
    assert broker.credentials(tls, "n2") == (None, None)  # the certificate names the user
    assert "acl_file" in broker.write_conf(tls, 1883).read_text()
    opened = config(tmp_path, "anonymous = true")
    assert broker.credentials(opened, "n2") == (None, None)
    conf = broker.write_conf(opened, 1883).read_text()
    assert "allow_anonymous true" in conf and "acl_file" not in conf
    assert "password_file" not in conf


def test_a_tcp_cluster_still_needs_peer_ports(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape('[[node]] #1 port: required with transport = "tcp"')
    ):
        config(tmp_path, "", cluster='transport = "tcp"')


def test_a_missing_mosquitto_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(broker, "SBIN", ())
    cfg = config(tmp_path, "")
    with pytest.raises(LaunchError, match="apt-get install -y mosquitto"):
        broker.start(cfg)


def test_the_spawned_broker_is_not_running_until_tally_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `tally up`"):
        broker.address(config(tmp_path, ""))
