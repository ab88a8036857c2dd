"""Permissioned Nakamoto consensus: members mine, the most cumulative work wins."""
