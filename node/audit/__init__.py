"""Checking a chain after the fact: `tally verify` and replay trusting commit certificates."""
