"""The producer drives its source in one task of its own: the producer's client
is fed from that task, and nothing the client does reaches the source.

These use plain asyncio sources; ``tests/api/test_sources.py`` runs the same
promises with provider SDKs, httpx and anyio against a fake provider server.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from resumable_fast import ResumableStreamContext, ResumableStreamError, StreamFailedError
from resumable_fast.producer import ProducerState

from conftest import ContextFactory
from support import TestingStream, read_chunks, read_text, read_until_error

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class RecordingSource:
    """Yields its items after a sleep each; records the task of every step,
    whether cancellation reached it and how often it was closed."""

    def __init__(self, items: list[str], delay: float = 0.0) -> None:
        self.items = items
        self.delay = delay
        self.tasks: list[asyncio.Task[object] | None] = []
        self.saw_cancellation = False
        self.closes = 0
        self.closed_in: asyncio.Task[object] | None = None
        self.request_ids: list[str] = []

    async def stream(self) -> AsyncIterator[str]:
        try:
            for item in self.items:
                self.tasks.append(asyncio.current_task())
                self.request_ids.append(REQUEST_ID.get())
                await asyncio.sleep(self.delay)
                yield item
        except asyncio.CancelledError:
            self.saw_cancellation = True
            raise
        finally:
            self.closes += 1
            self.closed_in = asyncio.current_task()


async def test_the_source_runs_in_one_task_of_its_own_with_the_callers_contextvars(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = RecordingSource([f"t{i} " for i in range(20)], delay=0.002)
    REQUEST_ID.set("request-42")
    producer = await ctx.resumable_stream(stream_id, source.stream)
    assert producer is not None
    text = "".join([chunk async for chunk in producer])
    assert text == "".join(source.items)
    me = asyncio.current_task()
    assert len(set(source.tasks)) == 1
    assert source.tasks[0] is not me
    assert source.closes == 1
    assert source.closed_in is source.tasks[0]
    assert source.request_ids == ["request-42"] * 20
    assert await read_text(await ctx.resume_stream(stream_id)) == text


@pytest.mark.parametrize("point", ["before the first chunk", "mid-pull", "between chunks"])
async def test_cancelling_the_client_never_reaches_the_source(
    ctx: ResumableStreamContext, new_context: ContextFactory, stream_id: str, point: str
) -> None:
    source = RecordingSource([f"w{i} " for i in range(10)], delay=0.01)
    producer = await ctx.resumable_stream(stream_id, source.stream)
    assert producer is not None
    if point == "before the first chunk":
        await producer.aclose()
    elif point == "mid-pull":
        assert await read_text(producer, 2) == "w0 w1 "
        client = asyncio.ensure_future(producer.__anext__())
        await asyncio.sleep(0.005)  # the client now waits for the source's next chunk
        client.cancel()  # e.g. the web server cancels a disconnected request
        with pytest.raises(asyncio.CancelledError):
            await client
    else:
        assert await read_text(producer, 3) == "w0 w1 w2 "
        await producer.aclose()
    async with new_context() as other:
        assert await read_text(await other.resume_stream(stream_id)) == "".join(source.items)
        assert await other.has_existing_stream(stream_id) == "DONE"
    assert not source.saw_cancellation
    assert source.closes == 1
    assert len(set(source.tasks)) == 1
    assert source.closed_in is source.tasks[0]


async def test_cancelling_the_client_after_the_source_ended_keeps_the_end_fence(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Appends take a while: the source has ended, and its last batch and the end
    # fence are still being written when the client's wait for the end is
    # cancelled.
    backend = ctx.backend
    append = backend.append

    async def slow_append(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.1)
        await append(*args, **kwargs)

    monkeypatch.setattr(backend, "append", slow_append)
    source = RecordingSource(["a", "b", "c"])
    producer = await ctx.resumable_stream(stream_id, source.stream)
    assert producer is not None
    assert await read_text(producer, 3) == "abc"
    client = asyncio.ensure_future(producer.__anext__())
    await asyncio.sleep(0.01)
    assert source.closes == 1
    assert not client.done()  # the end fence has not landed yet
    client.cancel()
    with pytest.raises(asyncio.CancelledError):
        await client
    assert await read_text(await ctx.resume_stream(stream_id)) == "abc"
    assert await ctx.has_existing_stream(stream_id) == "DONE"
    assert source.closes == 1


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
    ctx: ResumableStreamContext, new_context: ContextFactory, stream_id: str
) -> None:
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


async def test_stop_while_the_source_is_mid_pull_stops_it_in_its_own_task(
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


async def test_a_source_failing_ends_the_stream_with_an_error_for_everyone(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("partial ")
    source.fail(RuntimeError("provider went away"))
    chunks, error = await read_until_error(producer)
    assert chunks == ["partial "]
    assert isinstance(error, RuntimeError)
    resumed, reader_error = await read_until_error(await ctx.resume_stream(stream_id))
    assert "".join(resumed) == "partial "
    assert isinstance(reader_error, StreamFailedError)


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


async def test_the_producer_goes_through_its_states(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    producer = ctx.producer(stream_id)
    assert producer is not None
    states = [producer.state]
    source.write("x")
    source.close()
    assert await read_text(stream) == "x"
    states.append(producer.state)
    assert states == [ProducerState.STREAMING, ProducerState.DONE]
    assert ctx.producer(stream_id) is None


async def test_chunks_reach_the_client_before_they_are_persisted_its_end_after(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persistence never holds a chunk back; the end waits for the end fence,
    so a stream the client saw finish is finished for every reader."""
    backend = ctx.backend
    append = backend.append

    async def slow_append(*args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.3)
        await append(*args, **kwargs)

    monkeypatch.setattr(backend, "append", slow_append)
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    assert stream is not None
    loop = asyncio.get_running_loop()
    began = loop.time()
    for word in ("not ", "held ", "back"):
        source.write(word)
    source.close()
    assert await read_text(stream, 3) == "not held back"
    assert loop.time() - began < 0.2  # no append has finished yet
    assert await read_text(stream) == ""  # the end, once the end fence landed
    assert loop.time() - began >= 0.3
    monkeypatch.undo()
    assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_a_finished_stream_lets_go_of_its_source_without_the_garbage_collector(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    """Once a stream has ended, nothing of it is left in a reference cycle: its
    source (and the producer and writer that held it) are freed by reference
    counting at once, not kept, one set per stream, until a collection."""
    sources: list[weakref.ref[AsyncIterator[str]]] = []

    async def tokens() -> AsyncIterator[str]:
        for token in ("no ", "cycle ", "left"):
            yield token
            await asyncio.sleep(0)

    def make_stream() -> AsyncIterator[str]:
        source = tokens()
        sources.append(weakref.ref(source))
        return source

    gc.collect()
    gc.disable()
    try:
        stream = await ctx.resumable_stream(stream_id, make_stream)
        assert stream is not None
        assert await read_text(stream) == "no cycle left"
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        for _ in range(5):  # the source task's last steps
            await asyncio.sleep(0)
        assert ctx.producer(stream_id) is None
        assert sources[0]() is None, "the finished stream's source is only freed by a collection"
    finally:
        gc.enable()
