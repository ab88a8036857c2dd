"""The store's query indexes (ledger/index.py) and the RPC methods over them: an account's
txs, a range of blocks and the contract listing always agree with the chain and its state
(after appends, deadlines, reorganisations and a reopen), page exactly, and are read from
an index, never by scanning a table."""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import index
from ledger.block import Block, Genesis, Member
from ledger.contract import engine_table
from ledger.crypto import KeyPair
from ledger.index import ContractQuery
from ledger.state import Receipt, State, build_block
from ledger.store import Store
from ledger.tx import Tx, transfer
from node.process.methods import LedgerMethods
from node.rpc.jsonrpc import INVALID_PARAMS, Dispatcher, RpcError
from tests.helpers.toyengine import ToyEngine, toy_call

CHAIN = "tally-index-test"
KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(8)]
ENGINES = engine_table(ToyEngine())
Places = dict[bytes, list[tuple[int, int]]]


def genesis() -> Genesis:
    return Genesis(
        chain_id=CHAIN,
        timestamp_ms=1_000,
        members=(Member("n0", KEYS[0].public_key),),
        accounts={k.address.hex(): 10**12 for k in KEYS},
    )


class Chain:
    """A store, the blocks appended to it, and what the indexes should say of them."""

    def __init__(self, path: Path) -> None:
        self.store = Store(path, genesis(), engines=ENGINES)
        self.nonces = [0] * len(KEYS)
        self.created: dict[bytes, int] = {}  # contract id -> the height that created it

    def nonce(self, who: int) -> int:
        self.nonces[who] += 1
        return self.nonces[who] - 1

    def transfer(self, who: int, to: int) -> Tx:
        return transfer(KEYS[who], CHAIN, self.nonce(who), KEYS[to].address, 1)

    def call(self, who: int, op: str, cid: bytes, args: dict[str, Any]) -> Tx:
        return toy_call(KEYS[who], CHAIN, self.nonce(who), op, cid, args)

    def block(self, txs: list[Tx], state: State | None = None, parent: Any = None) -> Any:
        state = state or self.store.state
        parent = parent or self.store.last_header
        return build_block(state, parent, tuple(txs), "n0", parent.timestamp_ms + 1_000)

    def append(self, txs: list[Tx]) -> None:
        block, state, receipts = self.block(txs)
        self.store.append(block, receipts, state)
        self.note_created(block, receipts)

    def note_created(self, block: Block, receipts: tuple[Receipt, ...]) -> None:
        for tx in block.txs:
            if (
                tx.kind == "contract"
                and not tx.payload["id"]
                and tx.tx_id in self.store.state.contracts
            ):
                self.created[tx.tx_id] = block.height

    def methods(self) -> LedgerMethods:
        node = SimpleNamespace(store=self.store, replica=None, genesis=genesis())
        return LedgerMethods(Dispatcher(), node, ())  # type: ignore[arg-type]


def expected_places(store: Store) -> Places:
    """Every address's txs, found by reading the whole chain (the oracle)."""
    places: Places = defaultdict(list)
    for block in store.iter_blocks(1):
        for i, tx in enumerate(block.txs):
            for address in tx.accounts:
                places[address].append((block.height, i))
    return places


async def all_pages(methods: LedgerMethods, address: bytes, limit: int) -> list[tuple[int, int]]:
    """An account's whole history, page by page, following each page's `next`."""
    got: list[tuple[int, int]] = []
    params: dict[str, Any] = {"address": address.hex(), "limit": limit}
    while True:
        page = await methods.get_account_txs(params)
        assert len(page["txs"]) <= limit
        got += [(t["height"], t["index"]) for t in page["txs"]]
        if page["next"] is None:
            return got
        params |= page["next"]


def expected_contracts(chain: Chain) -> list[dict[str, Any]]:
    """The listing computed from the state's contracts themselves (the oracle)."""
    rows = []
    for cid, record in sorted(chain.store.state.contracts.items()):
        summary = ToyEngine().describe(record)
        rows.append(
            {
                "id": cid.hex(),
                "engine": record.engine,
                "phase": summary.phase,
                "active": record.active,
                "deadline": ToyEngine().deadline(record) if record.active else None,
                "parties": sorted({p.hex() for p in summary.parties}),
                "created_height": chain.created[cid],
                "escrow": record.escrow,
            }
        )
    return rows


async def listing(methods: LedgerMethods, limit: int, **query: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    params = {"limit": limit, **query}
    while True:
        page = await methods.list_contracts(params)
        got += [c | {"parties": sorted(c["parties"])} for c in page["contracts"]]
        if page["next"] is None:
            return got
        params["after"] = page["next"]


async def check_indexes(chain: Chain, rng: random.Random) -> None:
    methods = chain.methods()
    places = expected_places(chain.store)
    for key in KEYS:
        assert await all_pages(methods, key.address, rng.choice([1, 3, 100])) == places.get(
            key.address, []
        )
    want = expected_contracts(chain)
    assert await listing(methods, rng.choice([1, 2, 100])) == want
    party = rng.choice(KEYS).address.hex()
    assert await listing(methods, 2, party=party) == [c for c in want if party in c["parties"]]
    assert await listing(methods, 2, active=True) == [c for c in want if c["active"]]
    phase = rng.choice(["a", "b", "closed", "expired"])
    assert await listing(methods, 3, phase=phase) == [c for c in want if c["phase"] == phase]


# One block's worth of moves: (kind, sender, argument), interpreted by `moves_to_txs`.
Move = tuple[str, int, int]
moves = st.lists(
    st.tuples(
        st.sampled_from(["transfer", "create", "create_expiring", "move", "close"]),
        st.integers(0, len(KEYS) - 1),
        st.integers(0, 1000),
    ),
    max_size=6,
)


def moves_to_txs(chain: Chain, block_moves: list[Move], cids: list[bytes]) -> list[Tx]:
    txs = []
    for kind, who, n in block_moves:
        if kind == "transfer":
            txs.append(chain.transfer(who, n % len(KEYS)))
        elif kind.startswith("create"):
            parties = [KEYS[who].address, KEYS[n % len(KEYS)].address]
            args: dict[str, Any] = {"phase": "a", "parties": parties}
            if kind == "create_expiring":
                args["window_s"] = 1 + n % 3  # blocks are 1 s apart: expires 1-3 blocks on
            txs.append(chain.call(who, "create", b"", args))
            cids.append(txs[-1].tx_id)
        elif cids:
            op, args = ("move", {"phase": "b"}) if kind == "move" else ("close", {})
            txs.append(chain.call(who, op, cids[n % len(cids)], args))
    return txs


@settings(max_examples=25, deadline=None)
@given(
    blocks=st.lists(moves, min_size=1, max_size=8),
    fork=st.lists(moves, min_size=1, max_size=4),
    depth=st.integers(0, 3),
    seed=st.integers(0, 2**32),
)
async def test_the_indexes_agree_with_the_chain_through_deadlines_a_reorg_and_a_reopen(
    blocks: list[list[Move]], fork: list[list[Move]], depth: int, seed: int
) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain(Path(tmp) / "chain.db")
        cids: list[bytes] = []
        for block_moves in blocks:
            chain.append(moves_to_txs(chain, block_moves, cids))
            await check_indexes(chain, rng)
        await reorganise(chain, max(chain.store.height - depth, 0), fork, cids)
        await check_indexes(chain, rng)
        chain.store.close()
        chain.store = Store(Path(tmp) / "chain.db", genesis(), engines=ENGINES)
        await check_indexes(chain, rng)
        chain.store.close()


async def reorganise(chain: Chain, at: int, fork: list[list[Move]], cids: list[bytes]) -> None:
    """Replace the blocks above `at` with new ones made from `fork`."""
    state, parent = chain.store.state_at(at), chain.store.header(at)
    chain.nonces = [state.account(k.address).nonce for k in KEYS]
    chain.created = {c: h for c, h in chain.created.items() if h <= at}
    branch = []
    for block_moves in fork:
        block, state, receipts = chain.block(moves_to_txs(chain, block_moves, cids), state, parent)
        branch.append((block, receipts))
        parent = block.header
    chain.store.switch(at, branch, state)
    for block, receipts in branch:
        chain.note_created(block, receipts)


def fill(chain: Chain, txs: int, per_block: int = 500) -> None:
    """`txs` transfers among the keys, `per_block` a block, and a contract every block."""
    rng = random.Random(7)
    while chain.store.height * per_block < txs:
        made = [
            chain.transfer(rng.randrange(len(KEYS)), rng.randrange(len(KEYS)))
            for _ in range(per_block - 1)
        ]
        parties = [KEYS[0].address, KEYS[chain.store.height % len(KEYS)].address]
        made.append(chain.call(1, "create", b"", {"phase": "a", "parties": parties}))
        chain.append(made)


@pytest.mark.parametrize(
    "txs", [2_000, pytest.param(100_000, marks=pytest.mark.slow)], ids=["2k", "100k"]
)
async def test_a_page_of_history_is_read_from_the_index(tmp_path: Path, txs: int) -> None:
    chain = Chain(tmp_path / "chain.db")
    fill(chain, txs)
    assert chain.store.tx_count >= txs
    methods = chain.methods()
    address = KEYS[3].address
    start = time.perf_counter()
    page = await methods.get_account_txs({"address": address.hex(), "from_height": 3, "limit": 100})
    elapsed_ms = 1000 * (time.perf_counter() - start)
    print(f"\n{chain.store.tx_count} txs: a page of 100 of one account's in {elapsed_ms:.2f} ms")
    places = [p for p in expected_places(chain.store)[address] if p >= (3, 0)]
    assert [(t["height"], t["index"]) for t in page["txs"]] == places[:100]
    assert page["next"] == {"from_height": places[100][0], "from_index": places[100][1]}
    assert_searches(
        chain.store, "address=? AND (height,idx)>", index.ACCOUNT_PAGE, (address, 3, 0, 101)
    )
    for query, key in (
        (ContractQuery(party=KEYS[2].address), "(address=? AND contract_id>?)"),
        (ContractQuery(phase="a", limit=5), "contracts_by_phase (phase=? AND contract_id>?)"),
        (ContractQuery(engine="toy", after=b"\x80" * 32), "(engine=? AND contract_id>?)"),
        (ContractQuery(active=True), "contracts_by_active (active=? AND contract_id>?)"),
    ):
        assert_searches(chain.store, key, *index.contract_sql(query))
    chain.store.close()


def assert_searches(store: Store, key: str, sql: str, args: Any) -> None:
    """SQLite's own plan for `sql` starts with a range of an index by `key` (the filter),
    then reads every other table by its key: no scan, and no sort of what it found."""
    db: sqlite3.Connection = store._db
    plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql, tuple(args))]
    assert key in plan[0], plan
    assert all(step.startswith("SEARCH") for step in plan), plan


def test_a_store_from_before_the_indexes_is_indexed_when_opened(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "chain.db")
    fill(chain, 1_500, per_block=100)
    before = [chain.store.account_txs(k.address, (0, 0), 10_000) for k in KEYS]
    contracts = chain.store.contracts(ContractQuery(limit=10_000))
    db: sqlite3.Connection = chain.store._db
    for table in ("account_txs", "contracts", "contract_parties"):
        db.execute(f"DELETE FROM {table}")
    db.execute("DELETE FROM meta WHERE key='indexed'")
    chain.store.close()
    store = Store(tmp_path / "chain.db", genesis(), engines=ENGINES)
    assert [store.account_txs(k.address, (0, 0), 10_000) for k in KEYS] == before
    assert store.contracts(ContractQuery(limit=10_000)) == contracts
    assert len(contracts) == store.height
    store.close()


async def test_get_blocks_pages_a_capped_range(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "chain.db")
    for _ in range(index.MAX_PAGE + 20):
        chain.append([])
    methods = chain.methods()
    page = await methods.get_blocks({"from": 5})
    assert [b["height"] for b in page["blocks"]] == list(range(5, 5 + index.MAX_PAGE))
    assert page["next"] == 5 + index.MAX_PAGE
    rest = await methods.get_blocks({"from": page["next"], "to": 10**9})
    assert [b["height"] for b in rest["blocks"]] == list(
        range(page["next"], chain.store.height + 1)
    )
    assert rest["next"] is None
    one = rest["blocks"][-1]
    assert one["hash"] == chain.store.block_hash(chain.store.height).hex()  # type: ignore[union-attr]
    assert one["txs"] == 0 and one["type"] == "block"
    chain.store.close()


@pytest.mark.parametrize(
    ("method", "params", "named"),
    [
        ("get_account_txs", {"address": "00" * 20, "limit": 0}, "'limit': expected 1..100"),
        ("get_account_txs", {"address": "00" * 20, "limit": 101}, "'limit': expected 1..100"),
        ("get_account_txs", {"address": "00" * 20, "from_height": -1}, "'from_height'"),
        ("get_account_txs", {"address": "00"}, "'address'"),
        ("get_blocks", {"from": 5}, "'from': expected 0..0"),
        ("get_blocks", {"from": 0, "to": -1}, "'to': below 'from'"),
        ("list_contracts", {"after": "zz"}, "'after'"),
        ("list_contracts", {"party": "00" * 3}, "'party'"),
        ("list_contracts", {"active": 1}, "'active'"),
        ("list_contracts", {"limit": 500}, "'limit': expected 1..100"),
    ],
)
async def test_bad_query_params_are_named(
    tmp_path: Path, method: str, params: dict[str, Any], named: str
) -> None:
    chain = Chain(tmp_path / "chain.db")
    with pytest.raises(RpcError) as e:
        await getattr(chain.methods(), method)(params)
    assert e.value.code == INVALID_PARAMS and named in e.value.message
    chain.store.close()
