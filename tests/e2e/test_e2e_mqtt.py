"""End to end over MQTT: real node processes talking through a real, spawned Mosquitto.

The shared end-to-end modules (commit, view change, catch-up, a contract) run over MQTT by
parametrisation; this module holds what only a broker can do: go away and come back, and
let a stranger publish on the cluster's topics.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import aiomqtt
import pytest

from ledger.crypto import KeyPair
from ledger.tx import transfer
from node.cluster import broker, launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient
from node.transport.envelope import BROADCAST, Envelope, Sealer
from tests.helpers.livecluster import live_cluster
from tests.helpers.wait import wait_for

ACCOUNTS = {"alice": 1_000_000, "bob": 1_000_000}
PBFT = {"batch_wait_ms": 5, "status_interval_ms": 250, "view_change_timeout_ms": 1000}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("mqtt")
    with live_cluster(directory, "mqtt", ACCOUNTS, PBFT, transport="mqtt") as cfg:
        yield cfg
    assert launcher.running_pid(cfg, "broker") is None, "tally down leaves no broker behind"
    # Every node left the broker with a DISCONNECT, not by dropping the connection.
    ending = re.compile(r"Client tally-mqtt-(n\d)-\w+ (disconnected|closed its connection)")
    last = {m[1]: m[2] for m in ending.finditer(cfg.log_path("broker").read_text())}
    assert last == dict.fromkeys(cfg.node_ids(), "disconnected")


async def call(cfg: ClusterConfig, node: str, method: str, **params: Any) -> Any:
    async with RpcClient(cfg.node(node).rpc_url, timeout=60) as client:
        return await client.call(method, **params)


async def transfers(cfg: ClusterConfig, count: int, amount: int = 1) -> list[str]:
    """Submit `count` transfers alice -> bob (to rotating nodes); their tx ids."""
    alice, bob = account_key(cfg, "alice"), account_key(cfg, "bob")
    nonce = (await call(cfg, "n1", "get_account", address=alice.address.hex()))["next_nonce"]
    chain = load_genesis(cfg).chain_id
    ids = []
    for i in range(count):
        tx = transfer(alice, chain, nonce + i, bob.address, amount)
        node = cfg.nodes[i % len(cfg.nodes)].id
        await call(cfg, node, "submit_tx", tx=tx.encode().hex())
        ids.append(tx.tx_id.hex())
    return ids


async def committed_everywhere(cfg: ClusterConfig, ids: list[str]) -> dict[str, int]:
    """Wait until every node has every tx; return tx id -> height (the same on all nodes)."""

    async def all_there() -> dict[str, int] | None:
        heights: dict[str, int] = {}
        for node in cfg.node_ids():
            for tx_id in ids:
                try:
                    got = await call(cfg, node, "get_tx", tx_id=tx_id)
                except Exception:
                    return None
                if "height" not in got:  # still pending
                    return None
                if heights.setdefault(tx_id, got["height"]) != got["height"]:
                    raise AssertionError(f"{tx_id} at two heights")
        return heights

    result: dict[str, int] = await wait_for(all_there, f"{len(ids)} txs on every node", 60)
    return result


def check(cfg: ClusterConfig) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), "check", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


async def test_the_spawned_broker_lets_no_stranger_in(cluster: ClusterConfig) -> None:
    cfg = cluster
    where = broker.address(cfg)
    with pytest.raises(aiomqtt.MqttError):  # no user name: refused at CONNECT
        async with aiomqtt.Client(where.host, where.port, timeout=5):
            pass
    with pytest.raises(aiomqtt.MqttError):  # a member's name, not its password
        async with aiomqtt.Client(where.host, where.port, username="n1", password="n0", timeout=5):
            pass
    assert broker.credentials(cfg, "n1")[0] == "n1"


async def test_a_rogue_client_changes_nothing_and_is_counted(cluster: ClusterConfig) -> None:
    """The rogue holds n1's broker password (a member's machine, compromised): the broker lets
    it read only what n1 may read and publish only as n1; the signatures do the rest."""
    cfg = cluster
    where = broker.address(cfg)
    prefix = cfg.topic_prefix
    user, password = broker.credentials(cfg, "n1")
    async with aiomqtt.Client(where.host, where.port, username=user, password=password) as rogue:
        await rogue.subscribe(f"{prefix}/#", qos=1)
        await committed_everywhere(cfg, await transfers(cfg, 3))
        messages = [m async for m in _take(rogue, 5)]
        # Broadcasts and n1's inbox only: nobody else's inbox, though subscribed to everything.
        assert all(
            str(m.topic).startswith((f"{prefix}/all/", f"{prefix}/inbox/n1/")) for m in messages
        )
        captured = [m.payload for m in messages]
        before = {n: await call(cfg, n, "status") for n in cfg.node_ids()}
        members = cfg.node_ids()
        mine = f"{prefix}/all/n1"  # the one broadcast topic n1's password may publish to
        for payload in captured:
            assert isinstance(payload, bytes)
            env = Envelope.decode(payload)
            await rogue.publish(mine, payload, qos=1)  # replayed to everyone
            forged = replace(env, seq=env.seq + 10**6, frames=(b"\x13forged",), to=BROADCAST)
            await rogue.publish(mine, forged.encode(), qos=1)
        chain = load_genesis(cfg).chain_id
        for node in members:
            await rogue.publish(mine, os.urandom(64), qos=1)
            sender = next(m for m in members if m != node)  # an impostor of another member
            impostor = Sealer(chain, sender, KeyPair(b"\x01" * 32), 1)
            junk = impostor.seal(node, [b"\x13junk"], int(time.time() * 1000))
            await rogue.publish(mine, junk, qos=1)

    async def counted() -> dict[str, dict[str, int]] | None:
        errors = {n: (await call(cfg, n, "status"))["errors"] for n in members}
        ok = all(
            e.get("transport_garbage", 0) >= 1 and e.get("transport_forged", 0) >= 1
            for e in errors.values()
        )
        return errors if ok else None

    errors = await wait_for(counted, "the rogue's messages counted on every node", 20)
    assert sum(e.get("transport_replayed", 0) for e in errors.values()) >= len(captured)

    # Nothing else changed: the same chain, and it still commits.
    ids = await transfers(cfg, 2)
    await committed_everywhere(cfg, ids)
    report = check(cfg)
    assert not report["divergence"]
    bob = account_key(cfg, "bob").address.hex()
    for node in members:
        assert (await call(cfg, node, "status"))["height"] >= before[node]["height"]
        assert (await call(cfg, node, "get_account", address=bob))["balance"] == 1_000_005


async def _take(client: aiomqtt.Client, count: int) -> Any:
    async with asyncio.timeout(10):
        async for message in client.messages:
            yield message
            count -= 1
            if count == 0:
                return


@pytest.mark.slow  # test_mqtt_transport.py reconnects after a broker restart in the default lane
async def test_the_cluster_survives_a_broker_restart_and_loses_nothing(
    cluster: ClusterConfig,
) -> None:
    cfg = cluster
    first = await committed_everywhere(cfg, await transfers(cfg, 20))
    reconnects = {
        n: (await call(cfg, n, "status"))["transport"]["reconnects"] for n in cfg.node_ids()
    }
    pid = launcher.running_pid(cfg, "broker")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    while launcher.running_pid(cfg, "broker") is not None:
        await asyncio.sleep(0.02)
    # Submitted while the broker is down: accepted into mempools, ordered once it is back.
    during = await transfers(cfg, 10)
    await asyncio.sleep(1.0)
    assert broker.start(cfg) is not None
    later = await committed_everywhere(cfg, during + await transfers(cfg, 10))
    # What was committed before is still there, at the same heights, on every node.
    assert await committed_everywhere(cfg, list(first)) == first
    assert min(later.values()) > max(first.values())
    for node in cfg.node_ids():
        status = await call(cfg, node, "status")
        assert status["transport"]["reconnects"] > reconnects[node]
    report = check(cfg)
    assert not report["divergence"]
