"""The resumable stream context: create, resume, inspect and stop streams.

Stream layout on S2 (shared with the TypeScript seed package):

* seq 0: a fence command ``session-<random>`` appended with the empty token;
  only one producer can win it.
* seq 1..: header-less data records, one per chunk (a chunk over 1 MiB is
  split), written in batches under the session token, the first batch at
  ``match_seq_num`` 1.
* last: a fence ``end-<random>`` when the source finished, or
  ``error-<random>`` when it failed. ``stop_stream`` appends an ``end-`` fence
  without a token, which fences the producer out.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Literal

from resumable_fast import _core
from resumable_fast._handover import InFlight, Interrupted, Pull
from resumable_fast.backends import (
    DEFAULT_RETENTION_SECONDS,
    Backend,
    EmbeddedBackend,
    EmbeddedStore,
)
from resumable_fast.config import BatchSettings, S2Config
from resumable_fast.errors import (
    ConfigurationError,
    FencingTokenMismatchError,
    InvalidChunkError,
    InvalidStreamIdError,
    ResumableStreamError,
    S2Error,
    SeqNumMismatchError,
    StreamExistsError,
)
from resumable_fast.s2 import S2Client, SequencedRecord, is_fence
from resumable_fast.streams import (
    END_FENCE_PREFIX,
    ERROR_FENCE_PREFIX,
    ChunkChannel,
    GeneratorStream,
    ProducerStream,
    ResumableStream,
    ResumedStream,
    chunks_from_records,
    skip_text,
)

__all__ = [
    "MakeStream",
    "ResumableStreamContext",
    "StreamState",
    "create_resumable_stream_context",
    "new_stream_id",
]

logger = logging.getLogger("resumable_fast")

MAX_STREAM_ID_BYTES = 512
# A producer's client that holds its stream without asking for a chunk for
# this long no longer holds up the source: a background pump pulls it on.
CLIENT_ABSENCE_SECONDS = 1.0
# Readers give up on an unfinished stream after this much silence; producers
# idle for a third of it append a heartbeat.
DEFAULT_LIVENESS_TIMEOUT = 30.0
HEARTBEATS_PER_TIMEOUT = 3
SESSION_FENCE_PREFIX = "session-"
DEFAULT_DRAIN_TIMEOUT = 30.0
# Appends run on at most this many tasks per context, each writing one
# stream's queued batches at a time (as many as the S2 client sends at once).
MAX_APPEND_WORKERS = 256

# Fence AppendInputs start so; data batches with '{"records":[{"body"'.
_FENCE_INPUT = b'{"records":[{"headers"'

MakeStream = Callable[[], AsyncIterable[str] | Awaitable[AsyncIterable[str]]]
StreamState = Literal[True, "DONE"] | None


def _new_token(prefix: str) -> str:
    # 12 random bytes: 24 hex digits, so every fence fits S2's 36-byte limit.
    return prefix + secrets.token_hex(12)


def new_stream_id() -> str:
    """A fresh stream id: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def validate_stream_id(stream_id: object) -> str:
    if not isinstance(stream_id, str):
        raise InvalidStreamIdError(f"stream id must be a str, got {type(stream_id).__name__}")
    if not stream_id:
        raise InvalidStreamIdError("stream id must not be empty")
    try:
        size = len(stream_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidStreamIdError("stream id must be valid Unicode text") from None
    if size > MAX_STREAM_ID_BYTES:
        raise InvalidStreamIdError(
            f"stream id is {size} bytes, S2 allows at most {MAX_STREAM_ID_BYTES}"
        )
    return stream_id


def _validate_skip(skip_characters: int | None) -> int:
    if skip_characters is None:
        return 0
    if isinstance(skip_characters, bool) or not isinstance(skip_characters, int):
        raise TypeError("skip_characters must be an int or None")
    if skip_characters < 0:
        raise ValueError("skip_characters must be >= 0")
    return skip_characters


def _state_of(last: SequencedRecord | None) -> StreamState:
    if last is None:
        return None
    body = last.get("body", "")
    if is_fence(last) and body.startswith((END_FENCE_PREFIX, ERROR_FENCE_PREFIX)):
        return "DONE"
    return True


class _Producer:
    """Pulls one source, hands chunks to the producer's client as they come, and
    persists them through the native accumulator in order.

    The source is pulled by whoever needs its next chunk: the producer's client
    while it waits for one (so a chunk reaches it in the step the source yields
    it, see :mod:`resumable_fast._handover`), else a background pump task: from
    the start, once the client has gone, has been cancelled mid-pull, or has not
    asked for ``CLIENT_ABSENCE_SECONDS``. A pump hands pulling back as soon as
    the client waits again. A writer task, started when there is something to
    write and gone when there is not, sends framed batches to the backend, one
    append in flight, then the closing fence. An idle in-flight stream holds
    no task of its own (memory per stream: ``make bench``).
    """

    __slots__ = (
        "_absence_check",
        "_batch_size",
        "_client_left_at",
        "_client_pull",
        "_interrupted",
        "_last_append_at",
        "_loop",
        "_match_seq_num",
        "_pull_next",
        "_pump_started",
        "_release_waiter",
        "_write_waiter",
        "channel",
        "closing_fence",
        "context",
        "failure",
        "fence_landed",
        "frames",
        "pending",
        "persisting",
        "pulling",
        "pump_task",
        "released",
        "slot",
        "slot_open",
        "source",
        "source_finished",
        "stopped",
        "stream_id",
        "token",
        "writing",
    )

    def __init__(
        self,
        context: ResumableStreamContext,
        stream_id: str,
        token: str,
        source: AsyncIterable[str],
        first_seq_num: int = 1,
    ) -> None:
        self.context = context
        self.stream_id = stream_id
        self.token = token
        self.source = source
        self._pull_next = source.__aiter__().__anext__
        self._loop = asyncio.get_running_loop()
        self.channel = ChunkChannel()
        self.pending: list[str] = []
        self.slot = context._accumulator.open(token, first_seq_num, self.pending)
        self.slot_open = True
        self._batch_size = context.batching.batch_size
        self.frames: list[_core.Frame] = []
        self._match_seq_num = first_seq_num
        self._last_append_at = self._loop.time()
        self.closing_fence: str | None = None
        self.fence_landed = False
        self.released = False
        self._release_waiter: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        # pulling: a pull of the source is in flight (the client's or a pump's).
        # source_finished: the source ended, failed or was stopped.
        # stopped: fenced out by a stop, nothing more is pulled or written.
        # persisting: False once S2 refused a batch for good; the client still
        # gets its chunks, nothing more is written.
        self.pulling = False
        self.source_finished = False
        self.stopped = False
        self.persisting = True
        self._client_pull: Pull[str] | None = None
        self._client_left_at = 0.0
        self._absence_check: asyncio.TimerHandle | None = None
        self._interrupted = False  # by a stop or an abort: pull nothing more
        self.pump_task: asyncio.Task[None] | None = None
        self._pump_started = False
        # writing: queued for an append worker, or being written by one.
        self.writing = False
        self._write_waiter: asyncio.Future[None] | None = None
        self._start_pump(None)

    # -- pulling the source ---------------------------------------------------

    def _accept(self, chunk: object) -> str:
        """Check a chunk and queue it for persisting; returns it."""
        if type(chunk) is not str:
            raise InvalidChunkError(
                f"stream {self.stream_id!r}: source yielded {type(chunk).__name__}, not str"
            )
        if self.persisting:
            # The only per-chunk work: the native core frames the pending list
            # once per batch (or linger), with the GIL released.
            pending = self.pending
            pending.append(chunk)
            count = len(pending)
            if count >= self._batch_size:
                self.enqueue(self.context._accumulator.drain(self.slot))
            elif count == 1 and self.context._accumulator.arm(self.slot):
                self.context._linger_wake.set()
        return chunk

    async def next_for_client(self) -> str:
        """The producer's client's next chunk."""
        channel = self.channel
        if self.pulling or self.source_finished or channel.has_items or channel.closed:
            try:
                return await channel.get()
            finally:
                self._client_left()
        self.pulling = True
        pull = self._client_pull = Pull(self._pull_next(), self._hand_over)
        try:
            chunk = self._accept(await pull)
        except StopAsyncIteration:
            await self._source_ended(None)
            return await channel.get()
        except Interrupted:
            return await channel.get()
        except asyncio.CancelledError:
            raise  # the pull in flight went to a pump (_hand_over)
        except Exception as exc:
            await self._source_ended(exc)
            return await channel.get()
        finally:
            self._client_pull = None
            self._client_left()
        self.pulling = False
        if channel.closed:
            self._start_pump(None)  # the client detached while it was pulling
        return chunk

    def client_detached(self) -> None:
        """The producer's client has gone: persistence goes on without it."""
        self.channel.detach()
        if not self.pulling and not self.source_finished:
            self._start_pump(None)

    def _client_left(self) -> None:
        self._client_left_at = self._loop.time()
        if self._absence_check is None and not self.source_finished:
            self._absence_check = self._loop.call_at(
                self._client_left_at + CLIENT_ABSENCE_SECONDS, self._check_client_absence
            )

    def _check_client_absence(self) -> None:
        self._absence_check = None
        if self.pulling or self.source_finished:
            return  # the client re-arms the check when it next leaves
        due = self._client_left_at + CLIENT_ABSENCE_SECONDS
        if self._loop.time() >= due:
            self._start_pump(None)
        else:
            self._absence_check = self._loop.call_at(due, self._check_client_absence)

    def _hand_over(self, in_flight: InFlight[str]) -> None:
        self._client_pull = None
        self._start_pump(in_flight)

    def _start_pump(self, in_flight: InFlight[str] | None) -> None:
        self.pulling = True
        self._pump_started = False
        self.pump_task = self.context._spawn(
            self._pump(in_flight), f"resumable_fast pump {self.stream_id}"
        )

    async def _pump(self, in_flight: InFlight[str] | None) -> None:
        self._pump_started = True
        channel = self.channel
        try:
            while True:
                if in_flight is not None:
                    if self._interrupted:
                        in_flight.cancel()
                    chunk = self._accept(await in_flight)
                    in_flight = None
                elif self._interrupted:
                    raise asyncio.CancelledError
                else:
                    chunk = self._accept(await self._pull_next())
                client_waits = channel.waiting
                channel.put(chunk)
                if client_waits:
                    # The client pulls the next one itself. A finished task
                    # is not kept: an idle stream should hold no task.
                    self.pulling = False
                    self.pump_task = None
                    return
        except StopAsyncIteration:
            await self._source_ended(None)
        except asyncio.CancelledError:
            if self.stopped:
                await self._source_ended(None)
            else:
                await self._source_ended(
                    ResumableStreamError("producer cancelled before its source ended")
                )
                raise
        except Exception as exc:
            await self._source_ended(exc)

    async def _source_ended(self, failure: BaseException | None) -> None:
        self.pulling = False
        self.source_finished = True
        if self._absence_check is not None:
            self._absence_check.cancel()
            self._absence_check = None
        if failure is not None:
            # The exception's text is the caller's (it may quote a provider's
            # request); only its type is logged above debug level.
            logger.warning("stream %r: source failed (%s)", self.stream_id, type(failure).__name__)
            logger.debug("stream %r: source failure: %r", self.stream_id, failure)
        await _aclose_quietly(self.source)
        if self.stopped or not self.persisting:
            self.failure = failure
            self._release_if_done()
        else:
            self._finish(failure)

    def enqueue(self, frames: list[_core.Frame]) -> None:
        if self.persisting and not self.stopped:
            self.frames.extend(frames)
            self._start_writer()

    def _finish(self, failure: BaseException | None) -> None:
        """Seal what was accepted and queue the closing fence after it. The
        producer's client sees the end once that fence has landed, so a stream
        it saw finish is finished for every reader too."""
        self.failure = failure
        self.enqueue(self.context._accumulator.close(self.slot))
        self.slot_open = False  # the slot may now go to another stream
        prefix = END_FENCE_PREFIX if failure is None else ERROR_FENCE_PREFIX
        self.closing_fence = _new_token(prefix)
        self._start_writer()

    def stop(self) -> None:
        """Fenced out by a stop: stop pulling the source; nothing more is written."""
        if self.stopped:
            return
        self.stopped = True
        self.frames.clear()
        self._interrupt_pull()
        self._release_if_done()

    def abort(self) -> None:
        """Stop pulling an unfinished source; the stream ends with an error fence."""
        self._interrupt_pull()

    def _interrupt_pull(self) -> None:
        self._interrupted = True
        if self.source_finished:
            return
        if self._client_pull is not None:
            self._client_pull.interrupt()
        elif self.pump_task is None or self.pump_task.done():
            # Nobody is pulling (the client holds the stream without reading):
            # a pump sees the flag and closes the source.
            self._start_pump(None)
        elif self._pump_started:
            self.pump_task.cancel()
        # else: the pump has not run yet and will see the flag.

    def _next_append(self) -> _core.Frame:
        """The oldest queued batch, merged with the ones queued behind it (they
        piled up while the last append was in flight) as far as one append
        holds: one request instead of several, the same records in order."""
        frames = self.frames
        body, end_seq_num = frames[0]
        taken, size = 1, len(body)
        while taken < len(frames) and not body.startswith(_FENCE_INPUT):
            next_body, next_end = frames[taken]
            # JSON is longer than the records' metered size, so this bound is safe.
            if (
                next_end - self._match_seq_num > _core.MAX_BATCH_RECORDS
                or size + len(next_body) > _core.MAX_METERED_BYTES
                or next_body.startswith(_FENCE_INPUT)
            ):
                break
            taken += 1
            size += len(next_body)
            end_seq_num = next_end
        parts = [part for part, _ in frames[:taken]]
        del frames[:taken]
        if taken == 1:
            return body, end_seq_num
        return _core.merge_append_inputs(parts), end_seq_num

    def heartbeat_if_idle(self, now: float, interval: float) -> None:
        """Append a heartbeat when nothing was appended for ``interval``
        seconds while the source is still going (a model thinking): a fence
        that sets the session's own token again, which readers skip, so they
        can tell a slow producer from a dead one."""
        if (
            self.source_finished
            or self.stopped
            or not self.persisting
            or self.pending
            or self.frames
            or self.writing
            or now - self._last_append_at < interval
        ):
            return
        seq_num = self.context._accumulator.reserve(self.slot, 1)
        self._last_append_at = now
        self.frames.append((_core.fence_append_input(self.token, self.token, seq_num), seq_num + 1))
        self._start_writer()

    def _start_writer(self) -> None:
        if not self.writing:
            self.writing = True
            self.context._schedule_write(self)

    async def write(self) -> None:
        """Append the queued batches, then the closing fence once it is due;
        run by an append worker, one stream at a time."""
        backend = self.context._backend
        try:
            while self.frames and not self.stopped:
                body, end_seq_num = self._next_append()
                await backend.append(self.stream_id, body, end_seq_num=end_seq_num)
                self._match_seq_num = end_seq_num
                self._last_append_at = self._loop.time()
            if self.closing_fence is not None and not self.stopped and not self.fence_landed:
                await backend.append(
                    self.stream_id,
                    _core.fence_append_input(self.closing_fence, self.token),
                    new_fence=self.closing_fence,
                )
                self.fence_landed = True
        except (FencingTokenMismatchError, SeqNumMismatchError):
            logger.info("stream %r was stopped; its producer is fenced out", self.stream_id)
            self.stop()
        except ResumableStreamError as exc:
            # Transient faults are retried below this layer; what reaches here is
            # final. The producer's client keeps receiving its chunks.
            logger.error("stream %r: persisting failed: %s", self.stream_id, exc)
            self.persisting = False
            self.frames.clear()
        finally:
            self.writing = False
            if self._write_waiter is not None and not self._write_waiter.done():
                self._write_waiter.set_result(None)
            self._release_if_done()

    def _release_if_done(self) -> None:
        """Once the source is done with and nothing more will be written: the
        producer's client sees the end, the stream's slot and name are freed."""
        if self.released or not self.source_finished:
            return
        if not (self.stopped or not self.persisting or self.fence_landed):
            return
        self.released = True
        if self.slot_open:
            self.slot_open = False
            self.context._accumulator.discard(self.slot)
        self.channel.close(self.failure)
        self.context._forget(self)
        if self._release_waiter is not None and not self._release_waiter.done():
            self._release_waiter.set_result(None)

    async def drained(self) -> None:
        """Wait until the producer is released, its pump has ended and no
        append of it is queued or running. Cancelling the wait cancels none
        of them (asyncio.wait, not gather)."""
        if not self.released:
            if self._release_waiter is None:
                self._release_waiter = self._loop.create_future()
            await asyncio.wait({self._release_waiter})
        if self.writing:
            if self._write_waiter is None or self._write_waiter.done():
                self._write_waiter = self._loop.create_future()
            await asyncio.wait({self._write_waiter})
        if self.pump_task is not None:
            await asyncio.wait({self.pump_task})


async def _stored_then_new(
    stream_id: str,
    batches: AsyncGenerator[list[SequencedRecord], None],
    upto_seq_num: int,
    producer: ResumableStream,
) -> AsyncGenerator[str, None]:
    """The text stored before ``upto_seq_num``, then the producer's chunks."""
    try:
        async for chunk in chunks_from_records(stream_id, _records_before(batches, upto_seq_num)):
            yield chunk
        async for chunk in producer:
            yield chunk
    finally:
        await producer.aclose()


async def _records_before(
    batches: AsyncGenerator[list[SequencedRecord], None], upto_seq_num: int
) -> AsyncGenerator[list[SequencedRecord], None]:
    async with aclosing(batches):
        async for records in batches:
            kept = [record for record in records if record["seq_num"] < upto_seq_num]
            if kept:
                yield kept
            if len(kept) < len(records):
                return


async def _aclose_quietly(source: object) -> None:
    close = getattr(source, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception as exc:
        logger.debug("closing a source raised %r", exc)


class ResumableStreamContext:
    """Creates and resumes streams in one S2 basin.

    Use it as an async context manager, or call :meth:`aclose` at shutdown: it
    waits for producers to finish and drains their pending batches.
    """

    def __init__(
        self,
        backend: Backend,
        batching: BatchSettings | None = None,
        *,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        key_prefix: str = "",
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
    ) -> None:
        if liveness_timeout is not None and (
            isinstance(liveness_timeout, bool)
            or not isinstance(liveness_timeout, (int, float))
            or not liveness_timeout > 0
        ):
            raise ConfigurationError(
                f"liveness_timeout must be seconds > 0 or None, got {liveness_timeout!r}"
            )
        self.liveness_timeout = liveness_timeout
        if not isinstance(key_prefix, str) or len(key_prefix.encode("utf-8")) >= (
            MAX_STREAM_ID_BYTES
        ):
            raise ConfigurationError(
                f"key_prefix must be a str shorter than {MAX_STREAM_ID_BYTES} bytes"
            )
        self.key_prefix = key_prefix
        self.batching = batching or BatchSettings()
        self.drain_timeout = drain_timeout
        self._backend = backend
        self._accumulator = _core.Accumulator(
            self.batching.batch_size, self.batching.max_batch_bytes, float(self.batching.linger_ms)
        )
        self._producers: dict[str, _Producer] = {}
        self._by_slot: dict[int, _Producer] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Producers waiting for an append worker, and the workers waiting for one.
        self._write_queue: deque[_Producer] = deque()
        self._idle_append_workers: list[asyncio.Future[None]] = []
        self._append_workers = 0
        self._linger_wake = asyncio.Event()
        self._linger_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"ResumableStreamContext({self._backend.description})"

    @property
    def backend_description(self) -> str:
        """Where the streams live, e.g. ``embedded (in memory)`` or
        ``s2 (basin b at https://...)``; never the access token."""
        return self._backend.description

    async def __aenter__(self) -> ResumableStreamContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- background work ------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None], name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _schedule_write(self, producer: _Producer) -> None:
        """Queue a producer's appends for a worker. Workers are kept once
        started: waking one costs less than starting a task, and a stream
        waiting for its turn holds no task of its own."""
        self._write_queue.append(producer)
        while self._idle_append_workers:
            idle = self._idle_append_workers.pop()
            if not idle.done():  # else its worker was cancelled
                idle.set_result(None)
                return
        if self._append_workers < MAX_APPEND_WORKERS:
            self._append_workers += 1
            self._spawn(self._append_worker(), "resumable_fast appends")

    async def _append_worker(self) -> None:
        queue = self._write_queue
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    producer = queue.popleft()
                    try:
                        await producer.write()
                    except Exception:
                        # write() handles S2's errors; anything else is a bug,
                        # which must not take the other streams' appends down.
                        logger.exception("stream %r: appending failed", producer.stream_id)
                idle: asyncio.Future[None] = loop.create_future()
                self._idle_append_workers.append(idle)
                await idle
        finally:
            self._append_workers -= 1

    def _ensure_linger_task(self) -> None:
        if self._linger_task is None or self._linger_task.done():
            self._linger_task = self._spawn(self._linger_loop(), "resumable_fast linger")

    def _ensure_heartbeat_task(self) -> None:
        if self.liveness_timeout is None:
            return
        if self._heartbeat_task is None or self._heartbeat_task.done():
            self._heartbeat_task = self._spawn(self._heartbeat_loop(), "resumable_fast heartbeat")

    async def _heartbeat_loop(self) -> None:
        """While producers run, each one idle for a third of the liveness
        timeout appends a heartbeat; the loop ends when none is left."""
        assert self.liveness_timeout is not None
        interval = self.liveness_timeout / HEARTBEATS_PER_TIMEOUT
        loop = asyncio.get_running_loop()
        while self._producers:
            await asyncio.sleep(interval / 2)
            now = loop.time()
            for producer in list(self._producers.values()):
                producer.heartbeat_if_idle(now, interval)

    async def _linger_loop(self) -> None:
        accumulator = self._accumulator
        while True:
            delay = accumulator.next_deadline_in()
            if delay is None:
                self._linger_wake.clear()
                await self._linger_wake.wait()
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            for slot, frames in accumulator.seal_due():
                producer = self._by_slot.get(slot)
                if producer is not None:
                    producer.enqueue(frames)

    def _check_open(self) -> None:
        if self._closed:
            raise ResumableStreamError("the context is closed")

    # -- public API -----------------------------------------------------------

    async def resumable_stream(
        self,
        stream_id: str,
        make_stream: MakeStream,
        skip_characters: int | None = None,
    ) -> ResumableStream | None:
        """Produce the stream if nobody does yet, else resume it.

        Returns None, without calling ``make_stream``, when the stream is
        finished. Of concurrent callers exactly one calls ``make_stream``.
        """
        self._check_open()
        name = self._name(stream_id)
        skip = _validate_skip(skip_characters)
        last = await self._backend.last_record(name)
        state = _state_of(last)
        if state == "DONE":
            return None
        if state is None:
            token = await self._claim(name)
            if token is not None:
                return await self._start_producer(stream_id, name, token, make_stream, skip)
        elif last is not None and self._is_abandoned(last):
            taken = await self._take_over(stream_id, name, last, make_stream, skip)
            if taken is not None:
                return taken
        return self._resumed(stream_id, name, skip)

    async def create_new_resumable_stream(
        self,
        stream_id: str,
        make_stream: MakeStream,
        skip_characters: int | None = None,
    ) -> ResumableStream:
        """Always produce: claim the stream and return the producer's stream.

        S2 streams are append-only, so a stream that already has a producer or
        has finished cannot be produced again: that raises
        :class:`StreamExistsError`.
        """
        self._check_open()
        name = self._name(stream_id)
        skip = _validate_skip(skip_characters)
        token = await self._claim(name)
        if token is None:
            raise StreamExistsError(stream_id)
        return await self._start_producer(stream_id, name, token, make_stream, skip)

    async def resume_existing_stream(
        self, stream_id: str, skip_characters: int | None = None
    ) -> ResumableStream | None:
        """A resumed stream, or None when the stream does not exist or is finished."""
        self._check_open()
        name = self._name(stream_id)
        skip = _validate_skip(skip_characters)
        state = _state_of(await self._backend.last_record(name))
        if state is not True:
            return None
        return self._resumed(stream_id, name, skip)

    async def resume_stream(
        self, stream_id: str, skip_characters: int | None = None
    ) -> ResumableStream:
        """The seed's resume: replay from the start and follow the live tail to
        the end fence, also for a stream whose producer has not started yet
        or that has finished."""
        self._check_open()
        name = self._name(stream_id)
        return self._resumed(stream_id, name, _validate_skip(skip_characters))

    async def has_existing_stream(self, stream_id: str) -> StreamState:
        """None if never created, True while in progress, ``"DONE"`` when finished."""
        self._check_open()
        return _state_of(await self._backend.last_record(self._name(stream_id)))

    async def stop_stream(self, stream_id: str) -> None:
        """End a stream now: an ``end-`` fence appended without a token check
        fences the producer out; readers end."""
        self._check_open()
        name = self._name(stream_id)
        fence = _new_token(END_FENCE_PREFIX)
        await self._backend.append(name, _core.fence_append_input(fence, None), new_fence=fence)
        producer = self._producers.get(name)
        if producer is not None:
            producer.stop()

    async def aclose(self) -> None:
        """Wait for producers to finish (up to ``drain_timeout``), flush what they
        accepted, and release connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        producers = list(self._producers.values())
        if producers:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.drained()) for p in producers],
                timeout=self.drain_timeout,
            )
            for future in pending:
                future.cancel()
            unfinished = [p for p in producers if not p.source_finished]
            for producer in unfinished:
                producer.abort()
            if unfinished:
                logger.warning(
                    "closing with %d unfinished producer(s); their streams end with an error",
                    len(unfinished),
                )
                await asyncio.gather(*(p.drained() for p in unfinished), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._backend.aclose()

    # -- internals --------------------------------------------------------------

    def _name(self, stream_id: str) -> str:
        """The backend's name for a stream: the key prefix, then the id."""
        validate_stream_id(stream_id)
        name = self.key_prefix + stream_id
        if len(name.encode("utf-8")) > MAX_STREAM_ID_BYTES:
            raise InvalidStreamIdError(
                f"key prefix and stream id are {len(name.encode('utf-8'))} bytes together, "
                f"S2 allows at most {MAX_STREAM_ID_BYTES}"
            )
        return name

    def _is_abandoned(self, last: SequencedRecord) -> bool:
        """Unfinished, and nothing appended for longer than the liveness
        timeout (live producers heartbeat well within it), by S2's clock
        against ours."""
        timestamp = last.get("timestamp")
        if self.liveness_timeout is None or timestamp is None:
            return False
        return time.time() * 1000 - timestamp > self.liveness_timeout * 1000

    async def _take_over(
        self,
        stream_id: str,
        name: str,
        last: SequencedRecord,
        make_stream: MakeStream,
        skip_characters: int,
    ) -> ResumableStream | None:
        """Continue an abandoned stream with a new producer: a new session
        fence at the tail (only if nothing was appended since ``last``)
        fences the old producer out should it still be alive; the new
        source's text follows what is there. The caller's stream replays the
        stored text, then follows the new producer. None when another writer
        got there first."""
        token = _new_token(SESSION_FENCE_PREFIX)
        takeover_seq_num = last["seq_num"] + 1
        try:
            await self._backend.append(
                name, _core.fence_append_input(token, None, takeover_seq_num), new_fence=token
            )
        except (FencingTokenMismatchError, SeqNumMismatchError):
            return None
        logger.warning(
            "stream %r: its producer went silent; a new producer takes it over", stream_id
        )
        producer = await self._start_producer(
            stream_id, name, token, make_stream, 0, first_seq_num=takeover_seq_num + 1
        )
        stored_then_new = _stored_then_new(
            stream_id, self._backend.read_session(name, 0), takeover_seq_num, producer
        )
        return GeneratorStream(stream_id, skip_text(stored_then_new, skip_characters))

    async def _claim(self, name: str) -> str | None:
        """Append the session fence at seq 0; None if another producer got there first."""
        token = _new_token(SESSION_FENCE_PREFIX)
        body = _core.fence_append_input(token, "", 0)
        try:
            await self._backend.append(name, body, new_fence=token)
        except (FencingTokenMismatchError, SeqNumMismatchError):
            return None
        return token

    async def _start_producer(
        self,
        stream_id: str,
        name: str,
        token: str,
        make_stream: MakeStream,
        skip_characters: int,
        first_seq_num: int = 1,
    ) -> ResumableStream:
        try:
            source = make_stream()
            if inspect.isawaitable(source):
                source = await source
            if not isinstance(source, AsyncIterable):
                raise InvalidChunkError(
                    f"make_stream must return an async iterable of str, got {type(source).__name__}"
                )
        except BaseException:
            await self._append_error_fence(name, token)
            raise
        self._ensure_linger_task()
        producer = _Producer(self, name, token, source, first_seq_num)
        self._producers[name] = producer
        self._by_slot[producer.slot] = producer
        self._ensure_heartbeat_task()
        return ProducerStream(stream_id, producer, skip_characters)

    def _forget(self, producer: _Producer) -> None:
        if self._producers.get(producer.stream_id) is producer:
            del self._producers[producer.stream_id]
        # Slots are reused once discarded: only forget the slot if it is still ours.
        if self._by_slot.get(producer.slot) is producer:
            del self._by_slot[producer.slot]

    async def _append_error_fence(self, name: str, token: str) -> None:
        fence = _new_token(ERROR_FENCE_PREFIX)
        try:
            await self._backend.append(
                name, _core.fence_append_input(fence, token), new_fence=fence
            )
        except S2Error as exc:
            logger.error("stream %r: could not append error fence: %s", name, exc)

    def _resumed(self, stream_id: str, name: str, skip_characters: int) -> ResumedStream:
        return ResumedStream(
            stream_id,
            self._backend.read_session(name, 0),
            skip_characters,
            self.liveness_timeout,
        )


def create_resumable_stream_context(
    *,
    backend: Literal["auto", "embedded", "s2"] = "auto",
    basin: str | None = None,
    access_token: str | None = None,
    account_endpoint: str | None = None,
    basin_endpoint: str | None = None,
    batch_size: int | None = None,
    linger_ms: float | None = None,
    max_batch_bytes: int | None = None,
    request_timeout: float | None = None,
    http2: bool | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    key_prefix: str = "",
    retry_deadline: float | None = None,
    liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
) -> ResumableStreamContext:
    """Create a context. Explicit options win over environment variables.

    ``backend="auto"`` uses S2 when a basin is configured (``basin=`` or
    ``S2_BASIN``) and the embedded in-process backend otherwise. The embedded
    backend keeps streams in memory (finished ones for ``retention_seconds``),
    or in ``data_dir`` (also ``RESUMABLE_FAST_DATA_DIR``) across restarts.
    ``key_prefix`` is put before every stream id in the backend, so tenants
    sharing a basin never see each other's streams. ``retry_deadline``
    (seconds, default 60) bounds how long a request to S2 is retried through
    transient faults before it fails with a typed error. Readers end an
    unfinished stream with :class:`StreamIncompleteError` after
    ``liveness_timeout`` seconds without a record (None: wait forever); live
    producers append a heartbeat when idle for a third of it, and
    ``resumable_stream`` takes over a stream silent for longer.
    """
    if backend not in ("auto", "embedded", "s2"):
        raise ConfigurationError(f"backend must be 'auto', 'embedded' or 's2', got {backend!r}")
    batching = BatchSettings.from_options(
        batch_size=batch_size, linger_ms=linger_ms, max_batch_bytes=max_batch_bytes
    )
    if backend == "auto":
        backend = "s2" if (basin or os.environ.get("S2_BASIN")) else "embedded"
    chosen: Backend
    if backend == "s2":
        chosen = S2Client(
            S2Config.from_options(
                basin=basin,
                access_token=access_token,
                account_endpoint=account_endpoint,
                basin_endpoint=basin_endpoint,
                request_timeout=request_timeout,
                http2=http2,
                retry_deadline=retry_deadline,
            )
        )
    else:
        if retention_seconds <= 0:
            raise ConfigurationError("retention_seconds must be > 0")
        directory = data_dir if data_dir is not None else os.environ.get("RESUMABLE_FAST_DATA_DIR")
        store = EmbeddedStore.shared(
            Path(directory) if directory else None, retention_seconds=retention_seconds
        )
        chosen = EmbeddedBackend(store)
    _log_backend_once(chosen.description)
    return ResumableStreamContext(
        chosen,
        batching,
        drain_timeout=drain_timeout,
        key_prefix=key_prefix,
        liveness_timeout=liveness_timeout,
    )


_logged_backends: set[str] = set()


def _log_backend_once(description: str) -> None:
    if description not in _logged_backends:
        _logged_backends.add(description)
        logger.info("resumable_fast backend: %s", description)
