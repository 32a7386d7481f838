"""The writing of one producing stream: its queued appends, in order.

The native core frames a stream's chunks into data batches (``drain``,
``seal_due``, ``close``), each a whole ``AppendInput`` and the tail the stream
has once it lands. A :class:`StreamWriter` queues them and appends them one at
a time on the context's append workers
(:class:`~resumable_fast.scheduling.Scheduler`): appends of one stream must
land in order, since ``match_seq_num`` refuses any other. Batches that piled
up while an append was in flight go out merged, as far as one append holds
(S2's records and metered bytes); the closing fence rides on the last batch
when it fits, else goes alone after it. A stream idle for a while appends a
heartbeat.

What waits is told apart by where it waits, never by its bytes: data batches
in a list, a heartbeat and the closing fence in places of their own. A
heartbeat is queued only when nothing else is, so it goes first; the closing
fence is queued after the last batch, so it goes last.

Lifecycle (:class:`WriterState`)::

    OPEN --close()--> CLOSING --closing fence lands--> ENDED (LANDED)
    OPEN, CLOSING --fenced out, or S2 refuses for good--> ENDED (FENCED_OUT, REFUSED)
    OPEN, CLOSING --drop()--> ENDED

The owner is told how it ended (:class:`WriteEnd`) once, through ``on_end``
(which it sets when it takes the writer);
:meth:`StreamWriter.drop` is the owner's own doing, so it is not told.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from resumable_fast import _core
from resumable_fast.backends import Backend
from resumable_fast.errors import (
    FencingTokenMismatchError,
    ResumableStreamError,
    SeqNumMismatchError,
)
from resumable_fast.metrics import AppendOutcome, Metrics
from resumable_fast.records import (
    END_FENCE_PREFIX,
    ERROR_FENCE_PREFIX,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    Landing,
    StreamName,
)

if TYPE_CHECKING:
    from resumable_fast.scheduling import Scheduler

__all__ = ["StreamWriter", "WriteEnd", "WriterState"]

logger = logging.getLogger("resumable_fast")


class WriterState(enum.Enum):
    OPEN = "open"
    """The stream has its slot in the accumulator; its batches are appended."""
    CLOSING = "closing"
    """The slot is sealed; its last batches, then the closing fence, are
    being appended."""
    ENDED = "ended"
    """Nothing more is appended."""


class WriteEnd(enum.Enum):
    """Why a writer ended, as its owner is told."""

    LANDED = "landed"
    """The closing fence landed: the stream is finished for every reader."""
    FENCED_OUT = "fenced out"
    """An append was refused by a closing fence (a stop)."""
    TAKEN_OVER = "taken over"
    """An append was refused by another producer's session fence, or found
    records it did not write: the stream was taken over."""
    REFUSED = "refused"
    """S2 refused an append for good (transient faults are retried below)."""


class _ClosingFence(NamedTuple):
    token: str
    append_input: bytes


class StreamWriter:
    """Appends one stream's batches, heartbeats and closing fence, in order;
    see the module docstring."""

    __slots__ = (
        "_backend",
        "_batches",
        "_closing",
        "_heartbeat",
        "_idle_waiter",
        "_last_append_at",
        "_loop",
        "_match_seq_num",
        "_metrics",
        "_scheduled",
        "_scheduler",
        "name",
        "on_end",
        "pending",
        "slot",
        "state",
        "token",
    )

    def __init__(
        self,
        scheduler: Scheduler,
        backend: Backend,
        name: StreamName,
        token: str,
        first_seq_num: int = 1,
        *,
        metrics: Metrics,
    ) -> None:
        """Open the stream's slot in the scheduler's accumulator, which frames
        the chunks its producer puts in :attr:`pending`, the first at
        ``first_seq_num`` under the session ``token``; each append is
        recorded in ``metrics``."""
        self.name = name
        self.token = token
        self.state = WriterState.OPEN
        self._scheduler = scheduler
        self._backend = backend
        self._metrics = metrics
        # Chunks not yet framed; the native core frames them once per batch.
        self.pending: list[str] = []
        self.on_end: Callable[[WriteEnd], None] = _nobody_told
        """Told once how the writer ended on its own account; set by its owner."""
        self._loop = asyncio.get_running_loop()
        self.slot = scheduler.open_slot(self, token, first_seq_num, self.pending)
        # Framed data batches waiting for an append, oldest first.
        self._batches: list[_core.Frame] = []
        self._heartbeat: _core.Frame | None = None
        self._closing: _ClosingFence | None = None
        # The stream's tail before the next append.
        self._match_seq_num = first_seq_num
        self._last_append_at = self._loop.time()
        # Queued for an append worker, or held by one: at most once, so the
        # stream's appends stay one at a time and in order.
        self._scheduled = False
        self._idle_waiter: asyncio.Future[None] | None = None

    # -- what the producer and the scheduler queue ----------------------------

    def enqueue(self, batches: list[_core.Frame]) -> None:
        """Queue data batches the core sealed, oldest first."""
        if self.state is WriterState.OPEN:
            self._batches.extend(batches)
            self._schedule()

    def close(self, fence: str) -> None:
        """Seal what is pending in the slot and give the slot up; the
        closing fence ``fence`` (an ``end-`` or ``error-`` token) is appended
        after the last batch."""
        if self.state is not WriterState.OPEN:
            return
        self._batches.extend(self._scheduler.close_slot(self.slot))
        self.state = WriterState.CLOSING
        self._closing = _ClosingFence(fence, _core.fence_append_input(fence, self.token))
        self._schedule()

    def drop(self) -> None:
        """Append nothing more: what is queued is dropped, and the slot, if
        the stream still has it, with what is pending in it."""
        if self.state is WriterState.OPEN:
            self._scheduler.discard_slot(self.slot)
        self.state = WriterState.ENDED
        self._batches.clear()
        self._heartbeat = None
        # Nobody is told anything more. Letting go of the owner's callback
        # breaks the writer-owner cycle, so both are freed by reference
        # counting as the stream ends, not left (one pair per stream) for the
        # garbage collector to find.
        self.on_end = _nobody_told

    def heartbeat_if_idle(self, now: float, interval: float) -> None:
        """Append a heartbeat when nothing was appended for ``interval``
        seconds and nothing waits to be (a model thinking): a fence that sets
        the session's own token again, which readers skip, so they can tell a
        slow producer from a dead one."""
        if (
            self.state is not WriterState.OPEN
            or self._scheduled
            or self.pending
            or now - self._last_append_at < interval
        ):
            return
        seq_num = self._scheduler.accumulator.reserve(self.slot, 1)
        self._last_append_at = now
        self._heartbeat = (
            _core.fence_append_input(self.token, self.token, seq_num),
            seq_num + 1,
        )
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._scheduler.schedule_write(self)

    # -- the append worker's turn ---------------------------------------------

    async def write(self) -> None:
        """Append what is queued, then the closing fence once it is due; run
        by one append worker at a time."""
        backend = self._backend
        name = self.name
        batches = self._batches
        metrics = self._metrics
        started = 0.0
        try:
            while self.state is not WriterState.ENDED:
                heartbeat = self._heartbeat
                closing = self._closing
                # Data records in this append: its chunks (a heartbeat has none).
                chunks = 0
                if heartbeat is not None:
                    self._heartbeat = None
                    body, end_seq_num = heartbeat
                elif batches:
                    body, end_seq_num = self._merged_batches()
                    chunks = end_seq_num - self._match_seq_num
                    if (
                        closing is not None
                        and not batches
                        and self._fits_one_more(body, end_seq_num, closing)
                    ):
                        # The last batch carries the closing fence, as S2's own
                        # package writes it: one request less per stream.
                        started = time.perf_counter()
                        await backend.append(
                            name,
                            _core.merge_append_inputs([body, closing.append_input]),
                            Landing(end_seq_num + 1, closing.token),
                        )
                        metrics.appended(started, chunks + 1, chunks, len(body))
                        self._end(WriteEnd.LANDED)
                        return
                elif closing is not None:
                    started = time.perf_counter()
                    await backend.append(
                        name, closing.append_input, Landing(new_fence=closing.token)
                    )
                    metrics.appended(started, 1, 0, 0)
                    self._end(WriteEnd.LANDED)
                    return
                else:
                    return
                started = time.perf_counter()
                await backend.append(name, body, Landing(end_seq_num))
                metrics.appended(started, end_seq_num - self._match_seq_num, chunks, len(body))
                self._match_seq_num = end_seq_num
                self._last_append_at = self._loop.time()
        except FencingTokenMismatchError as exc:
            metrics.append_ended(started, AppendOutcome.FENCED_OUT)
            if exc.current_token.startswith((END_FENCE_PREFIX, ERROR_FENCE_PREFIX)):
                logger.info("stream %r was stopped; its producer is fenced out", name)
                self._end(WriteEnd.FENCED_OUT)
            else:
                logger.info("stream %r was taken over; its producer is fenced out", name)
                self._end(WriteEnd.TAKEN_OVER)
        except SeqNumMismatchError:
            # Records this writer did not append: another producer's.
            metrics.append_ended(started, AppendOutcome.FENCED_OUT)
            logger.info("stream %r was taken over; its producer is fenced out", name)
            self._end(WriteEnd.TAKEN_OVER)
        except ResumableStreamError as exc:
            # Transient faults are retried below this layer; what reaches here
            # is final.
            metrics.append_ended(started, AppendOutcome.FAILED)
            logger.error("stream %r: persisting failed: %s", name, exc)
            self._end(WriteEnd.REFUSED)
        finally:
            self._scheduled = False
            waiter = self._idle_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _merged_batches(self) -> _core.Frame:
        """The oldest queued batch, merged with the ones queued behind it
        (they piled up while the last append was in flight) as far as one
        append holds: one request instead of several, the same records in
        order. JSON is longer than the records' metered size, so the sum of
        the bodies' lengths bounds that size safely."""
        batches = self._batches
        first = batches[0]
        end_seq_num = first[1]
        taken, size = 1, len(first[0])
        while taken < len(batches):
            next_body, next_end = batches[taken]
            if (
                next_end - self._match_seq_num > MAX_BATCH_RECORDS
                or size + len(next_body) > MAX_BATCH_BYTES
            ):
                break
            taken += 1
            size += len(next_body)
            end_seq_num = next_end
        if taken == 1:
            del batches[0]
            return first
        parts = [body for body, _ in batches[:taken]]
        del batches[:taken]
        return _core.merge_append_inputs(parts), end_seq_num

    def _fits_one_more(self, body: bytes, end_seq_num: int, closing: _ClosingFence) -> bool:
        """Whether the closing fence, one more record, fits in this append:
        counted by its own ``AppendInput``'s length, as batches are merged."""
        return (
            end_seq_num - self._match_seq_num < MAX_BATCH_RECORDS
            and len(body) + len(closing.append_input) <= MAX_BATCH_BYTES
        )

    def _end(self, end: WriteEnd) -> None:
        """End on the writer's own account (not dropped), and tell the owner."""
        if self.state is not WriterState.ENDED:
            on_end = self.on_end
            self.drop()
            on_end(end)

    async def idle(self) -> None:
        """Wait until no append of this stream is queued or running.
        Cancelling the wait cancels no append (asyncio.wait)."""
        if self._scheduled:
            waiter = self._idle_waiter
            if waiter is None or waiter.done():
                waiter = self._idle_waiter = self._loop.create_future()
            await asyncio.wait({waiter})


def _nobody_told(end: WriteEnd) -> None:
    """A writer's ``on_end`` until its owner sets its own."""
