"""`tally query`: a block, a tx, an account, an account's txs, a range of blocks, contracts."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from rich.table import Table

from node.cli.output import console, emit, err
from node.cluster.accounts import known_names, resolve_address
from node.cluster.config import ClusterConfig
from node.rpc.failover import FailoverClient, Members

WHAT = ("block", "tx", "account", "txs", "blocks", "contracts")


def add_query_arguments(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    q: argparse.ArgumentParser = sub.add_parser(
        "query",
        parents=[common],
        help="show a block, a tx, an account, an account's txs, blocks, or contracts",
        description="query block HEIGHT | tx ID | account NAME | txs NAME | blocks [FROM] "
        "| contracts.  Lists come a page at a time: the last line says how to get the next.",
    )
    q.add_argument("what", choices=WHAT)
    q.add_argument(
        "key", nargs="?", help="block height, tx id (hex), account name/address, first block"
    )
    q.add_argument("--node", help="node to ask (default: the first that answers)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--from-height", type=int, default=0, help="txs: start at this height")
    q.add_argument("--from-index", type=int, default=0, help="txs: start at this index in it")
    q.add_argument("--to", type=int, help="blocks: the last height")
    q.add_argument("--limit", type=int, help="the page size (at most 100)")
    q.add_argument("--engine", help="contracts: of this engine (exchange, risk, auction, ...)")
    q.add_argument("--phase", help="contracts: in this phase or stage")
    q.add_argument("--after", metavar="ID", help="contracts: the page after this contract id")
    q.add_argument("--party", help="contracts: an account name or address taking part")
    q.add_argument("--active", action="store_true", help="contracts: only the open ones")
    return q


def cmd_query(args: argparse.Namespace, cfg: ClusterConfig) -> int:
    members = cfg.rpc_members(args.node)
    if args.what in ("block", "tx", "account", "txs") and args.key is None:
        err.print(f"tally query {args.what}: which one? (see tally query --help)")
        return 2
    if args.what in ("txs", "blocks", "contracts"):
        return LISTS[args.what](args, cfg, members)
    if args.what == "block":
        result = rpc(members, "get_block", height=int(args.key))
    elif args.what == "tx":
        result = rpc(members, "get_tx", tx_id=args.key)
    else:
        result = rpc(members, "get_account", address=resolve_address(cfg, args.key).hex())
    if not args.json:
        result.pop("raw", None)
    print(json.dumps(result, indent=2))
    return 0


def rpc(members: Members, method: str, **params: Any) -> Any:
    """One call, answered by the first of `members` that answers."""

    async def go() -> Any:
        async with FailoverClient(members, timeout=10.0) as client:
            return await client.call(method, **params)

    return asyncio.run(go())


def query_txs(args: argparse.Namespace, cfg: ClusterConfig, members: Members) -> int:
    address = resolve_address(cfg, args.key).hex()
    page = rpc(
        members,
        "get_account_txs",
        address=address,
        from_height=args.from_height,
        from_index=args.from_index,
        limit=args.limit,
    )
    names = known_names(cfg)

    def render(page: dict[str, Any]) -> None:
        table = Table("height", "index", "tx", "kind", "from", "to", "amount", "status")
        for t in page["txs"]:
            payload = t.get("payload", {})
            table.add_row(
                str(t["height"]),
                str(t["index"]),
                t["tx_id"][:16],
                t["kind"],
                names.get(t["sender"], t["sender"][:12]),
                names.get(payload.get("to", ""), str(payload.get("to", ""))[:12]),
                str(payload.get("amount", "")),
                t["status"],
            )
        console.print(table)
        more = page["next"]
        if more:
            console.print(
                f"more: tally query txs {args.key} --from-height {more['from_height']} "
                f"--from-index {more['from_index']}"
            )

    emit(args, page, render)
    return 0


def query_blocks(args: argparse.Namespace, cfg: ClusterConfig, members: Members) -> int:
    first = int(args.key) if args.key is not None else 0
    page = rpc(members, "get_blocks", **{"from": first, "to": args.to})

    def render(page: dict[str, Any]) -> None:
        table = Table("height", "hash", "time (UTC)", "proposer", "txs", "signed by")
        for b in page["blocks"]:
            cert = b["certificate"] or {}
            table.add_row(
                str(b["height"]),
                b["hash"][:16],
                _ledger_time(b["timestamp_ms"]),
                b["proposer"] or "",
                str(b["txs"]),
                ",".join(cert.get("signers", [])),
            )
        console.print(table)
        if page["next"] is not None:
            console.print(f"more: tally query blocks {page['next']}")

    emit(args, page, render)
    return 0


def query_contracts(args: argparse.Namespace, cfg: ClusterConfig, members: Members) -> int:
    party = resolve_address(cfg, args.party).hex() if args.party else None
    page = rpc(
        members,
        "list_contracts",
        engine=args.engine,
        phase=args.phase,
        party=party,
        active=True if args.active else None,
        after=args.after,
        limit=args.limit,
    )

    def render(page: dict[str, Any]) -> None:
        table = Table("id", "engine", "phase", "deadline (UTC)", "escrow", "created", "parties")
        for c in page["contracts"]:
            table.add_row(
                c["id"][:16],
                c["engine"],
                c["phase"],
                _ledger_time(c["deadline"]) if c["deadline"] is not None else "",
                str(c["escrow"]),
                str(c["created_height"]),
                str(len(c["parties"])),
            )
        console.print(table)
        if page["next"]:
            console.print(f"more: tally query contracts --after {page['next']}")

    emit(args, page, render)
    return 0


def _ledger_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


LISTS = {"txs": query_txs, "blocks": query_blocks, "contracts": query_contracts}
