"""The contract kernel: one deterministic engine for sealed-message mechanisms.

A mechanism is a `Rule` (what a message may be, what a missing one means, how the
revealed messages settle) plus the kernel's fixed phases: parties deposit and commit,
then reveal, then the rule settles from escrow.  See `contracts/kernel/engine.py`.
"""
