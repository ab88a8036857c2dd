"""Exact, exhaustive checks of a rule on a finite type grid, shared by the mechanisms: the
designers report them and a rule's `terms` re-runs the ones a design claims at create,
through the very `settle` the contract runs (Holmstrom's dominant-strategy IC:
/work/shared/seeds/002_73efa823a2277c74.txt, Lecture 10, "VCG mechanism")."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.kernel.rule import BadTerms, Seats

MAX_CHECK_COMPARISONS = 200_000  # the exhaustive check's bound: g^n * n * g comparisons


@dataclass(frozen=True)
class Check:
    """One exact check: whether it holds, and a witness when it does not."""

    ok: bool
    witness: dict[str, Any] | None = None


def harness_seats(n: int) -> Seats:
    """Fixed fake seats for the checks: the settlement depends on them only through ties."""
    return Seats(
        contract_id=bytes(32),
        creator=b"\xee" * 20,
        parties=tuple(bytes([i + 1]) * 20 for i in range(n)),
        draw=bytes(32),
    )


def check_size(types: int, n: int) -> int:
    """The exhaustive check's cost (g^n * n * g comparisons); refuse it over the bound."""
    work = math.prod([types] * n) * n * types
    if work > MAX_CHECK_COMPARISONS:
        raise ValueError(
            f"the exhaustive check needs {types}^{n} * {n} * {types} = {work} comparisons, "
            f"over the bound {MAX_CHECK_COMPARISONS}: use fewer values or parties (or units)"
        )
    return work


def dsic_witness(
    types: int, n: int, utility: Callable[[tuple[int, ...], int, int], int]
) -> dict[str, Any] | None:
    """A profitable misreport, or None: for every profile of types (indices), party i and
    misreport m, utility(reports, i, true type of i) of truth >= that of m.  The others'
    reports are arbitrary (every profile), so this is dominant-strategy IC."""
    for profile in itertools.product(range(types), repeat=n):
        for i in range(n):
            truth = utility(profile, i, profile[i])
            for m in range(types):
                lie = utility((*profile[:i], m, *profile[i + 1 :]), i, profile[i])
                if lie > truth:
                    return {
                        "profile": list(profile),
                        "party": i,
                        "misreport": m,
                        "gain": lie - truth,
                    }
    return None


def first_failure(failures: Iterator[dict[str, Any]]) -> Check:
    """The first failure as a witness; the check holds when there is none."""
    w = next(failures, None)
    return Check(w is None, w)


def refuse_failed(checks: dict[str, Check], claims: Sequence[str]) -> None:
    """Refuse terms (reason "unsafe_design") whose claimed checks do not all hold."""
    failed = [c for c in claims if not checks[c].ok]
    if failed:
        raise BadTerms(
            "unsafe design: " + "; ".join(f"{c} fails: {checks[c].witness}" for c in failed),
            reason="unsafe_design",
        )
