"""Targets, Bitcoin's compact "bits" encoding, work, and retargeting.

A block's proof is good when the double SHA-256 of its work header, read as a
256-bit big-endian integer, is at most the target that its `bits` encode.
Bits are a base-256 float: one exponent byte and a 3-byte mantissa,
target = mantissa * 256 ** (exponent - 3).  The mantissa's top bit is a sign
in Bitcoin, so a canonical mantissa stays below 0x800000.
"""

from __future__ import annotations

MAX_TARGET = 2**256 - 1
RETARGET_CLAMP = 4  # a retarget moves the target by at most x4 or /4, as in Bitcoin


class BadBits(ValueError):
    pass


def bits_to_target(bits: int) -> int:
    if not 0 <= bits < 2**32:
        raise BadBits(f"bits {bits:#x} do not fit in 32 bits")
    exponent, mantissa = bits >> 24, bits & 0xFFFFFF
    if mantissa & 0x800000:
        raise BadBits(f"bits {bits:#010x} have the sign bit set")
    if mantissa == 0:
        raise BadBits(f"bits {bits:#010x} encode a zero target")
    target = mantissa >> 8 * (3 - exponent) if exponent <= 3 else mantissa << 8 * (exponent - 3)
    if target > MAX_TARGET or target == 0:
        raise BadBits(f"bits {bits:#010x} encode a target outside 1..2**256-1")
    return target


def target_to_bits(target: int) -> int:
    """The compact form of `target`, rounded down to 3 significant bytes (as Bitcoin does)."""
    if not 0 < target <= MAX_TARGET:
        raise BadBits(f"target {target:#x} outside 1..2**256-1")
    size = (target.bit_length() + 7) // 8
    mantissa = target >> 8 * (size - 3) if size > 3 else target << 8 * (3 - size)
    if mantissa & 0x800000:  # keep the sign bit clear: one more byte of exponent
        mantissa >>= 8
        size += 1
    return size << 24 | mantissa


def work(bits: int) -> int:
    """Expected hashes to find a proof at these bits: 2**256 / (target + 1)."""
    return 2**256 // (bits_to_target(bits) + 1)


def retarget(bits: int, actual_ms: int, expected_ms: int, limit_bits: int) -> int:
    """The next target: scaled by how long the last interval actually took, clamped to x4 or
    /4, and never easier than the limit."""
    old, expected = bits_to_target(bits), max(expected_ms, 1)
    if actual_ms * RETARGET_CLAMP < expected:
        target = old // RETARGET_CLAMP
    elif actual_ms > expected * RETARGET_CLAMP:
        target = old * RETARGET_CLAMP
    else:
        target = old * actual_ms // expected
    return target_to_bits(max(1, min(target, bits_to_target(limit_bits))))
