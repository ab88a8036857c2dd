"""Contract engines.  Importing this package registers them with the ledger."""

from contracts import exchange as exchange
