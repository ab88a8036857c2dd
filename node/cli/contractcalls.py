"""Signed contract calls and contract views over RPC, shared by the `tally contract` commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ledger.tx import contract_call
from node.cluster.accounts import signer_key
from node.cluster.bootstrap import load_genesis
from node.cluster.config import ClusterConfig, ConfigError
from node.rpc.failover import FailoverClient, Members


async def call(
    cfg: ClusterConfig,
    members: Members,
    sender: str,
    op: str,
    cid: bytes,
    args: dict[str, Any],
    engine: str = "exchange",
) -> dict[str, Any]:
    """Sign a contract call as `sender` (an account, or a member node) and wait for it, on
    the first of `members` that answers."""
    key = signer_key(cfg, sender)
    chain = load_genesis(cfg).chain_id
    async with FailoverClient(members, timeout=60) as client:
        nonce = (await client.call("get_account", address=key.address.hex()))["next_nonce"]
        tx = contract_call(key, chain, nonce, engine, op, cid, args)
        result: dict[str, Any] = await client.call("submit_tx", tx=tx.encode().hex(), wait="commit")
        return result


async def show(members: Members, cid: str) -> dict[str, Any]:
    async with FailoverClient(members) as client:
        result: dict[str, Any] = await client.call("get_contract", id=cid)
        return result


def contract_id(text: str) -> bytes:
    try:
        cid = bytes.fromhex(text)
    except ValueError:
        cid = b""
    if len(cid) != 32:
        raise ConfigError(f"--id must be the 64-hex-digit contract id, got {text!r}")
    return cid


def answer(result: dict[str, Any], as_json: bool, op: str, render: Callable[..., None]) -> int:
    """Print a contract command's result (JSON, or rendered) and give its exit code."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        render(op, result)
    return 0 if result.get("status", "ok") == "ok" else 1
