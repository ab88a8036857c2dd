"""One simulated scenario: a workload under a fault plan, then the checker's verdicts.

Liveness: once every temporary fault is over (partitions healed, crashed nodes
restarted), one fresh probe tx is submitted to each live node; every live node
must commit all of them within `liveness_bound_s` of virtual time.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from consensus.pbft.config import PbftParams
from ledger.block import Block, Genesis
from ledger.store import Store
from ledger.tx import transfer
from node.faults.spec import FaultSpec
from node.sim.checker import (
    Verdict,
    check_agreement,
    check_consistency,
    check_integrity,
    check_validity,
)
from node.sim.cluster import SimCluster
from node.sim.faults import FaultPlan
from node.sim.params import SIM_PBFT, sim_params

ACCOUNTS = 4
BALANCE = 10**12
# `tally sim`'s PBFT parameters: the simulator's small batches and short timeouts, so faults
# and view changes play out in a few simulated seconds.  Each one is a `tally sim` flag.
SIM_PARAMS = replace(
    SIM_PBFT,
    batch_wait_ms=20,
    view_change_timeout_ms=200,
    status_interval_ms=200,
    fetch_timeout_ms=300,
)


@dataclass
class SimReport:
    nodes: int
    seed: int
    duration_s: float
    virtual_s: float
    wall_s: float
    blocks: int
    txs: int
    max_view: int
    views_entered: int
    messages_sent: int
    messages_dropped: int
    messages_duplicated: int
    verdicts: list[Verdict]
    evidence: list[str]  # members that honest nodes' ledgers hold evidence against
    byzantine: list[str]
    command: str
    trace_sha256: str
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def speed(self) -> float:
        """Simulated seconds per wall-clock second."""
        return self.virtual_s / self.wall_s if self.wall_s else float("inf")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"], data["speed"] = self.ok, round(self.speed, 1)
        return data


def run_sim(
    nodes: int,
    seed: int,
    duration_s: float,
    plan: FaultPlan,
    *,
    rate: float = 20.0,
    liveness_bound_s: float = 30.0,
    config: PbftParams | Mapping[str, int] | None = None,
    keep_trace: bool = False,
    faults: tuple[FaultSpec, ...] = (),
    open_store: Callable[[Genesis], Store] | None = None,
) -> tuple[SimReport, SimCluster]:
    """`config`: whole PbftParams, or overrides of SIM_PARAMS by name."""
    wall = time.perf_counter()
    ids = [f"n{i}" for i in range(nodes)]
    gone = plan.down_for_good() | _down_for_good(faults) | _misbehaving(faults)
    live = [nid for nid in ids if nid not in gone]
    accounts = {f"acct{i}": BALANCE for i in range(ACCOUNTS)}
    accounts |= {f"probe-{nid}": BALANCE for nid in live}
    params = sim_params(SIM_PARAMS, config)
    cluster = SimCluster(
        nodes,
        seed,
        accounts=accounts,
        plan=plan,
        config=params,
        keep_trace=keep_trace,
        faults=faults,
        open_store=open_store,
    )
    duration_ms = int(duration_s * 1000)
    _schedule_workload(cluster, random.Random(seed ^ 0x5EED), duration_ms, rate)
    heal_ms = max(plan.heal_ms(), _heal_ms(faults))
    probes = _schedule_probes(cluster, live, heal_ms)
    pending = {nid: set(probes) for nid in live}

    def on_commit(node_id: str, block: Block) -> None:
        if node_id in pending:
            pending[node_id].difference_update(tx.tx_id for tx in block.txs)

    cluster.on_commit.append(on_commit)
    bound_ms = heal_ms + int(liveness_bound_s * 1000)
    cluster.run_until(
        lambda: cluster.now >= duration_ms and not any(pending.values()), max(bound_ms, duration_ms)
    )
    stalled = {nid: len(left) for nid, left in pending.items() if left}
    liveness = Verdict(
        "liveness",
        not stalled,
        f"probes committed on all live honest nodes by {cluster.now / 1000:.2f}s "
        f"(healed at {heal_ms / 1000:.2f}s)"
        if not stalled
        else f"probes still missing: {stalled}",
    )
    scenario = Scenario(seed, duration_s, plan, rate, params, faults)
    return _report(cluster, scenario, liveness, time.perf_counter() - wall), cluster


@dataclass(frozen=True)
class Scenario:
    """What was run: enough to print the command that runs it again."""

    seed: int
    duration_s: float
    plan: FaultPlan
    rate: float
    config: PbftParams
    faults: tuple[FaultSpec, ...]

    def command(self, nodes: int) -> str:
        timers = [
            f"--{f.name.replace('_', '-')} {getattr(self.config, f.name)}"
            for f in fields(PbftParams)
            if getattr(self.config, f.name) != getattr(SIM_PARAMS, f.name)
        ]
        return " ".join(
            [
                "tally sim",
                f"--nodes {nodes}",
                f"--seed {self.seed}",
                f"--duration {self.duration_s:g}",
                f"--rate {self.rate:g}",
                *self.plan.describe(),
                *(f"--fault '{f.describe()}'" for f in self.faults),
                *timers,
            ]
        )


def _misbehaving(faults: tuple[FaultSpec, ...]) -> set[str]:
    return {f.node for f in faults if f.category == "byzantine" or f.kind == "twins"}


def _down_for_good(faults: tuple[FaultSpec, ...]) -> set[str]:
    return {f.node for f in faults if f.kind in ("kill", "pause") and f.duration_seconds is None}


def _heal_ms(faults: tuple[FaultSpec, ...]) -> int:
    """When the last fault that ends, ends (a fault without an end is permanent)."""
    ends = [
        int(((f.at_seconds or 0) + f.duration_seconds) * 1000)
        for f in faults
        if f.duration_seconds is not None
    ]
    ends += [int((f.at_seconds or 0) * 1000) + 1 for f in faults if f.kind == "restart"]
    return max(ends, default=0)


def _schedule_workload(
    cluster: SimCluster, rng: random.Random, duration_ms: int, rate: float
) -> None:
    """Transfers between the accounts, each sent to a random node that is up at the time."""
    count = int(rate * duration_ms / 1000)
    names = [f"acct{i}" for i in range(ACCOUNTS)]
    nonces = dict.fromkeys(names, 0)
    for i in range(count):
        at = (i * duration_ms) // max(count, 1)
        sender = rng.choice(names)
        to = cluster.accounts[rng.choice([n for n in names if n != sender])].address
        tx = transfer(cluster.accounts[sender], cluster.genesis.chain_id, nonces[sender], to, 1)
        nonces[sender] += 1
        cluster.schedule(at, functools.partial(_submit_to_live, cluster, tx, rng.random()))


def _submit_to_live(cluster: SimCluster, tx: Any, pick: float) -> None:
    up = sorted(cluster.replicas)
    if up:
        cluster.submit(up[int(pick * len(up))], tx)


def _schedule_probes(cluster: SimCluster, live: list[str], at_ms: int) -> list[bytes]:
    to = cluster.accounts["acct0"].address
    probes = []
    for nid in live:
        tx = transfer(cluster.accounts[f"probe-{nid}"], cluster.genesis.chain_id, 0, to, 1)
        cluster.submit(nid, tx, at_ms)
        probes.append(tx.tx_id)
    return probes


def _report(cluster: SimCluster, scenario: Scenario, liveness: Verdict, wall_s: float) -> SimReport:
    byzantine = cluster.byzantine_nodes()
    stores = {nid: cluster.nodes[nid].store for nid in cluster.members if nid not in byzantine}
    conflicts = [c for c in cluster.conflicting_votes if c.split()[0] not in byzantine]
    verdicts = [
        check_agreement(stores),
        check_validity(stores, cluster.genesis.chain_id),
        check_integrity(stores),
        check_consistency(conflicts),
        liveness,
    ]
    stats: dict[str, int] = {"bad_frames": cluster.bad_frames}
    for replica in cluster.replicas.values():
        for k, v in replica.stats.items():
            stats[k] = stats.get(k, 0) + v
    top = max(stores.values(), key=lambda s: s.height)
    accused = {r.tx.payload["member"] for s in stores.values() for r in s.evidence()}
    return SimReport(
        nodes=len(cluster.members),
        seed=scenario.seed,
        duration_s=scenario.duration_s,
        virtual_s=cluster.now / 1000,
        wall_s=wall_s,
        blocks=top.height,
        txs=top.tx_count,
        max_view=max((getattr(r, "view", 0) for r in cluster.replicas.values()), default=0),
        views_entered=stats.get("views_entered", 0),
        messages_sent=cluster.sent,
        messages_dropped=cluster.dropped,
        messages_duplicated=cluster.duplicated,
        verdicts=verdicts,
        evidence=sorted(accused),
        byzantine=sorted(byzantine),
        command=scenario.command(len(cluster.members)),
        trace_sha256=cluster.trace_hash.hexdigest(),
        stats=stats,
    )
