"""The store's checks at start (ledger/store.py, `verify`): a file damaged in its middle or
its header, truncated, or with a stored header, tx or state row tampered with is refused
with a typed StoreDamaged, and an intact store passes."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from pathlib import Path

import pytest

from ledger.block import BlockHeader, Genesis, Member
from ledger.crypto import KeyPair
from ledger.encoding import Tag
from ledger.smt import account_key
from ledger.smtstore import CorruptNode
from ledger.state import Account, build_block
from ledger.store import (
    BrokenChain,
    StateMismatch,
    Store,
    StoreCorrupt,
    StoreDamaged,
    StoreError,
)
from ledger.tx import transfer
from node.cluster.config import ConfigError, load_config, local_cluster_toml
from node.engines import chain_engines

CHAIN = "tally-integrity-test"
ALICE, BOB = KeyPair(bytes([1]) * 32), KeyPair(bytes([2]) * 32)
GENESIS = Genesis(
    chain_id=CHAIN,
    timestamp_ms=1_000,
    members=(Member("n0", ALICE.public_key), Member("n1", BOB.public_key)),
    accounts={ALICE.address.hex(): 10**9, BOB.address.hex(): 0},
)
BLOCKS = 300


def open_store(path: Path, verify: str | None = "quick") -> Store:
    return Store(path, GENESIS, engines=chain_engines(), verify=verify)  # type: ignore[arg-type]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A closed store of BLOCKS blocks of three transfers (some hundred KB)."""
    path = tmp_path / "chain.sqlite"
    store = Store(path, GENESIS, engines=chain_engines(), synchronous="OFF")
    with store.batch():
        for h in range(BLOCKS):
            txs = tuple(transfer(ALICE, CHAIN, 3 * h + i, BOB.address, 1) for i in range(3))
            block, state, receipts = build_block(
                store.state, store.last_header, txs, "n0", store.last_header.timestamp_ms + 10
            )
            store.append(block.with_proof(b"cert" * 40), receipts, state)
    store.close()
    return path


def damage(path: Path, offsets: list[int], size: int = 2000, seed: int = 15) -> None:
    rng = random.Random(seed)
    with path.open("r+b") as f:
        for offset in offsets:
            f.seek(offset)
            f.write(rng.randbytes(size))


def tamper(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    with db:
        assert db.execute(sql, args).rowcount == 1
    db.close()


def test_an_intact_store_passes_both_checks(path: Path) -> None:
    for verify in ("quick", "full"):
        store = open_store(path, verify)
        assert store.height == BLOCKS
        store.check_head(tx_blocks=BLOCKS + 1)  # every block's txs too
        store.close()


def test_a_fresh_store_passes(tmp_path: Path) -> None:
    store = open_store(tmp_path / "new.sqlite")
    assert store.height == 0
    store.close()


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_in_the_middle_are_caught(path: Path, seed: int) -> None:
    size = path.stat().st_size
    assert size > 100_000
    damage(path, [size // 2 - 30_000, size // 2, size // 2 + 30_000], seed=seed)
    with pytest.raises(StoreDamaged) as info:
        open_store(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_without_verify_the_same_damage_goes_unnoticed_at_open(path: Path) -> None:
    """What the node did before: the open itself reads only the head and the state."""
    size = path.stat().st_size
    damage(path, [size // 2 - 30_000, size // 2, size // 2 + 30_000])
    store = open_store(path, verify=None)
    assert store.height == BLOCKS
    with pytest.raises(StoreCorrupt):
        store.check_integrity()
    store.close()


def test_a_damaged_file_header_is_not_a_database(path: Path) -> None:
    damage(path, [0], size=100)
    with pytest.raises(StoreCorrupt) as info:
        open_store(path)
    assert "not a database" in str(info.value)


def test_a_truncated_file_is_caught(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreCorrupt):
        open_store(path)


def test_a_tampered_header_breaks_the_hash_chain(path: Path) -> None:
    """A header swapped for another block's: the stored hash and the next parent link fail."""
    db = sqlite3.connect(path)
    other = db.execute("SELECT header FROM blocks WHERE height=?", (BLOCKS // 2 + 1,)).fetchone()
    db.close()
    tamper(path, "UPDATE blocks SET header=? WHERE height=?", other[0], BLOCKS // 2)
    with pytest.raises(BrokenChain, match=f"block {BLOCKS // 2}"):
        open_store(path)


def test_a_tampered_header_with_its_hash_breaks_the_parent_link(path: Path) -> None:
    h = BLOCKS // 3
    db = sqlite3.connect(path)
    raw = db.execute("SELECT header FROM blocks WHERE height=?", (h,)).fetchone()[0]
    db.close()
    header = BlockHeader.decode(bytes(raw))
    forged = dataclasses.replace(header, proposer="n1")
    tamper(
        path,
        "UPDATE blocks SET header=?, hash=? WHERE height=?",
        forged.encode(),
        forged.sha256(),
        h,
    )
    with pytest.raises(BrokenChain, match=f"block {h + 1} does not link"):
        open_store(path)


def test_a_tampered_tx_at_the_head_breaks_its_tx_root(path: Path) -> None:
    db = sqlite3.connect(path)
    raw = db.execute("SELECT raw FROM txs WHERE height=? AND idx=0", (BLOCKS - 1,)).fetchone()
    db.close()
    tamper(path, "UPDATE txs SET raw=? WHERE height=? AND idx=1", raw[0], BLOCKS - 1)
    with pytest.raises(BrokenChain, match=f"block {BLOCKS - 1}"):
        open_store(path)


def test_a_tampered_receipt_at_the_head_breaks_its_receipts_root(path: Path) -> None:
    tamper(path, "UPDATE txs SET reason='bad_nonce' WHERE height=? AND idx=0", BLOCKS)
    with pytest.raises(BrokenChain, match="receipts root"):
        open_store(path)


def test_a_missing_block_is_a_gap(path: Path) -> None:
    tamper(path, "DELETE FROM blocks WHERE height=?", BLOCKS // 2)
    with pytest.raises(BrokenChain):
        open_store(path)


def tamper_bob(path: Path) -> None:
    """Bob's leaf in the head state's accounts tree, rewritten to a balance one unit higher
    (the row keeps its hash: the tree still points at it)."""
    leaf = bytes([Tag.SMT_LEAF]) + account_key(BOB.address)
    paid = Account(BOB.address, 3 * BLOCKS, 0).encode()
    more = Account(BOB.address, 3 * BLOCKS + 1, 0).encode()
    tamper(path, "UPDATE smt_nodes SET node = ? WHERE node = ?", leaf + more, leaf + paid)


def test_a_tampered_state_node_is_found_by_the_full_check(path: Path) -> None:
    tamper_bob(path)
    with pytest.raises(StateMismatch, match="is not the node its hash names"):
        open_store(path, verify="full")


def test_a_tampered_state_node_is_an_error_when_read_never_a_balance(path: Path) -> None:
    tamper_bob(path)
    store = open_store(path, verify=None)  # the scan is the full check's; a read checks too
    with pytest.raises(CorruptNode, match="is not the node its hash names"):
        store.state.account(BOB.address)
    store.close()


def test_a_missing_state_root_is_refused_on_every_open(path: Path) -> None:
    store = open_store(path, verify=None)
    root = store.last_header.state_root
    store.close()
    tamper(path, "DELETE FROM smt_nodes WHERE hash = ?", root)
    with pytest.raises(StateMismatch, match=f"block {BLOCKS}'s state root"):
        open_store(path, verify=None)


def test_another_chain_is_not_damage(path: Path) -> None:
    other = Genesis(CHAIN + "-other", 1_000, GENESIS.members, GENESIS.accounts)
    with pytest.raises(StoreError) as info:
        Store(path, other, engines=chain_engines(), verify="quick")
    assert not isinstance(info.value, StoreDamaged)


@pytest.mark.parametrize("value", ["refuse", "rebuild", "repair"])
def test_damaged_store_is_checked_on_load(tmp_path: Path, value: str) -> None:
    toml = local_cluster_toml("d", list(range(17000, 17008)), {"a": 1})
    path = tmp_path / "cluster.toml"
    path.write_text(toml.replace("[cluster]\n", f'[cluster]\ndamaged_store = "{value}"\n'))
    if value == "repair":
        with pytest.raises(ConfigError, match=r"\[cluster\] damaged_store = .repair.: must be"):
            load_config(path)
    else:
        assert load_config(path).damaged_store == value
    path.write_text(toml)
    assert load_config(path).damaged_store == "refuse"  # the default


@pytest.mark.parametrize("height", [-1, BLOCKS + 1, "'ten'"])
def test_a_state_height_that_no_block_has_is_refused(path: Path, height: object) -> None:
    tamper(path, f"UPDATE meta SET value = {height} WHERE key = 'state_height'")
    with pytest.raises(StoreDamaged):
        open_store(path, verify=None)


def test_blocks_after_the_whole_state_that_do_not_execute_again_are_refused(path: Path) -> None:
    """After a crash the store executes the blocks past `meta.state_height` again; one whose
    stored txs do not give its header's state root is damage, named by its height."""
    tamper(path, "UPDATE meta SET value = ? WHERE key = 'state_height'", BLOCKS - 2)
    txs = sqlite3.connect(path).execute("SELECT raw FROM txs WHERE height = ?", (BLOCKS,))
    raws = [bytes(r[0]) for r in txs]
    tamper(path, "UPDATE txs SET raw = ? WHERE height = ? AND idx = 0", raws[1], BLOCKS)
    with pytest.raises(StateMismatch, match=f"block {BLOCKS} does not execute"):
        open_store(path, verify=None)


def test_a_store_that_crashed_executes_the_blocks_after_its_whole_state(path: Path) -> None:
    store = open_store(path, verify=None)
    head = store.state.root()
    store.close()
    tamper(path, "UPDATE meta SET value = ? WHERE key = 'state_height'", BLOCKS - 5)
    store = open_store(path)
    assert store.state.root() == head and store._state_height == BLOCKS
    store.close()
