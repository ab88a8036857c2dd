"""The load generator counts a tx committed when any node shows its block: a lagging or
dead first node must not make the cluster look slow, and a block that commits while the
nodes are being asked for their heights must not be skipped (issue 18)."""

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
    """Take the cluster's height, then start the watcher over `nodes`; node 1 commits the
    blocks `grow` in between (as the first batch can, before the watcher asks) and after."""
    run = Run.__new__(Run)  # no cluster: only what the watcher reads
    run.clients, run.committed = nodes, {}  # type: ignore[assignment]
    early = {h: grow.pop(h) for h in sorted(grow)[:1]}

    async def go() -> None:
        stop = asyncio.Event()
        height = await run.cluster_height()
        nodes[1].blocks.update(early)
        task = asyncio.create_task(run.watch(stop, height))
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


def test_a_block_committed_before_the_watcher_first_asks_still_counts() -> None:
    """The first batch can commit while the load generator is still asking the nodes for
    their heights (a node busy checking a submit_txs call answers late): the watcher starts
    from the height taken before anything was submitted, not from what it sees then."""
    nodes = [FakeNode({}), FakeNode({}), FakeNode({})]
    got = watched(nodes, {1: ["aa"], 2: ["bb"]})  # block 1 is there before watch() starts
    assert got == {bytes.fromhex("aa"), bytes.fromhex("bb")}
