"""Townsend's information-constrained risk sharing on the ledger: the schedule and the engine."""

from contracts.risk_sharing.engine import (
    NAME as NAME,
)
from contracts.risk_sharing.engine import (
    RiskEvent as RiskEvent,
)
from contracts.risk_sharing.engine import (
    RiskSharing as RiskSharing,
)
from contracts.risk_sharing.engine import (
    commitment as commitment,
)
from contracts.risk_sharing.engine import (
    draw_value as draw_value,
)
from contracts.risk_sharing.schedule import Lottery as Lottery
from contracts.risk_sharing.schedule import Schedule as Schedule
