"""``delete_stream``: a stream removed for good, on every backend (S2, in
memory, data_dir): its producer stopped and its source closed, its readers
ended (normally or with a typed error, never a hang), nothing left to find."""

from __future__ import annotations

import asyncio

import pytest

from resumable_fast import (
    ResumableStreamContext,
    StreamDeletedError,
    StreamName,
)

from conftest import ContextFactory
from support import TestingStream, from_list, read_text, read_until_error

pytestmark = pytest.mark.timeout(60)


async def test_deleting_a_live_stream_stops_its_producer_and_ends_its_readers(
    new_context: ContextFactory, ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    reader = await ctx.resume_existing_stream(stream_id)
    source.write("said before ")
    assert await read_text(producer, 1) == "said before "
    assert await read_text(reader, 1) == "said before "

    await ctx.delete_stream(stream_id)

    # Its source was closed before delete_stream returned.
    assert source.closed_by_consumer
    assert ctx.producer(stream_id) is None
    _, producer_end = await read_until_error(producer)
    assert producer_end is None
    _, reader_end = await read_until_error(reader)
    assert reader_end is None or isinstance(reader_end, StreamDeletedError)
    assert await ctx.has_existing_stream(stream_id) is None
    replica = new_context()
    try:
        assert await replica.has_existing_stream(stream_id) is None
        assert await replica.resume_existing_stream(stream_id) is None
    finally:
        await replica.aclose()


async def test_deleting_a_finished_stream_leaves_nothing_to_resume(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    stream = await ctx.resumable_stream(stream_id, lambda: from_list(["all ", "done"]))
    assert await read_text(stream) == "all done"
    assert await ctx.has_existing_stream(stream_id) == "DONE"

    await ctx.delete_stream(stream_id)

    assert await ctx.has_existing_stream(stream_id) is None
    assert await ctx.resume_existing_stream(stream_id) is None


async def test_a_reader_past_the_deleted_records_gets_a_typed_error(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    """The records deleted under a reader that follows the live tail, with no
    end fence first (the backend's delete alone): it ends with
    StreamDeletedError instead of waiting for records that will never come."""
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    reader = await ctx.resume_existing_stream(stream_id)
    source.write("one ")
    assert await read_text(producer, 1) == "one "
    assert await read_text(reader, 1) == "one "
    pending_read = asyncio.ensure_future(read_until_error(reader))
    await asyncio.sleep(0.2)  # the reader waits on the live tail
    assert not pending_read.done()

    await ctx.backend.delete(ctx.stream_name(stream_id))

    chunks, error = await pending_read
    assert chunks == []
    assert isinstance(error, StreamDeletedError)
    assert error.stream_id == stream_id
    await ctx.delete_stream(stream_id)  # stops the producer the raw delete left running
    assert source.closed_by_consumer


async def test_deleting_a_stream_that_does_not_exist_creates_nothing(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    await ctx.delete_stream(stream_id)
    assert await ctx.has_existing_stream(stream_id) is None
    # And the id can be used afterwards like any new one.
    stream = await ctx.resumable_stream(stream_id, lambda: from_list(["fresh"]))
    assert await read_text(stream) == "fresh"


async def test_a_deleted_stream_of_another_replica_wakes_its_reader(
    new_context: ContextFactory, ctx: ResumableStreamContext, stream_id: str
) -> None:
    """A reader in one context, the delete in another (on data_dir, another
    SqliteStore user; on S2, another client)."""
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("shared ")
    assert await read_text(producer, 1) == "shared "
    other = new_context()
    try:
        reader = await other.resume_existing_stream(stream_id)
        assert await read_text(reader, 1) == "shared "
        pending_read = asyncio.ensure_future(read_until_error(reader))
        await asyncio.sleep(0.2)
        await ctx.delete_stream(stream_id)
        _, error = await pending_read
        assert error is None or isinstance(error, StreamDeletedError)
        assert await other.has_existing_stream(stream_id) is None
    finally:
        await other.aclose()
    assert source.closed_by_consumer
    assert StreamName(stream_id) == ctx.stream_name(stream_id)
