"""Contract terms the tests share."""

from __future__ import annotations

from typing import Any


def lamp_offer(counterparty: bytes, window_s: int) -> dict[str, Any]:
    """A seller's exchange offer with no deposits and every window `window_s` seconds of
    ledger time: the smallest contract that has deadlines."""
    return {
        "role": "seller",
        "counterparty": counterparty,
        "item": "a lamp",
        "price": 100,
        "deposit_seller": 0,
        "deposit_buyer": 0,
        "table": [100, 0, 0] * 8,
        "windows": [window_s] * 5,
    }
