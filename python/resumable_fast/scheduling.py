"""The background work of a context: source tasks, append workers, the linger
timer and heartbeats, all tracked so that closing the context drains them.

One accumulator (the native :class:`~resumable_fast._core.Accumulator`, or
what the context was given: :class:`BatchAccumulator`) batches every
producing stream's chunks; each stream's writer
(:class:`~resumable_fast.writing.StreamWriter`) has a slot in it. The linger
loop seals the batches whose linger time is up and hands them to their
writers; append workers run one writer's appends at a time; the heartbeat
loop asks idle writers to show their stream is alive. Each loop runs only
while there is work for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from resumable_fast import _core
from resumable_fast.config import BatchSettings
from resumable_fast.waiters import resolve

if TYPE_CHECKING:
    from resumable_fast.writing import StreamWriter

__all__ = [
    "HEARTBEATS_PER_TIMEOUT",
    "MAX_APPEND_WORKERS",
    "BatchAccumulator",
    "Scheduler",
    "native_accumulator",
]

logger = logging.getLogger("resumable_fast")

# Producers idle for this fraction of the liveness timeout append a heartbeat.
HEARTBEATS_PER_TIMEOUT = 3
# Appends run on at most this many tasks per context, each writing one
# stream's queued batches at a time (as many as the S2 client sends at once).
MAX_APPEND_WORKERS = 256

T = TypeVar("T")


class BatchAccumulator(Protocol):
    """What the scheduler, the producers and their writers use of an
    accumulator: the native core's :class:`~resumable_fast._core.Accumulator`
    (see it for what each method does), or a stand-in that frames the same
    bytes (the benchmarks' pure-Python twin, ``benches/pure_python_core.py``)."""

    def open(self, fencing_token: str, next_seq_num: int, pending: list[str]) -> int: ...
    def arm(self, slot: int) -> bool: ...
    def drain(self, slot: int) -> list[_core.Frame]: ...
    def seal_due(self) -> list[tuple[int, list[_core.Frame]]]: ...
    def next_deadline_in(self) -> float | None: ...
    def close(self, slot: int) -> list[_core.Frame]: ...
    def reserve(self, slot: int, records: int) -> int: ...
    def discard(self, slot: int) -> None: ...


def native_accumulator(batching: BatchSettings) -> _core.Accumulator:
    """The native core's accumulator, sealing batches as ``batching`` says."""
    return _core.Accumulator(
        batching.batch_size, batching.max_batch_bytes, float(batching.linger_ms)
    )


class Scheduler:
    """Runs a context's background work on the event loop it was made on;
    ``accumulator`` frames every producing stream's chunks (the native core's
    from :func:`native_accumulator`, unless a caller brings its own), and
    writers idle for ``heartbeat_interval`` seconds append a heartbeat (None:
    never)."""

    def __init__(self, accumulator: BatchAccumulator, heartbeat_interval: float | None) -> None:
        self.accumulator = accumulator
        self._heartbeat_interval = heartbeat_interval
        # Writers by their accumulator slot, while they have one.
        self._by_slot: dict[int, StreamWriter] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Writers waiting for an append worker, and the workers waiting for one.
        self._write_queue: deque[StreamWriter] = deque()
        self._idle_append_workers: list[asyncio.Future[None]] = []
        self._append_workers = 0
        self._linger_wake = asyncio.Event()
        self._linger_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None

    def spawn(self, coroutine: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start a tracked task; :meth:`aclose` cancels what is still running."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- streams with a slot -------------------------------------------------

    def open_slot(
        self, writer: StreamWriter, fencing_token: str, first_seq_num: int, pending: list[str]
    ) -> int:
        """Give a stream's writer a slot in the accumulator, which frames the
        chunks put in ``pending``; the linger and heartbeat loops start if not
        running."""
        slot = self.accumulator.open(fencing_token, first_seq_num, pending)
        self._by_slot[slot] = writer
        if self._linger_task is None or self._linger_task.done():
            self._linger_task = self.spawn(self._linger_loop(), "resumable_fast linger")
        interval = self._heartbeat_interval
        if interval is not None and (self._heartbeat_task is None or self._heartbeat_task.done()):
            self._heartbeat_task = self.spawn(
                self._heartbeat_loop(interval), "resumable_fast heartbeat"
            )
        return slot

    def close_slot(self, slot: int) -> list[_core.Frame]:
        """Seal what is pending in a slot and give the slot up (it may go to
        another stream): the last batches to write."""
        self._by_slot.pop(slot, None)
        return self.accumulator.close(slot)

    def discard_slot(self, slot: int) -> None:
        """Give a slot up, dropping what is pending in it."""
        self._by_slot.pop(slot, None)
        self.accumulator.discard(slot)

    def arm_linger(self, slot: int) -> None:
        """A slot's first pending chunk: its linger deadline starts."""
        if self.accumulator.arm(slot):
            self._linger_wake.set()

    async def _linger_loop(self) -> None:
        accumulator = self.accumulator
        while True:
            delay = accumulator.next_deadline_in()
            if delay is None:
                self._linger_wake.clear()
                await self._linger_wake.wait()
                continue
            if delay > 0:
                await asyncio.sleep(delay)
            for slot, frames in accumulator.seal_due():
                writer = self._by_slot.get(slot)
                if writer is not None:
                    writer.enqueue(frames)

    async def _heartbeat_loop(self, interval: float) -> None:
        """While writers have slots, each one idle for ``interval`` appends a
        heartbeat; the loop ends when none is left."""
        loop = asyncio.get_running_loop()
        while self._by_slot:
            await asyncio.sleep(interval / 2)
            now = loop.time()
            for writer in list(self._by_slot.values()):
                writer.heartbeat_if_idle(now, interval)

    # -- appends -------------------------------------------------------------

    def schedule_write(self, writer: StreamWriter) -> None:
        """Queue a writer's appends for a worker. Workers are kept once
        started: waking one costs less than starting a task, and a writer
        waiting for its turn holds no task of its own."""
        self._write_queue.append(writer)
        while self._idle_append_workers:
            idle = self._idle_append_workers.pop()
            if not idle.done():  # else its worker was cancelled
                # Woken one loop step later: producers' clients woken in this
                # step (a chunk handed over) run before the append work.
                asyncio.get_running_loop().call_soon(resolve, idle)
                return
        if self._append_workers < MAX_APPEND_WORKERS:
            self._append_workers += 1
            self.spawn(self._append_worker(), "resumable_fast appends")

    async def _append_worker(self) -> None:
        queue = self._write_queue
        loop = asyncio.get_running_loop()
        try:
            while True:
                while queue:
                    writer = queue.popleft()
                    try:
                        await writer.write()
                    except Exception:
                        # write() handles S2's errors; anything else is a bug,
                        # which must not take the other streams' appends down.
                        logger.exception("stream %r: appending failed", writer.name)
                idle: asyncio.Future[None] = loop.create_future()
                self._idle_append_workers.append(idle)
                await idle
        finally:
            self._append_workers -= 1

    async def aclose(self) -> None:
        """Cancel what is still running and wait for it to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
