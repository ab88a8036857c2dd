"""The proof-of-work miner: a worker process searching nonces off the event loop.

The node sends jobs (id, work prefix, target) down a pipe; the worker hashes
in chunks of `CHUNK` nonces and looks for a newer job between chunks, so a new
tip makes it drop stale work within a few milliseconds.  A found nonce comes
back up the pipe; the event loop reads it with `add_reader`, never blocking.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection

from consensus.pow.seal import search

CHUNK = 20_000  # nonces between checks for a new job: about 20 ms of hashing


def _work(conn: Connection) -> None:
    with contextlib.suppress(OSError):
        os.nice(10)  # the node's own event loop comes first on a busy machine
    job: tuple[int, bytes, int] | None = None
    nonce = 0
    while True:
        if job is None or conn.poll():
            try:
                message = conn.recv()
                while conn.poll():  # only the newest job matters
                    message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            job, nonce = message, 0
        assert job is not None
        found = search(job[1], job[2], nonce, CHUNK)
        if found is None:
            nonce += CHUNK
            continue
        conn.send((job[0], found))
        job = None


class Miner:
    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_work, args=(child,), daemon=True, name="tally-miner")
        self._child = child
        self.found = 0

    def start(self, on_found: Callable[[int, int], None]) -> None:
        self._proc.start()
        self._child.close()
        self._on_found = on_found
        asyncio.get_running_loop().add_reader(self._conn.fileno(), self._readable)

    def submit(self, job: int, prefix: bytes, target: int) -> None:
        self._conn.send((job, prefix, target))

    def _readable(self) -> None:
        try:
            while self._conn.poll():
                job, nonce = self._conn.recv()
                self.found += 1
                self._on_found(job, nonce)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            asyncio.get_running_loop().remove_reader(self._conn.fileno())
            self._conn.send(None)
        self._proc.join(1)
        if self._proc.is_alive():
            self._proc.kill()
        self._conn.close()
