"""The ledger's JSON-RPC methods, registered on a Dispatcher for one node."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from ledger import index
from ledger.block import BlockHeader
from ledger.crypto import ADDRESS_SIZE
from ledger.errors import LedgerError, UnknownBlock, UnknownContract, UnknownTx
from ledger.smt import MissingNode
from ledger.state import State
from ledger.store import TxRecord
from ledger.tx import Tx
from node.cluster.config import NodeSpec
from node.process import limits
from node.process.runtime import NodeRuntime, now_ms
from node.process.views import (
    account_view,
    block_summary,
    block_view,
    contract_entry_view,
    contract_view,
    describe_vote,
    tx_view,
)
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


def count_param(params: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = param(params, name, int, required=False, default=default)
    if not low <= value <= high:
        raise RpcError(INVALID_PARAMS, f"invalid param {name!r}: expected {low}..{high}")
    return value


def committed_answer(record: TxRecord) -> dict[str, Any]:
    """A submitted tx that is already on the chain: where, and its receipt."""
    return {"tx_id": record.tx.tx_id.hex(), "height": record.height, "status": record.reason}


class LedgerMethods:
    """The ledger's RPC methods over one node: reads of its store, its replica's status, and
    tx submission through its runtime."""

    def __init__(
        self, dispatcher: Dispatcher, node: NodeRuntime, nodes: tuple[NodeSpec, ...]
    ) -> None:
        self.dispatcher, self.node, self.nodes = dispatcher, node, nodes
        self.store, self.replica = node.store, node.replica
        self.chain_members = node.genesis.members

    def consensus_status(self) -> dict[str, Any]:
        view = dataclasses.asdict(self.replica.status())
        kind, depth = view.pop("kind"), view.pop("final_depth")
        mined = {"mined": self.node.miner.found} if self.node.miner is not None else {}
        return {
            "consensus_kind": kind,
            **view,
            "confirmations_for_final": depth,
            "final_height": max(self.store.height - depth + 1, 0),
            **mined,
        }

    def finality(self, height: int) -> dict[str, Any]:
        """How deep a stored block is; PBFT blocks are final when stored, PoW ones k deep."""
        confirmations = self.store.height - height + 1
        return {
            "confirmations": confirmations,
            "final": confirmations >= self.replica.status().final_depth,
        }

    async def status(self, params: dict[str, Any]) -> dict[str, Any]:
        http, fds = self.dispatcher.http, limits.fd_limits()
        return {
            "node_id": self.node.node_id,
            "chain_id": self.node.chain_id,
            **self.consensus_status(),
            "height": self.store.height,
            "last_block_hash": self.store.last_header.sha256().hex(),
            "state_root": self.store.last_header.state_root.hex(),
            "txs_committed": self.store.tx_count,
            "mempool": len(self.replica.mempool),
            "queue": self.node.queue.qsize(),
            "uptime_s": round((now_ms() - self.node.started_ms) / 1000, 1),
            "consensus": dict(self.replica.stats),
            "errors": dict(self.node.errors)
            | {f"rpc{k}": v for k, v in self.dispatcher.errors.items()}
            | {f"rpc_{k}": v for k in ("aborted", "timed_out") if (v := getattr(http, k))}
            | {f"transport_{k}": v for k, v in self.node.transport.stats.rejected.items()},
            "transport": vars(self.node.transport.stats),
            "rpc": http.view(),
            "fds": {"limit": fds.soft, "hard_limit": fds.hard, "open": limits.fds_in_use()},
            "log_lines_suppressed": limits.suppressed_lines(),
            "subscriptions": {
                "live": len(self.node.hub.live),
                "overflows": self.node.hub.overflows,
            },
        }

    async def submit_tx(self, params: dict[str, Any]) -> dict[str, Any]:
        wait = param(params, "wait", str, required=False)
        if wait not in (None, "commit"):
            raise RpcError(INVALID_PARAMS, "invalid param 'wait': expected \"commit\"")
        try:
            tx = self.node.check_tx(hex_param(params, "tx"))
        except LedgerError as e:
            self.node.count_error(e)
            raise
        done = self.store.get_tx(tx.tx_id)
        if done is not None:
            return committed_answer(done)
        future = self.node.submit(tx, wait=wait == "commit")
        if future is None:
            return {"tx_id": tx.tx_id.hex(), "status": "pending"}
        try:
            return await asyncio.wait_for(asyncio.shield(future), WAIT_TIMEOUT_S)
        except TimeoutError:
            self.node.forget_waiter(tx.tx_id, future)
            return {"tx_id": tx.tx_id.hex(), "status": "pending"}

    async def submit_txs(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Many txs in one call, each answered as submit_tx (without `wait`) would answer it;
        a refused tx is refused alone, as `{status: "refused", error}`."""
        checked = [self.check(i, raw) for i, raw in enumerate(self.txs_param(params))]
        txs = [tx for tx in checked if isinstance(tx, Tx)]
        # A tx that passes check_tx has a nonce its sender has not used, so a committed copy
        # can only be one whose receipt failed (that consumes no nonce): rare, but only the
        # store knows, so it is asked once for the whole call, not once per tx.
        done = self.store.get_txs([tx.tx_id for tx in txs]) if txs else {}
        return [self.enqueue(tx, done) for tx in checked]

    def txs_param(self, params: dict[str, Any]) -> list[Any]:
        txs = param(params, "txs", list)
        limit = self.dispatcher.max_batch
        if limit is not None and len(txs) > limit:
            message = f"invalid param 'txs': {len(txs)} txs (at most {limit})"
            raise RpcError(INVALID_PARAMS, message, {"max_batch": limit})
        return txs

    def check(self, i: int, raw: Any) -> Tx | RpcError:
        """`raw` (hex) checked as submit_tx checks its `tx`, or the error it would answer."""
        try:
            data = bytes.fromhex(raw.removeprefix("0x")) if isinstance(raw, str) else None
        except ValueError:
            data = None
        if data is None:
            return RpcError(INVALID_PARAMS, f"invalid param 'txs[{i}]': expected hex")
        try:
            return self.node.check_tx(data)
        except LedgerError as e:
            self.node.count_error(e)
            return rpc_error(e)

    def enqueue(self, tx: Tx | RpcError, done: dict[bytes, TxRecord]) -> dict[str, Any]:
        if isinstance(tx, RpcError):
            return self.refused(tx)
        if (record := done.get(tx.tx_id)) is not None:
            return committed_answer(record)
        try:
            self.node.submit(tx, wait=False)
        except LedgerError as e:  # Overloaded: the input queue is full
            return self.refused(rpc_error(e))
        return {"tx_id": tx.tx_id.hex(), "status": "pending"}

    def refused(self, error: RpcError) -> dict[str, Any]:
        """One refused tx of a submit_txs call: the error submit_tx would have answered,
        counted as that answer would have been."""
        self.dispatcher.errors[error.code] += 1
        return {"status": "refused", "error": error.to_json()}

    async def get_block(self, params: dict[str, Any]) -> dict[str, Any]:
        height = param(params, "height", int)
        txs = param(params, "txs", str, required=False, default="full")
        if txs not in ("full", "ids"):
            raise RpcError(INVALID_PARAMS, 'invalid param \'txs\': expected "full" or "ids"')
        if not 0 <= height <= self.store.height:
            raise UnknownBlock(f"no block at height {height} (height is {self.store.height})")
        if txs == "ids":
            return {"height": height, "tx_ids": [t.hex() for t in self.store.get_tx_ids(height)]}
        block = self.store.get_block(height)
        assert block is not None
        view = block_view(block, self.store.get_receipts(height), self.chain_members)
        return view | self.finality(height)

    async def get_blocks(self, params: dict[str, Any]) -> dict[str, Any]:
        """Blocks `from`..`to` (default: the head) without their txs, at most index.MAX_PAGE;
        `next` is where the rest of the range starts, or null."""
        first = count_param(params, "from", 0, 0, self.store.height)
        last = param(params, "to", int, required=False, default=self.store.height)
        if last < first:
            raise RpcError(INVALID_PARAMS, "invalid param 'to': below 'from'")
        last = min(last, self.store.height)
        rows = self.store.block_summaries(first, last)
        end = first + len(rows) - 1
        return {
            "blocks": [block_summary(h, p, n, self.chain_members) for h, p, n in rows],
            "next": end + 1 if end < last else None,
        }

    async def get_account_txs(self, params: dict[str, Any]) -> dict[str, Any]:
        """An account's txs (those it signed, and transfers to it) in chain order, from
        `from_height` (and `from_index` within it): a page of at most `limit`, and `next`,
        the place the following page starts at, or null."""
        address = hex_param(params, "address", ADDRESS_SIZE)
        start = (
            count_param(params, "from_height", 0, 0, 2**63 - 1),
            count_param(params, "from_index", 0, 0, 2**63 - 1),
        )
        limit = count_param(params, "limit", index.MAX_PAGE, 1, index.MAX_PAGE)
        records = self.store.account_txs(address, start, limit + 1)  # one more: is there a next?
        more = records[limit] if len(records) > limit else None
        return {
            "address": address.hex(),
            "txs": [
                {"height": r.height, "index": r.index, **tx_view(r.tx, r.reason)}
                for r in records[:limit]
            ],
            "next": {"from_height": more.height, "from_index": more.index} if more else None,
        }

    async def list_contracts(self, params: dict[str, Any]) -> dict[str, Any]:
        """Contracts by `engine`, `phase` (its engine's stage or phase), `party` (an
        address taking part) and `active`, in id order after `after`: a page of at most
        `limit`, and `next`, the `after` of the following page, or null."""
        party = hex_param(params, "party", ADDRESS_SIZE) if params.get("party") else None
        limit = count_param(params, "limit", index.MAX_PAGE, 1, index.MAX_PAGE)
        query = index.ContractQuery(
            engine=param(params, "engine", str, required=False),
            phase=param(params, "phase", str, required=False),
            party=party,
            active=param(params, "active", bool, required=False),
            after=hex_param(params, "after", 32) if params.get("after") else b"",
            limit=limit + 1,
        )
        entries = self.store.contracts(query)
        return {
            "contracts": [contract_entry_view(e) for e in entries[:limit]],
            "next": entries[limit - 1].contract_id.hex() if len(entries) > limit else None,
        }

    async def get_tx(self, params: dict[str, Any]) -> dict[str, Any]:
        tx_id = hex_param(params, "tx_id", 32)
        record = self.store.get_tx(tx_id)
        if record is not None:
            return (
                tx_view(record.tx, record.reason)
                | {
                    "height": record.height,
                    "index": record.index,
                    "raw": record.tx.encode().hex(),
                }
                | self.finality(record.height)
            )
        if tx_id in self.replica.mempool:
            return {"tx_id": tx_id.hex(), "status": "pending"}
        raise UnknownTx(f"no tx {tx_id.hex()} on this node")

    async def get_account(self, params: dict[str, Any]) -> dict[str, Any]:
        """The account now, or at `height`; with `proof`, also the state root it is under
        and the proof (hex of a StateProof) that `ledger.state.verify_account` checks."""
        address = hex_param(params, "address", ADDRESS_SIZE)
        height = param(params, "height", int, required=False)
        proof = param(params, "proof", bool, required=False, default=False)
        state, header = self.store.state, self.store.last_header
        if height is not None and height != header.height:
            state, header = self.state_at(height)
        view = account_view(state.account(address), self.replica.next_nonce(address))
        if not proof:
            return view
        return view | {
            "height": header.height,
            "state_root": header.state_root.hex(),
            "proof": state.prove_account(address).encode().hex(),
        }

    def state_at(self, height: int) -> tuple[State, BlockHeader]:
        if not 0 <= height <= self.store.height:
            raise UnknownBlock(f"no block at height {height} (height is {self.store.height})")
        try:
            return self.store.state_at(height), self.store.header(height)
        except MissingNode:
            kept = self.store.keep_states
            raise UnknownBlock(
                f"the state at height {height} is no longer kept (only the last {kept} blocks')"
            ) from None

    async def members(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        specs = {n.id: n for n in self.nodes}
        return [
            {
                "node_id": m.node_id,
                "public_key": m.public_key.hex(),
                "host": specs[m.node_id].host if m.node_id in specs else None,
                "port": specs[m.node_id].port if m.node_id in specs else None,
                "rpc_port": specs[m.node_id].rpc_port if m.node_id in specs else None,
            }
            for m in self.chain_members
        ]

    async def consensus_state(self, params: dict[str, Any]) -> dict[str, Any]:
        """The self.replica's in-flight state, for debugging."""
        return self.replica.inspect()

    async def get_contract(self, params: dict[str, Any]) -> dict[str, Any]:
        """A contract's parameters, state, escrow, and the history of its moves."""
        cid = hex_param(params, "id", 32)
        record = self.store.state.contracts.get(cid)
        if record is None:
            raise UnknownContract(f"no contract {cid.hex()}")
        return contract_view(record, self.store.height)

    async def get_evidence(self, params: dict[str, Any]) -> list[dict[str, Any]]:
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
            for r in self.store.evidence(member)
        ]

    async def block_hashes(self, params: dict[str, Any]) -> dict[str, Any]:
        """Hashes of blocks first..last (at most 1000): cheap chain comparison for `tally check`."""
        first = param(params, "first", int)
        last = min(param(params, "last", int), self.store.height, first + 999)
        hashes = [self.store.block_hash(h) for h in range(max(first, 0), last + 1)]
        return {"first": first, "hashes": [h.hex() for h in hashes if h is not None]}

    async def genesis(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"chain_id": self.node.chain_id, "raw": self.node.genesis.encode().hex()}


# each method and the names of the params it takes: a call naming any other is refused (-32602)
METHODS: dict[str, tuple[str, ...]] = {
    "status": (),
    "submit_tx": ("tx", "wait"),
    "submit_txs": ("txs",),
    "get_block": ("height", "txs"),
    "get_blocks": ("from", "to"),
    "get_account_txs": ("address", "from_height", "from_index", "limit"),
    "list_contracts": ("engine", "phase", "party", "active", "after", "limit"),
    "get_tx": ("tx_id",),
    "get_account": ("address", "height", "proof"),
    "members": (),
    "genesis": (),
    "consensus_state": (),
    "get_evidence": ("member",),
    "get_contract": ("id",),
    "block_hashes": ("first", "last"),
}


def register(dispatcher: Dispatcher, node: NodeRuntime, nodes: tuple[NodeSpec, ...]) -> None:
    methods = LedgerMethods(dispatcher, node, nodes)
    for name, params in METHODS.items():
        dispatcher.register(name, ledger_errors(getattr(methods, name)), params=params)
