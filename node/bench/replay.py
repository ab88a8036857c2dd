"""`tally bench replay`: how fast a node rebuilds its state from the blocks it stored.

It writes a PBFT chain of signed transfers with real commit certificates (signed by 3 of 4
member keys) into a SQLite store, then replays it from genesis in a fresh process: trusting
the certificates (the node's way), and re-checking every tx signature (`tally verify`'s way).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from consensus.pbft.config import PbftConfig
from consensus.pbft.messages import Commit, CommitCertificate, sign
from ledger.block import Batch, Genesis, Member
from ledger.crypto import KeyPair
from ledger.state import execute_batch
from ledger.store import Store
from ledger.tx import transfer
from node.audit.replay import replay
from node.bench.pbft import console, emit, machine
from node.engines import chain_engines

MEMBERS = [KeyPair(bytes([i + 1]) * 32) for i in range(4)]


def add_replay_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", type=int, default=400, help="blocks in the chain")
    p.add_argument("--txs", type=int, default=500, help="transfers per block")
    p.add_argument("--accounts", type=int, default=1000, help="accounts in the genesis")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--out", help="also write the JSON result to this file")


def genesis_for(accounts: int) -> tuple[Genesis, list[KeyPair]]:
    keys = [KeyPair(i.to_bytes(4, "big") + bytes(28)) for i in range(1, accounts + 1)]
    members = tuple(Member(f"n{i}", k.public_key) for i, k in enumerate(MEMBERS))
    balances = {k.address.hex(): 10**12 for k in keys}
    return Genesis("replay-bench", 0, members, balances), keys


def build_chain(path: Path, blocks: int, per_block: int, accounts: int) -> float:
    """Write the chain; return the seconds it took."""
    start = time.perf_counter()
    genesis, keys = genesis_for(accounts)
    config = PbftConfig(genesis.chain_id, genesis.members)
    store = Store(path, genesis, engines=chain_engines(), synchronous="OFF")
    nonces = [0] * len(keys)
    for height in range(1, blocks + 1):
        txs = []
        for i in range(per_block):
            s = (height * per_block + i) % len(keys)
            to = keys[(s + 1) % len(keys)].address
            txs.append(transfer(keys[s], genesis.chain_id, nonces[s], to, 1))
            nonces[s] += 1
        batch = Batch(genesis.chain_id, height, "n0", 1000 * height, tuple(txs))
        block, state, receipts = execute_batch(store.state, store.last_header, batch)
        digest = block.header.batch_digest()
        commits = tuple(sign(Commit(0, height, digest, r, b""), MEMBERS[r]) for r in range(3))
        cert = CommitCertificate(0, height, digest, commits)
        store.append(block.with_proof(cert.encode()), receipts, state)
    assert config.quorum == 3
    store.close()
    return time.perf_counter() - start


def replay_file(path: Path, accounts: int, signatures: bool) -> dict[str, Any]:
    """Replay the stored chain (run in its own process, so nothing is warm)."""
    genesis, _ = genesis_for(accounts)
    store = Store(path, genesis, engines=chain_engines())
    config = PbftConfig(genesis.chain_id, genesis.members)
    result = replay(genesis, config, store.iter_blocks(), signatures=signatures)
    assert result.state.root() == store.last_header.state_root, "replay diverged from the store"
    store.close()
    return {
        "mode": "every signature" if signatures else "certificates",
        "blocks": result.blocks,
        "txs": result.txs,
        "seconds": round(result.seconds, 3),
        "txs_per_s": round(result.txs_per_s),
    }


def run_replay_bench(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="tally-replay-") as tmp:
        path = Path(tmp) / "chain.sqlite"
        console.print(f"replay: writing {args.blocks} blocks of {args.txs} transfers")
        built = build_chain(path, args.blocks, args.txs, args.accounts)
        modes = []
        for signatures in (False, True):
            cmd = [sys.executable, "-m", "node.bench.replay", str(path), str(args.accounts)]
            cmd += ["--signatures"] if signatures else []
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            modes.append(json.loads(out))
    result = {
        "bench": "replay",
        "machine": machine(),
        "chain": {"blocks": args.blocks, "txs_per_block": args.txs, "build_s": round(built, 1)},
        "modes": modes,
    }
    table = Table(title="tally bench replay: state rebuilt from the store, from genesis")
    for col in ("checks", "blocks", "txs", "seconds", "tx/s"):
        table.add_column(col, justify="right")
    for m in modes:
        row = (m["mode"], m["blocks"], m["txs"], m["seconds"], m["txs_per_s"])
        table.add_row(*map(str, row))
    console.print(table)
    emit(args, result)
    return 0


if __name__ == "__main__":
    print(json.dumps(replay_file(Path(sys.argv[1]), int(sys.argv[2]), "--signatures" in sys.argv)))
