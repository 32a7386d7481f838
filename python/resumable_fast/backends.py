"""Where streams live: S2 (through :class:`~resumable_fast.s2.S2Client`) or the
embedded store.

The embedded backend is a product feature for zero-setup use, not a test
double: it keeps S2's semantics (the same records and sequence numbers, fencing
tokens and ``match_seq_num`` checks with the same typed errors, atomic batches,
the same size limits, create-on-append and create-on-read, reads from a
sequence number that follow the live tail), so code moves to S2 unchanged. It
reads the very ``AppendInput`` bodies the native core frames for S2.

Its streams live in one of two stores.
:class:`~resumable_fast.memory_store.EmbeddedStore` keeps them in this
process's memory (development, tests, one-process services), each dropped
``retention_seconds`` after its last record.
:class:`~resumable_fast.sqlite_store.SqliteStore` keeps them in a SQLite
database in a ``data_dir`` that every process naming the directory shares (the
workers of one machine), across restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Protocol

from resumable_fast.errors import ConfigurationError
from resumable_fast.metrics import BackendKind
from resumable_fast.records import NO_LANDING, Landing, SequencedRecord, StreamName

__all__ = ["Backend", "EmbeddedBackend", "Store"]

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
    (a read costs a query), or each read their own (a read costs little)."""
    process_local: bool
    """Whether the streams are this process's alone (in memory)."""

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


class EmbeddedBackend:
    """The :class:`Backend` over a :class:`Store`: this process's memory
    (:class:`~resumable_fast.memory_store.EmbeddedStore`) or a ``data_dir``
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
        return self.store.process_local

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
