"""`tally sim --consensus pow`: miners on virtual time under a fault plan, then verdicts.

- final prefix: every two live nodes agree on every block at least k deep on both;
- replay: each node's stored state equals a fresh replay of its chain from genesis;
- liveness: after the faults end, a probe tx sent to each live node ends up k deep on all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ledger.state import State, apply_block
from ledger.store import Store
from ledger.tx import Tx, transfer
from node.engines import chain_engines
from node.faults.spec import FaultSpec
from node.sim.checker import Verdict
from node.sim.cluster import SimCluster
from node.sim.faults import FaultPlan

ACCOUNTS = {f"acct{i}": 10**9 for i in range(4)}
SETTLE_BLOCKS = 20  # target block times allowed for the probes to get k deep


@dataclass
class PowSimReport:
    nodes: int
    seed: int
    virtual_s: float
    wall_s: float
    heights: dict[str, int]
    blocks_by_miner: dict[str, int]
    reorgs: int
    deepest_reorg: int
    txs: int
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["verdicts"] = [vars(v) for v in self.verdicts]
        out["ok"] = self.ok
        return out


def run_pow_sim(
    nodes: int,
    seed: int,
    duration_s: float,
    plan: FaultPlan,
    *,
    shares: dict[str, float] | None = None,
    settings: dict[str, int] | None = None,
    faults: tuple[FaultSpec, ...] = (),
    rate: float = 2.0,
) -> PowSimReport:
    started = time.perf_counter()
    c = SimCluster(
        nodes,
        seed,
        accounts=ACCOUNTS,
        plan=plan,
        consensus="pow",
        hash_share=shares,
        config=settings,
        faults=faults,
    )
    reorgs: list[int] = []
    c.on_reorg.append(lambda _node, _fork, depth: reorgs.append(depth))
    txs = _workload(c, duration_s, rate)
    end = max(int(duration_s * 1000), plan.heal_ms())
    c.run_until(lambda: False, end)
    k = c.config.confirmations  # type: ignore[union-attr]
    target = c.config.target_block_ms  # type: ignore[union-attr]
    live = [n for n in c.members if n not in plan.down_for_good() and c.nodes[n].up]
    probes = [_probe(c, node, i) for i, node in enumerate(live)]
    deep = c.run_until(
        lambda: all(_deep(c.nodes[n].store, p, k) for n in live for p in probes),
        end + SETTLE_BLOCKS * target * max(k, 1),
    )
    stores = {n: c.nodes[n].store for n in c.members}
    miners: dict[str, int] = {}
    ref = stores[live[0]] if live else stores[c.members[0]]
    for h in range(1, ref.height + 1):
        block = ref.get_block(h)
        assert block is not None
        miners[block.header.proposer] = miners.get(block.header.proposer, 0) + 1
    return PowSimReport(
        nodes=nodes,
        seed=seed,
        virtual_s=c.now / 1000,
        wall_s=round(time.perf_counter() - started, 3),
        heights={n: s.height for n, s in stores.items()},
        blocks_by_miner=miners,
        reorgs=len(reorgs),
        deepest_reorg=max(reorgs, default=0),
        txs=len(txs),
        verdicts=[
            _final_prefix({n: stores[n] for n in live}, k),
            _replays(c, {n: stores[n] for n in live}),
            Verdict("liveness", deep, f"probes {'are' if deep else 'are not'} {k} deep on all"),
        ],
    )


def _workload(c: SimCluster, duration_s: float, rate: float) -> list[Tx]:
    names = sorted(c.accounts)
    txs, count = [], int(duration_s * rate)
    for i in range(count):
        sender = c.accounts[names[i % len(names)]]
        to = c.accounts[names[(i + 1) % len(names)]].address
        tx = transfer(sender, c.genesis.chain_id, i // len(names), to, 1)
        c.submit(c.members[i % len(c.members)], tx, at_ms=int(i * 1000 / rate))
        txs.append(tx)
    return txs


def _probe(c: SimCluster, node: str, i: int) -> Tx:
    key = c.accounts[sorted(c.accounts)[i % len(c.accounts)]]
    replica = c.nodes[node].replica
    assert replica is not None
    tx = transfer(key, c.genesis.chain_id, replica.next_nonce(key.address), key.address, 1)
    c.submit(node, tx)
    return tx


def _deep(store: Store, tx: Tx, k: int) -> bool:
    record = store.get_tx(tx.tx_id)
    return record is not None and store.height - record.height + 1 >= k


def _final_prefix(stores: dict[str, Store], k: int) -> Verdict:
    final = {n: s.height - k + 1 for n, s in stores.items()}
    names = sorted(stores)
    for a in names:
        for b in names:
            for h in range(1, min(final[a], final[b]) + 1):
                if stores[a].block_hash(h) != stores[b].block_hash(h):
                    return Verdict("final prefix", False, f"{a} and {b} differ at height {h}")
    return Verdict("final prefix", True, f"agreement on every block {k} deep")


def _replays(c: SimCluster, stores: dict[str, Store]) -> Verdict:
    for node, store in stores.items():
        state = State.from_genesis(c.genesis, chain_engines())
        for h in range(1, store.height + 1):
            block = store.get_block(h)
            assert block is not None
            state, _ = apply_block(state, block)
        if state.root() != store.state.root():
            return Verdict("replay", False, f"{node}'s state differs from a fresh replay")
    return Verdict("replay", True, "every state root equals a fresh replay from genesis")
