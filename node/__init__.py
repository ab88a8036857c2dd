"""All I/O, by concern: the node process, RPC, transports, cluster operations, faults, the
simulator, audits, the CLI and the benchmarks."""
