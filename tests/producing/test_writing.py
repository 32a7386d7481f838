"""A stream's writer, on its own: queued batches merged within S2's limits,
the closing fence on the last batch or after it, heartbeats only when idle."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from resumable_fast import EmbeddedBackend, EmbeddedStore, _core
from resumable_fast.config import BatchSettings
from resumable_fast.metrics import Metrics
from resumable_fast.records import (
    END_FENCE_PREFIX,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    NO_LANDING,
    SESSION_FENCE_PREFIX,
    Landing,
    SequencedRecord,
    StreamName,
    is_fence,
    new_fence_token,
)
from resumable_fast.scheduling import Scheduler, native_accumulator
from resumable_fast.writing import StreamWriter, WriteEnd, WriterState

NAME = StreamName("writer-test")


@dataclass(frozen=True)
class Append:
    """One append the writer sent: its records, and what it told a retry."""

    records: list[SequencedRecord]
    end_seq_num: int | None
    new_fence: str | None

    @property
    def bodies(self) -> list[str]:
        return [record["body"] for record in self.records]


class RecordingBackend(EmbeddedBackend):
    """The in-memory backend, keeping every append that landed."""

    def __init__(self) -> None:
        super().__init__(EmbeddedStore())
        self.appends: list[Append] = []

    async def append(
        self, name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        await super().append(name, append_input, landing)
        records = json.loads(append_input)["records"]
        self.appends.append(Append(records, landing.end_seq_num, landing.new_fence))


@dataclass
class Stream:
    """A claimed stream with a writer, the producer's pending list, and how
    the writer ended."""

    scheduler: Scheduler
    backend: RecordingBackend
    writer: StreamWriter
    pending: list[str]
    token: str
    ends: list[WriteEnd]

    def seal(self, *chunks: str) -> None:
        """What the producer does when a batch is full: the core frames the
        pending chunks and the writer takes the batches."""
        self.pending.extend(chunks)
        self.writer.enqueue(self.scheduler.accumulator.drain(self.writer.slot))

    async def written(self) -> list[Append]:
        """The appends after the claim, once the writer is idle."""
        await self.writer.idle()
        return self.backend.appends[1:]

    async def text(self) -> str:
        """The stream's data records as readers see them."""
        session = self.backend.read_session(NAME, 0)
        try:
            records = await anext(session)
        finally:
            await session.aclose()
        return "".join(record.get("body", "") for record in records if not is_fence(record))


OpenStream = Callable[..., Awaitable[Stream]]


@pytest.fixture
async def open_stream() -> AsyncIterator[OpenStream]:
    schedulers: list[Scheduler] = []

    async def make(batch_size: int = 1) -> Stream:
        # A linger far longer than a test: batches are sealed by the test.
        scheduler = Scheduler(
            native_accumulator(BatchSettings(batch_size=batch_size, linger_ms=600_000)), None
        )
        schedulers.append(scheduler)
        backend = RecordingBackend()
        token = new_fence_token(SESSION_FENCE_PREFIX)
        await backend.append(NAME, _core.fence_append_input(token, "", 0))
        ends: list[WriteEnd] = []
        writer = StreamWriter(scheduler, backend, NAME, token, 1, metrics=Metrics("embedded"))
        writer.on_end = ends.append
        return Stream(scheduler, backend, writer, writer.pending, token, ends)

    yield make
    for scheduler in schedulers:
        await scheduler.aclose()


async def test_batches_queued_behind_an_append_go_out_as_one(
    open_stream: OpenStream,
) -> None:
    stream = await open_stream()
    stream.seal("a", "b", "c")  # three batches of one record, before a worker runs
    (append,) = await stream.written()
    assert append.bodies == ["a", "b", "c"]
    assert append.end_seq_num == 4
    stream.seal("d")
    assert [a.bodies for a in await stream.written()] == [["a", "b", "c"], ["d"]]
    assert await stream.text() == "abcd"


async def test_merging_stops_at_s2s_record_limit(open_stream: OpenStream) -> None:
    batch = MAX_BATCH_RECORDS * 2 // 5
    stream = await open_stream(batch_size=batch)
    stream.seal(*(str(index % 10) for index in range(batch * 3)))
    appends = await stream.written()
    assert [len(a.records) for a in appends] == [batch * 2, batch]
    assert all(len(a.records) <= MAX_BATCH_RECORDS for a in appends)
    assert [a.end_seq_num for a in appends] == [1 + batch * 2, 1 + batch * 3]


async def test_merging_stops_at_s2s_metered_bytes(open_stream: OpenStream) -> None:
    stream = await open_stream()
    # Three such batches fit one append, with a little room to spare.
    chunk = "x" * (MAX_BATCH_BYTES // 3 - 200)
    stream.seal(*[chunk] * 4)
    appends = await stream.written()
    assert [len(a.records) for a in appends] == [3, 1]
    assert await stream.text() == chunk * 4


async def test_the_closing_fence_rides_on_the_last_batch(open_stream: OpenStream) -> None:
    stream = await open_stream()
    stream.seal("a")
    stream.pending.append("b")  # not yet sealed: the close seals it
    fence = new_fence_token(END_FENCE_PREFIX)
    stream.writer.close(fence)
    states = [stream.writer.state]
    (append,) = await stream.written()
    states.append(stream.writer.state)
    assert append.bodies == ["a", "b", fence]
    assert is_fence(append.records[-1])
    assert (append.end_seq_num, append.new_fence) == (4, fence)
    assert stream.ends == [WriteEnd.LANDED]
    assert states == [WriterState.CLOSING, WriterState.ENDED]


@pytest.mark.parametrize("full", ["records", "bytes"])
async def test_the_closing_fence_goes_alone_after_a_full_batch(
    open_stream: OpenStream, full: str
) -> None:
    if full == "records":
        stream = await open_stream(batch_size=MAX_BATCH_RECORDS)
        stream.pending.extend("y" * MAX_BATCH_RECORDS)
    else:
        stream = await open_stream()
        # One record whose JSON leaves less room than the fence's AppendInput.
        stream.pending.append("y" * (MAX_BATCH_BYTES - 100))
    fence = new_fence_token(END_FENCE_PREFIX)
    stream.writer.close(fence)
    data, alone = await stream.written()
    assert not any(is_fence(record) for record in data.records)
    assert data.new_fence is None
    assert alone.bodies == [fence]
    assert is_fence(alone.records[0])
    assert alone.new_fence == fence
    assert stream.ends == [WriteEnd.LANDED]


async def test_a_close_with_nothing_queued_appends_the_fence_alone(
    open_stream: OpenStream,
) -> None:
    stream = await open_stream()
    fence = new_fence_token(END_FENCE_PREFIX)
    stream.writer.close(fence)
    (append,) = await stream.written()
    assert append.bodies == [fence]
    assert (append.end_seq_num, append.new_fence) == (None, fence)


async def test_a_heartbeat_only_when_idle(open_stream: OpenStream) -> None:
    stream = await open_stream()
    writer = stream.writer
    interval = 10.0
    loop = asyncio.get_running_loop()
    now = loop.time()
    writer.heartbeat_if_idle(now, interval)  # just appended to (opened)
    stream.pending.append("thinking")
    writer.heartbeat_if_idle(now + interval, interval)  # a chunk waits to be sealed
    stream.seal("done")
    writer.heartbeat_if_idle(now + interval, interval)  # a batch waits for its worker
    assert [a.bodies for a in await stream.written()] == [["thinking", "done"]]

    writer.heartbeat_if_idle(loop.time() + interval, interval)
    _, heartbeat = await stream.written()
    assert heartbeat.bodies == [stream.token]
    assert is_fence(heartbeat.records[0])
    assert heartbeat.end_seq_num == 4
    writer.heartbeat_if_idle(loop.time() + interval / 2, interval)  # one per interval
    stream.seal("on")  # lands after the heartbeat
    assert [a.end_seq_num for a in await stream.written()] == [3, 4, 5]

    writer.close(new_fence_token(END_FENCE_PREFIX))
    await writer.idle()
    writer.heartbeat_if_idle(loop.time() + 10 * interval, interval)  # ended
    assert len(await stream.written()) == 4
    assert await stream.text() == "thinkingdoneon"


async def test_a_writer_fenced_out_ends_and_drops_what_is_queued(
    open_stream: OpenStream,
) -> None:
    stream = await open_stream()
    # Another producer took the stream over: the writer's token is refused.
    takeover = new_fence_token(SESSION_FENCE_PREFIX)
    await stream.backend.append(NAME, _core.fence_append_input(takeover, None))
    stream.seal("lost", "too")
    assert [a.bodies for a in await stream.written()] == [[takeover]]
    assert stream.ends == [WriteEnd.TAKEN_OVER]
    assert stream.writer.state is WriterState.ENDED
    stream.writer.close(new_fence_token(END_FENCE_PREFIX))  # too late: nothing is queued
    assert [a.bodies for a in await stream.written()] == [[takeover]]
    assert stream.ends == [WriteEnd.TAKEN_OVER]
