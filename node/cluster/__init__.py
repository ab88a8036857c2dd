"""Cluster operations: the cluster.toml schema, bootstrap, launcher, PID files, broker,
supervisor, certificates, accounts."""
