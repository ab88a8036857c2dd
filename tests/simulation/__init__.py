"""Tests in the deterministic simulator: real replicas on a virtual clock and network."""
