"""The ranges exchange-design tests draw their parameters from, in one place."""

from __future__ import annotations

import random

from contracts.design.exchange import ExchangeParams

RANGES = {
    "price": (20, 500),
    "value_high": (50, 800),
    "value_low": (0, 400),
    "cost_high": (0, 300),
    "cost_low": (0, 150),
    "keep_cost": (0, 30),
    "pickup_cost": (0, 30),
    "complaint_cost": (0, 10),
    "fault_distaste": (0, 60),
}
KEEP_COST_ON = ("delivery", "unredeemed")


def random_params(rng: random.Random) -> ExchangeParams:
    """Parameters drawn from RANGES (feasible or not: the designer decides)."""
    drawn = {name: rng.randint(low, high) for name, (low, high) in RANGES.items()}
    return ExchangeParams(**drawn, keep_cost_on=rng.choice(KEEP_COST_ON))
