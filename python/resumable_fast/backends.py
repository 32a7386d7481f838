"""Where streams live: S2 (through :class:`~resumable_fast.s2.S2Client`) or the
embedded store.

The embedded backend is a product feature for zero-setup use, not a test
double: it keeps S2's semantics (the same records and sequence numbers, fencing
tokens and ``match_seq_num`` checks with the same typed errors, atomic batches,
the same size limits, create-on-append and create-on-read, reads from a
sequence number that follow the live tail), so code moves to S2 unchanged. It
reads the very ``AppendInput`` bodies the native core frames for S2.

Its streams live in one of two stores. :class:`EmbeddedStore` keeps them in
this process's memory (development, tests, one-process services): each is
dropped ``retention_seconds`` after its last record, finished or not (a
producer that died leaves its stream unfinished), unless a reader is waiting
on it; asking about a stream that does not exist stores nothing, so memory
stays bounded whatever callers ask. :class:`~resumable_fast.sqlite_store.SqliteStore`
keeps them in a SQLite database in a ``data_dir`` that every process naming
the directory shares (the workers of one machine), across restarts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import ClassVar, Protocol

from resumable_fast.append_checks import check_append_input
from resumable_fast.errors import (
    ConfigurationError,
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    SeqNumMismatchError,
)
from resumable_fast.metrics import BackendKind
from resumable_fast.records import NO_LANDING, Landing, SequencedRecord, StreamName
from resumable_fast.waiters import wake_threadsafe

__all__ = ["Backend", "EmbeddedBackend", "EmbeddedStore", "Store"]

logger = logging.getLogger("resumable_fast")

READ_BATCH_RECORDS = 1000
DEFAULT_RETENTION_SECONDS = 3600.0


class Backend(Protocol):
    """What a context needs from the place its streams live."""

    description: str
    kind: BackendKind
    """What the metrics call it (their ``backend`` attribute)."""

    async def append(
        self, name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        """Append one framed ``AppendInput`` (its fencing token and
        ``match_seq_num`` checked, applied whole or not at all); ``landing``
        tells a retry whether its first attempt landed."""
        ...

    async def last_record(self, name: StreamName) -> SequencedRecord | None: ...

    def read_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        """Follow the stream from ``seq_num`` without end; a
        :class:`RangeNotSatisfiableError` once ``seq_num`` is past its tail
        (the stream was deleted under the reader)."""
        ...

    async def delete(self, name: StreamName) -> None:
        """Remove the stream and its records for good (nothing to do when it
        does not exist); a later append or read starts it anew."""
        ...

    async def trim(self, name: StreamName, trim_point: int, match_seq_num: int) -> None:
        """Append a ``trim`` command record at ``match_seq_num``: the records
        before ``trim_point`` go; the command becomes the last record."""
        ...

    async def aclose(self) -> None: ...


class Store(Protocol):
    """What :class:`EmbeddedBackend` needs of a store: S2's append and read,
    and a wait for the live tail."""

    description: str
    shares_read_sessions: bool
    """Whether readers of one stream in a process should share one session
    (a read costs a query), or each read their own (a read is a slice)."""

    async def append(self, name: StreamName, append_input: bytes) -> None: ...

    def last_record(self, name: StreamName) -> SequencedRecord | None: ...

    def records_from(self, name: StreamName, seq_num: int) -> list[SequencedRecord]: ...

    def wait_for_records(self, name: StreamName, seq_num: int) -> asyncio.Future[None] | None:
        """A future resolved once the stream may have a record at ``seq_num``
        (the caller reads again), or None when it already has one. Raises
        :class:`RangeNotSatisfiableError` when ``seq_num`` is past the tail,
        as S2 answers such a read: the stream was deleted (and perhaps begun
        anew) under its reader, who would otherwise wait for good."""
        ...

    async def delete(self, name: StreamName) -> None:
        """Remove the stream's records for good and wake its waiting readers."""
        ...

    async def release(self) -> None:
        """A backend over the store is closed."""
        ...


class _Stream:
    __slots__ = ("active_at", "fencing_token", "records", "waiters")

    def __init__(self) -> None:
        self.records: list[SequencedRecord] = []
        self.fencing_token = ""
        # When it was made or last appended to (monotonic seconds).
        self.active_at = time.monotonic()
        self.waiters: list[asyncio.Future[None]] = []

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
            tail = len(stream.records)
            match = batch.match_seq_num
            if match is not None and match != tail:
                raise SeqNumMismatchError(tail)
            stream.records.extend(batch.sequenced(tail, int(time.time() * 1000)))
            if batch.new_fencing_token is not None:
                stream.fencing_token = batch.new_fencing_token
            stream.active_at = time.monotonic()
            self._streams.move_to_end(name)
            stream.wake_readers()

    def records_from(self, name: StreamName, seq_num: int) -> list[SequencedRecord]:
        with self._lock:
            stream = self._streams.get(name)
            if stream is None:
                return []
            return stream.records[seq_num : seq_num + READ_BATCH_RECORDS]

    def last_record(self, name: StreamName) -> SequencedRecord | None:
        with self._lock:
            self._expire()
            stream = self._streams.get(name)
            return stream.records[-1] if stream is not None and stream.records else None

    def wait_for_records(self, name: StreamName, seq_num: int) -> asyncio.Future[None] | None:
        """A future resolved once the stream has a record at ``seq_num``, or None
        when it already has one."""
        with self._lock:
            self._expire()
            held = self._streams.get(name)
            tail = 0 if held is None else len(held.records)
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


class EmbeddedBackend:
    """The :class:`Backend` over a :class:`Store`: this process's memory
    (:class:`EmbeddedStore`) or a ``data_dir``
    (:class:`~resumable_fast.sqlite_store.SqliteStore`)."""

    kind: BackendKind = "embedded"

    def __init__(self, store: Store) -> None:
        self.store = store
        self.description = f"embedded ({store.description})"

    def __repr__(self) -> str:
        return f"EmbeddedBackend({self.description})"

    @property
    def process_local(self) -> bool:
        """Whether the streams are this process's alone (in memory)."""
        return isinstance(self.store, EmbeddedStore)

    async def append(
        self, name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        await self.store.append(name, append_input)

    async def last_record(self, name: StreamName) -> SequencedRecord | None:
        return self.store.last_record(name)

    async def read_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        store = self.store
        next_seq_num = seq_num
        while True:
            records = store.records_from(name, next_seq_num)
            if records:
                next_seq_num = records[-1]["seq_num"] + 1
                yield records
                continue
            waiter = store.wait_for_records(name, next_seq_num)
            if waiter is not None:
                try:
                    await waiter
                finally:
                    waiter.cancel()

    async def delete(self, name: StreamName) -> None:
        await self.store.delete(name)

    async def trim(self, name: StreamName, trim_point: int, match_seq_num: int) -> None:
        """Refused: the context refuses ``trim_finished`` on this backend
        before any stream exists (docs/design.md, issue 23)."""
        raise ConfigurationError("the embedded backend does not trim streams")

    async def aclose(self) -> None:
        await self.store.release()
