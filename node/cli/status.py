"""`tally status`: every node's view of the cluster, in one table."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.table import Table

from node.cli.output import console
from node.cluster.config import ClusterConfig
from node.rpc.client import RpcClient, RpcUnavailable
from node.rpc.jsonrpc import RpcError


async def all_status(cfg: ClusterConfig) -> list[dict[str, Any]]:
    async def one(node_id: str, url: str) -> dict[str, Any]:
        try:
            async with RpcClient(url, timeout=3.0) as client:
                result: dict[str, Any] = await client.call("status")
                return result
        except (RpcUnavailable, RpcError) as e:
            return {"node_id": node_id, "error": str(e)}

    return list(await asyncio.gather(*(one(n.id, n.rpc_url) for n in cfg.nodes)))


def render_status(rows: list[dict[str, Any]]) -> None:
    """One row per node; a node that did not answer is `down`, with why in its own column
    (shown only when some node is down)."""
    if any(r.get("consensus_kind") == "pow" for r in rows):
        render_pow_status(rows)
        return
    table = Table(title="Tally cluster")
    cols = (
        "node",
        "role",
        "height",
        "view",
        "primary",
        "stable",
        "watermarks",
        "last hash",
        "txs",
        "mempool",
    )
    for col in cols:
        table.add_column(col, justify="right" if col in ("height", "view") else "left")
    down = _error_column(table, rows)
    for r in rows:
        if "error" in r:
            table.add_row(r["node_id"], "[red]down[/]", *[""] * (len(cols) - 2), r["error"])
            continue
        view = str(r["view"]) + ("" if r["view_active"] else " (changing)")
        table.add_row(
            r["node_id"],
            r["role"],
            str(r["height"]),
            view,
            r["primary"],
            str(r["stable_checkpoint"]),
            f"{r['low_watermark']}..{r['high_watermark']}",
            r["last_block_hash"][:12],
            str(r["txs_committed"]),
            str(r["mempool"]),
            *down,
        )
    console.print(table)


def _error_column(table: Table, rows: list[dict[str, Any]]) -> list[str]:
    """Add the `error` column if some node is down; the cells a live node's row ends with."""
    if not any("error" in r for r in rows):
        return []
    table.add_column("error", style="red", overflow="fold")
    return [""]


def render_pow_status(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Tally cluster (proof of work)")
    cols = ("node", "height", "final", "difficulty", "bits", "last hash", "txs", "mempool")
    for col in cols:
        table.add_column(col, justify="left" if col in ("node", "bits", "last hash") else "right")
    down = _error_column(table, rows)
    for r in rows:
        if "error" in r:
            table.add_row(r["node_id"], "[red]down[/]", *[""] * (len(cols) - 2), r["error"])
            continue
        table.add_row(
            r["node_id"],
            str(r["height"]),
            str(r["final_height"]),
            str(r["difficulty"]),
            r["bits"],
            r["last_block_hash"][:12],
            str(r["txs_committed"]),
            str(r["mempool"]),
            *down,
        )
    console.print(table)
