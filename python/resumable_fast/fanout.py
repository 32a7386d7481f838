"""Readers of one stream in one process share one read session of the backend.

A reply followed by a thousand tabs served by one replica costs one S2 read
session, not a thousand: a feed per stream reads it once and keeps its last
batches, up to :data:`MAX_WINDOW_BYTES` (the records' metered bytes), in one
window that every reader following it reads from. A reader is only a
position in that window, so a reader that stops pulling (a stalled tab) costs
a few hundred bytes however much the stream grows, not an entry per batch. A
reader that joins from a record older than the window reads those records on
its own first; one that falls so far behind that its next batch has left the
window goes on from there with a session of its own. No reader holds memory
without bound and none slows the others down.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import aclosing
from typing import Any

from resumable_fast.backends import Backend
from resumable_fast.metrics import Metrics
from resumable_fast.records import SequencedRecord, StreamName, is_closing_fence
from resumable_fast.streams import records_before

__all__ = ["MAX_WINDOW_BYTES", "Feed", "SharedReads", "metered_bytes"]

logger = logging.getLogger("resumable_fast")

# Metered bytes of records a feed keeps, for readers behind its tail: readers
# that join later start in it, and one whose next batch has left it reads on
# its own.
MAX_WINDOW_BYTES = 1024 * 1024

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def metered_bytes(records: list[SequencedRecord]) -> int:
    """S2's metered size of the records: 8 bytes each, 2 per header, and the
    UTF-8 bytes of the headers' names and values and of the body."""
    size = 0
    for record in records:
        size += 8 + _utf8_len(record.get("body", ""))
        headers = record.get("headers")
        if headers:
            for header in headers:
                size += 2 + sum(_utf8_len(part) for part in header)
    return size


def _last_seq_num(entry: tuple[list[SequencedRecord], int]) -> int:
    return entry[0][-1]["seq_num"]


class Feed:
    """One backend read session of a stream: its window of batches, shared by
    every reader following it (each a position in it)."""

    __slots__ = (
        "ended",
        "failure",
        "first_index",
        "next_seq_num",
        "readers",
        "task",
        "waiters",
        "window",
        "window_bytes",
    )

    def __init__(self, first_seq_num: int) -> None:
        # The last batches with their metered bytes; window[0] is batch
        # number first_index of the feed (readers count batches so).
        self.window: deque[tuple[list[SequencedRecord], int]] = deque()
        self.window_bytes = 0
        self.first_index = 0
        self.next_seq_num = first_seq_num
        self.readers = 0
        # Readers waiting for the next batch (a stalled one is not among them).
        self.waiters: list[asyncio.Future[None]] = []
        # The stream's closing fence went by: nothing more will come.
        self.ended = False
        self.failure: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    @property
    def window_start(self) -> int:
        """The first record the window holds (next_seq_num when it is empty)."""
        return self.window[0][0][0]["seq_num"] if self.window else self.next_seq_num

    def index_of(self, seq_num: int) -> int:
        """The number of the first batch a reader from ``seq_num`` (at least
        :attr:`window_start`) needs."""
        window = self.window
        if not window or seq_num <= window[0][0][0]["seq_num"]:
            return self.first_index
        return self.first_index + bisect.bisect_left(window, seq_num, key=_last_seq_num)

    def deliver(self, records: list[SequencedRecord]) -> None:
        size = metered_bytes(records)
        self.next_seq_num = records[-1]["seq_num"] + 1
        window = self.window
        window.append((records, size))
        self.window_bytes += size
        while self.window_bytes > MAX_WINDOW_BYTES and len(window) > 1:
            self.window_bytes -= window.popleft()[1]
            self.first_index += 1
        self.wake()

    def fail(self, failure: BaseException) -> None:
        self.failure = failure
        self.wake()

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():  # else its reader's wait was cancelled
                waiter.set_result(None)


class SharedReads:
    """Read sessions of a backend, one per stream however many follow it."""

    def __init__(self, backend: Backend, spawn: Spawn, metrics: Metrics) -> None:
        """``metrics`` counts the sessions open on ``backend``."""
        self._backend = backend
        self._metrics = metrics
        self._spawn = spawn
        self._feeds: dict[StreamName, Feed] = {}

    @property
    def feeds(self) -> int:
        """Streams with a shared session open now."""
        return len(self._feeds)

    def feed(self, name: StreamName) -> Feed | None:
        """The open shared session of the stream the backend calls ``name``
        (see :meth:`ResumableStreamContext.stream_name`), else None."""
        return self._feeds.get(name)

    def read_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        """Like :meth:`Backend.read_session`: the stream's batches from
        ``seq_num`` on, without end."""
        return self._follow(name, seq_num)

    async def _follow(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        position = seq_num
        while True:
            feed = self._feeds.get(name)
            if feed is None:
                feed = self._start(name, position)
            elif feed.ended and position >= feed.next_seq_num:
                break  # past what the finished feed saw: the backend decides
            if position < feed.window_start:
                # Older than the feed keeps: read those on our own, then look again.
                logger.debug("stream %r: a reader reads records older than its feed keeps", name)
                older = records_before(self._own_session(name, position), feed.window_start)
                async with aclosing(older):
                    async for records in older:
                        position = records[-1]["seq_num"] + 1
                        yield records
                continue
            # The reader: the number of the next batch it takes from the window.
            index = feed.index_of(position)
            feed.readers += 1
            detached = False
            try:
                while True:
                    offset = index - feed.first_index
                    if offset < 0:
                        detached = True  # its next batch left the window
                        break
                    window = feed.window
                    if offset < len(window):
                        records = window[offset][0]
                        index += 1
                        if records[0]["seq_num"] < position:
                            records = [r for r in records if r["seq_num"] >= position]
                            if not records:
                                continue
                        position = records[-1]["seq_num"] + 1
                        yield records
                        continue
                    if feed.failure is not None:
                        raise feed.failure
                    if feed.ended:
                        break  # go on with a session of our own
                    waiter = asyncio.get_running_loop().create_future()
                    feed.waiters.append(waiter)
                    await waiter
            finally:
                self._leave(name, feed)
            if detached:
                logger.debug("stream %r: a reader fell behind its feed; reads on its own", name)
            break
        async with aclosing(self._own_session(name, position)) as own:
            async for records in own:
                yield records

    def _start(self, name: StreamName, seq_num: int) -> Feed:
        feed = Feed(seq_num)
        self._feeds[name] = feed
        feed.task = self._spawn(self._pump(name, feed, seq_num), f"resumable_fast feed {name}")
        return feed

    async def _pump(self, name: StreamName, feed: Feed, seq_num: int) -> None:
        try:
            async with aclosing(self._own_session(name, seq_num)) as session:
                async for records in session:
                    feed.deliver(records)
                    if any(is_closing_fence(record) for record in records):
                        feed.ended = True
                        feed.wake()
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._feeds.get(name) is feed:
                del self._feeds[name]
            feed.fail(exc)

    def _own_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        """A session of the backend's (a feed's, or one reader's), counted."""
        return self._metrics.session(self._backend.read_session(name, seq_num))

    def _leave(self, name: StreamName, feed: Feed) -> None:
        feed.readers -= 1
        if feed.readers:
            return
        if self._feeds.get(name) is feed:
            del self._feeds[name]
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()
