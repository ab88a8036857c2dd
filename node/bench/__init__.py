"""Benchmarks (`tally bench ...`): real clusters and a separate load generator."""
