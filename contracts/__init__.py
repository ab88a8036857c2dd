"""Contract engines.  Importing this package registers them with the ledger."""

from contracts import exchange as exchange
from contracts import risk_sharing as risk_sharing
