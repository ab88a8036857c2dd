"""PBFT replica behaviour, driven directly or in the deterministic simulator."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.events import (
    Broadcast,
    ClientTx,
    CommitBlock,
    MessageReceived,
    Persist,
    Send,
    SetTimer,
    TimerFired,
)
from consensus.messages import Blocks, FetchBlocks
from consensus.pbft.messages import (
    Commit,
    CommitCertificate,
    NewView,
    Prepare,
    PrePrepare,
    Status,
    ViewChange,
    sign,
)
from consensus.pbft.proofs import valid_new_view, verify_certificate
from consensus.pbft.replica import STATUS_TIMER, Replica
from contracts.exchange import Exchange
from ledger.block import Batch, Block
from ledger.contract import ContractError, ContractRecord, ContractSummary, Effect
from ledger.encoding import Struct
from ledger.errors import InvalidBlock
from ledger.state import State
from ledger.tx import Tx, contract_call, transfer
from node.sim.cluster import SimCluster
from node.sim.faults import Crash, FaultPlan
from tests.helpers.contracts import lamp_offer

ACCOUNTS = {"alice": 10**9, "bob": 10**9, "carol": 10**9}


def workload(c: SimCluster, per_account: int) -> list[Tx]:
    names = list(ACCOUNTS)
    txs = []
    for i, name in enumerate(names):
        to = c.accounts[names[(i + 1) % len(names)]].address
        for nonce in range(per_account):
            txs.append(transfer(c.accounts[name], c.genesis.chain_id, nonce, to, 1 + nonce % 7))
    return txs


def submit_randomly(c: SimCluster, txs: list[Tx]) -> None:
    """Each tx to a random node: a sender's nonces reach the primary out of order."""
    nodes = sorted(c.nodes)
    for tx in txs:
        c.submit(c.rng.choice(nodes), tx)


def committed(c: SimCluster, node: str) -> list[bytes]:
    store = c.nodes[node].store
    return [t for h in range(1, store.height + 1) for t in store.get_tx_ids(h)]


def all_committed(c: SimCluster, total: int, nodes: list[str] | None = None) -> bool:
    return all(c.nodes[n].store.tx_count >= total for n in nodes or c.nodes)


def chain(c: SimCluster, node: str) -> list[bytes | None]:
    store = c.nodes[node].store
    return [store.block_hash(h) for h in range(1, store.height + 1)]


@pytest.mark.parametrize("seed", range(8))
def test_every_tx_commits_once_and_replicas_agree(seed: int) -> None:
    c = SimCluster(4, seed, accounts=ACCOUNTS, plan=FaultPlan(jitter_ms=30))
    txs = workload(c, 60)
    submit_randomly(c, txs)
    assert c.run_until(lambda: all_committed(c, len(txs)), 60_000), f"stalled (seed {seed})"
    assert len({tuple(chain(c, n)) for n in c.nodes}) == 1, "replicas committed different chains"
    ids = committed(c, "n0")
    assert sorted(ids) == sorted(tx.tx_id for tx in txs)
    store = c.nodes["n1"].store
    for h in range(1, store.height + 1):
        block = store.get_block(h)
        assert block is not None
        verify_certificate(block, c.config)
    assert len({r.state.root() for r in c.replicas.values()}) == 1
    assert c.replicas["n2"].state.total_supply() == sum(ACCOUNTS.values())


def test_seven_replicas_commit() -> None:
    c = SimCluster(7, 3, accounts=ACCOUNTS)
    txs = workload(c, 30)
    submit_randomly(c, txs)
    assert c.run_until(lambda: all_committed(c, len(txs)), 60_000)
    assert len({r.state.root() for r in c.replicas.values()}) == 1


def test_one_crashed_backup_does_not_stop_the_others() -> None:
    c = SimCluster(4, 5, accounts=ACCOUNTS, plan=FaultPlan(crashes=(Crash("n3", 0),)))
    txs = workload(c, 40)
    for i, tx in enumerate(txs):
        c.submit(("n0", "n1", "n2")[i % 3], tx, at_ms=1)
    assert c.run_until(lambda: all_committed(c, len(txs), ["n0", "n1", "n2"]), 60_000)
    assert c.nodes["n3"].store.height == 0


def test_a_crashed_primary_is_replaced_and_the_new_one_commits() -> None:
    c = SimCluster(4, 6, accounts=ACCOUNTS, plan=FaultPlan(crashes=(Crash("n0", 50),)))
    txs = workload(c, 10)
    for tx in txs:
        c.submit("n2", tx, at_ms=100)
    assert c.run_until(lambda: all_committed(c, len(txs), ["n1", "n2", "n3"]), 30_000)
    views = {r.view for r in c.replicas.values()}
    assert views == {1} and c.replicas["n1"].is_primary
    assert all(r.stats["views_entered"] == 1 for r in c.replicas.values())


def test_a_restarted_replica_catches_up_from_its_store() -> None:
    plan = FaultPlan(crashes=(Crash("n3", 100, 3_000),))
    c = SimCluster(4, 7, accounts=ACCOUNTS, plan=plan, config={"checkpoint_interval": 4})
    txs = workload(c, 40)
    for i, tx in enumerate(txs):
        c.submit(("n0", "n1", "n2")[i % 3], tx, at_ms=200 + i * 10)
    assert c.run_until(lambda: all_committed(c, len(txs)), 60_000)
    assert chain(c, "n3") == chain(c, "n0")
    assert c.replicas["n3"].stats["fetched_blocks"] > 0
    assert c.conflicting_votes == []


def test_duplicate_submissions_commit_once() -> None:
    c = SimCluster(4, 8, accounts=ACCOUNTS)
    txs = workload(c, 10)
    for tx in txs:
        for node in c.nodes:  # the same tx sent to every node
            c.submit(node, tx)
    assert c.run_until(lambda: all_committed(c, len(txs)), 30_000)
    c.run_until(lambda: False, c.now + 1000)  # let stragglers arrive
    assert c.nodes["n0"].store.tx_count == len(txs)
    assert c.nodes["n0"].store.repeated_tx_ids() == []


def test_window_bounds_batches_in_flight() -> None:
    c = SimCluster(
        4,
        2,
        accounts=ACCOUNTS,
        plan=FaultPlan(delay_ms=5, jitter_ms=35),
        config={"batch_size_max": 5, "window": 2},
    )
    submit_randomly(c, workload(c, 30))
    primary = c.nodes["n0"]
    worst = 0

    def done() -> bool:
        nonlocal worst
        r = primary.replica
        assert r is not None
        worst = max(worst, r.next_seq - 1 - r.height)
        return all_committed(c, 90)

    assert c.run_until(done, 60_000)
    assert 1 <= worst <= 2


# -- one replica fed Byzantine input ---------------------------------------------------------


def first_pre_prepare(c: SimCluster, tx: Tx) -> PrePrepare:
    """Let the primary propose a batch holding `tx` and return its PRE-PREPARE."""
    primary = c.replicas["n0"]
    actions = primary.step(ClientTx(tx), 0) + primary.step(TimerFired("batch"), 100)
    pps = [a.message for a in actions if isinstance(a, Broadcast)]
    assert pps and isinstance(pps[0], PrePrepare)
    persisted = [a.message for a in actions if isinstance(a, Persist)]
    assert pps[0] in persisted, "a pre-prepare must be persisted before it is sent"
    return pps[0]


def test_backup_rejects_a_batch_that_does_not_match_its_digest() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    pp = first_pre_prepare(c, workload(c, 1)[0])
    assert pp.batch is not None
    other = dataclasses.replace(pp.batch, proposed_ms=pp.batch.proposed_ms + 1)
    forged = dataclasses.replace(pp, batch=other)  # signature still valid: it omits the batch
    backup = c.replicas["n1"]
    assert backup.step(MessageReceived("n0", forged), 100) == []
    assert backup.stats["bad_pre_prepare"] == 1
    actions = backup.step(MessageReceived("n0", pp), 100)  # the honest one still works
    assert any(isinstance(a, Broadcast) and isinstance(a.message, Prepare) for a in actions)


def test_votes_with_bad_signatures_or_from_the_wrong_role_are_ignored() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    pp = first_pre_prepare(c, workload(c, 1)[0])
    backup = c.replicas["n1"]
    backup.step(MessageReceived("n0", pp), 100)
    forged = Prepare(0, pp.seq, pp.digest, 2, bytes(64))
    assert backup.step(MessageReceived("n2", forged), 100) == []
    assert backup.stats["bad_signature"] == 1
    not_primary = sign(dataclasses.replace(pp, replica=2, signature=b""), c.nodes["n2"].key)
    backup.step(MessageReceived("n2", not_primary), 100)
    assert backup.stats["bad_pre_prepare"] == 1
    from_primary = sign(Prepare(0, pp.seq, pp.digest, 0, b""), c.nodes["n0"].key)
    backup.step(MessageReceived("n0", from_primary), 100)
    assert backup.stats["prepare_from_primary"] == 1
    assert 0 not in backup.log[pp.seq].prepares


def test_conflicting_pre_prepare_keeps_the_first() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    pp = first_pre_prepare(c, workload(c, 1)[0])
    assert pp.batch is not None
    other = dataclasses.replace(pp.batch, proposed_ms=7)
    conflicting = sign(dataclasses.replace(pp, digest=other.digest, batch=other), c.nodes["n0"].key)
    backup = c.replicas["n1"]
    backup.step(MessageReceived("n0", pp), 100)
    backup.step(MessageReceived("n0", conflicting), 100)
    assert backup.stats["conflicting_pre_prepare"] == 1
    slot_pp = backup.log[pp.seq].pre_prepare
    assert slot_pp is not None and slot_pp.digest == pp.digest


def test_a_restored_replica_refuses_to_contradict_its_persisted_votes() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    pp = first_pre_prepare(c, workload(c, 1)[0])
    assert pp.batch is not None
    node = c.nodes["n1"]
    earlier = sign(Prepare(0, pp.seq, bytes(32), 1, b""), node.key)  # signed before a crash
    node.store.persist([(pp.seq, 0, earlier.encode())])
    s = node.store
    restored = Replica(c.config, "n1", node.key, s.state, s.last_header, node.durable_records())
    actions = restored.step(MessageReceived("n0", pp), 100)
    assert not any(isinstance(a, Broadcast) and isinstance(a.message, Prepare) for a in actions)
    assert restored.stats["refused_conflicting_vote"] == 1


def test_a_restored_replica_resumes_its_view_change() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    node = c.nodes["n2"]
    vc = sign(ViewChange(3, 0, (), (), 2, b""), node.key)
    node.store.persist([(-1, 3, vc.encode())])
    s = node.store
    restored = Replica(c.config, "n2", node.key, s.state, s.last_header, node.durable_records())
    assert (restored.view, restored.active) == (3, False)
    sent = [a.message for a in restored.start(0) if isinstance(a, Broadcast)]
    assert any(isinstance(m, ViewChange) and m.new_view == 3 for m in sent)


# -- proofs ----------------------------------------------------------------------------------


def committed_block(seed: int = 4) -> tuple[SimCluster, Block, Block]:
    c = SimCluster(4, seed, accounts=ACCOUNTS, config={"batch_size_max": 3})
    submit_randomly(c, workload(c, 3))
    assert c.run_until(lambda: all_committed(c, 9), 30_000)
    first, second = (c.nodes["n0"].store.get_block(h) for h in (1, 2))
    assert first is not None and second is not None
    return c, first, second


def with_commits(block: Block, commits: tuple[Commit, ...]) -> Block:
    cert = CommitCertificate.decode(block.proof)
    return block.with_proof(dataclasses.replace(cert, commits=commits).encode())


def test_certificate_verifies_and_tampering_fails() -> None:
    c, block, second = committed_block()
    cert = verify_certificate(block, c.config)
    assert len(cert.commits) >= 3
    commits = cert.commits
    bad_sig = dataclasses.replace(commits[0], signature=bytes(64))
    cases = {
        "bad signature": with_commits(block, (bad_sig, *commits[1:])),
        "too few": with_commits(block, commits[:2]),
        "repeated signer": with_commits(block, (commits[0], commits[0], commits[1])),
        "unreadable": block.with_proof(b"\x00garbage"),
        "other block": second.with_proof(block.proof),
    }
    for name, bad in cases.items():
        with pytest.raises(InvalidBlock):
            verify_certificate(bad, c.config)
            pytest.fail(f"accepted a certificate with {name}")


def a_new_view() -> tuple[SimCluster, NewView]:
    c = SimCluster(4, 9, accounts=ACCOUNTS, plan=FaultPlan(crashes=(Crash("n0", 50),)))
    nvs: list[Struct] = []
    c.on_send.append(lambda _s, _t, m: nvs.append(m) if isinstance(m, NewView) else None)
    for tx in workload(c, 3):
        c.submit("n2", tx, at_ms=100)
    assert c.run_until(lambda: bool(nvs), 30_000)
    assert isinstance(nvs[0], NewView)
    return c, nvs[0]


def test_new_view_is_checked_by_recomputing_it() -> None:
    c, nv = a_new_view()
    assert valid_new_view(nv, c.config)
    primary_key = c.nodes[c.config.members[nv.view % 4].node_id].key
    null = Batch(c.config.chain_id, 99, "n1", 0, ())
    extra = sign(PrePrepare(nv.view, 99, null.digest, nv.replica, b"", null), primary_key)
    tampered = {
        "too few view changes": dataclasses.replace(nv, view_changes=nv.view_changes[:2]),
        "an extra pre-prepare": dataclasses.replace(nv, pre_prepares=(*nv.pre_prepares, extra)),
        "unsigned": dataclasses.replace(nv, signature=bytes(64)),
        "wrong sender": dataclasses.replace(nv, replica=(nv.replica + 1) % 4),
    }
    for name, bad in tampered.items():
        resigned = bad if name == "unsigned" else sign(bad, primary_key)
        assert not valid_new_view(resigned, c.config), f"accepted a NEW-VIEW with {name}"


# -- view-change rules and state transfer, one replica at a time -----------------------------


def vc_from(c: SimCluster, node: str, view: int) -> ViewChange:
    return sign(ViewChange(view, 0, (), (), c.config.index_of(node), b""), c.nodes[node].key)


def timer_delays(actions: list[object], name: str) -> list[int]:
    return [a.delay_ms for a in actions if isinstance(a, SetTimer) and a.name == name]


def test_view_change_timeouts_double_with_each_failed_view() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    r = c.replicas["n3"]  # primary of view 3, not of 1 or 2: it waits for others' NEW-VIEWs
    base = c.config.view_change_timeout_ms
    delays = []
    for view in (1, 2, 3):
        out = r.step(MessageReceived("n1", vc_from(c, "n1", view)), 0)
        out += r.step(MessageReceived("n2", vc_from(c, "n2", view)), 0)
        assert r.view == view  # joined on f+1 and sent its own
        if view < 3:
            assert not r.active
            delays += timer_delays(out, "view-change")
            r.step(TimerFired("view-change"), 0)  # no NEW-VIEW came: give up on this view
    assert delays == [base, 2 * base]
    assert r.active  # as primary of view 3 it made the NEW-VIEW itself


def test_f_plus_one_view_changes_for_higher_views_join_the_smallest() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    r = c.replicas["n2"]
    r.step(MessageReceived("n0", vc_from(c, "n0", 5)), 0)
    assert r.view == 0 and r.active  # one replica (<= f) might be faulty: ignore
    out = r.step(MessageReceived("n1", vc_from(c, "n1", 3)), 0)
    assert r.view == 3 and not r.active
    sent = [a.message for a in out if isinstance(a, Broadcast)]
    assert any(isinstance(m, ViewChange) and m.new_view == 3 for m in sent)


def lagging_replica() -> tuple[SimCluster, Replica, list[Block]]:
    """n3 of a cluster whose others committed a few blocks without it."""
    plan = FaultPlan(crashes=(Crash("n3", 0),))
    c = SimCluster(4, 12, accounts=ACCOUNTS, plan=plan, config={"batch_size_max": 2})
    txs = workload(c, 4)
    for tx in txs:
        c.submit("n0", tx, at_ms=1)
    assert c.run_until(lambda: all_committed(c, len(txs), ["n0", "n1", "n2"]), 30_000)
    store = c.nodes["n0"].store
    blocks = [store.get_block(h) for h in range(1, store.height + 1)]
    node = c.nodes["n3"]
    fresh = Replica(c.config, "n3", node.key, node.store.state, node.store.last_header)
    return c, fresh, [b for b in blocks if b is not None]


def fetches(actions: list[object]) -> list[str]:
    return [a.to for a in actions if isinstance(a, Send) and isinstance(a.message, FetchBlocks)]


def test_state_transfer_drops_a_lying_peer_and_asks_another() -> None:
    c, r, blocks = lagging_replica()
    r.start(0)
    out = r.step(
        MessageReceived("n0", sign(Status(0, True, len(blocks), 0, 0, b""), c.nodes["n0"].key)),
        5000,
    )
    first = fetches(out)
    assert first == ["n0"]
    lie = blocks[0].with_proof(blocks[1].proof)  # a certificate for another block
    out = r.step(MessageReceived("n0", Blocks((lie, *blocks[1:]))), 5001)
    assert r.height == 0 and r.stats["bad_fetched_block"] == 1
    assert fetches(out) and fetches(out)[0] != "n0"
    out = r.step(MessageReceived(fetches(out)[0], Blocks(tuple(blocks))), 5002)
    assert r.height == len(blocks) and r.last_header == blocks[-1].header
    assert sum(isinstance(a, CommitBlock) for a in out) == len(blocks)


def test_state_transfer_asks_another_peer_when_one_is_silent() -> None:
    c, r, blocks = lagging_replica()
    r.start(0)
    sent = []
    for peer in ("n0", "n1"):
        st = sign(Status(0, True, len(blocks), 0, c.config.index_of(peer), b""), c.nodes[peer].key)
        sent += fetches(r.step(MessageReceived(peer, st), 5000))
    assert len(sent) == 1  # one request at a time
    out = r.step(TimerFired("fetch"), 6000)  # nobody answered
    assert r.stats["fetch_timeouts"] == 1
    assert r.peer_heights[c.config.index_of(sent[0])] == 0  # the silent peer lost its claim
    retry = fetches(out)
    assert len(retry) == 1 and retry[0] != sent[0]


# -- contract deadlines are ledger time: no heartbeat blocks ---------------------------------


class _Clock:
    """A contract engine whose one deadline (ledger time, ms) is its record's data."""

    name = "clock"

    def apply(self, record: object, op: str, args: object, ctx: object) -> Effect:
        raise ContractError("bad_op", "no calls")

    def deadline(self, record: ContractRecord) -> int | None:
        return int(record.data.decode())

    def on_deadline(self, record: ContractRecord, ctx: object) -> Effect:
        return Effect(record.data, False)

    def describe(self, record: ContractRecord) -> ContractSummary:
        return ContractSummary("ticking", ())


def proposals(actions: list[object]) -> list[PrePrepare]:
    return [
        a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, PrePrepare)
    ]


def test_an_idle_primary_proposes_an_empty_batch_only_once_a_deadline_has_passed() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    r = c.replicas["n0"]
    assert isinstance(r, Replica) and r.is_primary
    due = 60_000  # ledger time of the open contract's deadline
    record = ContractRecord(b"\x01" * 32, "clock", str(due).encode(), 0, True)
    r.state = State(r.state.accounts, {record.contract_id: record}, engines={"clock": _Clock()})
    for now in range(1_000, due + 1, 500):  # a status timer every 500 ms: nothing to propose
        assert proposals(r.step(TimerFired(STATUS_TIMER), now)) == [], now
    (pp,) = proposals(r.step(TimerFired(STATUS_TIMER), due + 1))  # our clock is past it
    assert pp.batch is not None and pp.batch.txs == () and pp.batch.proposed_ms == due + 1
    again = proposals(r.step(TimerFired(STATUS_TIMER), due + 1_001))  # a retransmission at most
    assert all(p == pp for p in again) and r.next_seq == pp.seq + 1


def test_an_idle_cluster_with_an_open_contract_adds_a_block_only_when_a_window_passes() -> None:
    c = SimCluster(4, 2, accounts=ACCOUNTS)
    alice, bob = c.accounts["alice"], c.accounts["bob"]
    terms = lamp_offer(bob.address, window_s=30)  # seconds of ledger time
    offer = contract_call(alice, c.genesis.chain_id, 0, "exchange", "offer", b"", terms)
    c.submit("n1", offer)

    def stage() -> str | None:
        record = c.nodes["n0"].store.state.contracts.get(offer.tx_id)
        return Exchange.decode(record.data).stage if record else None

    assert c.run_until(lambda: stage() == "await_accept", 10_000)
    height, offered_ms = c.height("n0"), c.nodes["n0"].store.last_header.timestamp_ms
    c.run_until(lambda: False, offered_ms + 29_000)  # idle, the offer's window still open
    assert [c.height(n) for n in c.nodes] == [height] * 4, "an idle cluster added blocks"
    assert c.run_until(lambda: stage() == "cancelled", offered_ms + 40_000)
    assert c.height("n0") == height + 1  # one empty block, stamped after the deadline
    assert c.nodes["n0"].store.last_header.timestamp_ms > offered_ms + 30_000
