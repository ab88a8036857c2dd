"""Exact randomness for settlements: integers from the draw, and rounding that keeps sums.

Designed schedules are exact rationals (Fractions), but the ledger pays whole units.
`round_preserving` rounds a list of rationals whose sum is a whole number to integers
with the same sum, each rounded up with probability equal to its fractional part
(systematic sampling with one uniform offset).  Over the draw each party's expected
transfer is exactly the designed one, so expected-utility constraints (Bayesian IC,
interim IR) hold exactly, while every realised profile still balances to the unit.

The uniform comes from the 256-bit draw reduced mod L (L = the common denominator of
the fractional parts); its bias is below L / 2**256, nothing at these sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from ledger.encoding import hash_bytes, pack

MAX_DENOMINATOR = 10**12  # the largest denominator a schedule's fractions may have


def uniform(draw: bytes, label: str, modulus: int) -> int:
    """An integer in [0, modulus) from the draw, independent for each label."""
    return int.from_bytes(hash_bytes(pack(["tally/draw", draw, label])), "big") % modulus


def chance(draw: bytes, label: str, p: Fraction) -> bool:
    """True with probability exactly p (0 <= p <= 1) over the draw."""
    return uniform(draw, label, p.denominator) < p.numerator


def round_preserving(values: Sequence[Fraction], draw: bytes, label: str) -> list[int]:
    """Integers with the same (whole) sum, each equal to floor(v) or ceil(v), ceil with
    probability frac(v) over the draw."""
    total = sum(values, Fraction(0))
    if total.denominator != 1:
        raise ValueError(f"the values sum to {total}, not a whole number")
    fracs = [v - math.floor(v) for v in values]
    common = math.lcm(*(f.denominator for f in fracs)) if fracs else 1
    offset = Fraction(uniform(draw, label, common), common)
    out, cumulative = [], Fraction(0)
    for v, f in zip(values, fracs, strict=True):
        up = math.floor(cumulative + f + offset) - math.floor(cumulative + offset)
        out.append(math.floor(v) + up)
        cumulative += f
    return out


def fraction(value: Any, what: str) -> Fraction:
    """A Fraction from its stored form [numerator, denominator] (or a plain integer)."""
    if type(value) is int:
        return Fraction(value)
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(type(x) is int for x in value)
        and 0 < value[1] <= MAX_DENOMINATOR
    ):
        return Fraction(value[0], value[1])
    raise ValueError(
        f"{what} must be an integer or [numerator, denominator] with 0 < denominator <= "
        f"{MAX_DENOMINATOR}, got {value!r}"
    )


def stored(x: Fraction) -> list[int]:
    """The stored form of a Fraction: [numerator, denominator] in lowest terms."""
    return [x.numerator, x.denominator]
