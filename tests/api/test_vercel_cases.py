"""Vercel's resumable-stream test cases (src/__tests__/tests.ts), on s2-lite."""

from __future__ import annotations

from collections.abc import AsyncIterable

import pytest

from resumable_fast import ResumableStreamContext

from support import TestingStream, read_text


async def test_acts_like_a_normal_stream(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    source.write("2\n")
    source.write("3\n")
    source.close()
    assert await read_text(stream) == "1\n2\n3\n"


async def test_resumes_a_done_stream(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == "1\n2\n"


async def test_has_existing_stream(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    assert await ctx.has_existing_stream(stream_id) is None
    stream = await ctx.resumable_stream(stream_id, source.readable)
    assert await ctx.has_existing_stream(stream_id) is True
    assert await ctx.has_existing_stream(stream_id + "-2") is None
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    assert await ctx.has_existing_stream(stream_id) is True
    source.write("1\n")
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == "1\n2\n"
    assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_resumes_a_done_stream_reverse_read(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    source.write("2\n")
    source.close()
    assert await read_text(stream2) == "1\n2\n"
    assert await read_text(stream) == "1\n2\n"


async def test_resumes_an_in_progress_stream(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == "1\n2\n"


async def test_actually_streams(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    assert await read_text(stream, 1) == "1\n"
    assert await read_text(stream2, 1) == "1\n"
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "2\n"
    assert await read_text(stream2) == "2\n"


async def test_actually_streams_producer_first(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    assert await read_text(stream, 1) == "1\n"
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "2\n"
    assert await read_text(stream2) == "1\n2\n"


async def test_actually_streams_consumer_first(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    assert await read_text(stream2, 1) == "1\n"
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == "2\n"


async def test_resumes_multiple_streams(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    stream2 = await ctx.resumable_stream(stream_id, source.readable)
    source.write("2\n")
    stream3 = await ctx.resumable_stream(stream_id, source.readable)
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == "1\n2\n"
    assert await read_text(stream3) == "1\n2\n"


async def test_differentiates_between_streams(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    source2 = TestingStream()
    other_id = stream_id + "-2"
    stream1 = await ctx.resumable_stream(stream_id, source.readable)
    stream2 = await ctx.resumable_stream(other_id, source2.readable)
    stream12 = await ctx.resumable_stream(stream_id, source.readable)
    stream22 = await ctx.resumable_stream(other_id, source2.readable)
    source.write("1\n")
    source.write("2\n")
    source.close()
    source2.write("writer2\n")
    source2.close()
    assert await read_text(stream1) == "1\n2\n"
    assert await read_text(stream2) == "writer2\n"
    assert await read_text(stream12) == "1\n2\n"
    assert await read_text(stream22) == "writer2\n"


@pytest.mark.parametrize(
    ("skip", "expected"), [(2, "2\n"), (4, ""), (0, "1\n2\n"), (1, "\n2\n"), (3, "\n")]
)
async def test_respects_skip_characters(
    ctx: ResumableStreamContext, stream_id: str, skip: int, expected: str
) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    source.write("2\n")
    stream2 = await ctx.resumable_stream(stream_id, source.readable, skip)
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == expected


async def test_returns_none_if_stream_is_done(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.resumable_stream(stream_id, source.readable)
    source.write("1\n")
    source.write("2\n")
    source.close()
    result = await read_text(stream)

    def never_called() -> AsyncIterable[str]:
        raise AssertionError("make_stream must not be called for a finished stream")

    assert await ctx.resumable_stream(stream_id, never_called) is None
    assert result == "1\n2\n"


async def test_supports_the_deconstructed_apis(ctx: ResumableStreamContext, stream_id: str) -> None:
    source = TestingStream()
    stream = await ctx.create_new_resumable_stream(stream_id, source.readable)
    stream2 = await ctx.resume_existing_stream(stream_id)
    source.write("1\n")
    source.write("2\n")
    source.close()
    assert await read_text(stream) == "1\n2\n"
    assert await read_text(stream2) == "1\n2\n"


async def test_returns_none_if_stream_is_done_explicit_apis(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    stream = await ctx.create_new_resumable_stream(stream_id, source.readable)
    source.write("1\n")
    source.write("2\n")
    source.close()
    result = await read_text(stream)
    assert await ctx.resume_existing_stream(stream_id) is None
    assert result == "1\n2\n"
