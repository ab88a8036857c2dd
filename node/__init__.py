"""All I/O: runtime, transports, RPC, launcher, CLI, simulator."""

import contracts as contracts  # registers the contract engines with the ledger
