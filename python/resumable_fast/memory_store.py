"""The embedded backend's store in this process's memory (:class:`EmbeddedStore`).

A stream keeps its appends as they were checked: the bodies of one append in
one list, with its first position and its timestamp once. A read makes the
records it returns. Most records are never read back (the producer's client
gets its chunks from the producer; a store is read on a resume), so a record
object made per chunk as it is appended was work for nobody, and memory that
the garbage collector went over until the stream was dropped
(docs/design.md, "The embedded backend's appends").

Each stream is dropped ``retention_seconds`` after its last record, finished
or not (a producer that died leaves its stream unfinished), unless a reader
is waiting on it; asking about a stream that does not exist stores nothing,
so memory stays bounded whatever callers ask.
"""

from __future__ import annotations

import asyncio
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from typing import ClassVar, NamedTuple

from resumable_fast.append_checks import CheckedAppend, check_append_input
from resumable_fast.backends import DEFAULT_RETENTION_SECONDS, READ_BATCH_RECORDS
from resumable_fast.errors import (
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    SeqNumMismatchError,
)
from resumable_fast.records import SequencedRecord, StreamName
from resumable_fast.waiters import wake_threadsafe

__all__ = ["EmbeddedStore"]


class _Append(NamedTuple):
    """One applied append: its records from ``first_seq_num``, all stamped
    ``timestamp_ms``."""

    first_seq_num: int
    timestamp_ms: int
    batch: CheckedAppend

    def records(self, start: int, stop: int) -> list[SequencedRecord]:
        """Its records at indexes ``start`` to ``stop`` (not included)."""
        return self.batch.sequenced(self.first_seq_num, self.timestamp_ms, start, stop)


def _first_seq_num(applied: _Append) -> int:
    return applied.first_seq_num


class _Stream:
    __slots__ = ("active_at", "appends", "fencing_token", "tail", "waiters")

    def __init__(self) -> None:
        # Oldest first; their positions follow on from one another.
        self.appends: list[_Append] = []
        # The position of the next record.
        self.tail = 0
        self.fencing_token = ""
        # When it was made or last appended to (monotonic seconds).
        self.active_at = time.monotonic()
        self.waiters: list[asyncio.Future[None]] = []

    def records_from(self, seq_num: int) -> list[SequencedRecord]:
        """Up to ``READ_BATCH_RECORDS`` records from ``seq_num`` on."""
        if seq_num >= self.tail:
            return []
        appends = self.appends
        index = max(bisect_right(appends, seq_num, key=_first_seq_num) - 1, 0)
        records: list[SequencedRecord] = []
        while index < len(appends) and len(records) < READ_BATCH_RECORDS:
            applied = appends[index]
            start = max(seq_num - applied.first_seq_num, 0)
            stop = min(len(applied.batch.bodies), start + READ_BATCH_RECORDS - len(records))
            records += applied.records(start, stop)
            index += 1
        return records

    def last_record(self) -> SequencedRecord | None:
        if not self.appends:
            return None
        last = self.appends[-1]
        count = len(last.batch.bodies)
        return last.records(count - 1, count)[0]

    def wake_readers(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            wake_threadsafe(waiter)

    def has_readers(self) -> bool:
        self.waiters = [waiter for waiter in self.waiters if not waiter.done()]
        return bool(self.waiters)


class EmbeddedStore:
    """The streams of one process, in memory, shared by every context that
    uses them, as replicas share one S2 basin."""

    description = "in memory"
    shares_read_sessions = False
    process_local = True

    _shared: ClassVar[dict[float, EmbeddedStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> None:
        self.retention_seconds = retention_seconds
        # Least recently active first.
        self._streams: OrderedDict[StreamName, _Stream] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, retention_seconds: float = DEFAULT_RETENTION_SECONDS) -> EmbeddedStore:
        """The process's store for this retention (contexts made with another
        retention get a store of their own, not one that ignores it)."""
        with cls._shared_lock:
            store = cls._shared.get(retention_seconds)
            if store is None:
                store = cls._shared[retention_seconds] = cls(retention_seconds)
            return store

    def _stream(self, name: StreamName) -> _Stream:
        """The stream, made on first use (an append, or a reader's wait)."""
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream()
        return stream

    def _expire(self) -> None:
        """Drop streams idle for longer than the retention, finished or not,
        unless a reader waits on them."""
        now = time.monotonic()
        horizon = now - self.retention_seconds
        streams = self._streams
        while streams:
            name, stream = next(iter(streams.items()))
            if stream.active_at > horizon:
                return
            if stream.has_readers():
                stream.active_at = now  # looked at again after another retention
                streams.move_to_end(name)
                continue
            del streams[name]

    async def append(self, name: StreamName, append_input: bytes) -> None:
        """Apply one ``AppendInput``, whole or not at all."""
        batch = check_append_input(append_input)
        with self._lock:
            self._expire()
            stream = self._stream(name)
            token = batch.fencing_token
            if token is not None and token != stream.fencing_token:
                raise FencingTokenMismatchError(stream.fencing_token)
            tail = stream.tail
            match = batch.match_seq_num
            if match is not None and match != tail:
                raise SeqNumMismatchError(tail)
            stream.appends.append(_Append(tail, int(time.time() * 1000), batch))
            stream.tail = tail + len(batch.bodies)
            if batch.new_fencing_token is not None:
                stream.fencing_token = batch.new_fencing_token
            stream.active_at = time.monotonic()
            self._streams.move_to_end(name)
            stream.wake_readers()

    def records_from(self, name: StreamName, seq_num: int) -> list[SequencedRecord]:
        with self._lock:
            stream = self._streams.get(name)
            return [] if stream is None else stream.records_from(seq_num)

    def last_record(self, name: StreamName) -> SequencedRecord | None:
        with self._lock:
            self._expire()
            stream = self._streams.get(name)
            return None if stream is None else stream.last_record()

    def wait_for_records(self, name: StreamName, seq_num: int) -> asyncio.Future[None] | None:
        """A future resolved once the stream has a record at ``seq_num``, or None
        when it already has one."""
        with self._lock:
            self._expire()
            held = self._streams.get(name)
            tail = 0 if held is None else held.tail
            if tail > seq_num:
                return None
            if tail < seq_num:
                raise RangeNotSatisfiableError(tail)
            stream = self._stream(name)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            stream.waiters.append(waiter)
            return waiter

    async def delete(self, name: StreamName) -> None:
        with self._lock:
            stream = self._streams.pop(name, None)
        if stream is not None:
            # Each reads again, finds its position past the (now empty) tail
            # and ends with the typed error instead of waiting for good.
            stream.wake_readers()

    def stream_names(self) -> list[StreamName]:
        """The names of the streams held now, least recently active first
        (streams past their retention are dropped first)."""
        with self._lock:
            self._expire()
            return list(self._streams)

    async def release(self) -> None:
        """Nothing to release: the streams outlive their contexts, as in S2."""
