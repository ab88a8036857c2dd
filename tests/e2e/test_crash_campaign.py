"""The crash campaign: kill -9 random nodes under load, and nothing acknowledged is lost.

Eight clients each send one transfer at a time and wait for its commit, retrying the same
signed tx at another node when theirs goes away.  Meanwhile 30 times a node is killed with
SIGKILL (every third time the current primary), kept down a moment, restarted, and given
time to catch up before the next kill, so never more than f = 1 of the 4 is down.  Then
every tx any node acknowledged as committed must be on every node at the height it was
acknowledged at, and `tally check` and `tally verify` must pass.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ledger.tx import transfer
from node.cluster import launcher
from node.cluster.accounts import account_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError
from tests.helpers.livecluster import kill9, live_cluster, node_status
from tests.helpers.wait import wait_for

KILLS = 30
SEED = 20261201
ACCOUNTS = {f"acct{i}": 10**9 for i in range(8)}
PBFT = {"batch_size_max": 50, "batch_wait_ms": 5, "view_change_timeout_ms": 500}


@dataclass
class Campaign:
    cfg: ClusterConfig
    rng: random.Random
    up: set[str]
    acknowledged: dict[str, int] = field(default_factory=dict)  # tx id -> height
    kills: int = 0
    primaries_killed: int = 0
    stop: bool = False

    async def client(self, name: str) -> None:
        """One account: a tx at a time, each retried (the same bytes) until committed."""
        chain = load_genesis(self.cfg).chain_id
        key, to = account_key(self.cfg, name), account_key(self.cfg, "acct0").address
        nonce = 0
        while not self.stop:
            tx = transfer(key, chain, nonce, to, 1).encode().hex()
            while not self.stop:
                result = await self._submit(tx)
                if result is not None:
                    assert result["status"] == "ok", result
                    self.acknowledged[result["tx_id"]] = result["height"]
                    nonce += 1
                    break
                await asyncio.sleep(0.05)

    async def _submit(self, tx: str) -> dict[str, Any] | None:
        node = self.rng.choice(sorted(self.up))
        try:
            async with RpcClient(self.cfg.node(node).rpc_url, timeout=35) as client:
                result: dict[str, Any] = await client.call("submit_tx", tx=tx, wait="commit")
        except (RpcUnavailable, RpcError, TimeoutError):
            return None  # the node went away, or is overloaded: try again elsewhere
        return result if "height" in result else None  # "pending": not yet acknowledged

    async def killer(self) -> None:
        for k in range(KILLS):
            await asyncio.sleep(self.rng.uniform(0.3, 1.0))
            victim = await self._victim(primary=k % 3 == 0)
            self.up.discard(victim)
            kill9(self.cfg, victim)
            self.kills += 1
            await asyncio.sleep(self.rng.uniform(0.1, 1.0))
            launcher.start_node(self.cfg, self.cfg.node(victim))
            await self._caught_up(victim)
            self.up.add(victim)
        self.stop = True

    async def _victim(self, primary: bool) -> str:
        if primary:
            status = await node_status(self.cfg, self.rng.choice(sorted(self.up)))
            if status is not None and status["primary"] in self.up:
                self.primaries_killed += 1
                return str(status["primary"])
        return self.rng.choice(sorted(self.up))

    async def _caught_up(self, node: str) -> None:
        """Back, and within a few blocks of the others: only then may another node die."""

        async def ready() -> bool:
            mine = await node_status(self.cfg, node)
            others = [await node_status(self.cfg, n) for n in sorted(self.up)]
            top = max((s["height"] for s in others if s is not None), default=0)
            return mine is not None and mine["height"] >= top - 5

        await wait_for(ready, f"{node} to restart and catch up", timeout=60)


async def heights(cfg: ClusterConfig) -> list[int]:
    statuses = [await node_status(cfg, n.id) for n in cfg.nodes]
    return [s["height"] if s is not None else -1 for s in statuses]


async def missing(cfg: ClusterConfig, acknowledged: dict[str, int]) -> list[str]:
    """(node, tx) pairs where an acknowledged tx is absent or at another height."""
    lost = []
    for n in cfg.nodes:
        async with RpcClient(n.rpc_url, timeout=10) as client:
            for tx_id, height in acknowledged.items():
                try:
                    found = await client.call("get_tx", tx_id=tx_id)
                except RpcError:
                    found = {}
                if found.get("height") != height:
                    lost.append(f"{n.id} {tx_id[:16]}")
    return lost


def tally(cfg: ClusterConfig, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "node.cli.main", "-c", str(cfg.path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_thirty_kill9_under_load_lose_nothing_acknowledged(tmp_path: Path) -> None:
    with live_cluster(tmp_path, "campaign", ACCOUNTS, PBFT) as cfg:
        campaign = Campaign(cfg, random.Random(SEED), {n.id for n in cfg.nodes})

        async def run() -> list[str]:
            clients = [campaign.client(name) for name in sorted(ACCOUNTS)]
            await asyncio.gather(campaign.killer(), *clients)

            async def level() -> bool:
                hs = await heights(cfg)
                return min(hs) >= 0 and len(set(hs)) == 1

            await wait_for(level, "every node at one height", timeout=60)
            return await missing(cfg, campaign.acknowledged)

        lost = asyncio.run(run())
        figures = {
            "seed": SEED,
            "kills": campaign.kills,
            "primaries_killed": campaign.primaries_killed,
            "acknowledged": len(campaign.acknowledged),
            "lost": len(lost),
        }
        print("crash campaign:", json.dumps(figures))
        assert campaign.kills == KILLS and campaign.primaries_killed >= KILLS // 6
        assert len(campaign.acknowledged) > 0
        assert lost == [], lost[:10]
        check = tally(cfg, "check")
        assert check.returncode == 0, check.stdout + check.stderr
        verify = tally(cfg, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
