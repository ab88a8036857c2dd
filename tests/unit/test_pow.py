"""Proof of work, unit level: compact targets, retargeting, seals, every rejection with its
reason, fork choice, reorganisations that match a fresh replay, orphans, and mining jobs."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.events import (
    BlockMined,
    Broadcast,
    CommitBlock,
    MessageReceived,
    Mine,
    Send,
    SwitchChain,
)
from consensus.messages import Blocks, FetchBlocks
from consensus.pow.config import REGTEST_LIMIT_BITS, PowConfig
from consensus.pow.difficulty import (
    BadBits,
    bits_to_target,
    retarget,
    target_to_bits,
    work,
)
from consensus.pow.replica import PowReplica, Recent
from consensus.pow.seal import PowSeal, make_seal, pow_value, search, work_prefix
from contracts.exchange import Exchange
from ledger.block import Block, Genesis, Member
from ledger.crypto import KeyPair
from ledger.state import State, apply_block, build_block, genesis_header
from ledger.store import Store
from ledger.tx import Tx, contract_call, transfer
from node.engines import chain_engines
from node.sim.cluster import SimCluster
from tests.helpers.contracts import lamp_offer

KEYS = {f"n{i}": KeyPair(bytes([i + 1]) * 32) for i in range(3)}
ALICE, BOB, MALLORY = (KeyPair(bytes([0x40 + i]) * 32) for i in range(3))
MEMBERS = tuple(Member(n, k.public_key) for n, k in KEYS.items())
NOW = 1_000_000
GENESIS = Genesis("pow-test", NOW, MEMBERS, {ALICE.address.hex(): 10_000})


def config(**changes: int) -> PowConfig:
    settings = {"initial_difficulty": 4, "retarget_interval": 1000, "confirmations": 2}
    return PowConfig(GENESIS.chain_id, MEMBERS, **(settings | changes))  # type: ignore[arg-type]


def fresh(cfg: PowConfig | None = None, node: str = "n0") -> PowReplica:
    cfg = cfg or config()
    base = Recent(
        Block(genesis_header(GENESIS), (), b""),
        (),
        State.from_genesis(GENESIS, chain_engines()),
        cfg.initial_bits,
        0,
    )
    return PowReplica(cfg, node, KEYS[node], [base])


def mined(
    r: PowReplica,
    parent: bytes,
    txs: tuple[Tx, ...] = (),
    miner: str = "n1",
    ms: int = NOW,
    bits: int | None = None,
    key: KeyPair | None = None,
    good: bool = True,
) -> Block:
    """A block on `parent` as miner `miner` would make it (or with a failing nonce)."""
    entry = r.tree.entries[parent]
    assert entry.state is not None
    block, _, _ = build_block(entry.state, entry.block.header, txs, miner, ms)
    bits = bits if bits is not None else r.tree.expected_bits(entry)
    target, prefix = bits_to_target(bits), work_prefix(block.hash, bits)
    nonce = next(
        n for n in range(10_000) if (pow_value(prefix, n.to_bytes(8, "big")) <= target) == good
    )
    return block.with_proof(make_seal(block, bits, nonce, key or KEYS.get(miner, MALLORY)).encode())


def offer(r: PowReplica, *blocks: Block, sender: str = "n1") -> list[object]:
    return list(r.step(MessageReceived(sender, Blocks(blocks)), NOW))


GENESIS_HASH = genesis_header(GENESIS).sha256()


# -- targets ---------------------------------------------------------------------------------


def test_compact_bits_match_bitcoin() -> None:
    assert bits_to_target(0x1D00FFFF) == 0xFFFF << 208  # Bitcoin's genesis difficulty 1
    assert target_to_bits(0xFFFF << 208) == 0x1D00FFFF
    assert bits_to_target(REGTEST_LIMIT_BITS) == 0x7FFFFF << 232
    assert target_to_bits(0x80) == 0x02008000  # the sign bit forces one more exponent byte
    for bad in (0x1D800000, 0x1D000000, 0x23FFFFFF):
        with pytest.raises(BadBits):
            bits_to_target(bad)


@given(st.integers(1, 2**256 - 1))
def test_compact_targets_round_down_by_at_most_one_part_in_2_to_the_15(target: int) -> None:
    bits = target_to_bits(target)
    back = bits_to_target(bits)
    assert back <= target and (target - back) * 2**15 <= target
    assert target_to_bits(back) == bits


@given(st.integers(1, 10**7), st.integers(1, 10**7))
def test_retargeting_follows_the_time_taken_and_clamps_at_four(actual: int, expected: int) -> None:
    bits = 0x1D00FFFF
    new = bits_to_target(retarget(bits, actual, expected, REGTEST_LIMIT_BITS))
    ratio = new / bits_to_target(bits)
    clamped = min(max(actual / expected, 0.25), 4.0)
    assert ratio <= clamped * (1 + 1e-6)
    assert ratio >= clamped * (1 - 2**-14) - 1e-9 or new == 1


def test_the_limit_caps_an_easier_target_and_work_grows_with_difficulty() -> None:
    assert retarget(REGTEST_LIMIT_BITS, 10**6, 1, REGTEST_LIMIT_BITS) == REGTEST_LIMIT_BITS
    assert work(0x1D00FFFF) > work(0x1E00FFFF) > work(REGTEST_LIMIT_BITS) >= 2


def test_search_finds_the_first_good_nonce() -> None:
    prefix, target = b"prefix", 2**250
    n = search(prefix, target, 0, 10_000)
    assert n is not None and pow_value(prefix, n.to_bytes(8, "big")) <= target
    assert all(pow_value(prefix, k.to_bytes(8, "big")) > target for k in range(n))


# -- rejections ------------------------------------------------------------------------------


def _signed_by_other(r: PowReplica) -> Block:
    b = mined(r, GENESIS_HASH, miner="n1", key=KEYS["n2"])
    return b


REJECTIONS = {
    "invalid_proof": lambda r: mined(r, GENESIS_HASH, good=False),
    "wrong_target": lambda r: mined(r, GENESIS_HASH, bits=0x1F7FFFFF),
    "not_a_member": lambda r: mined(r, GENESIS_HASH, miner="mallory", key=MALLORY),
    "bad_signature": _signed_by_other,
    "timestamp_ahead": lambda r: mined(r, GENESIS_HASH, ms=NOW + 16_000),
    "oversize_block": lambda r: mined(
        r,
        GENESIS_HASH,
        txs=tuple(transfer(ALICE, GENESIS.chain_id, i, BOB.address, 1) for i in range(3)),
    ),
    "invalid_block": lambda r: _bad_root(mined(r, GENESIS_HASH), r),
    "bad_seal": lambda r: mined(r, GENESIS_HASH).with_proof(b"\x00junk"),
}


def _bad_root(block: Block, r: PowReplica) -> Block:
    header = replace(block.header, state_root=bytes(32))
    bad = Block(header, block.txs, b"")
    seal = PowSeal.decode(block.proof)
    prefix, target = work_prefix(bad.hash, seal.bits), bits_to_target(seal.bits)
    nonce = search(prefix, target, 0, 10_000)
    assert nonce is not None
    return bad.with_proof(make_seal(bad, seal.bits, nonce, KEYS["n1"]).encode())


@pytest.mark.parametrize("reason", list(REJECTIONS))
def test_bad_blocks_are_rejected_with_a_clear_reason(reason: str) -> None:
    r = fresh(config(max_block_txs=2))
    block = REJECTIONS[reason](r)
    actions = offer(r, block)
    assert r.stats[f"rejected_{reason}"] == 1, (dict(r.stats), r.last_rejection)
    assert r.height == 0 and not any(isinstance(a, CommitBlock) for a in actions)
    assert r.last_rejection.startswith(reason)


# -- fork choice, reorganisations, orphans ---------------------------------------------------


def chain_of(
    r: PowReplica, parent: bytes, n: int, miner: str, txs: tuple[Tx, ...] = ()
) -> list[Block]:
    out = []
    for i in range(n):
        block = mined(r, parent, txs if i == 0 else (), miner=miner, ms=NOW + i)
        offer(r, block, sender=miner)
        out.append(block)
        parent = block.hash
    return out


def test_most_work_wins_and_a_reorg_matches_a_fresh_replay() -> None:
    r = fresh()
    store = Store(":memory:", GENESIS, engines=chain_engines())
    paid = transfer(ALICE, GENESIS.chain_id, 0, BOB.address, 7)
    x = chain_of(r, GENESIS_HASH, 2, "n1", (paid,))
    for b in x:
        store.append(b, r.tree.entries[b.hash].receipts, r.tree.entries[b.hash].state)  # type: ignore[arg-type]
    assert r.height == 2 and r.state.account(BOB.address).balance == 7
    # a longer branch from genesis without the payment: the replica switches to it
    y1 = mined(r, GENESIS_HASH, miner="n2", ms=NOW + 10)
    assert offer(r, y1, sender="n2")[-1:] != [] and r.tree.tip == x[-1].hash  # less work
    y2 = mined(r, y1.hash, miner="n2", ms=NOW + 11)
    offer(r, y2, sender="n2")
    assert r.tree.tip == x[-1].hash, "equal work: the first seen stays"
    y3 = mined(r, y2.hash, miner="n2", ms=NOW + 12)
    actions = offer(r, y3, sender="n2")
    switch = next(a for a in actions if isinstance(a, SwitchChain))
    assert switch.fork_height == 0 and [b.hash for b, _ in switch.blocks] == [
        y1.hash,
        y2.hash,
        y3.hash,
    ]
    store.switch(switch.fork_height, switch.blocks, switch.state)
    replay = State.from_genesis(GENESIS, chain_engines())
    for b in (y1, y2, y3):
        replay, _ = apply_block(replay, b)
    assert store.state.root() == replay.root() == r.state.root() == y3.header.state_root
    assert store.height == 3 and store.get_tx(paid.tx_id) is None
    assert paid.tx_id in r.mempool, "a tx of the abandoned branch returns to the pool"
    assert r.stats["reorgs"] == 1 and r.stats["reorg_depth_max"] == 2


def test_a_reorganised_store_reopens_on_the_new_chain(tmp_path: object) -> None:
    path = f"{tmp_path}/chain.sqlite"
    r = fresh()
    store = Store(path, GENESIS, engines=chain_engines())
    for b in chain_of(r, GENESIS_HASH, 1, "n1"):
        e = r.tree.entries[b.hash]
        store.append(b, e.receipts, e.state)  # type: ignore[arg-type]
    y = [mined(r, GENESIS_HASH, miner="n2", ms=NOW + 5)]
    offer(r, y[0], sender="n2")
    y.append(mined(r, y[0].hash, miner="n2", ms=NOW + 6))
    switch = next(a for a in offer(r, y[1], sender="n2") if isinstance(a, SwitchChain))
    store.switch(switch.fork_height, switch.blocks, switch.state)
    store.close()
    again = Store(path, GENESIS, engines=chain_engines())
    assert again.height == 2 and again.last_header.sha256() == y[1].hash
    assert again.state.root() == y[1].header.state_root


def test_orphans_wait_for_their_parent_and_the_pool_is_bounded() -> None:
    r = fresh(config(max_orphans=3))
    a = mined(r, GENESIS_HASH, miner="n1")
    r2 = fresh()
    offer(r2, a)
    b = mined(r2, a.hash, miner="n1", ms=NOW + 1)
    actions = offer(r, b)
    assert b.hash in r.orphans and r.height == 0
    assert any(isinstance(x, Send) and isinstance(x.message, FetchBlocks) for x in actions)
    offer(r, a)
    assert r.height == 2 and not r.orphans
    r3 = fresh(config(max_orphans=3))
    parent = a.hash
    for i in range(6):  # six blocks whose parents r3 never sees
        child = mined(r2, parent, miner="n1", ms=NOW + 10 + i)
        offer(r2, child)
        offer(r3, child)
        parent = child.hash
    assert len(r3.orphans) == 3 and r3.stats["orphans_evicted"] == 3


def test_mining_jobs_seal_blocks_and_stale_jobs_are_ignored() -> None:
    r = fresh()
    start = r.start(NOW)
    job = next(a for a in start if isinstance(a, Mine))
    nonce = search(job.prefix, job.target, 0, 10_000)
    assert nonce is not None
    assert r.step(BlockMined(job.job + 1, nonce), NOW) == []
    assert r.stats["stale_job"] == 1
    actions = r.step(BlockMined(job.job, nonce), NOW)
    commit = next(a for a in actions if isinstance(a, CommitBlock))
    assert commit.block.header.proposer == "n0" and r.height == 1
    assert any(isinstance(a, Broadcast) and isinstance(a.message, Blocks) for a in actions)
    assert any(isinstance(a, Mine) and a.job == job.job + 1 for a in actions), "a new job"


def test_the_target_follows_the_retarget_rule_along_a_chain() -> None:
    r = fresh(config(retarget_interval=4, target_block_ms=100))
    parent = GENESIS_HASH
    for i in range(8):  # blocks 25 ms apart: four times too fast
        b = mined(r, parent, miner="n1", ms=NOW + 25 * (i + 1))
        offer(r, b)
        parent = b.hash
    bits = [r.tree.entries[r.tree.active[h]].bits for h in range(1, 9)]
    first = bits_to_target(bits[0])
    assert bits[:3] == [bits[0]] * 3
    assert bits_to_target(bits[3]) < first, "faster than the target: harder"


def test_a_contract_deadline_runs_in_the_first_mined_block_stamped_past_it() -> None:
    """Miners mine empty blocks too, so a window passes under PoW without heartbeats; the
    default runs by block timestamp: in the first block stamped at or past the deadline."""
    c = SimCluster(4, 3, accounts={"alice": 10**6, "bob": 10**6}, consensus="pow")
    alice, bob = c.accounts["alice"], c.accounts["bob"]
    terms = lamp_offer(bob.address, window_s=10)  # seconds of ledger time
    offer = contract_call(alice, c.genesis.chain_id, 0, "exchange", "offer", b"", terms)
    seen: list[tuple[int, str]] = []  # (block timestamp, stage after it), as n1 commits

    def stage() -> str | None:
        record = c.nodes["n1"].store.state.contracts.get(offer.tx_id)
        return Exchange.decode(record.data).stage if record else None

    def committed(node: str, block: Block) -> None:
        if node == "n1" and (now := stage()) is not None:
            seen.append((block.header.timestamp_ms, now))

    c.on_commit.append(committed)
    c.submit("n0", offer)
    assert c.run_until(lambda: stage() is not None, 60_000)
    record = c.nodes["n1"].store.state.contracts[offer.tx_id]
    due = Exchange.decode(record.data).deadline
    assert c.run_until(lambda: stage() == "cancelled", due + 120_000)
    assert seen and all(st == "await_accept" for ts, st in seen if ts < due), seen
    assert [st for ts, st in seen if ts >= due][:1] == ["cancelled"], seen
