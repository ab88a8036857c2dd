"""The node process under resource exhaustion: a rate limit on repeated log lines, and the
file-descriptor limit (raised at start, reported in `status`).

A node that runs out of file descriptors must degrade quietly: asyncio logs every failed
`accept()` with a traceback, and without a limit one flood of connections fills the disk with
the same lines.  `RepeatFilter` lets the same message of the same logger through at most
`burst` times per `interval_s`, and then says once how many it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

try:
    import resource
except ImportError:  # pragma: no cover - not on POSIX
    resource = None  # type: ignore[assignment]

__all__ = [
    "FdLimits",
    "RepeatFilter",
    "connection_cap",
    "fd_limits",
    "fds_in_use",
    "flush_repeats_forever",
    "install_node_logging",
    "install_repeat_filter",
    "raise_fd_limit",
    "suppressed_lines",
]

LOG_BURST = 10  # the same line at most this many times per interval ...
LOG_INTERVAL_S = 60.0  # ... then one summary line when the interval ends
FD_TARGET = 65536  # the soft limit asked for at start, if the hard limit allows it

Key = tuple[str, int, str]


@dataclass
class _Window:
    start: float
    count: int = 0
    dropped: int = 0
    level: int = logging.INFO


class RepeatFilter(logging.Filter):
    """Drop a record once its (logger, level, first line of the message) has been let through
    `burst` times in the current `interval_s`; the drops are summarised in one record,
    "<message>: repeated K more times in the last N s (suppressed)", sent to `emit` when the
    interval is over (at the next such record, or at `flush`)."""

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        burst: int = LOG_BURST,
        interval_s: float = LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        if burst < 1 or interval_s <= 0:
            raise ValueError("burst must be >= 1 and interval_s > 0")
        self.emit, self.burst, self.interval_s, self.clock = emit, burst, interval_s, clock
        self.windows: dict[Key, _Window] = {}
        self.suppressed = 0  # records dropped in all

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "repeat_summary", False):
            return True
        key = (record.name, record.levelno, _first_line(record))
        now = self.clock()
        window = self.windows.get(key)
        if window is None or now - window.start >= self.interval_s:
            if window is not None:
                self._summarise(key, window)
            window = self.windows[key] = _Window(now, level=record.levelno)
        window.count += 1
        if window.count <= self.burst:
            return True
        window.dropped += 1
        self.suppressed += 1
        return False

    def flush(self) -> None:
        """Summarise and forget every interval that is over."""
        now = self.clock()
        for key, window in list(self.windows.items()):
            if now - window.start >= self.interval_s:
                del self.windows[key]
                self._summarise(key, window)

    def _summarise(self, key: Key, window: _Window) -> None:
        if not window.dropped:
            return
        name, level, line = key
        record = logging.LogRecord(
            name,
            level,
            __file__,
            0,
            "%s: repeated %d more times in the last %.0f s (suppressed)",
            (line, window.dropped, self.interval_s),
            None,
        )
        record.repeat_summary = True
        self.emit(record)


def _first_line(record: logging.LogRecord) -> str:
    return str(record.msg).split("\n", 1)[0][:200]


def install_repeat_filter(
    logger: logging.Logger | None = None,
    *,
    burst: int = LOG_BURST,
    interval_s: float = LOG_INTERVAL_S,
) -> RepeatFilter:
    """Put one RepeatFilter on every handler of `logger` (the root logger by default), where
    it sees the records of every logger that propagates to it."""
    logger = logger if logger is not None else logging.getLogger()
    handlers = list(logger.handlers)

    def emit(record: logging.LogRecord) -> None:
        for handler in handlers:
            handler.handle(record)

    repeat = RepeatFilter(emit, burst=burst, interval_s=interval_s)
    for handler in handlers:
        handler.addFilter(repeat)
    return repeat


@dataclass(frozen=True)
class FdLimits:
    soft: int | None  # None: unlimited or unknown
    hard: int | None


def _limit(value: int) -> int | None:
    return None if resource is None or value == resource.RLIM_INFINITY else value


def raise_fd_limit(target: int = FD_TARGET) -> FdLimits:
    """Raise the soft RLIMIT_NOFILE towards `target`, as far as the hard limit allows (never
    lower it), and return the limits in force."""
    if resource is None:  # pragma: no cover
        return FdLimits(None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FdLimits(_limit(soft), _limit(hard))


def fd_limits() -> FdLimits:
    if resource is None:  # pragma: no cover
        return FdLimits(None, None)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return FdLimits(_limit(soft), _limit(hard))


def fds_in_use() -> int | None:
    """The number of open file descriptors of this process (None where it cannot be seen)."""
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            return max(len(os.listdir(where)) - 1, 0)  # less the one listdir opened
        except OSError:
            continue
    return None


# asyncio accepts up to `backlog` connections at a time before any is refused and closed
ACCEPT_BACKLOG = 64
# descriptors kept for the store, peers, the broker, the logs and one burst of accepts
FD_RESERVE = 64 + ACCEPT_BACKLOG


def connection_cap(max_connections: int, limits: FdLimits) -> int:
    """`max_connections`, lowered if need be to stay below the fd limit with FD_RESERVE spare
    (each open RPC connection holds one descriptor)."""
    if limits.soft is None:
        return max_connections
    room = limits.soft - FD_RESERVE if limits.soft > 2 * FD_RESERVE else limits.soft // 2
    return max(1, min(max_connections, room))


_active: RepeatFilter | None = None


def install_node_logging(burst: int = LOG_BURST, interval_s: float = LOG_INTERVAL_S) -> None:
    """The node process's repeat filter on the root logger's handlers (once)."""
    global _active
    if _active is None:
        _active = install_repeat_filter(burst=burst, interval_s=interval_s)


def suppressed_lines() -> int:
    """Log records the node's repeat filter has dropped so far."""
    return 0 if _active is None else _active.suppressed


async def flush_repeats_forever() -> None:
    """Write the summaries of finished intervals even when their message stops coming."""
    while True:
        await asyncio.sleep(LOG_INTERVAL_S if _active is None else _active.interval_s / 2)
        if _active is not None:
            _active.flush()
