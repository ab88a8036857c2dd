"""The load generator counts a tx committed when any node shows its block: a lagging or
dead first node must not make the cluster look slow (issue 18)."""

from __future__ import annotations

import asyncio
from typing import Any

from node.bench.loadgen import Run
from node.rpc.client import RpcUnavailable


class FakeNode:
    def __init__(self, blocks: dict[int, list[str]], alive: bool = True) -> None:
        self.blocks, self.alive = blocks, alive

    async def call(self, method: str, **params: Any) -> Any:
        if not self.alive:
            raise RpcUnavailable("down")
        if method == "status":
            return {"height": max(self.blocks, default=0)}
        return {"tx_ids": self.blocks[params["height"]]}


def watched(nodes: list[FakeNode], grow: dict[int, list[str]]) -> set[bytes]:
    """Run the watcher over `nodes`; after it starts, node 1 commits the blocks `grow`."""
    run = Run.__new__(Run)  # no cluster: only what the watcher reads
    run.clients, run.committed = nodes, {}  # type: ignore[assignment]

    async def go() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run.watch(stop))
        await asyncio.sleep(0.05)
        nodes[1].blocks.update(grow)
        await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(go())
    return set(run.committed)


def test_blocks_count_when_any_node_has_them() -> None:
    stuck = FakeNode({})  # the first node lags behind the cluster (height 0)
    ahead = FakeNode({1: ["aa"]})
    dead = FakeNode({}, alive=False)
    got = watched([stuck, ahead, dead], {2: ["bb", "cc"], 3: ["dd"]})
    assert got == {bytes.fromhex(t) for t in ("bb", "cc", "dd")}  # "aa" was before the start
