"""Subscriptions: a node's committed blocks, txs, contract calls and consensus events, pushed.

Every event has a place, `"H.I"`: the I-th event of its stream (after its filter) at height H.
The events at a height are a pure function of the block there (and, for the `events` stream,
of what this node saw happen while that block was its head), so a subscriber that gives a
place to resume after gets every later event exactly once, in order: first replayed from the
store, then live.  Replay waits for the subscriber; live events never do.

Each subscriber has a bounded queue, counted in events.  The commit hook (which runs in the
node's own turn, so it must never wait) offers each block's events whole: if they do not fit,
the subscriber is not given part of them, nor anything later.  It is marked overflowed at
the last event it was given, and its writer, once it has sent what was queued, sends an
explicit `overflow` naming that place and the last whole height, and closes.  Nothing is
dropped silently, and a slow subscriber costs the node one failed offer a block, never a wait.

Streams (`Filter.stream`): `blocks` (one event a block: header fields, tx count, certificate
summary); `txs` (each committed tx with its receipt; `account`: only those it sends or is
paid by); `contract` (each contract call and its receipt; `contract`: only that contract's,
its creation included); `events` (consensus events: evidence committed on the ledger, and
what this node saw: view changes, stable checkpoints, faults injected and healed).  A
consensus event this node saw is kept in memory (the last `NOTICES_KEPT`), so resuming the
`events` stream replays those since the node started, not from the store.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from ledger.block import Block, Member
from ledger.state import Receipt
from ledger.store import Store
from ledger.tx import CONTRACT, EVIDENCE, Tx
from node.process.views import block_summary, tx_view

STREAMS = ("blocks", "txs", "contract", "events")
NOTICES_KEPT = 1024  # consensus events this node saw, kept for resuming the `events` stream
REPLAY_YIELD = 16  # heights replayed between two yields to the event loop

Event = dict[str, Any]
Place = tuple[int, int]  # (height, index): the event after which to resume is (h, i)


class SubscribeError(ValueError):
    """A subscription asked for something that does not exist (a stream, a bad filter)."""


@dataclass(frozen=True)
class Filter:
    stream: str
    account: bytes | None = None  # txs: sent by or paid to this address
    contract: bytes | None = None  # contract: this contract's calls

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise SubscribeError(f"unknown stream {self.stream!r} (streams: {', '.join(STREAMS)})")
        if self.account is not None and self.stream != "txs":
            raise SubscribeError("an account filter is for the txs stream")
        if self.contract is not None and self.stream != "contract":
            raise SubscribeError("a contract filter is for the contract stream")


def place_id(height: int, index: int) -> str:
    return f"{height}.{index}"


def parse_place(text: str) -> Place:
    """`"H.I"` as sent in an event's id (SSE's Last-Event-ID, or `after`)."""
    height, _, index = text.partition(".")
    if not (height.isdigit() and index.isdigit()):
        raise SubscribeError(f"a place is HEIGHT.INDEX, as in an event's id; got {text!r}")
    return int(height), int(index)


def block_events(
    f: Filter, block: Block, receipts: tuple[Receipt, ...], members: tuple[Member, ...]
) -> list[Event]:
    """The events of stream `f` that the block at its height makes, in order."""
    h = block.header.height
    if f.stream == "blocks":
        return [block_summary(block.header, block.proof, len(block.txs), members)]
    out = []
    for i, (tx, r) in enumerate(zip(block.txs, receipts, strict=True)):
        if f.stream == "txs" and (f.account is None or f.account in tx.accounts):
            out.append({"type": "tx", "height": h, "index": i, **tx_view(tx, r.reason)})
        elif f.stream == "contract" and tx.kind == CONTRACT:
            cid = tx.payload["id"] or tx.tx_id  # a creation's id is its tx's
            if f.contract is None or f.contract == cid:
                out.append(_contract_event(tx, r, h, i, cid))
        elif f.stream == "events" and tx.kind == EVIDENCE:
            out.append(
                {
                    "type": "evidence",
                    "height": h,
                    "index": i,
                    "tx_id": tx.tx_id.hex(),
                    "member": tx.payload.get("member"),
                    "status": r.reason,
                }
            )
    return out


def _contract_event(tx: Tx, r: Receipt, height: int, index: int, cid: bytes) -> Event:
    p = tx.payload
    return {
        "type": "contract",
        "height": height,
        "index": index,
        "contract_id": cid.hex(),
        "engine": p.get("engine"),
        "op": p.get("op"),
        "by": tx.sender_address.hex(),
        "tx_id": tx.tx_id.hex(),
        "status": r.reason,
    }


class Subscriber:
    """One subscription's queue, and where it stands."""

    def __init__(self, f: Filter, limit: int) -> None:
        self.filter, self.limit = f, limit
        self.queue: deque[tuple[str, Event]] = deque()
        self.wake = asyncio.Event()  # set when there is something for the writer
        self.room = asyncio.Event()  # set when the writer took something (replay waits)
        self.last: Place | None = None  # the last event queued
        self.whole: int = -1  # the last height whose events are all queued
        self.overflowed = False
        self.closed = False
        self.task: asyncio.Future[None] | None = None  # its replay

    def offer(self, height: int, events: list[tuple[int, Event]]) -> bool:
        """Queue a height's events (all or none) without waiting; False: it overflowed."""
        if self.overflowed:
            return False
        if len(self.queue) + len(events) > self.limit:
            self.overflowed = True
            self.wake.set()
            return False
        self._put(height, events)
        return True

    async def put(self, height: int, events: list[tuple[int, Event]]) -> None:
        """Queue a height's events, waiting for room (replay: the subscriber's own pace)."""
        while len(self.queue) + len(events) > self.limit and self.queue and not self.closed:
            self.room.clear()
            self.wake.set()
            await self.room.wait()
        self._put(height, events)

    def _put(self, height: int, events: list[tuple[int, Event]]) -> None:
        for index, event in events:
            self.queue.append((place_id(height, index), event))
            self.last = (height, index)
        self.whole = height
        self.wake.set()

    def overflow_notice(self) -> Event:
        last = place_id(*self.last) if self.last is not None else None
        return {
            "type": "overflow",
            "last_id": last,
            "last_height": self.whole,
            "message": f"this subscriber fell more than {self.limit} events behind; "
            "resume after last_id",
        }


class Hub:
    """The node's subscribers, fed by its commit hook and its consensus notices."""

    def __init__(self, store: Store, members: tuple[Member, ...], limit: int) -> None:
        self.store, self.members, self.limit = store, members, limit
        self.live: set[Subscriber] = set()
        self.notices: deque[tuple[int, Event]] = deque(maxlen=NOTICES_KEPT)
        self.overflows = 0

    def subscribe(self, f: Filter, after: Place | None) -> Subscriber:
        """A subscriber whose replay starts after `after` (None: from the next block)."""
        sub = Subscriber(f, self.limit)
        start = after if after is not None else (self.store.height + 1, -1)
        sub.task = asyncio.ensure_future(self._replay(sub, start))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        self.live.discard(sub)
        sub.wake.set()
        sub.room.set()
        if sub.task is not None:
            sub.task.cancel()

    def events_at(self, f: Filter, height: int) -> list[Event]:
        block = self.store.get_block(height)
        if block is None:
            return []
        events = block_events(f, block, self.store.get_receipts(height), self.members)
        if f.stream == "events":
            events += [e for h, e in self.notices if h == height]
        return events

    async def _replay(self, sub: Subscriber, after: Place) -> None:
        """The stored events after `after`, at the subscriber's pace; then live, joined in
        the same step as the last height replayed, so no block falls between the two."""
        height, skip = after
        height = max(height, 0)
        count, last, sent = 0, -1, 0  # the last height replayed, and how many events it had
        while not sub.closed:
            if height > self.store.height:
                # the head's height may have gained notices while `put` waited
                grown = self.events_at(sub.filter, last)[sent:] if last == self.store.height else []
                if not grown:
                    self.live.add(sub)
                    return
                await sub.put(last, [(sent + i, e) for i, e in enumerate(grown)])
                sent += len(grown)
                continue
            found = self.events_at(sub.filter, height)
            await sub.put(height, [(i, e) for i, e in enumerate(found) if i > skip])
            last, sent, skip = height, len(found), -1
            height += 1
            count += 1
            if count % REPLAY_YIELD == 0:
                await asyncio.sleep(0)

    def on_commit(self, block: Block, receipts: tuple[Receipt, ...]) -> None:
        """The driver's commit hook: offer the block's events to every live subscriber."""
        h = block.header.height
        made: dict[Filter, list[tuple[int, Event]]] = {}
        for sub in list(self.live):
            if sub.filter not in made:
                made[sub.filter] = list(
                    enumerate(block_events(sub.filter, block, receipts, self.members))
                )
            if not sub.offer(h, made[sub.filter]):
                self.overflows += 1
                self.live.discard(sub)

    def notice(self, event: Event) -> None:
        """A consensus event this node saw (it belongs to the current head's height)."""
        h = self.store.height
        index = len(self.events_at(Filter("events"), h))
        self.notices.append((h, event))
        for sub in list(self.live):
            if sub.filter.stream == "events" and not sub.offer(h, [(index, event)]):
                self.overflows += 1
                self.live.discard(sub)
