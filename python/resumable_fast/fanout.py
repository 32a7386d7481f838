"""Readers of one stream in one process share one read session of the backend.

A reply followed by a thousand tabs served by one replica costs one S2 read
session, not a thousand: a feed per stream reads it once and hands each batch
to every reader following it. The feed keeps its last records (up to
:data:`MAX_WINDOW_CHARS`) for readers that join later; a reader that needs
older records reads those on its own first, and a reader that falls
:data:`MAX_BACKLOG_CHARS` behind the feed goes on with a session of its own,
so no reader holds memory without bound and none slows the others down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine
from contextlib import aclosing
from typing import Any

from resumable_fast.backends import Backend
from resumable_fast.records import SequencedRecord, is_closing_fence
from resumable_fast.streams import records_before

__all__ = ["MAX_BACKLOG_CHARS", "MAX_WINDOW_CHARS", "SharedReads"]

logger = logging.getLogger("resumable_fast")

# Record text a feed keeps for readers that join later.
MAX_WINDOW_CHARS = 1024 * 1024
# Record text queued for one reader; past it, the reader reads on its own.
MAX_BACKLOG_CHARS = 1024 * 1024

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


def _chars(records: list[SequencedRecord]) -> int:
    return sum(len(record.get("body", "")) for record in records)


class _Reader:
    """One reader's queue of batches from a feed."""

    __slots__ = ("backlog", "backlog_chars", "detached", "failure", "waiter")

    def __init__(self) -> None:
        self.backlog: deque[tuple[list[SequencedRecord], int]] = deque()
        self.backlog_chars = 0
        # Too far behind: takes no more batches from the feed.
        self.detached = False
        self.failure: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def put(self, records: list[SequencedRecord], chars: int) -> None:
        if self.detached:
            return
        self.backlog.append((records, chars))
        self.backlog_chars += chars
        if self.backlog_chars > MAX_BACKLOG_CHARS:
            self.detached = True
        self._wake()

    def fail(self, failure: BaseException) -> None:
        self.failure = failure
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Feed:
    """One backend read session of a stream and the readers it feeds."""

    def __init__(self, first_seq_num: int) -> None:
        self.window: deque[tuple[list[SequencedRecord], int]] = deque()
        self.window_chars = 0
        # The first record the window holds (next_seq_num when it is empty).
        self.window_start = first_seq_num
        self.next_seq_num = first_seq_num
        self.readers: set[_Reader] = set()
        # The stream's closing fence went by: nothing more will come.
        self.ended = False
        self.task: asyncio.Task[None] | None = None

    def join(self, seq_num: int) -> _Reader:
        """A reader from ``seq_num`` (at least ``window_start``): the window's
        batches from there are queued for it at once."""
        reader = _Reader()
        for records, chars in self.window:
            if records[-1]["seq_num"] >= seq_num:
                reader.put(records, chars)
        self.readers.add(reader)
        return reader

    def deliver(self, records: list[SequencedRecord]) -> None:
        chars = _chars(records)
        self.next_seq_num = records[-1]["seq_num"] + 1
        self.window.append((records, chars))
        self.window_chars += chars
        while self.window_chars > MAX_WINDOW_CHARS and len(self.window) > 1:
            _, dropped = self.window.popleft()
            self.window_chars -= dropped
            self.window_start = self.window[0][0][0]["seq_num"]
        for reader in self.readers:
            reader.put(records, chars)

    def fail(self, failure: BaseException) -> None:
        for reader in self.readers:
            reader.fail(failure)


class SharedReads:
    """Read sessions of a backend, one per stream however many follow it."""

    def __init__(self, backend: Backend, spawn: Spawn) -> None:
        self._backend = backend
        self._spawn = spawn
        self._feeds: dict[str, _Feed] = {}

    @property
    def feeds(self) -> int:
        """Streams with a shared session open now."""
        return len(self._feeds)

    def read_session(self, name: str, seq_num: int) -> AsyncGenerator[list[SequencedRecord], None]:
        """Like :meth:`Backend.read_session`: the stream's batches from
        ``seq_num`` on, without end."""
        return self._follow(name, seq_num)

    async def _follow(self, name: str, seq_num: int) -> AsyncGenerator[list[SequencedRecord], None]:
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
                older = records_before(
                    self._backend.read_session(name, position), feed.window_start
                )
                async with aclosing(older):
                    async for records in older:
                        position = records[-1]["seq_num"] + 1
                        yield records
                continue
            reader = feed.join(position)
            try:
                while True:
                    if not reader.backlog:
                        if reader.failure is not None:
                            raise reader.failure
                        if reader.detached or feed.ended:
                            break  # go on with a session of our own
                        reader.waiter = asyncio.get_running_loop().create_future()
                        await reader.waiter
                        continue
                    records, chars = reader.backlog.popleft()
                    reader.backlog_chars -= chars
                    if records[0]["seq_num"] < position:
                        records = [r for r in records if r["seq_num"] >= position]
                    if records:
                        position = records[-1]["seq_num"] + 1
                        yield records
            finally:
                self._leave(name, feed, reader)
            if reader.detached:
                logger.debug("stream %r: a reader fell behind its feed; reads on its own", name)
            break
        async with aclosing(self._backend.read_session(name, position)) as own:
            async for records in own:
                yield records

    def _start(self, name: str, seq_num: int) -> _Feed:
        feed = _Feed(seq_num)
        self._feeds[name] = feed
        feed.task = self._spawn(self._pump(name, feed, seq_num), f"resumable_fast feed {name}")
        return feed

    async def _pump(self, name: str, feed: _Feed, seq_num: int) -> None:
        try:
            async with aclosing(self._backend.read_session(name, seq_num)) as session:
                async for records in session:
                    feed.deliver(records)
                    if any(is_closing_fence(record) for record in records):
                        feed.ended = True
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._feeds.get(name) is feed:
                del self._feeds[name]
            feed.fail(exc)

    def _leave(self, name: str, feed: _Feed, reader: _Reader) -> None:
        feed.readers.discard(reader)
        if feed.readers:
            return
        if self._feeds.get(name) is feed:
            del self._feeds[name]
        if feed.task is not None and not feed.task.done():
            feed.task.cancel()
