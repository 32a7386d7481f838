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

The chunks go to the producer's :class:`~resumable_fast.writing.StreamWriter`
through the accumulator slot it opened: the source's task puts each one in
the pending list and hands the writer each batch the core seals; the writer
appends them and the closing fence, and tells the producer how that ended.

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

from resumable_fast.errors import InvalidChunkError, ResumableStreamError
from resumable_fast.metrics import Metrics, StreamOutcome
from resumable_fast.records import (
    END_FENCE_PREFIX,
    ERROR_FENCE_PREFIX,
    StreamName,
    new_fence_token,
)
from resumable_fast.scheduling import Scheduler
from resumable_fast.streams import ChunkChannel
from resumable_fast.writing import StreamWriter, WriteEnd

__all__ = ["Producer", "ProducerState"]

logger = logging.getLogger("resumable_fast")

# A producer's client further behind than this goes on from the backend (see
# ProducerStream) rather than have the rest of the reply buffered for it.
MAX_CLIENT_BUFFER_CHARS = 1024 * 1024


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
        "_batch_size",
        "_loop",
        "_metrics",
        "_on_released",
        "_pulling",
        "_release_waiter",
        "_scheduler",
        "_source",
        "_taken_over",
        "_task",
        "_writer",
        "channel",
        "failure",
        "name",
        "state",
        "token",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        writer: StreamWriter,
        source: AsyncIterable[str],
        batch_size: int,
        on_released: Callable[[Producer], None],
        metrics: Metrics,
    ) -> None:
        """Drive ``source`` in a task of its own; ``writer`` (the stream's,
        with its slot open) persists what it yields. The stream's start and
        finish are recorded in ``metrics``."""
        # The stream's name in the backend (the caller's id under the key prefix).
        self.name: StreamName = writer.name
        self.token = writer.token
        self.state = ProducerState.STREAMING
        # The source's exception, which the producer's client gets at the end.
        self.failure: BaseException | None = None
        self.channel = ChunkChannel(MAX_CLIENT_BUFFER_CHARS)
        self._scheduler = scheduler
        self._source = source
        self._batch_size = batch_size
        self._on_released = on_released
        self._metrics = metrics
        # Fenced out by another producer's session fence (not a stop): the
        # outcome the metrics give a stopped producer.
        self._taken_over = False
        self._loop = asyncio.get_running_loop()
        self._writer = writer
        writer.on_end = self._persisting_ended
        self._release_waiter: asyncio.Future[None] | None = None
        # The source's task is inside the source (not yet closing it): only
        # then does a stop or an abort cancel it.
        self._pulling = True
        metrics.stream_started()
        self._task = scheduler.spawn(self._drive(), f"resumable_fast source {self.name}")

    # -- the source's task ----------------------------------------------------

    async def _drive(self) -> None:
        """Pull the source to its end, then close it, all in this task."""
        failure: BaseException | None = None
        iterator: AsyncIterator[str] | None = None
        # The per-chunk path, with what it uses held in locals: check the
        # chunk, hand it to the client (its wake-up is queued before an append
        # worker's), then queue it for persisting. The native core frames the
        # pending list once per batch (or linger), with the GIL released, and
        # the writer takes the batches.
        put = self.channel.put
        pending = self._writer.pending
        batch_size = self._batch_size
        slot = self._writer.slot
        enqueue = self._writer.enqueue
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
                        f"stream {self.name!r}: source yielded {type(chunk).__name__}, not str"
                    )
                put(chunk)
                if self.state is streaming:
                    pending.append(chunk)
                    count = len(pending)
                    if count >= batch_size:
                        enqueue(drain(slot))
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
            logger.warning("stream %r: source failed (%s)", self.name, type(failure).__name__)
            logger.debug("stream %r: source failure: %r", self.name, failure)
        try:
            await _aclose_quietly(iterator if iterator is not None else self._source)
        finally:
            self._source_closed(failure)

    def _source_closed(self, failure: BaseException | None) -> None:
        self.failure = failure
        state = self.state
        if state is ProducerState.STREAMING:
            # Seal what was accepted and append the closing fence after it.
            # The producer's client sees the end once that fence has landed,
            # so a stream it saw finish is finished for every reader too.
            self.state = ProducerState.CLOSING
            prefix = END_FENCE_PREFIX if failure is None else ERROR_FENCE_PREFIX
            self._writer.close(new_fence_token(prefix))
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
                self._stop_writing(ProducerState.STOPPING)
                if self._pulling:
                    self._task.cancel()
        elif state is ProducerState.CLOSING:
            self._writer.drop()
            self._finish(ProducerState.STOPPED)

    def abort(self) -> None:
        """Stop an unfinished source; the stream ends with an error fence."""
        if self._pulling and self.state in (ProducerState.STREAMING, ProducerState.UNPERSISTED):
            self._task.cancel()

    @property
    def source_running(self) -> bool:
        return self.state in _SOURCE_RUNNING

    def _stop_writing(self, state: ProducerState) -> None:
        """STREAMING or UNPERSISTED to a state that writes nothing more."""
        self._writer.drop()
        self.state = state

    def _persisting_ended(self, end: WriteEnd) -> None:
        """The writer stopped on its own account (not dropped by this producer)."""
        if end is WriteEnd.LANDED:
            self._finish(ProducerState.DONE)
        elif end is WriteEnd.FENCED_OUT:
            self.stop()
        elif end is WriteEnd.TAKEN_OVER:
            self._taken_over = True
            self.stop()
        elif self.state is ProducerState.CLOSING:
            self._finish(ProducerState.FAILED)
        elif self.state is ProducerState.STREAMING:
            # The producer's client keeps receiving its chunks.
            self.state = ProducerState.UNPERSISTED

    def _finish(self, state: ProducerState) -> None:
        """Enter a final state: the client sees the end, the name is free."""
        self.state = state
        self._metrics.stream_finished(self._outcome(state))
        self.channel.close(self.failure)
        self._on_released(self)
        waiter = self._release_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _outcome(self, state: ProducerState) -> StreamOutcome:
        """A stream whose source failed ends with an error fence: failed too."""
        if state is ProducerState.DONE and self.failure is None:
            return StreamOutcome.DONE
        if state is not ProducerState.STOPPED:
            return StreamOutcome.FAILED
        return StreamOutcome.TAKEN_OVER if self._taken_over else StreamOutcome.STOPPED

    async def drained(self) -> None:
        """Wait until the producer is released and no append of it is queued
        or running. Cancelling the wait cancels neither (asyncio.wait, not
        gather)."""
        if self.state not in _FINAL:
            if self._release_waiter is None:
                self._release_waiter = self._loop.create_future()
            await asyncio.wait({self._release_waiter})
        await asyncio.wait({self._task})
        await self._writer.idle()


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
