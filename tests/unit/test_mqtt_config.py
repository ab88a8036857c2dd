"""cluster.toml for MQTT: what is accepted, what is refused and how it says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from node.cluster import broker
from node.cluster.config import ConfigError, load_config
from node.cluster.procs import LaunchError

NODES = "".join(f'[[node]]\nid = "n{i}"\nrpc_port = {9100 + i}\n' for i in range(4))


def config(tmp_path: Path, mqtt: str, cluster: str = 'transport = "mqtt"', nodes: str = NODES):
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
