"""The seed package's tests (test/resumability.test.ts), on s2-lite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from resumable_fast import ResumableStreamContext

from conftest import ContextFactory
from support import from_list, read_chunks


async def test_pub_sub(ctx: ResumableStreamContext, stream_id: str) -> None:
    original = ["msg1", "msg2", "msg3", "msg4", "msg5"]
    publisher = await ctx.resumable_stream(stream_id, lambda: from_list(original))
    publisher_data = await read_chunks(publisher)
    subscriber_data = await read_chunks(await ctx.resume_stream(stream_id))
    assert publisher_data == original
    assert subscriber_data == original


async def test_concurrent_creators_make_one_ordered_stream(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    messages = ["msg1", "msg2", "msg3", "msg4"]
    calls: list[int] = []

    def make(n: int) -> Callable[[], AsyncIterator[str]]:
        def factory() -> AsyncIterator[str]:
            calls.append(n)
            return from_list(list(messages), delay=0.02)

        return factory

    results = await asyncio.gather(*(ctx.resumable_stream(stream_id, make(n)) for n in range(3)))
    assert all(result is not None for result in results)
    assert len(calls) == 1, "exactly one concurrent creator produces"
    for result in results:
        assert await read_chunks(result) == messages
    assert await read_chunks(await ctx.resume_stream(stream_id)) == messages


async def test_concurrent_creators_across_contexts(
    new_context: ContextFactory, stream_id: str
) -> None:
    """Three replicas race for the same stream: one wins, all read the same text."""
    contexts = [new_context() for _ in range(3)]
    calls: list[int] = []
    messages = [f"token {i} " for i in range(50)]

    def make(n: int) -> Callable[[], AsyncIterator[str]]:
        def factory() -> AsyncIterator[str]:
            calls.append(n)
            return from_list(messages, delay=0.001)

        return factory

    try:
        results = await asyncio.gather(
            *(c.resumable_stream(stream_id, make(n)) for n, c in enumerate(contexts))
        )
        assert len(calls) == 1
        texts = await asyncio.gather(*(read_chunks(r) for r in results))
        assert all("".join(text) == "".join(messages) for text in texts)
    finally:
        await asyncio.gather(*(c.aclose() for c in contexts))


async def test_concurrent_readers(ctx: ResumableStreamContext, stream_id: str) -> None:
    messages = ["msg1", "msg2", "msg3", "msg4"]
    producer = await ctx.resumable_stream(stream_id, lambda: from_list(messages, delay=0.01))
    readers = [await ctx.resume_stream(stream_id) for _ in range(3)]
    results = await asyncio.gather(*(read_chunks(r, timeout=30) for r in readers))
    assert results == [messages, messages, messages]
    assert await read_chunks(producer) == messages


async def test_resume_stream_before_producer_starts(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    """The seed's resume follows a stream that has no records yet."""
    reader = await ctx.resume_stream(stream_id)
    reading = asyncio.ensure_future(read_chunks(reader))
    await asyncio.sleep(0.1)
    producer = await ctx.resumable_stream(stream_id, lambda: from_list(["a", "b"]))
    assert await read_chunks(producer) == ["a", "b"]
    assert await reading == ["a", "b"]
