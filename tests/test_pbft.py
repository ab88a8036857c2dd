"""PBFT normal case in the deterministic in-process cluster (same Replica as the runtime)."""

from __future__ import annotations

import dataclasses

import pytest

from consensus.events import Broadcast, ClientTx, MessageReceived, TimerFired
from consensus.pbft.certificate import verify_certificate
from consensus.pbft.messages import Commit, CommitCertificate, Prepare, PrePrepare, sign
from ledger.block import Block
from ledger.errors import InvalidBlock
from ledger.tx import Tx, transfer
from node.sim.cluster import SimCluster

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
    nodes = sorted(c.replicas)
    for tx in txs:
        c.submit(c.rng.choice(nodes), tx)


def committed_txs(c: SimCluster, node: str) -> list[bytes]:
    return [tx.tx_id for b in c.chains[node] for tx in b.txs]


def all_committed(c: SimCluster, total: int, nodes: list[str] | None = None) -> bool:
    return all(len(committed_txs(c, n)) >= total for n in nodes or c.replicas)


@pytest.mark.parametrize("seed", range(12))
def test_every_tx_commits_once_and_replicas_agree(seed: int) -> None:
    c = SimCluster(4, seed, accounts=ACCOUNTS, delay_ms=(1, 30))
    txs = workload(c, 60)
    submit_randomly(c, txs)
    assert c.run_until(lambda: all_committed(c, len(txs))), f"stalled (seed {seed})"
    chains = {n: [b.hash for b in ch] for n, ch in c.chains.items()}
    assert len({tuple(h) for h in chains.values()}) == 1, "replicas committed different chains"
    ids = committed_txs(c, "n0")
    assert sorted(ids) == sorted(tx.tx_id for tx in txs) and len(set(ids)) == len(ids)
    for block in c.chains["n1"]:
        verify_certificate(block, c.genesis.members)
    states = {r.state.root() for r in c.replicas.values()}
    assert len(states) == 1
    assert c.replicas["n2"].state.total_supply() == sum(ACCOUNTS.values())


def test_seven_replicas_commit() -> None:
    c = SimCluster(7, 3, accounts=ACCOUNTS)
    txs = workload(c, 30)
    submit_randomly(c, txs)
    assert c.run_until(lambda: all_committed(c, len(txs)))
    assert len({r.state.root() for r in c.replicas.values()}) == 1


def test_same_seed_same_run() -> None:
    runs = []
    for _ in range(2):
        c = SimCluster(4, 99, accounts=ACCOUNTS, delay_ms=(1, 20))
        submit_randomly(c, workload(c, 20))
        assert c.run_until(lambda c=c: all_committed(c, 60))
        runs.append(([b.hash for b in c.chains["n3"]], c.now, c.sent))
    assert runs[0] == runs[1]


def test_one_crashed_backup_does_not_stop_the_others() -> None:
    c = SimCluster(4, 5, accounts=ACCOUNTS)
    c.crashed.add("n3")
    txs = workload(c, 40)
    for i, tx in enumerate(txs):
        c.submit(("n0", "n1", "n2")[i % 3], tx)
    assert c.run_until(lambda: all_committed(c, len(txs), ["n0", "n1", "n2"]))
    assert c.chains["n3"] == []


def test_duplicate_submissions_commit_once() -> None:
    c = SimCluster(4, 8, accounts=ACCOUNTS)
    txs = workload(c, 10)
    for tx in txs:
        for node in c.replicas:  # the same tx sent to every node
            c.submit(node, tx)
    assert c.run_until(lambda: all_committed(c, len(txs)))
    c.run_until(lambda: False, max_ms=c.now + 1000)  # let stragglers arrive
    assert len(committed_txs(c, "n0")) == len(txs)


def test_window_bounds_blocks_in_flight() -> None:
    c = SimCluster(4, 2, accounts=ACCOUNTS, batch_size_max=5, delay_ms=(5, 40))
    c.config = dataclasses.replace(c.config, window=2)
    for r in c.replicas.values():
        r.config = c.config
    submit_randomly(c, workload(c, 30))
    primary = c.replicas["n0"]
    worst = 0

    def done() -> bool:
        nonlocal worst
        worst = max(worst, primary.next_seq - 1 - primary.height)
        return all_committed(c, 90)

    assert c.run_until(done)
    assert 1 <= worst <= 2


# -- Byzantine inputs to one replica ---------------------------------------------------------


def first_pre_prepare(c: SimCluster, tx: Tx) -> PrePrepare:
    """Let the primary propose a block holding `tx` and return its PRE-PREPARE."""
    primary = c.replicas["n0"]
    actions = primary.step(ClientTx(tx), 0)
    actions += primary.step(TimerFired("batch"), 100)
    pps = [a.message for a in actions if isinstance(a, Broadcast)]
    assert pps and isinstance(pps[0], PrePrepare)
    return pps[0]


def test_backup_rejects_block_with_wrong_state_root() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    pp = first_pre_prepare(c, workload(c, 1)[0])
    assert pp.block is not None
    bad_header = dataclasses.replace(pp.block.header, state_root=bytes(32))
    bad_block = Block(bad_header, pp.block.txs, b"")
    forged = sign(dataclasses.replace(pp, digest=bad_block.hash, block=bad_block), c.keys["n0"])
    backup = c.replicas["n1"]
    actions = backup.step(MessageReceived("n0", forged), 100)
    assert not any(isinstance(a, Broadcast) for a in actions)
    assert backup.stats["invalid_block"] == 1
    # the honest proposal for the same sequence number is still accepted afterwards
    actions = backup.step(MessageReceived("n0", pp), 100)
    assert any(isinstance(a, Broadcast) and isinstance(a.message, Prepare) for a in actions)


def test_votes_with_bad_signatures_or_from_the_wrong_role_are_ignored() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    pp = first_pre_prepare(c, workload(c, 1)[0])
    backup = c.replicas["n1"]
    backup.step(MessageReceived("n0", pp), 100)
    forged = Prepare(0, pp.seq, pp.digest, 2, bytes(64))
    assert backup.step(MessageReceived("n2", forged), 100) == []
    assert backup.stats["bad_signature"] == 1
    not_primary = sign(dataclasses.replace(pp, replica=2, signature=b""), c.keys["n2"])
    backup.step(MessageReceived("n2", not_primary), 100)
    assert backup.stats["pre_prepare_from_backup"] == 1
    from_primary = sign(Prepare(0, pp.seq, pp.digest, 0, b""), c.keys["n0"])
    backup.step(MessageReceived("n0", from_primary), 100)
    assert backup.stats["prepare_from_primary"] == 1
    assert 0 not in backup.log[pp.seq].prepares


def test_conflicting_pre_prepare_keeps_the_first() -> None:
    c = SimCluster(4, 1, accounts=ACCOUNTS)
    txs = workload(c, 2)
    pp = first_pre_prepare(c, txs[0])
    assert pp.block is not None
    other = Block(dataclasses.replace(pp.block.header, timestamp_ms=7), pp.block.txs, b"")
    conflicting = sign(dataclasses.replace(pp, digest=other.hash, block=other), c.keys["n0"])
    backup = c.replicas["n1"]
    backup.step(MessageReceived("n0", pp), 100)
    backup.step(MessageReceived("n0", conflicting), 100)
    assert backup.stats["conflicting_pre_prepare"] == 1
    slot_pp = backup.log[pp.seq].pre_prepare
    assert slot_pp is not None and slot_pp.digest == pp.digest


# -- commit certificates ---------------------------------------------------------------------


def committed_block(seed: int = 4) -> tuple[SimCluster, Block]:
    c = SimCluster(4, seed, accounts=ACCOUNTS, batch_size_max=3)
    submit_randomly(c, workload(c, 3))
    assert c.run_until(lambda: all_committed(c, 9))
    return c, c.chains["n0"][0]


def with_commits(block: Block, commits: tuple[Commit, ...]) -> Block:
    cert = CommitCertificate.decode(block.proof)
    return block.with_proof(dataclasses.replace(cert, commits=commits).encode())


def test_certificate_verifies_and_tampering_fails() -> None:
    c, block = committed_block()
    cert = verify_certificate(block, c.genesis.members)
    assert len(cert.commits) >= 3
    commits = cert.commits
    bad_sig = dataclasses.replace(commits[0], signature=bytes(64))
    cases = {
        "bad signature": with_commits(block, (bad_sig, *commits[1:])),
        "too few": with_commits(block, commits[:2]),
        "repeated signer": with_commits(block, (commits[0], commits[0], commits[1])),
        "unreadable": block.with_proof(b"\x00garbage"),
        "other block": c.chains["n0"][1].with_proof(block.proof),
    }
    for name, bad in cases.items():
        with pytest.raises(InvalidBlock):
            verify_certificate(bad, c.genesis.members)
            pytest.fail(f"accepted a certificate with {name}")
