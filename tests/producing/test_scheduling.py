"""A context's background work (:class:`resumable_fast.scheduling.Scheduler`),
through its public methods: tracked tasks end with ``aclose``, the linger
loop seals a batch once its linger is up, the heartbeat loop runs while
streams have slots, and append workers are capped and survive a failing
write.

The scheduler's collaborator, a stream's writer, is a test double here
(:class:`FakeWriter`): these tests are about when the scheduler calls it.
The real writer over real backends is tested in ``tests/producing/test_writing.py``
and through every context test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

import orjson
import pytest

from resumable_fast import BatchSettings, StreamName, _core
from resumable_fast.scheduling import MAX_APPEND_WORKERS, Scheduler, native_accumulator

if TYPE_CHECKING:
    from resumable_fast.writing import StreamWriter

pytestmark = pytest.mark.timeout(60)

WAIT = 10.0  # seconds: how long anything that should happen may take, at most
TOKEN = "session-scheduling-test"
HEARTBEAT_TASK = "resumable_fast heartbeat"
APPEND_TASK = "resumable_fast appends"


class FakeWriter:
    """Stands in for a stream's writer: notes what the scheduler asks of it.
    ``write`` waits for ``release`` when given one, and raises ``failure``
    when given one."""

    def __init__(
        self,
        name: str = "stream",
        *,
        release: asyncio.Event | None = None,
        failure: Exception | None = None,
    ) -> None:
        self.name = StreamName(name)
        self.release = release
        self.failure = failure
        self.enqueued: list[list[_core.Frame]] = []
        self.enqueued_at: list[float] = []
        self.heartbeat_asks: list[tuple[float, float]] = []
        self.writes = 0
        self.sealed = asyncio.Event()
        self.asked_for_heartbeat = asyncio.Event()
        self.written = asyncio.Event()

    def enqueue(self, batches: list[_core.Frame]) -> None:
        self.enqueued.append(batches)
        self.enqueued_at.append(time.monotonic())
        self.sealed.set()

    def heartbeat_if_idle(self, now: float, interval: float) -> None:
        self.heartbeat_asks.append((now, interval))
        self.asked_for_heartbeat.set()

    async def write(self) -> None:
        if self.release is not None:
            await self.release.wait()
        self.writes += 1
        self.written.set()
        if self.failure is not None:
            raise self.failure


def as_writer(fake: FakeWriter) -> StreamWriter:
    """The scheduler types its writers as :class:`StreamWriter` (no protocol
    names what it calls of them); the fake has those methods."""
    return cast("StreamWriter", fake)


def scheduler_with(
    *, linger_ms: float = 600_000, heartbeat_interval: float | None = None
) -> Scheduler:
    """A scheduler over the native accumulator (a linger far longer than a
    test unless told)."""
    return Scheduler(
        native_accumulator(BatchSettings(batch_size=100, linger_ms=linger_ms)), heartbeat_interval
    )


def tasks_named(name: str) -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == name and not task.done()]


async def wait_for(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), WAIT)


# -- tracked tasks ---------------------------------------------------------------


async def test_aclose_cancels_tracked_tasks_and_waits_for_their_cleanup() -> None:
    scheduler = scheduler_with()
    started = [asyncio.Event() for _ in range(3)]
    cleaned_up: list[int] = []

    async def runs_until_cancelled(index: int) -> None:
        started[index].set()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned_up.append(index)

    tasks = [scheduler.spawn(runs_until_cancelled(index), f"task {index}") for index in range(3)]
    for event in started:
        await wait_for(event)
    await scheduler.aclose()
    assert sorted(cleaned_up) == [0, 1, 2]
    assert all(task.cancelled() for task in tasks)
    assert [task.get_name() for task in tasks] == ["task 0", "task 1", "task 2"]


async def test_aclose_is_not_troubled_by_tasks_that_ended_or_failed() -> None:
    scheduler = scheduler_with()

    async def finishes() -> str:
        return "done"

    async def fails() -> None:
        raise RuntimeError("a task's own failure")

    finished = scheduler.spawn(finishes(), "finishes")
    failed = scheduler.spawn(fails(), "fails")
    await asyncio.wait({finished, failed}, timeout=WAIT)
    await asyncio.wait_for(scheduler.aclose(), WAIT)
    assert finished.result() == "done"
    assert isinstance(failed.exception(), RuntimeError)


# -- linger ----------------------------------------------------------------------


async def test_a_lingering_batch_is_sealed_once_its_linger_is_up() -> None:
    linger = 0.3
    scheduler = scheduler_with(linger_ms=linger * 1000)
    writer = FakeWriter()
    pending: list[str] = []
    try:
        slot = scheduler.open_slot(as_writer(writer), TOKEN, 1, pending)
        pending.append("first ")
        armed_at = time.monotonic()
        scheduler.arm_linger(slot)
        pending.append("second")  # joins the batch that lingers
        await wait_for(writer.sealed)
        assert writer.enqueued_at[0] - armed_at >= linger - 0.005  # not before its linger
        [[(body, end_seq_num)]] = writer.enqueued
        batch = orjson.loads(body)
        assert [record["body"] for record in batch["records"]] == ["first ", "second"]
        assert batch["fencing_token"] == TOKEN
        assert batch["match_seq_num"] == 1
        assert end_seq_num == 3
        assert pending == []
    finally:
        await scheduler.aclose()


async def test_batches_are_sealed_in_the_order_their_lingers_end() -> None:
    scheduler = scheduler_with(linger_ms=200)
    writers = {name: FakeWriter(name) for name in ("early", "late")}
    pendings: dict[str, list[str]] = {name: [] for name in writers}
    try:
        slots = {
            name: scheduler.open_slot(as_writer(writer), TOKEN, 1, pendings[name])
            for name, writer in writers.items()
        }
        for name in ("early", "late"):
            pendings[name].append(f"{name} chunk")
            scheduler.arm_linger(slots[name])
            await asyncio.sleep(0.1)  # the second armed a while after the first
        for writer in writers.values():
            await wait_for(writer.sealed)
        assert writers["early"].enqueued_at[0] <= writers["late"].enqueued_at[0]
    finally:
        await scheduler.aclose()


async def test_a_slot_given_up_before_its_linger_is_not_sealed_by_the_loop() -> None:
    scheduler = scheduler_with(linger_ms=100)
    given_up, kept = FakeWriter("given up"), FakeWriter("kept")
    given_up_pending: list[str] = []
    kept_pending: list[str] = []
    try:
        given_up_slot = scheduler.open_slot(as_writer(given_up), TOKEN, 1, given_up_pending)
        kept_slot = scheduler.open_slot(as_writer(kept), TOKEN, 1, kept_pending)
        given_up_pending.append("closed early")
        scheduler.arm_linger(given_up_slot)
        last = scheduler.close_slot(given_up_slot)  # its last batch, handed back
        assert [end for _, end in last] == [2]
        # A later linger, armed after the first one's deadline would have been.
        kept_pending.append("kept")
        await asyncio.sleep(0.15)
        scheduler.arm_linger(kept_slot)
        await wait_for(kept.sealed)
        assert given_up.enqueued == []
    finally:
        await scheduler.aclose()


# -- heartbeats ------------------------------------------------------------------


async def test_the_heartbeat_loop_runs_only_while_streams_have_slots() -> None:
    interval = 0.05
    scheduler = scheduler_with(heartbeat_interval=interval)
    try:
        assert tasks_named(HEARTBEAT_TASK) == []
        first = FakeWriter("first")
        slot = scheduler.open_slot(as_writer(first), TOKEN, 1, [])
        [loop_task] = tasks_named(HEARTBEAT_TASK)
        await wait_for(first.asked_for_heartbeat)
        assert {asked_interval for _, asked_interval in first.heartbeat_asks} == {interval}
        scheduler.close_slot(slot)
        await asyncio.wait_for(loop_task, WAIT)  # it ends once no stream has a slot
        asked = len(first.heartbeat_asks)
        second = FakeWriter("second")
        scheduler.open_slot(as_writer(second), TOKEN, 1, [])
        [again] = tasks_named(HEARTBEAT_TASK)
        assert again is not loop_task
        await wait_for(second.asked_for_heartbeat)
        assert len(first.heartbeat_asks) == asked  # a slot given up is not asked
    finally:
        await scheduler.aclose()
    assert tasks_named(HEARTBEAT_TASK) == []


async def test_without_a_heartbeat_interval_no_heartbeat_loop_runs() -> None:
    scheduler = scheduler_with(linger_ms=50, heartbeat_interval=None)
    writer = FakeWriter()
    pending: list[str] = []
    try:
        slot = scheduler.open_slot(as_writer(writer), TOKEN, 1, pending)
        assert tasks_named(HEARTBEAT_TASK) == []
        pending.append("chunk")
        scheduler.arm_linger(slot)
        await wait_for(writer.sealed)  # the linger loop runs meanwhile
        assert writer.heartbeat_asks == []
    finally:
        await scheduler.aclose()


# -- append workers --------------------------------------------------------------


async def test_append_workers_are_capped_and_every_queued_write_runs() -> None:
    scheduler = scheduler_with()
    release = asyncio.Event()
    running = 0
    most_running = 0

    class CountingWriter(FakeWriter):
        async def write(self) -> None:
            nonlocal running, most_running
            running += 1
            most_running = max(most_running, running)
            try:
                await super().write()
            finally:
                running -= 1

    writers = [CountingWriter(f"stream {index}", release=release) for index in range(300)]
    try:
        for writer in writers:
            scheduler.schedule_write(as_writer(writer))
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(tasks_named(APPEND_TASK)) == MAX_APPEND_WORKERS
        assert most_running == MAX_APPEND_WORKERS
        release.set()
        await asyncio.wait_for(asyncio.gather(*(w.written.wait() for w in writers)), WAIT)
        assert [writer.writes for writer in writers] == [1] * len(writers)
        assert most_running == MAX_APPEND_WORKERS
        # Workers are kept once started: a later write reuses one.
        later = FakeWriter("later")
        scheduler.schedule_write(as_writer(later))
        await wait_for(later.written)
        assert len(tasks_named(APPEND_TASK)) == MAX_APPEND_WORKERS
    finally:
        await scheduler.aclose()
    assert tasks_named(APPEND_TASK) == []


async def test_a_failing_write_is_logged_and_the_other_writes_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler = scheduler_with()
    failing = FakeWriter("failing", failure=RuntimeError("a bug in a writer"))
    others = [FakeWriter(f"other {index}") for index in range(5)]
    try:
        with caplog.at_level(logging.ERROR, logger="resumable_fast"):
            scheduler.schedule_write(as_writer(failing))
            for writer in others:
                scheduler.schedule_write(as_writer(writer))
            await asyncio.wait_for(asyncio.gather(*(w.written.wait() for w in others)), WAIT)
            await wait_for(failing.written)
        assert "appending failed" in caplog.text
        assert "a bug in a writer" in caplog.text
        # The worker that ran the failing write still runs the next one.
        failing.failure = None
        failing.written.clear()
        scheduler.schedule_write(as_writer(failing))
        await wait_for(failing.written)
        assert failing.writes == 2
        assert [writer.writes for writer in others] == [1] * len(others)
    finally:
        await scheduler.aclose()


async def test_a_failing_write_on_the_only_worker_does_not_stop_the_queue_behind_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With one worker, the writes queued behind a failing one run on it."""
    monkeypatch.setattr("resumable_fast.scheduling.MAX_APPEND_WORKERS", 1)
    scheduler = scheduler_with()
    release = asyncio.Event()
    failing = FakeWriter("failing", release=release, failure=RuntimeError("a bug"))
    behind = [FakeWriter(f"behind {index}") for index in range(3)]
    try:
        scheduler.schedule_write(as_writer(failing))
        for writer in behind:
            scheduler.schedule_write(as_writer(writer))
        assert len(tasks_named(APPEND_TASK)) == 1
        release.set()
        await asyncio.wait_for(asyncio.gather(*(w.written.wait() for w in behind)), WAIT)
        assert failing.writes == 1
        assert len(tasks_named(APPEND_TASK)) == 1
    finally:
        await scheduler.aclose()
