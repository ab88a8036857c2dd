"""The checker: safety and liveness verdicts over the nodes' durable chains."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ledger.errors import LedgerError
from ledger.store import Store


@dataclass(frozen=True)
class Verdict:
    name: str
    ok: bool
    detail: str


def check_agreement(stores: Mapping[str, Store]) -> Verdict:
    """No two replicas committed different blocks at one height."""
    top = max(s.height for s in stores.values())
    for height in range(1, top + 1):
        hashes = {nid: s.block_hash(height) for nid, s in stores.items() if s.height >= height}
        if len(set(hashes.values())) > 1:
            shown = {nid: h.hex()[:12] for nid, h in hashes.items() if h is not None}
            return Verdict("agreement", False, f"height {height}: {shown}")
    return Verdict("agreement", True, f"one chain, heights {_heights(stores)}")


def check_validity(stores: Mapping[str, Store], chain_id: str) -> Verdict:
    """Every committed tx is correctly signed by its sender, for this chain."""
    store = max(stores.values(), key=lambda s: s.height)  # agreement covers the others
    count = 0
    for height in range(1, store.height + 1):
        block = store.get_block(height)
        assert block is not None
        for tx in block.txs:
            try:
                tx.check_stateless(chain_id)
            except LedgerError as e:
                return Verdict("validity", False, f"block {height}: tx {tx.tx_id.hex()}: {e}")
            count += 1
    return Verdict("validity", True, f"{count} committed txs correctly signed")


def check_integrity(stores: Mapping[str, Store]) -> Verdict:
    """No tx committed twice."""
    for nid, store in stores.items():
        repeated = store.repeated_tx_ids()
        if repeated:
            return Verdict("integrity", False, f"{nid}: tx {repeated[0].hex()} committed twice")
    return Verdict("integrity", True, "no tx committed twice")


def _heights(stores: Mapping[str, Store]) -> str:
    return ",".join(str(s.height) for s in stores.values())


def check_consistency(conflicts: list[str]) -> Verdict:
    """No replica ever signed two different digests for one (kind, view, seq), even across
    crashes and restarts."""
    if conflicts:
        return Verdict("consistency", False, f"conflicting votes: {conflicts[:3]}")
    return Verdict("consistency", True, "no replica contradicted its own votes")
