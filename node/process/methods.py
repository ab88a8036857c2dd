"""The ledger's JSON-RPC methods, registered on a Dispatcher for one node."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from ledger.crypto import ADDRESS_SIZE
from ledger.errors import LedgerError, UnknownBlock, UnknownContract, UnknownTx
from node.cluster.config import NodeSpec
from node.process.runtime import NodeRuntime, now_ms
from node.process.views import account_view, block_view, contract_view, describe_vote, tx_view
from node.rpc.errors import rpc_error
from node.rpc.jsonrpc import INVALID_PARAMS, Dispatcher, RpcError, param

WAIT_TIMEOUT_S = 30.0
Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def ledger_errors(fn: Handler) -> Handler:
    """Turn a typed LedgerError into a JSON-RPC error with its documented code (rpc/errors)."""

    @functools.wraps(fn)
    async def wrapper(params: dict[str, Any]) -> Any:
        try:
            return await fn(params)
        except LedgerError as e:
            raise rpc_error(e) from None

    return wrapper


def hex_param(params: dict[str, Any], name: str, size: int | None = None) -> bytes:
    text = param(params, name, str)
    try:
        value = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"invalid param {name!r}: expected hex") from None
    if size is not None and len(value) != size:
        raise RpcError(INVALID_PARAMS, f"invalid param {name!r}: expected {size} bytes of hex")
    return value


def register(dispatcher: Dispatcher, node: NodeRuntime, nodes: tuple[NodeSpec, ...]) -> None:
    store, replica = node.store, node.replica
    members = node.genesis.members

    def consensus_status() -> dict[str, Any]:
        view = dataclasses.asdict(replica.status())
        kind, depth = view.pop("kind"), view.pop("final_depth")
        mined = {"mined": node.miner.found} if node.miner is not None else {}
        return {
            "consensus_kind": kind,
            **view,
            "confirmations_for_final": depth,
            "final_height": max(store.height - depth + 1, 0),
            **mined,
        }

    def finality(height: int) -> dict[str, Any]:
        """How deep a stored block is; PBFT blocks are final when stored, PoW ones k deep."""
        confirmations = store.height - height + 1
        return {
            "confirmations": confirmations,
            "final": confirmations >= replica.status().final_depth,
        }

    async def status(params: dict[str, Any]) -> dict[str, Any]:
        return {
            "node_id": node.node_id,
            "chain_id": node.chain_id,
            **consensus_status(),
            "height": store.height,
            "last_block_hash": store.last_header.sha256().hex(),
            "state_root": store.last_header.state_root.hex(),
            "txs_committed": store.tx_count,
            "mempool": len(replica.mempool),
            "queue": node.queue.qsize(),
            "uptime_s": round((now_ms() - node.started_ms) / 1000, 1),
            "consensus": dict(replica.stats),
            "errors": dict(node.errors)
            | {f"rpc{k}": v for k, v in dispatcher.errors.items()}
            | {f"transport_{k}": v for k, v in node.transport.stats.rejected.items()},
            "transport": vars(node.transport.stats),
        }

    async def submit_tx(params: dict[str, Any]) -> dict[str, Any]:
        wait = param(params, "wait", str, required=False)
        if wait not in (None, "commit"):
            raise RpcError(INVALID_PARAMS, "invalid param 'wait': expected \"commit\"")
        try:
            tx = node.check_tx(hex_param(params, "tx"))
        except LedgerError as e:
            node.count_error(e)
            raise
        done = store.get_tx(tx.tx_id)
        if done is not None:
            return {"tx_id": tx.tx_id.hex(), "height": done.height, "status": done.reason}
        future = node.submit(tx, wait=wait == "commit")
        if future is None:
            return {"tx_id": tx.tx_id.hex(), "status": "pending"}
        try:
            return await asyncio.wait_for(asyncio.shield(future), WAIT_TIMEOUT_S)
        except TimeoutError:
            node.forget_waiter(tx.tx_id, future)
            return {"tx_id": tx.tx_id.hex(), "status": "pending"}

    async def get_block(params: dict[str, Any]) -> dict[str, Any]:
        height = param(params, "height", int)
        txs = param(params, "txs", str, required=False, default="full")
        if txs not in ("full", "ids"):
            raise RpcError(INVALID_PARAMS, 'invalid param \'txs\': expected "full" or "ids"')
        if not 0 <= height <= store.height:
            raise UnknownBlock(f"no block at height {height} (height is {store.height})")
        if txs == "ids":
            return {"height": height, "tx_ids": [t.hex() for t in store.get_tx_ids(height)]}
        block = store.get_block(height)
        assert block is not None
        return block_view(block, store.get_receipts(height), members) | finality(height)

    async def get_tx(params: dict[str, Any]) -> dict[str, Any]:
        tx_id = hex_param(params, "tx_id", 32)
        record = store.get_tx(tx_id)
        if record is not None:
            return (
                tx_view(record.tx, record.reason)
                | {
                    "height": record.height,
                    "index": record.index,
                    "raw": record.tx.encode().hex(),
                }
                | finality(record.height)
            )
        if tx_id in replica.mempool:
            return {"tx_id": tx_id.hex(), "status": "pending"}
        raise UnknownTx(f"no tx {tx_id.hex()} on this node")

    async def get_account(params: dict[str, Any]) -> dict[str, Any]:
        address = hex_param(params, "address", ADDRESS_SIZE)
        return account_view(store.state.account(address), replica.next_nonce(address))

    async def members_(params: dict[str, Any]) -> list[dict[str, Any]]:
        specs = {n.id: n for n in nodes}
        return [
            {
                "node_id": m.node_id,
                "public_key": m.public_key.hex(),
                "host": specs[m.node_id].host if m.node_id in specs else None,
                "port": specs[m.node_id].port if m.node_id in specs else None,
                "rpc_port": specs[m.node_id].rpc_port if m.node_id in specs else None,
            }
            for m in members
        ]

    async def consensus_state(params: dict[str, Any]) -> dict[str, Any]:
        """The replica's in-flight state, for debugging."""
        return replica.inspect()

    async def get_contract(params: dict[str, Any]) -> dict[str, Any]:
        """A contract's parameters, state, escrow, and the history of its moves."""
        cid = hex_param(params, "id", 32)
        record = store.state.contracts.get(cid)
        if record is None:
            raise UnknownContract(f"no contract {cid.hex()}")
        return contract_view(record, store.height)

    async def get_evidence(params: dict[str, Any]) -> list[dict[str, Any]]:
        """Evidence of equivocation committed on the ledger (optionally against `member`)."""
        member = param(params, "member", str, required=False)
        return [
            {
                "member": r.tx.payload["member"],
                "height": r.height,
                "tx_id": r.tx.tx_id.hex(),
                "reported_by": r.tx.sender_address.hex(),
                "a": describe_vote(r.tx.payload["a"]),
                "b": describe_vote(r.tx.payload["b"]),
            }
            for r in store.evidence(member)
        ]

    async def block_hashes(params: dict[str, Any]) -> dict[str, Any]:
        """Hashes of blocks first..last (at most 1000): cheap chain comparison for `tally check`."""
        first = param(params, "first", int)
        last = min(param(params, "last", int), store.height, first + 999)
        hashes = [store.block_hash(h) for h in range(max(first, 0), last + 1)]
        return {"first": first, "hashes": [h.hex() for h in hashes if h is not None]}

    async def genesis(params: dict[str, Any]) -> dict[str, Any]:
        return {"chain_id": node.chain_id, "raw": node.genesis.encode().hex()}

    for name, fn in [
        ("status", status),
        ("submit_tx", submit_tx),
        ("get_block", get_block),
        ("get_tx", get_tx),
        ("get_account", get_account),
        ("members", members_),
        ("genesis", genesis),
        ("consensus_state", consensus_state),
        ("get_evidence", get_evidence),
        ("get_contract", get_contract),
        ("block_hashes", block_hashes),
    ]:
        dispatcher.register(name, ledger_errors(fn))
