"""Where streams live: S2 (through :class:`~resumable_fast.s2.S2Client`) or the
embedded in-process store.

The embedded backend is a product feature for zero-setup use, not a test
double: it keeps S2's semantics (the same records and sequence numbers, fencing
tokens and ``match_seq_num`` checks with the same typed errors, atomic batches,
the same size limits, create-on-append and create-on-read, reads from a
sequence number that follow the live tail), so code moves to S2 unchanged. It
reads the very ``AppendInput`` bodies the native core frames for S2.

Streams live in memory, and each is dropped ``retention_seconds`` after its
last record, finished or not (a producer that died leaves its stream
unfinished), unless a reader is waiting on it; asking about a stream that does
not exist stores nothing. So memory stays bounded whatever callers ask. With a
``data_dir`` each stream is an append-only file of checksummed batches that
survives a process restart (a torn last write is detected by its length and
CRC and cut off when the file is opened). The file writes run on one writer
thread per store, in the order the batches were applied, so the event loop
never waits on the disk; an append returns once its write reached the
operating system, so it survives the process being killed (readers may see a
batch a moment before that). Writes are not fsynced: a power cut may lose the
last ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import ClassVar, Protocol

import orjson

from resumable_fast.errors import (
    FencingTokenMismatchError,
    S2Error,
    SeqNumMismatchError,
)
from resumable_fast.records import (
    FENCE_HEADER,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_FENCING_TOKEN_BYTES,
    SequencedRecord,
)

__all__ = ["Backend", "EmbeddedBackend", "EmbeddedStore"]

logger = logging.getLogger("resumable_fast")

READ_BATCH_RECORDS = 1000
DEFAULT_RETENTION_SECONDS = 3600.0
_ENTRY_HEAD = struct.Struct(">II")  # payload length, CRC-32 of the payload


class Backend(Protocol):
    """What a context needs from the place its streams live."""

    description: str

    async def append(
        self,
        stream: str,
        append_input: bytes,
        *,
        end_seq_num: int | None = None,
        new_fence: str | None = None,
    ) -> None: ...

    async def last_record(self, stream: str) -> SequencedRecord | None: ...

    def read_session(
        self, stream: str, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]: ...

    async def aclose(self) -> None: ...


def _invalid(message: str) -> S2Error:
    return S2Error(422, "invalid", message)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _headers_size(headers: object) -> int:
    """Metered bytes of a record's headers: 2 per header plus its name and value."""
    if type(headers) is not list:
        raise _invalid("headers must be a list of [name, value] pairs")
    size = 0
    for header in headers:
        if type(header) is not list or len(header) != 2:
            raise _invalid("headers must be a list of [name, value] pairs")
        name, value = header
        if type(name) is not str or type(value) is not str:
            raise _invalid("header names and values must be strings")
        size += 2 + _utf8_len(name) + _utf8_len(value)
    return size


class _Stream:
    __slots__ = ("active_at", "fencing_token", "path", "records", "waiters")

    def __init__(self, path: Path | None) -> None:
        self.records: list[SequencedRecord] = []
        self.fencing_token = ""
        self.path = path
        # When it was made, loaded or last appended to (monotonic seconds).
        self.active_at = time.monotonic()
        self.waiters: list[asyncio.Future[None]] = []

    def apply(self, records: list[SequencedRecord]) -> None:
        for record in records:
            if record.get("headers") == [FENCE_HEADER]:
                self.fencing_token = record.get("body", "")
        self.records.extend(records)

    def wake_readers(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            loop = waiter.get_loop()
            # A reader that went away leaves a finished future or a closed loop;
            # live ones may wait on another thread's event loop.
            if not waiter.done() and not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, waiter)

    def has_readers(self) -> bool:
        self.waiters = [waiter for waiter in self.waiters if not waiter.done()]
        return bool(self.waiters)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EmbeddedStore:
    """The streams of one process (or one ``data_dir``), shared by every
    context that uses them, as replicas share one S2 basin."""

    _shared: ClassVar[dict[str | None, EmbeddedStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, data_dir: Path | None, retention_seconds: float = DEFAULT_RETENTION_SECONDS
    ) -> None:
        self.data_dir = data_dir
        self.retention_seconds = retention_seconds
        # Least recently active first.
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        self._write_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def shared(
        cls, data_dir: Path | None, retention_seconds: float = DEFAULT_RETENTION_SECONDS
    ) -> EmbeddedStore:
        key = None if data_dir is None else str(data_dir.resolve())
        with cls._shared_lock:
            store = cls._shared.get(key)
            if store is None:
                store = cls._shared[key] = cls(data_dir, retention_seconds)
            return store

    def _path(self, name: str) -> Path | None:
        if self.data_dir is None:
            return None
        return self.data_dir / (hashlib.sha256(name.encode()).hexdigest() + ".stream")

    def _existing(self, name: str) -> _Stream | None:
        """The stream if it has records (in memory or in ``data_dir``) or a
        reader waiting for its first; None, storing nothing, otherwise."""
        stream = self._streams.get(name)
        if stream is None and self.data_dir is not None:
            path = self._path(name)
            if path is not None and path.exists():
                stream = _Stream(path)
                for batch in _load_batches(path):
                    stream.apply(batch)
                self._streams[name] = stream
        return stream

    def _stream(self, name: str) -> _Stream:
        """The stream, made on first use (an append, or a reader's wait)."""
        stream = self._existing(name)
        if stream is None:
            stream = self._streams[name] = _Stream(self._path(name))
        return stream

    def _expire(self) -> None:
        """Drop streams idle for longer than the retention, finished or not,
        unless a reader waits on them (from memory; files stay)."""
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

    def append(self, name: str, append_input: bytes) -> concurrent.futures.Future[None] | None:
        """Apply one ``AppendInput``; with a ``data_dir``, the future of its
        write, which runs on the store's writer thread after every write
        queued before it."""
        try:
            request = orjson.loads(append_input)
            records_in = request["records"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise _invalid("append input must be a JSON object with records") from None
        if not isinstance(records_in, list) or not 1 <= len(records_in) <= MAX_BATCH_RECORDS:
            raise _invalid(f"a batch holds 1 to {MAX_BATCH_RECORDS} records")
        batch_bytes = 0
        for record in records_in:
            if type(record) is not dict:
                raise _invalid("records must be objects with a string body")
            body = record.get("body", "")
            if type(body) is not str:
                raise _invalid("records must be objects with a string body")
            body_bytes = _utf8_len(body)
            size = 8 + body_bytes
            headers = record.get("headers")
            if headers:
                size += _headers_size(headers)
                if headers == [FENCE_HEADER] and body_bytes > MAX_FENCING_TOKEN_BYTES:
                    raise _invalid("fencing token exceeds 36 bytes")
            if size > MAX_BATCH_BYTES:
                raise _invalid("a record exceeds 1 MiB metered")
            batch_bytes += size
        if batch_bytes > MAX_BATCH_BYTES:
            raise _invalid("a batch exceeds 1 MiB metered")
        with self._lock:
            self._expire()
            stream = self._stream(name)
            token = request.get("fencing_token")
            if token is not None and token != stream.fencing_token:
                raise FencingTokenMismatchError(stream.fencing_token)
            tail = len(stream.records)
            match = request.get("match_seq_num")
            if match is not None and match != tail:
                raise SeqNumMismatchError(tail)
            now = int(time.time() * 1000)
            records: list[SequencedRecord] = [
                {"seq_num": seq_num, "timestamp": now, "body": record.get("body", "")}
                if not record.get("headers")
                else {
                    "seq_num": seq_num,
                    "timestamp": now,
                    "headers": record["headers"],
                    "body": record.get("body", ""),
                }
                for seq_num, record in enumerate(records_in, tail)
            ]
            written = None
            if stream.path is not None:
                written = self._writer().submit(_write_batch, stream.path, records)
            stream.apply(records)
            stream.active_at = time.monotonic()
            self._streams.move_to_end(name)
            stream.wake_readers()
            return written

    def _writer(self) -> concurrent.futures.ThreadPoolExecutor:
        """One thread, so batches reach their files in the order applied."""
        if self._write_thread is None:
            self._write_thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="resumable_fast embedded writer"
            )
        return self._write_thread

    def records_from(self, name: str, seq_num: int) -> list[SequencedRecord]:
        with self._lock:
            stream = self._existing(name)
            if stream is None:
                return []
            return stream.records[seq_num : seq_num + READ_BATCH_RECORDS]

    def last_record(self, name: str) -> SequencedRecord | None:
        with self._lock:
            self._expire()
            stream = self._existing(name)
            return stream.records[-1] if stream is not None and stream.records else None

    def wait_for_records(self, name: str, seq_num: int) -> asyncio.Future[None] | None:
        """A future resolved once the stream has a record at ``seq_num``, or None
        when it already has one."""
        with self._lock:
            self._expire()
            stream = self._stream(name)
            if len(stream.records) > seq_num:
                return None
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            stream.waiters.append(waiter)
            return waiter


def _write_batch(path: Path, records: list[SequencedRecord]) -> None:
    payload = orjson.dumps(records)
    with path.open("ab") as file:
        file.write(_ENTRY_HEAD.pack(len(payload), zlib.crc32(payload)) + payload)


def _load_batches(path: Path) -> list[list[SequencedRecord]]:
    """Every complete batch in a stream file; a torn last write is cut off."""
    data = path.read_bytes()
    batches: list[list[SequencedRecord]] = []
    offset = 0
    while offset < len(data):
        head_end = offset + _ENTRY_HEAD.size
        if head_end > len(data):
            break
        length, checksum = _ENTRY_HEAD.unpack_from(data, offset)
        payload = data[head_end : head_end + length]
        if len(payload) < length or zlib.crc32(payload) != checksum:
            break
        batches.append(orjson.loads(payload))
        offset = head_end + length
    if offset < len(data):
        logger.warning(
            "stream file %s: cutting off a torn write of %d bytes", path.name, len(data) - offset
        )
        with path.open("r+b") as file:
            file.truncate(offset)
    return batches


class EmbeddedBackend:
    """The :class:`Backend` over an :class:`EmbeddedStore`."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        where = "in memory" if store.data_dir is None else f"in {store.data_dir}"
        self.description = f"embedded ({where})"

    def __repr__(self) -> str:
        return f"EmbeddedBackend({self.description})"

    async def append(
        self,
        stream: str,
        append_input: bytes,
        *,
        end_seq_num: int | None = None,
        new_fence: str | None = None,
    ) -> None:
        written = self.store.append(stream, append_input)
        if written is not None:
            try:
                await asyncio.wrap_future(written)
            except OSError as exc:
                # Applied in memory, not on disk: not worth a retry.
                raise S2Error(
                    507, "storage_error", f"writing the stream's file failed: {exc}"
                ) from None

    async def last_record(self, stream: str) -> SequencedRecord | None:
        return self.store.last_record(stream)

    async def read_session(
        self, stream: str, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        next_seq_num = seq_num
        while True:
            records = self.store.records_from(stream, next_seq_num)
            if records:
                next_seq_num = records[-1]["seq_num"] + 1
                yield records
                continue
            waiter = self.store.wait_for_records(stream, next_seq_num)
            if waiter is not None:
                try:
                    await waiter
                finally:
                    waiter.cancel()

    async def aclose(self) -> None:
        """Nothing to release: the store outlives its contexts, as S2 does."""
