"""Unit tests: one module or function at a time, in process, no real network."""
