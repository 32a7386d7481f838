"""The async iterators handed to callers: the producer's own stream and resumed ones."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from resumable_fast.errors import (
    RangeNotSatisfiableError,
    StreamDeletedError,
    StreamFailedError,
    StreamIncompleteError,
)
from resumable_fast.metrics import Metrics
from resumable_fast.records import (
    END_FENCE_PREFIX,
    ERROR_FENCE_PREFIX,
    SequencedRecord,
    is_command,
    is_fence,
)
from resumable_fast.timeouts import timeout_after

__all__ = [
    "ChunkChannel",
    "GeneratorStream",
    "ProducerStream",
    "ResumableStream",
    "ResumedStream",
    "chunks_from_records",
    "records_before",
    "skip_prefix",
    "skip_text",
    "stored_then_new",
]


class ResumableStream(AsyncIterator[str]):
    """An async iterator of text chunks with ``aclose()``.

    Both the producer's stream and resumed streams have this type.
    """

    __slots__ = ()

    stream_id: str

    def __aiter__(self) -> ResumableStream:
        return self

    def __anext__(self) -> Awaitable[str]:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def read_all(self) -> str:
        """Read the rest of the stream and return it as one string."""
        return "".join([chunk async for chunk in self])


class ChunkChannel:
    """A single-consumer channel of chunks that can end with an error.

    :meth:`get` returns a future that the consumer's task awaits directly, with
    no coroutine of ours in between. When the consumer waits, :meth:`put` hands
    the chunk to its future: one wake-up, nothing buffered. Otherwise chunks
    wait in a deque made on first use and dropped when emptied: a client that
    keeps up holds none, and an idle stream should cost little memory.
    Cancelling the consumer's wait cancels only its future; the next chunk is
    buffered for its next :meth:`get`.

    With ``max_buffered_chars``, a consumer that falls further behind than that
    is cut loose: the buffer is dropped, nothing more is taken, and
    :attr:`overflowed` tells the consumer to go on from :attr:`delivered`
    characters elsewhere (the producer's client, from the backend).
    """

    __slots__ = (
        "_buffered",
        "_closed",
        "_error",
        "_items",
        "_limit",
        "_waiter",
        "delivered",
        "overflowed",
    )

    def __init__(self, max_buffered_chars: int | None = None) -> None:
        self._items: deque[str] | None = None
        self._waiter: asyncio.Future[str] | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._limit = max_buffered_chars
        self._buffered = 0
        self.delivered = 0
        """Characters handed to the consumer so far."""
        self.overflowed = False

    def put(self, chunk: str) -> None:
        if self._closed:
            return
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():  # else the consumer's wait was cancelled
                waiter.set_result(chunk)
                self.delivered += len(chunk)
                return
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(chunk)
        if self._limit is not None:
            self._buffered += len(chunk)
            if self._buffered > self._limit:
                self.overflowed = True
                self._closed = True
                self._items = None

    @property
    def holds_chunks(self) -> bool:
        """Whether chunks wait in the channel for its consumer (an overflowed
        channel has let go of them)."""
        return bool(self._items)

    def close(self, error: BaseException | None = None) -> None:
        """No more chunks: the consumer gets ``error`` (once) or the end after
        what is buffered."""
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._end_wait()

    def detach(self) -> None:
        """The consumer has gone: drop what is buffered and accept nothing more."""
        self._closed = True
        self._items = None
        self._end_wait()

    def _end_wait(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                self._end(waiter)

    def _end(self, future: asyncio.Future[str]) -> None:
        error = self._error
        if error is not None:
            self._error = None
            future.set_exception(error)
        else:
            future.set_exception(StopAsyncIteration())

    def get(self) -> asyncio.Future[str]:
        """The next chunk; :class:`StopAsyncIteration` at the end."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        items = self._items
        if items:
            chunk = items.popleft()
            future.set_result(chunk)
            self.delivered += len(chunk)
            if self._limit is not None:
                self._buffered -= len(chunk)
            if not items:
                self._items = None  # an empty deque still holds a 0.5 KiB block
        elif self._closed:
            self._end(future)
        else:
            self._waiter = future
        return future


def skip_prefix(chunk: str, to_skip: int) -> tuple[str, int]:
    """What is left of ``chunk`` once ``to_skip`` characters of the text are
    left out, and how many remain to skip after it."""
    if len(chunk) <= to_skip:
        return "", to_skip - len(chunk)
    return chunk[to_skip:], 0


async def skip_text(chunks: AsyncGenerator[str, None], to_skip: int) -> AsyncGenerator[str, None]:
    """The chunks, with the first ``to_skip`` characters of their text left out."""
    async with aclosing(chunks):
        async for chunk in chunks:
            if to_skip:
                chunk, to_skip = skip_prefix(chunk, to_skip)
                if not chunk:
                    continue
            yield chunk


class ProducerStream(ResumableStream):
    """The producer's client side: chunks as the source yields them, from the
    channel the source's task fills.

    A client that falls behind by more than its channel holds goes on from the
    backend instead, from the characters it had, as a resumed reader does
    (``resume`` makes that stream). Closing it only detaches this client;
    persistence runs on to the end.
    """

    __slots__ = ("_channel", "_resume", "_resumed", "_skip", "_to_skip", "stream_id")

    def __init__(
        self,
        stream_id: str,
        channel: ChunkChannel,
        skip_characters: int = 0,
        resume: Callable[[int], ResumableStream] | None = None,
    ) -> None:
        self.stream_id = stream_id
        self._channel = channel
        self._skip = self._to_skip = skip_characters
        self._resume = resume
        self._resumed: ResumableStream | None = None

    def __anext__(self) -> Awaitable[str]:
        # The channel's future itself, without a coroutine of ours around it:
        # a waiting client holds no frame of ours.
        if self._resumed is not None:
            return self._resumed.__anext__()
        channel = self._channel
        if channel.overflowed and self._resume is not None:
            self._resumed = self._resume(max(channel.delivered, self._skip))
            return self._resumed.__anext__()
        if self._to_skip:
            return self._skipping_next()
        return channel.get()

    async def _skipping_next(self) -> str:
        chunk = await self._channel.get()
        while self._to_skip:
            chunk, self._to_skip = skip_prefix(chunk, self._to_skip)
            if chunk:
                break
            chunk = await self._channel.get()
        return chunk

    async def aclose(self) -> None:
        self._channel.detach()
        if self._resumed is not None:
            await self._resumed.aclose()

    def __repr__(self) -> str:
        return f"ProducerStream({self.stream_id!r})"


async def chunks_from_records(
    stream_id: str,
    batches: AsyncGenerator[list[SequencedRecord], None],
    skip_characters: int = 0,
    liveness_timeout: float | None = None,
    metrics: Metrics | None = None,
) -> AsyncGenerator[str, None]:
    """Data record bodies in order, until an ``end-`` fence; an ``error-`` fence raises.

    The first ``skip_characters`` characters of the text are left out. With
    ``liveness_timeout``, a wait of that many seconds for the next record of an
    unfinished stream raises :class:`StreamIncompleteError` (live producers
    append a heartbeat fence well within it). With ``metrics``, the reader
    counts as active from its first read until it ends, and the time to its
    first chunk is recorded.
    """
    to_skip = skip_characters
    next_batch = batches.__anext__
    # Set until the first chunk's time is recorded: what the chunks' loop
    # tests, so a reader pays one comparison per chunk for it.
    started: float | None = None
    if metrics is not None:
        metrics.reader_opened()
        started = time.perf_counter()
    try:
        while True:
            try:
                if liveness_timeout is None:
                    records = await next_batch()
                else:
                    async with timeout_after(liveness_timeout):
                        records = await next_batch()
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise StreamIncompleteError(stream_id, liveness_timeout or 0.0) from None
            except RangeNotSatisfiableError:
                # The next position is past the tail: the records were deleted.
                raise StreamDeletedError(stream_id) from None
            for record in records:
                body = record.get("body")
                if is_command(record):
                    if is_fence(record) and body:
                        if body.startswith(END_FENCE_PREFIX):
                            return
                        if body.startswith(ERROR_FENCE_PREFIX):
                            raise StreamFailedError(stream_id, body)
                    continue  # the session fence, heartbeats, a takeover, a trim
                if not body:
                    continue
                if to_skip:
                    body, to_skip = skip_prefix(body, to_skip)
                    if not body:
                        continue
                if started is not None and metrics is not None:
                    metrics.first_chunk(started)
                    started = None
                yield body
    finally:
        if metrics is not None:
            metrics.reader_closed()
        await batches.aclose()


class ResumedStream(ResumableStream):
    """Replays a stream from its start, then follows the live tail to its end."""

    def __init__(
        self,
        stream_id: str,
        batches: AsyncGenerator[list[SequencedRecord], None],
        skip_characters: int = 0,
        liveness_timeout: float | None = None,
        *,
        metrics: Metrics,
    ) -> None:
        self.stream_id = stream_id
        self._chunks: AsyncGenerator[str, None] = chunks_from_records(
            stream_id, batches, skip_characters, liveness_timeout, metrics
        )

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    def __repr__(self) -> str:
        return f"ResumedStream({self.stream_id!r})"


class GeneratorStream(ResumableStream):
    """A stream whose chunks come from an async generator (a taken-over
    stream: the stored text, then its new producer)."""

    def __init__(self, stream_id: str, chunks: AsyncGenerator[str, None]) -> None:
        self.stream_id = stream_id
        self._chunks = chunks

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    def __repr__(self) -> str:
        return f"GeneratorStream({self.stream_id!r})"


async def stored_then_new(
    stream_id: str,
    batches: AsyncGenerator[list[SequencedRecord], None],
    upto_seq_num: int,
    producer: ResumableStream,
) -> AsyncGenerator[str, None]:
    """The text stored before ``upto_seq_num``, then the producer's chunks (a
    taken-over stream)."""
    try:
        async for chunk in chunks_from_records(stream_id, records_before(batches, upto_seq_num)):
            yield chunk
        async for chunk in producer:
            yield chunk
    finally:
        await producer.aclose()


async def records_before(
    batches: AsyncGenerator[list[SequencedRecord], None], upto_seq_num: int
) -> AsyncGenerator[list[SequencedRecord], None]:
    """The batches' records before ``upto_seq_num``; ``batches`` is closed
    once it passes that position."""
    async with aclosing(batches):
        async for records in batches:
            kept = [record for record in records if record["seq_num"] < upto_seq_num]
            if kept:
                yield kept
            if len(kept) < len(records):
                return
