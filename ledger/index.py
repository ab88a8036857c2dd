"""The store's query indexes: each account's txs, and contracts by engine, phase and party.

Derived data, like the state: written in the same SQL transaction as the block they come
from (so they never disagree with the chain), dropped above the fork on a reorganisation,
and built from the chain on the first open of a store that predates them.  Every query
here is a range of an index's primary key, so a page costs O(page + log N), never a scan.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ledger.contract import ContractRecord, Engines
from ledger.tx import Tx

# The most rows one query answers: a page of an account's txs, of blocks, of contracts.
MAX_PAGE = 100
# Stores without this in meta ('indexed') are indexed when they are opened.
INDEX_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS account_txs(
    address BLOB NOT NULL, height INTEGER NOT NULL, idx INTEGER NOT NULL,
    PRIMARY KEY (address, height, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contracts(
    contract_id BLOB PRIMARY KEY, engine TEXT NOT NULL, phase TEXT NOT NULL,
    active INTEGER NOT NULL, deadline INTEGER, escrow INTEGER NOT NULL,
    created_height INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS contracts_by_engine ON contracts(engine, contract_id);
CREATE INDEX IF NOT EXISTS contracts_by_phase ON contracts(phase, contract_id);
CREATE INDEX IF NOT EXISTS contracts_by_active ON contracts(active, contract_id);
CREATE TABLE IF NOT EXISTS contract_parties(
    address BLOB NOT NULL, contract_id BLOB NOT NULL,
    PRIMARY KEY (address, contract_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parties_by_contract ON contract_parties(contract_id);
"""


@dataclass(frozen=True)
class ContractEntry:
    """One row of the contract index."""

    contract_id: bytes
    engine: str
    phase: str
    active: bool
    deadline: int | None  # ledger time (ms) of its next default, if it is open
    escrow: int
    created_height: int
    parties: tuple[bytes, ...]


@dataclass(frozen=True)
class ContractQuery:
    """A page of the contract listing: every field given must match (`party`: an address
    taking part), in contract-id order after `after`."""

    engine: str | None = None
    phase: str | None = None
    party: bytes | None = None
    active: bool | None = None
    after: bytes = b""
    limit: int = MAX_PAGE


def index_txs(db: sqlite3.Connection, height: int, txs: Iterable[Tx]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO account_txs VALUES (?, ?, ?)",
        # in key order: each B-tree page is visited once, not once per row
        sorted((address, height, i) for i, tx in enumerate(txs) for address in tx.accounts),
    )


def index_contracts(
    db: sqlite3.Connection,
    engines: Engines,
    before: Mapping[bytes, ContractRecord],
    after: Mapping[bytes, ContractRecord],
) -> None:
    """Bring the contract index from `before` to `after` (two states' contracts): rows for
    the contracts that changed, and none for those that are gone (a reorganisation)."""
    for cid in before.keys() - after.keys():
        db.execute("DELETE FROM contracts WHERE contract_id=?", (cid,))
        db.execute("DELETE FROM contract_parties WHERE contract_id=?", (cid,))
    for record in after.values():
        if before.get(record.contract_id) != record:
            _put_contract(db, engines, record)


def _put_contract(db: sqlite3.Connection, engines: Engines, record: ContractRecord) -> None:
    engine = engines.get(record.engine)
    summary = engine.describe(record) if engine is not None else None
    deadline = engine.deadline(record) if engine is not None and record.active else None
    cid = record.contract_id
    # A contract's id is its creating tx's id; a failed tx may be included again later, so
    # the creation is the latest inclusion.
    db.execute(
        "INSERT INTO contracts VALUES (?, ?, ?, ?, ?, ?, "
        "(SELECT COALESCE(MAX(height), 0) FROM txs WHERE tx_id = ?)) "
        "ON CONFLICT(contract_id) DO UPDATE SET phase=excluded.phase, "
        "active=excluded.active, deadline=excluded.deadline, escrow=excluded.escrow",
        (
            cid,
            record.engine,
            summary.phase if summary else "unknown_engine",
            record.active,
            deadline,
            record.escrow,
            cid,
        ),
    )
    parties = summary.parties if summary else ()
    db.executemany(
        "INSERT OR IGNORE INTO contract_parties VALUES (?, ?)", [(p, cid) for p in parties]
    )


def forget_above(db: sqlite3.Connection, height: int) -> None:
    """A reorganisation's first step, before the new blocks are indexed: forget the txs
    above `height`, and the contracts created there (the new branch may create the same
    contract again, with the same id and record, at another height)."""
    db.execute("DELETE FROM account_txs WHERE height > ?", (height,))
    gone = "SELECT contract_id FROM contracts WHERE created_height > ?"
    db.execute(f"DELETE FROM contract_parties WHERE contract_id IN ({gone})", (height,))
    db.execute("DELETE FROM contracts WHERE created_height > ?", (height,))


def indexed(
    db: sqlite3.Connection, contracts: Mapping[bytes, ContractRecord]
) -> dict[bytes, ContractRecord]:
    """The part of `contracts` that has a row in the index."""
    rows = db.execute("SELECT contract_id FROM contracts").fetchall()
    return {bytes(r[0]): contracts[bytes(r[0])] for r in rows if bytes(r[0]) in contracts}


def build(
    db: sqlite3.Connection, engines: Engines, contracts: Mapping[bytes, ContractRecord]
) -> None:
    """Index a store that predates the indexes: its txs, and the contracts of its state."""
    for table in ("account_txs", "contracts", "contract_parties"):
        db.execute(f"DELETE FROM {table}")
    rows = db.cursor().execute("SELECT height, idx, raw FROM txs ORDER BY height, idx")
    db.executemany(
        "INSERT OR IGNORE INTO account_txs VALUES (?, ?, ?)",
        (
            (address, height, i)
            for height, i, raw in rows
            for address in Tx.decode(bytes(raw)).accounts
        ),
    )
    index_contracts(db, engines, {}, contracts)
    mark_built(db)


def is_built(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT value FROM meta WHERE key='indexed'").fetchone()
    return row is not None and row[0] == INDEX_VERSION


def mark_built(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('indexed', ?)", (INDEX_VERSION,))


ACCOUNT_PAGE = (
    "SELECT a.height, a.idx, t.raw, t.reason FROM account_txs a "
    "JOIN txs t ON t.height = a.height AND t.idx = a.idx "
    "WHERE a.address = ? AND (a.height, a.idx) >= (?, ?) "
    "ORDER BY a.height, a.idx LIMIT ?"
)


def account_page(
    db: sqlite3.Connection, address: bytes, start: tuple[int, int], limit: int
) -> list[tuple[int, int, bytes, str]]:
    """(height, index, raw tx, receipt) of `address`'s txs from place `start` on, in chain
    order, at most `limit`."""
    rows = db.execute(ACCOUNT_PAGE, (address, *start, limit))
    return [(h, i, bytes(raw), reason) for h, i, raw, reason in rows]


def contract_page(db: sqlite3.Connection, q: ContractQuery) -> list[ContractEntry]:
    """The contracts `q` matches, in contract-id order after `q.after`."""
    sql, args = contract_sql(q)
    return [_entry(db, row) for row in db.execute(sql, args).fetchall()]


def contract_sql(q: ContractQuery) -> tuple[str, list[object]]:
    """The query for `q` and its arguments: one range of one index (a party's contracts are
    read from contract_parties, whose key is (address, contract_id))."""
    key = "p.contract_id" if q.party is not None else "c.contract_id"
    where = [f"{key} > ?"]
    args: list[object] = [q.after]
    tables = "contracts c"
    if q.party is not None:
        tables = "contract_parties p JOIN contracts c ON c.contract_id = p.contract_id"
        where.insert(0, "p.address = ?")
        args.insert(0, q.party)
    for column, value in (("engine", q.engine), ("phase", q.phase), ("active", q.active)):
        if value is not None:
            where.append(f"c.{column} = ?")
            args.append(value)
    sql = f"SELECT c.* FROM {tables} WHERE {' AND '.join(where)} ORDER BY {key} LIMIT ?"
    return sql, [*args, q.limit]


def _entry(db: sqlite3.Connection, row: tuple[object, ...]) -> ContractEntry:
    cid, engine, phase, active, deadline, escrow, created = row
    assert isinstance(cid, bytes) and isinstance(engine, str) and isinstance(phase, str)
    assert isinstance(escrow, int) and isinstance(created, int)
    assert deadline is None or isinstance(deadline, int)
    parties = db.execute(
        "SELECT address FROM contract_parties WHERE contract_id = ?", (cid,)
    ).fetchall()
    return ContractEntry(
        cid,
        engine,
        phase,
        bool(active),
        deadline,
        escrow,
        created,
        tuple(bytes(p[0]) for p in parties),
    )
