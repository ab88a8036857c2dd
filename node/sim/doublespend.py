"""The private-fork double spend in the simulator, beside Nakamoto's (2008) analysis.

One trial: 4 miners on virtual time; n0 is the attacker with hash share q and
the `double_spend` behaviour.  The attacker pays the victim through the honest
miners (so the payment is in their next block, as Nakamoto's model has it), and
at the same moment starts a private fork holding a conflicting spend of the
same nonce.  It releases the fork once the payment is `k` blocks deep on the
public chain and the fork is longer.  The trial succeeds when an honest node's
chain no longer holds the payment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ledger.tx import transfer
from node.faults.powattacks import DoubleSpend
from node.faults.spec import FaultSpec
from node.sim.cluster import SimCluster

MAX_VIRTUAL_MS = 3_600_000


def nakamoto(q: float, z: int) -> float:
    """The probability that an attacker with share q ever catches up from z blocks behind,
    given the progress it made while the honest chain found those z blocks (Nakamoto 2008,
    section 11)."""
    p = 1.0 - q
    if q >= p:
        return 1.0
    lam = z * q / p
    total = 1.0
    for k in range(z + 1):
        poisson = math.exp(-lam) * lam**k / math.factorial(k)
        total -= poisson * (1 - (q / p) ** (z - k))
    return total


def exact(q: float, z: int) -> float:
    """The same attack as simulated here, exactly: the attacker forks from the block before
    the payment, mines m blocks (negative binomial) while the honest chain finds z, and must
    then get strictly ahead (a tie keeps the block seen first), from z - m behind with
    probability (q/p)**(z - m + 1).  Nakamoto counts a tie as success and approximates m
    by a Poisson variable, so his figure is higher."""
    p = 1.0 - q
    if q >= p:
        return 1.0
    total = 1.0
    for m in range(z + 1):
        ways = math.comb(m + z - 1, m) * p**z * q**m
        total -= ways * (1 - (q / p) ** (z - m + 1))
    return total


@dataclass(frozen=True)
class Trial:
    success: bool
    outcome: str  # released, gave_up or timeout
    blocks: int
    virtual_s: float


def trial(seed: int, q: float, k: int, give_up: int = 20) -> Trial:
    honest = (1.0 - q) / 3
    shares = {"n0": q, "n1": honest, "n2": honest, "n3": honest}
    accounts = {"mallory": 10**6, "victim": 0, "accomplice": 0}
    # no retarget during a trial: work is proportional to length, as in Nakamoto's model
    settings = {"retarget_interval": 10**6, "confirmations": k}
    c = SimCluster(4, seed, accounts=accounts, consensus="pow", hash_share=shares, config=settings)
    chain, mallory = c.genesis.chain_id, c.accounts["mallory"]
    pay = transfer(mallory, chain, 0, c.accounts["victim"].address, 500)
    keep = transfer(mallory, chain, 0, c.accounts["accomplice"].address, 500)
    spec = FaultSpec(
        "double_spend", "n0", {"tx": pay.tx_id.hex(), "confirmations": k, "give_up": give_up}
    )
    c.inject(spec)
    attack = next(
        b for b in c.nodes["n0"].faults.byzantine.active.values() if isinstance(b, DoubleSpend)
    )
    for miner in ("n1", "n2", "n3"):  # the victim's payment, in the honest miners' next block
        c.submit(miner, pay)
    c.submit("n0", keep)  # the attacker's private fork starts now, with the conflicting spend
    finished = c.run_until(lambda: attack.outcome != "mining", MAX_VIRTUAL_MS)
    if finished and attack.outcome == "released":  # let the fork reach the honest nodes
        c.run_until(lambda: False, c.now + 2_000)
    store = c.nodes["n1"].store
    reversed_ = store.get_tx(pay.tx_id) is None and store.get_tx(keep.tx_id) is not None
    return Trial(
        success=attack.outcome == "released" and reversed_,
        outcome=attack.outcome if finished else "timeout",
        blocks=store.height,
        virtual_s=c.now / 1000,
    )


def success_rate(q: float, k: int, trials: int, first_seed: int = 0) -> float:
    """Each (q, k) gets its own seeds, so the rates for different k are independent."""
    base = first_seed + 1_000_003 * k + int(q * 1000) * 7919
    wins = sum(trial(base + i, q, k).success for i in range(trials))
    return wins / trials
