"""The mechanisms the contract kernel runs: each a Rule (contracts/kernel/rule.py)."""
