"""Fault injection on a live cluster of real processes: every kind, over the admin RPC and
the CLI, without restarting anything; the cluster keeps committing and `tally check` finds
no divergence."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from consensus.pbft.config import PbftConfig
from consensus.pbft.proofs import valid_evidence
from ledger.tx import transfer
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.faults.spec import CATALOGUE, POW_ONLY
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError
from tests.helpers.livecluster import live_cluster
from tests.helpers.wait import wait_for

ACCOUNTS = {f"acct{i}": 10**9 for i in range(4)}
PBFT = {"batch_wait_ms": 5, "view_change_timeout_ms": 500, "status_interval_ms": 250}
SCHEDULED = """
[[fault]]
node = "n3"
kind = "delay"
ms = 5
jitter_ms = 5

[[fault]]
node = "n2"
kind = "pause"
at_seconds = 1.0
duration_seconds = 2.0
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterConfig]:
    directory = tmp_path_factory.mktemp("faults")
    with live_cluster(directory, "faults", ACCOUNTS, PBFT, SCHEDULED) as cfg:
        yield cfg


def cli(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


async def rpc(
    cfg: ClusterConfig, at: str, method: str, token: str | None = None, **params: Any
) -> Any:
    async with RpcClient(cfg.node(at).rpc_url, timeout=30, token=token) as client:
        return await client.call(method, **params)


async def commit_some(cfg: ClusterConfig, via: list[str], count: int = 4) -> None:
    """Transfers sent to honest nodes; each must commit (wait=commit) within the timeout."""
    chain = load_genesis(cfg).chain_id
    for i in range(count):
        node = via[i % len(via)]
        key = account_key(cfg, f"acct{i % len(ACCOUNTS)}")
        nonce = (await rpc(cfg, node, "get_account", address=key.address.hex()))["next_nonce"]
        tx = transfer(key, chain, nonce, account_key(cfg, "acct0").address, 1)
        result = await rpc(cfg, node, "submit_tx", tx=tx.encode().hex(), wait="commit")
        assert result["status"] == "ok", f"no commit through {node}: {result}"


async def converge(cfg: ClusterConfig) -> None:
    """Every node up, at one height with one last hash."""

    async def one_tip() -> bool:
        try:
            rows = [await rpc(cfg, n, "status") for n in cfg.node_ids()]
        except (RpcUnavailable, RpcError):
            return False
        return len({(r["height"], r["last_block_hash"]) for r in rows}) == 1

    await wait_for(one_tip, "every node at one height and hash")


async def primary(cfg: ClusterConfig) -> str:
    return str((await rpc(cfg, "n1", "status"))["primary"])


def test_cluster_toml_faults_are_scheduled(cluster: ClusterConfig) -> None:
    cfg = cluster
    listing = json.loads(cli(cfg, "fault", "list", "--json").stdout)
    assert [f["kind"] for f in listing["n3"]["faults"]] == ["delay"]
    # `tally up` started the supervisor (it exits once its schedule is done, which on a
    # loaded machine can be before this line: so its PID file is checked, not its process).
    assert int(cfg.pid_path("supervisor").read_text()) > 0
    # What the supervisor did is in its log, however late this test looks.
    log = cfg.log_path("supervisor")
    ended = "ending pause on n2"
    asyncio.run(wait_for(lambda: ended in log.read_text(), "the supervisor to resume n2"))
    lines = log.read_text().splitlines()
    paused = [i for i, line in enumerate(lines) if "applying pause to n2" in line]
    resumed = [i for i, line in enumerate(lines) if ended in line]
    assert len(paused) == len(resumed) == 1 and paused[0] < resumed[0], lines
    assert not launcher.is_paused(cfg, "n2"), "n2 was not resumed after its duration"
    asyncio.run(converge(cfg))


async def test_admin_methods_need_the_token(cluster: ClusterConfig) -> None:
    params = {"kind": "mute", "node": "n1"}
    for token in (None, "not-the-token"):
        with pytest.raises(RpcError) as info:
            await rpc(cluster, "n1", "fault_inject", token=token, **params)
        assert info.value.code == -32001 and "unauthorized" in info.value.message.lower()
    good = cluster.admin_token_path.read_text().strip()
    with pytest.raises(RpcError) as info:
        await rpc(cluster, "n1", "fault_inject", token=good, kind="bogus")
    assert info.value.code == -32602 and "unknown fault kind" in info.value.message
    assert (await rpc(cluster, "n1", "fault_list", token=good))["faults"] == []


# What to inject live, on which node ("primary" is resolved at run time), and which nodes
# stay honest and must keep committing.
LIVE: dict[str, tuple[str, list[str]]] = {
    "drop": ("n3", ["--param", "probability=0.3"]),
    "delay": ("n3", ["--param", "ms=30"]),
    "duplicate": ("n3", ["--param", "probability=0.5"]),
    "reorder": ("n3", ["--param", "probability=0.5"]),
    "partition": ("*", ["--param", "groups=n0,n1,n2|n3"]),
    "isolate": ("n3", []),
    "kill": ("n3", []),
    "pause": ("n3", []),
    "restart": ("n3", []),
    "equivocate": ("primary", []),
    "double_vote": ("n3", []),
    "mute": ("n3", []),
    "silent_primary": ("primary", []),
    "forge": ("n3", []),
    "replay": ("n3", []),
    "invalid_block": ("primary", []),
    "flood": ("n3", ["--param", "frames=5"]),
    "twins": ("n3", []),
}


# The default lane injects one kind of each category live; the slow lane the rest.  Every kind
# runs in the simulator in the default lane (tests/simulation/test_faults_sim.py).
DEFAULT_LANE = {"partition", "pause", "equivocate"}  # the evidence test below needs equivocate


def test_every_kind_has_a_live_case() -> None:
    assert set(LIVE) == set(CATALOGUE) - POW_ONLY  # test_e2e_pow.py covers those
    assert {CATALOGUE[k].category for k in DEFAULT_LANE} == {"network", "process", "byzantine"}


@pytest.mark.parametrize(
    "kind", [pytest.param(k, marks=[] if k in DEFAULT_LANE else [pytest.mark.slow]) for k in LIVE]
)
def test_inject_and_heal_live(cluster: ClusterConfig, kind: str) -> None:
    cfg = cluster
    target, params = LIVE[kind]
    if target == "primary":
        target = asyncio.run(primary(cfg))
    out = cli(cfg, "fault", "inject", kind, "--node", target, *params, "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    honest = [n for n in cfg.node_ids() if n != target and n != "n3"] or ["n0", "n1", "n2"]
    asyncio.run(commit_some(cfg, honest))
    if kind in ("drop", "mute", "forge", "flood", "double_vote", "replay", "delay"):
        listing = json.loads(cli(cfg, "fault", "list", "--json").stdout)
        assert [f["kind"] for f in listing[target]["faults"] if f["kind"] == kind] == [kind]
    healed = cli(cfg, "fault", "heal")
    assert healed.returncode == 0, healed.stdout + healed.stderr
    launcher.up(cfg)  # brings back a killed node; a no-op otherwise
    asyncio.run(converge(cfg))
    check = cli(cfg, "check", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["divergence"] is None


def test_an_equivocating_primary_leaves_evidence_on_the_ledger(cluster: ClusterConfig) -> None:
    cfg = cluster
    evidence = asyncio.run(rpc(cfg, "n1", "get_evidence"))
    against = [e for e in evidence if e["a"]["kind"] in ("PrePrepare", "Commit")]
    assert against, f"no evidence after the equivocation case: {evidence}"
    e = against[0]
    assert e["a"]["digest"] != e["b"]["digest"] and e["a"]["seq"] == e["b"]["seq"]
    genesis = load_genesis(cfg)
    payload = {
        "member": e["member"],
        "a": bytes.fromhex(e["a"]["raw"]),
        "b": bytes.fromhex(e["b"]["raw"]),
    }
    assert valid_evidence(payload, PbftConfig(genesis.chain_id, genesis.members))
    shown = cli(cfg, "check").stdout
    assert f"{e['member']} signed" in shown and "reported" in shown
