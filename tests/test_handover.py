"""The producer's client pulls the source itself, and a cancelled or departed
client hands the pull in flight over without the source noticing.

The first half drives :class:`resumable_fast._handover.Pull` with plain
asyncio; the second checks what a context's producer does with it, on both
backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from resumable_fast import ResumableStreamContext, ResumableStreamError, StreamFailedError
from resumable_fast import context as context_module
from resumable_fast._handover import InFlight, Interrupted, Pull

from conftest import ContextFactory
from support import TestingStream, read_chunks, read_text, read_until_error


class RecordingSource:
    """Yields its items after awaiting ``gate`` futures; records which task
    pulled each item and whether cancellation ever reached it."""

    def __init__(self, items: list[str], delay: float = 0.0) -> None:
        self.items = items
        self.delay = delay
        self.pulled_by: list[asyncio.Task[object] | None] = []
        self.saw_cancellation = False

    async def stream(self) -> AsyncIterator[str]:
        try:
            for item in self.items:
                await asyncio.sleep(self.delay)
                self.pulled_by.append(asyncio.current_task())
                yield item
        except asyncio.CancelledError:
            self.saw_cancellation = True
            raise


# -- Pull on its own -------------------------------------------------------------


async def test_pull_runs_in_the_awaiting_task_and_returns_the_value() -> None:
    source = RecordingSource(["a", "b"], delay=0.001)
    iterator = source.stream()
    handed: list[InFlight[str]] = []
    assert await Pull(iterator.__anext__(), handed.append) == "a"
    assert await Pull(iterator.__anext__(), handed.append) == "b"
    assert source.pulled_by == [asyncio.current_task()] * 2
    assert handed == []


async def test_cancelled_pull_is_handed_over_with_the_source_untouched() -> None:
    source = RecordingSource(["first", "second"], delay=0.05)
    iterator = source.stream()
    handed: list[InFlight[str]] = []
    client = asyncio.ensure_future(Pull(iterator.__anext__(), handed.append))
    await asyncio.sleep(0.01)
    client.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client
    assert len(handed) == 1
    assert await handed[0] == "first"
    assert await iterator.__anext__() == "second"
    assert not source.saw_cancellation


async def test_cancel_after_the_source_future_completed_still_hands_over() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def source() -> AsyncIterator[str]:
        yield await gate

    iterator = source()
    handed: list[InFlight[str]] = []
    client = asyncio.ensure_future(Pull(iterator.__anext__(), handed.append))
    await asyncio.sleep(0)
    gate.set_result("value")
    client.cancel()  # the wake-up is already scheduled: cancel cannot detach
    with pytest.raises(asyncio.CancelledError):
        await client
    assert len(handed) == 1
    assert await handed[0] == "value"


async def test_cancel_at_a_bare_yield_hands_over() -> None:
    async def source() -> AsyncIterator[str]:
        for _ in range(50):
            await asyncio.sleep(0)  # a bare yield to the event loop
        yield "after many steps"

    iterator = source()
    handed: list[InFlight[str]] = []
    client = asyncio.ensure_future(Pull(iterator.__anext__(), handed.append))
    for _ in range(5):
        await asyncio.sleep(0)
    client.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client
    assert await handed[0] == "after many steps"


async def test_interrupt_ends_the_wait_and_a_cancelled_in_flight_reaches_the_source() -> None:
    source = RecordingSource(["never"], delay=30)
    iterator = source.stream()
    handed: list[InFlight[str]] = []
    pull = Pull(iterator.__anext__(), handed.append)
    client = asyncio.ensure_future(pull)
    await asyncio.sleep(0.01)
    pull.interrupt()
    with pytest.raises(Interrupted):
        await asyncio.wait_for(client, 5)
    handed[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed[0]
    assert source.saw_cancellation


# -- the producer ------------------------------------------------------------------


async def test_client_pulls_the_source_in_its_own_task(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = RecordingSource([f"t{i} " for i in range(20)], delay=0.002)
    producer = await ctx.resumable_stream(stream_id, source.stream)
    assert producer is not None
    text = "".join([chunk async for chunk in producer])
    assert text == "".join(source.items)
    me = asyncio.current_task()
    # A background pump may pull the first chunk, before the client asks.
    assert source.pulled_by[1:] == [me] * 19
    assert await read_text(await ctx.resume_stream(stream_id)) == text


async def test_cancelled_client_does_not_cancel_the_source(
    ctx: ResumableStreamContext, new_context: ContextFactory, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("one ")
    assert await read_text(producer, 1) == "one "
    assert producer is not None
    client = asyncio.ensure_future(producer.__anext__())
    await asyncio.sleep(0.02)  # the client now waits inside the source
    client.cancel()  # e.g. the web server cancels a disconnected request
    with pytest.raises(asyncio.CancelledError):
        await client
    for word in ("two ", "three"):
        source.write(word)
    source.close()
    async with new_context() as other:
        assert await read_text(await other.resume_stream(stream_id)) == "one two three"
    assert not source.closed_by_consumer


async def test_client_timing_out_then_reading_on_loses_nothing(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    assert producer is not None
    source.write("a")
    assert await producer.__anext__() == "a"
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(producer.__anext__(), 0.05)
    source.write("b")
    source.write("c")
    source.close()
    assert await read_text(producer) == "bc"
    assert await read_text(await ctx.resume_stream(stream_id)) == "abc"


async def test_client_that_stops_reading_does_not_hold_up_persistence(
    ctx: ResumableStreamContext,
    new_context: ContextFactory,
    stream_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(context_module, "CLIENT_ABSENCE_SECONDS", 0.05)
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("read ")
    assert await read_text(producer, 1) == "read "
    # The client keeps its stream open but reads no more.
    for word in ("not ", "read ", "by it"):
        source.write(word)
    source.close()
    async with new_context() as other:
        text = await read_text(await other.resume_stream(stream_id), timeout=10)
    assert text == "read not read by it"
    assert source.pulled == 4


async def test_stop_while_the_client_waits_inside_the_source(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("before ")
    assert await read_text(producer, 1) == "before "
    client = asyncio.ensure_future(read_chunks(producer))
    await asyncio.sleep(0.02)
    await ctx.stop_stream(stream_id)
    assert await asyncio.wait_for(client, 5) == []
    for _ in range(100):
        if source.closed_by_consumer:
            break
        await asyncio.sleep(0.01)
    assert source.closed_by_consumer
    assert await read_text(await ctx.resume_stream(stream_id)) == "before "


async def test_closing_the_context_ends_a_source_that_never_finishes(
    new_context: ContextFactory, stream_id: str
) -> None:
    source = TestingStream()
    ctx = new_context(drain_timeout=0.2)
    async with new_context() as other:
        try:
            producer = await ctx.resumable_stream(stream_id, source.readable)
            source.write("partial")
            assert await read_text(producer, 1) == "partial"
            client = asyncio.ensure_future(read_until_error(producer))
            await asyncio.sleep(0.02)
        finally:
            await asyncio.wait_for(ctx.aclose(), 10)
        chunks, error = await asyncio.wait_for(client, 5)
        assert chunks == []
        assert isinstance(error, ResumableStreamError)
        assert source.closed_by_consumer
        resumed, reader_error = await read_until_error(await other.resume_stream(stream_id))
        assert "".join(resumed) == "partial"
        assert isinstance(reader_error, StreamFailedError)
