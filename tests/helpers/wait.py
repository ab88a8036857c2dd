"""Waiting on a condition: the one polling loop every test layer uses."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

Predicate = Callable[[], Any]  # returns a value, or an awaitable of one


async def wait_for(
    predicate: Predicate, what: str = "the condition", timeout: float = 60, interval: float = 0.2
) -> Any:
    """Poll `predicate` (a plain or an async function) until it returns something truthy, and
    return that.  The timeout only bounds a test that would otherwise hang: it is generous, so
    that a loaded machine is slower, never wrong."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}"
        await asyncio.sleep(interval)
