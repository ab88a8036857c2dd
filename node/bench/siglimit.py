"""This machine's signature limit: the yardstick for PBFT throughput (`tally bench siglimit`).

A committed transfer costs one Ed25519 signature (the client's) and n verifications (every
replica checks every client signature), so no cluster on this machine can commit more than

    limit_tx_s = cores / (n_verify * t_verify + t_sign)

A throughput quoted as a share of the limit measured in the same run carries from one
machine to the next; a bare tx/s figure does not.  t_verify and t_sign are PyNaCl's
per-call times, measured in-process by a short micro-benchmark (the median of a few batches,
so one batch disturbed by another process does not move the figure).  A leaf module: the
benches (node/bench/pbft.py) import it, never the other way round.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import nacl.signing
from rich.table import Table

BATCHES = 5  # batches per operation; the median of their per-call times is reported
VERIFY_CALLS_PER_BATCH = 400  # 5 x 400 = 2,000 verifications: ~0.2 s on a 2-core laptop
SIGN_CALLS_PER_BATCH = 400  # 5 x 400 = 2,000 signatures
MESSAGE_BYTES = 160  # about a signed transfer's signing bytes; Ed25519 cost barely depends on it

Clock = Callable[[], float]


@dataclass(frozen=True)
class SignatureLimit:
    """The signature limit of this machine for a cluster of `nodes` replicas."""

    nodes: int
    cores: int
    n_verify: int  # verifications per committed tx: one per replica
    verify_us: float  # per call
    sign_us: float  # per call
    limit_tx_s: float

    def share(self, tx_s: float) -> float:
        """A throughput as a share of the limit (4 decimals: the JSON stays readable)."""
        return round(tx_s / self.limit_tx_s, 4)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def limit_tx_s(cores: int, n_verify: int, verify_s: float, sign_s: float) -> float:
    """Committed tx/s if the cores did nothing but a tx's signature work."""
    return cores / (n_verify * verify_s + sign_s)


def per_call_s(work: Callable[[int], object], calls: int, clock: Clock, batches: int) -> float:
    """The median, over `batches`, of seconds per call of `work(i)` timed `calls` at a time."""
    times = []
    for _ in range(batches):
        start = clock()
        for i in range(calls):
            work(i)
        times.append((clock() - start) / calls)
    return statistics.median(times)


def measure(
    n: int, clock: Clock = time.perf_counter, cores: int | None = None, batches: int = BATCHES
) -> SignatureLimit:
    """Time PyNaCl's sign and verify right now, and the limit for `n` replicas."""
    key = nacl.signing.SigningKey(bytes(range(32)))
    public = bytes(key.verify_key)
    # distinct messages, as in a real run; the verify path builds a VerifyKey per call as
    # ledger.crypto.verify does (its memo cache is bypassed: every message here is new)
    messages = [i.to_bytes(4, "big") * (MESSAGE_BYTES // 4) for i in range(VERIFY_CALLS_PER_BATCH)]
    signatures = [key.sign(m).signature for m in messages]
    sign_s = per_call_s(lambda i: key.sign(messages[i]), SIGN_CALLS_PER_BATCH, clock, batches)

    def verify(i: int) -> None:
        nacl.signing.VerifyKey(public).verify(messages[i], signatures[i])

    verify_s = per_call_s(verify, VERIFY_CALLS_PER_BATCH, clock, batches)
    return limit_for(n, cores or os.cpu_count() or 1, verify_s, sign_s)


def limit_for(n: int, cores: int, verify_s: float, sign_s: float) -> SignatureLimit:
    return SignatureLimit(
        nodes=n,
        cores=cores,
        n_verify=n,
        verify_us=round(verify_s * 1e6, 2),
        sign_us=round(sign_s * 1e6, 2),
        limit_tx_s=round(limit_tx_s(cores, n, verify_s, sign_s), 1),
    )


def limits_table(limits: list[SignatureLimit]) -> Table:
    table = Table(title="signature limit: cores / (n verify + 1 sign)")
    for col in ("n", "cores", "verify µs", "sign µs", "limit tx/s"):
        table.add_column(col, justify="right")
    for s in limits:
        table.add_row(*map(str, (s.nodes, s.cores, s.verify_us, s.sign_us, f"{s.limit_tx_s:.0f}")))
    return table
