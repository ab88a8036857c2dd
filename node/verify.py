"""Check a node's whole chain from genesis without trusting the node.

Every block is fetched over RPC and checked offline: links and hashes,
certificates against the genesis membership, every tx signature, Merkle
roots, and the state root after re-executing the block.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.pbft.config import PbftConfig
from consensus.pbft.proofs import verify_certificate
from ledger.block import Block, BlockHeader, Genesis, check_successor
from ledger.encoding import DecodeError
from ledger.errors import LedgerError
from ledger.state import State, apply_block, genesis_header
from node.rpc.client import RpcClient

PAGE = 50


@dataclass(frozen=True)
class VerifyReport:
    node_id: str
    ok: bool
    height: int
    txs: int
    last_hash: str
    state_root: str
    total_supply: int
    error: str | None = None


async def verify_node(node_id: str, url: str, genesis: Genesis) -> VerifyReport:
    async with RpcClient(url, timeout=30.0) as client:
        remote = await client.call("genesis")
        if bytes.fromhex(remote["raw"]) != genesis.encode():
            return _fail(node_id, 0, "node runs a different genesis than data_dir's")
        height = (await client.call("status"))["height"]
        state, header, txs = State.from_genesis(genesis), genesis_header(genesis), 0
        for start in range(1, height + 1, PAGE):
            stop = min(start + PAGE, height + 1)
            pages = await client.batch([("get_block", {"height": h}) for h in range(start, stop)])
            for h, page in zip(range(start, stop), pages, strict=True):
                if not isinstance(page, dict):
                    return _fail(node_id, h, f"cannot fetch block {h}: {page}")
                try:
                    block = Block.decode(bytes.fromhex(page["raw"]))
                    state = check_block(genesis, header, state, block)
                except (LedgerError, DecodeError, ValueError) as e:
                    return _fail(node_id, h, str(e))
                header, txs = block.header, txs + len(block.txs)
    return VerifyReport(
        node_id,
        True,
        header.height,
        txs,
        header.sha256().hex(),
        header.state_root.hex(),
        state.total_supply(),
    )


def check_block(genesis: Genesis, parent: BlockHeader, state: State, block: Block) -> State:
    """The state after `block`, or a LedgerError saying what is wrong with it."""
    check_successor(parent, block.header)
    verify_certificate(block, PbftConfig(genesis.chain_id, genesis.members))
    for tx in block.txs:
        tx.check_stateless(genesis.chain_id)
    new_state, _ = apply_block(state, block)
    return new_state


def _fail(node_id: str, height: int, error: str) -> VerifyReport:
    return VerifyReport(node_id, False, height, 0, "", "", 0, error)
