"""SciPy's HiGHS, imported when a design first solves an LP: `scipy.optimize` takes about
0.3 s to import, which every `tally` command would pay otherwise (the CLI imports the
designers to build its argument parsers)."""

from __future__ import annotations

from typing import Any


def linprog(*args: Any, **kwargs: Any) -> Any:
    """`scipy.optimize.linprog`, with the same arguments and result."""
    from scipy.optimize import linprog as highs

    return highs(*args, **kwargs)
