"""The producer of one stream: drives its source, feeds the producer's client
and persists every chunk in order.

The source is driven by one task of its own, from its first ``__anext__()`` to
its ``aclose()``. Whatever a source binds to the task it runs in stays valid:
anyio cancel scopes (httpx and every provider SDK built on it),
``asyncio.timeout``, task-local state. The task runs in a copy of the
contextvars of the call that created the stream, so the source sees them.

The producer's client reads a channel that the source task fills: a chunk
reaches it one event-loop step after the source yields it. Cancelling or
abandoning the client (a browser that went away, a cancelled response task,
``aclose()``) only ends its wait on that channel; it never reaches the source.

Lifecycle (:class:`ProducerState`)::

    STREAMING --source ends or fails--> CLOSING --closing fence lands--> DONE
    STREAMING --S2 refuses for good--> UNPERSISTED --source ends--> FAILED
    STREAMING, UNPERSISTED --stopped--> STOPPING --source closed--> STOPPED
    CLOSING --S2 refuses for good--> FAILED
    CLOSING --stopped--> STOPPED

DONE, FAILED and STOPPED are final: the producer is released (its client
sees the end, its name is free) only once its source has been closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable

from resumable_fast import _core
from resumable_fast.backends import Backend
from resumable_fast.errors import (
    FencingTokenMismatchError,
    InvalidChunkError,
    ResumableStreamError,
    SeqNumMismatchError,
)
from resumable_fast.records import END_FENCE_PREFIX, ERROR_FENCE_PREFIX, new_fence_token
from resumable_fast.scheduling import Scheduler
from resumable_fast.streams import ChunkChannel

__all__ = ["Producer", "ProducerState"]

logger = logging.getLogger("resumable_fast")

# A producer's client further behind than this goes on from the backend (see
# ProducerStream) rather than have the rest of the reply buffered for it.
MAX_CLIENT_BUFFER_CHARS = 1024 * 1024
# Fence AppendInputs start so; data batches with '{"records":[{"body"'.
_FENCE_INPUT = b'{"records":[{"headers"'
# Bytes a closing fence adds to an append it is merged into, at most.
_FENCE_INPUT_BYTES = 128


class ProducerState(enum.Enum):
    STREAMING = "streaming"
    """The source runs; its chunks are persisted."""
    UNPERSISTED = "unpersisted"
    """The source runs; S2 refused a write for good, so nothing more is
    written. The producer's client still gets every chunk."""
    STOPPING = "stopping"
    """Fenced out (``stop_stream``, or another producer took over): the
    source is being stopped; nothing more is written."""
    CLOSING = "closing"
    """The source is done with; its last batches and the closing fence are
    being written."""
    DONE = "done"
    """The closing fence landed: the stream is finished for every reader."""
    FAILED = "failed"
    """The source is done with; S2 refused a write for good."""
    STOPPED = "stopped"
    """The source is done with; the stream was fenced out."""


_SOURCE_RUNNING = frozenset(
    {ProducerState.STREAMING, ProducerState.UNPERSISTED, ProducerState.STOPPING}
)
_FINAL = frozenset({ProducerState.DONE, ProducerState.FAILED, ProducerState.STOPPED})


class Producer:
    """Drives one source and persists what it yields; see the module docstring."""

    __slots__ = (
        "_backend",
        "_batch_size",
        "_closing_fence",
        "_frames",
        "_last_append_at",
        "_loop",
        "_match_seq_num",
        "_on_released",
        "_pending",
        "_pulling",
        "_release_waiter",
        "_scheduler",
        "_slot",
        "_source",
        "_task",
        "_write_done",
        "_writing",
        "channel",
        "failure",
        "state",
        "stream_id",
        "token",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        backend: Backend,
        stream_id: str,
        token: str,
        source: AsyncIterable[str],
        batch_size: int,
        on_released: Callable[[Producer], None],
        first_seq_num: int = 1,
    ) -> None:
        self.stream_id = stream_id
        self.token = token
        self.state = ProducerState.STREAMING
        # The source's exception, which the producer's client gets at the end.
        self.failure: BaseException | None = None
        self.channel = ChunkChannel(MAX_CLIENT_BUFFER_CHARS)
        self._scheduler = scheduler
        self._backend = backend
        self._source = source
        self._batch_size = batch_size
        self._on_released = on_released
        self._loop = asyncio.get_running_loop()
        # Chunks not yet framed; the native core frames them once per batch.
        self._pending: list[str] = []
        self._slot = scheduler.open_slot(self, token, first_seq_num, self._pending)
        # Framed batches waiting for an append, oldest first.
        self._frames: list[_core.Frame] = []
        self._match_seq_num = first_seq_num
        self._last_append_at = self._loop.time()
        self._closing_fence: str | None = None
        # Queued for an append worker, or being written by one.
        self._writing = False
        self._write_done: asyncio.Future[None] | None = None
        self._release_waiter: asyncio.Future[None] | None = None
        # The source's task is inside the source (not yet closing it): only
        # then does a stop or an abort cancel it.
        self._pulling = True
        self._task = scheduler.spawn(self._drive(), f"resumable_fast source {stream_id}")

    # -- the source's task ----------------------------------------------------

    async def _drive(self) -> None:
        """Pull the source to its end, then close it, all in this task."""
        failure: BaseException | None = None
        iterator: AsyncIterator[str] | None = None
        # The per-chunk path, with what it uses held in locals: check the
        # chunk, hand it to the client (its wake-up is queued before an append
        # worker's), then queue it for persisting. The native core frames the
        # pending list once per batch (or linger), with the GIL released.
        put = self.channel.put
        pending = self._pending
        batch_size = self._batch_size
        slot = self._slot
        drain = self._scheduler.accumulator.drain
        arm_linger = self._scheduler.arm_linger
        streaming = ProducerState.STREAMING
        try:
            iterator = aiter(self._source)
            next_chunk = iterator.__anext__
            while True:
                chunk = await next_chunk()
                if type(chunk) is not str:
                    raise InvalidChunkError(
                        f"stream {self.stream_id!r}: source yielded {type(chunk).__name__}, not str"
                    )
                put(chunk)
                if self.state is streaming:
                    pending.append(chunk)
                    count = len(pending)
                    if count >= batch_size:
                        self.enqueue(drain(slot))
                    elif count == 1:
                        arm_linger(slot)
        except StopAsyncIteration:
            pass
        except asyncio.CancelledError:
            # Only this producer cancels its task: a stop (a clean end) or the
            # context closing before the source finished (a failure).
            _uncancel()
            if self.state is not ProducerState.STOPPING:
                failure = ResumableStreamError("producer cancelled before its source ended")
        except Exception as exc:
            failure = exc
        self._pulling = False
        if failure is not None:
            # The exception's text is the caller's (it may quote a provider's
            # request); only its type is logged above debug level.
            logger.warning("stream %r: source failed (%s)", self.stream_id, type(failure).__name__)
            logger.debug("stream %r: source failure: %r", self.stream_id, failure)
        try:
            await _aclose_quietly(iterator if iterator is not None else self._source)
        finally:
            self._source_closed(failure)

    def _source_closed(self, failure: BaseException | None) -> None:
        self.failure = failure
        state = self.state
        if state is ProducerState.STREAMING:
            # Seal what was accepted and queue the closing fence after it. The
            # producer's client sees the end once that fence has landed, so a
            # stream it saw finish is finished for every reader too.
            self.state = ProducerState.CLOSING
            self.enqueue(self._scheduler.close_slot(self._slot))
            prefix = END_FENCE_PREFIX if failure is None else ERROR_FENCE_PREFIX
            self._closing_fence = new_fence_token(prefix)
            self._start_writer()
        elif state is ProducerState.UNPERSISTED:
            self._finish(ProducerState.FAILED)
        elif state is ProducerState.STOPPING:
            self._finish(ProducerState.STOPPED)

    # -- control --------------------------------------------------------------

    def stop(self) -> None:
        """Fenced out: stop the source (in its own task); nothing more is written."""
        state = self.state
        if state in _SOURCE_RUNNING:
            if state is not ProducerState.STOPPING:
                self._leave_slot(ProducerState.STOPPING)
                if self._pulling:
                    self._task.cancel()
        elif state is ProducerState.CLOSING:
            self._frames.clear()
            self._finish(ProducerState.STOPPED)

    def abort(self) -> None:
        """Stop an unfinished source; the stream ends with an error fence."""
        if self._pulling and self.state in (ProducerState.STREAMING, ProducerState.UNPERSISTED):
            self._task.cancel()

    @property
    def source_running(self) -> bool:
        return self.state in _SOURCE_RUNNING

    def _leave_slot(self, state: ProducerState) -> None:
        """STREAMING to a state that writes nothing more."""
        if self.state is ProducerState.STREAMING:
            self._scheduler.discard_slot(self._slot)
        self.state = state
        self._frames.clear()

    def _finish(self, state: ProducerState) -> None:
        """Enter a final state: the client sees the end, the name is free."""
        self.state = state
        self.channel.close(self.failure)
        self._on_released(self)
        waiter = self._release_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drained(self) -> None:
        """Wait until the producer is released and no append of it is queued
        or running. Cancelling the wait cancels neither (asyncio.wait, not
        gather)."""
        if self.state not in _FINAL:
            if self._release_waiter is None:
                self._release_waiter = self._loop.create_future()
            await asyncio.wait({self._release_waiter})
        await asyncio.wait({self._task})
        if self._writing:
            if self._write_done is None or self._write_done.done():
                self._write_done = self._loop.create_future()
            await asyncio.wait({self._write_done})

    # -- persisting ------------------------------------------------------------

    def enqueue(self, frames: list[_core.Frame]) -> None:
        if self.state is ProducerState.STREAMING or self.state is ProducerState.CLOSING:
            self._frames.extend(frames)
            self._start_writer()

    def heartbeat_if_idle(self, now: float, interval: float) -> None:
        """Append a heartbeat when nothing was appended for ``interval``
        seconds while the source is still going (a model thinking): a fence
        that sets the session's own token again, which readers skip, so they
        can tell a slow producer from a dead one."""
        if (
            self.state is not ProducerState.STREAMING
            or self._pending
            or self._frames
            or self._writing
            or now - self._last_append_at < interval
        ):
            return
        seq_num = self._scheduler.accumulator.reserve(self._slot, 1)
        self._last_append_at = now
        self._frames.append(
            (_core.fence_append_input(self.token, self.token, seq_num), seq_num + 1)
        )
        self._start_writer()

    def _start_writer(self) -> None:
        if not self._writing:
            self._writing = True
            self._scheduler.schedule_write(self)

    def _next_append(self) -> _core.Frame:
        """The oldest queued batch, merged with the ones queued behind it (they
        piled up while the last append was in flight) as far as one append
        holds: one request instead of several, the same records in order."""
        frames = self._frames
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

    def _fence_fits(self, body: bytes, end_seq_num: int) -> bool:
        """Whether one more record, the closing fence, fits in this append."""
        return (
            end_seq_num - self._match_seq_num < _core.MAX_BATCH_RECORDS
            and len(body) + _FENCE_INPUT_BYTES <= _core.MAX_METERED_BYTES
            and not body.startswith(_FENCE_INPUT)
        )

    async def write(self) -> None:
        """Append the queued batches, then the closing fence once it is due;
        run by an append worker, one stream at a time."""
        backend = self._backend
        try:
            while self._frames and self.state in (ProducerState.STREAMING, ProducerState.CLOSING):
                body, end_seq_num = self._next_append()
                fence = self._closing_fence
                if fence is not None and not self._frames and self._fence_fits(body, end_seq_num):
                    # The last batch carries the closing fence, as S2's own
                    # package writes it: one request less per stream.
                    body = _core.merge_append_inputs(
                        [body, _core.fence_append_input(fence, self.token)]
                    )
                    await backend.append(
                        self.stream_id, body, end_seq_num=end_seq_num + 1, new_fence=fence
                    )
                    self._finish(ProducerState.DONE)
                    return
                await backend.append(self.stream_id, body, end_seq_num=end_seq_num)
                self._match_seq_num = end_seq_num
                self._last_append_at = self._loop.time()
            fence = self._closing_fence
            if self.state is ProducerState.CLOSING and fence is not None and not self._frames:
                await backend.append(
                    self.stream_id,
                    _core.fence_append_input(fence, self.token),
                    new_fence=fence,
                )
                self._finish(ProducerState.DONE)
        except (FencingTokenMismatchError, SeqNumMismatchError):
            logger.info("stream %r was stopped; its producer is fenced out", self.stream_id)
            self.stop()
        except ResumableStreamError as exc:
            # Transient faults are retried below this layer; what reaches here is
            # final. The producer's client keeps receiving its chunks.
            logger.error("stream %r: persisting failed: %s", self.stream_id, exc)
            if self.state is ProducerState.CLOSING:
                self._frames.clear()
                self._finish(ProducerState.FAILED)
            elif self.state is ProducerState.STREAMING:
                self._leave_slot(ProducerState.UNPERSISTED)
        finally:
            self._writing = False
            if self._write_done is not None and not self._write_done.done():
                self._write_done.set_result(None)


def _uncancel() -> None:
    """Forget the cancellation this task caught, so that what the source's
    closing awaits (and ``asyncio.timeout`` in it) is not taken for it."""
    task = asyncio.current_task()
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()


async def _aclose_quietly(source: object) -> None:
    close = getattr(source, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception as exc:
        logger.debug("closing a source raised %r", exc)
