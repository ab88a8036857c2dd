"""Check a node's whole chain from genesis without trusting the node.

Every block is fetched over RPC and checked offline: links and hashes, its
proof (a PBFT commit certificate against the genesis membership, or a
proof-of-work seal: the miner's signature, the proof against its target, and
the retarget rule), every tx signature, Merkle roots, and the state root after
re-executing the block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from consensus.pbft.config import PbftConfig
from consensus.pbft.proofs import verify_certificate
from consensus.pow.chain import BlockTree, Entry, Rejected, check_standalone
from consensus.pow.config import PowConfig
from ledger.block import Block, BlockHeader, Genesis, check_successor
from ledger.encoding import DecodeError
from ledger.errors import LedgerError
from ledger.state import State, apply_block, genesis_header
from node.engines import chain_engines
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


async def verify_node(
    node_id: str, url: str, genesis: Genesis, pow: PowConfig | None = None
) -> VerifyReport:
    """`pow`: the chain is proof of work with these parameters (else PBFT)."""
    check = PowChecker(pow, genesis).check if pow else _pbft_checker(genesis)
    async with RpcClient(url, timeout=30.0) as client:
        remote = await client.call("genesis")
        if bytes.fromhex(remote["raw"]) != genesis.encode():
            return _fail(node_id, 0, "node runs a different genesis than data_dir's")
        height = (await client.call("status"))["height"]
        state, header = State.from_genesis(genesis, chain_engines()), genesis_header(genesis)
        txs = 0
        for start in range(1, height + 1, PAGE):
            stop = min(start + PAGE, height + 1)
            pages = await client.batch([("get_block", {"height": h}) for h in range(start, stop)])
            for h, page in zip(range(start, stop), pages, strict=True):
                if not isinstance(page, dict):
                    return _fail(node_id, h, f"cannot fetch block {h}: {page}")
                try:
                    block = Block.decode(bytes.fromhex(page["raw"]))
                    state = check(header, state, block)
                except (LedgerError, DecodeError, ValueError, Rejected) as e:
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


def _pbft_checker(genesis: Genesis) -> Checker:
    def check(parent: BlockHeader, state: State, block: Block) -> State:
        return check_block(genesis, parent, state, block)

    return check


class PowChecker:
    """Proof-of-work blocks along one chain, checked with the miners' own rules."""

    def __init__(self, config: PowConfig, genesis: Genesis) -> None:
        base = Block(genesis_header(genesis), (), b"")
        state = State.from_genesis(genesis, chain_engines())
        start = Entry(base, config.initial_bits, 0, state, ())
        self.config, self.tree = config, BlockTree(config, start, [])

    def check(self, parent: BlockHeader, state: State, block: Block) -> State:
        for tx in block.txs:
            tx.check_stateless(self.config.chain_id)
        seal = check_standalone(self.config, block, int(time.time() * 1000))
        entry = self.tree.add(block, seal)  # bits by the retarget rule, links, roots
        self.tree.switch(block.hash)
        assert entry.state is not None
        return entry.state


Checker = Callable[[BlockHeader, State, Block], State]


def _fail(node_id: str, height: int, error: str) -> VerifyReport:
    return VerifyReport(node_id, False, height, 0, "", "", 0, error)
