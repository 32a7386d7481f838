"""``trim_finished``: on S2 (s2-lite, which applies trims) a finished stream
is trimmed to its end fence: its text gone, still ``"DONE"``, never produced
again; off by default; refused on the embedded backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from resumable_fast import (
    ConfigurationError,
    StreamExistsError,
    StreamFailedError,
    StreamName,
)
from resumable_fast.records import SequencedRecord, is_closing_fence, is_fence, is_trim
from resumable_fast.s2 import S2Client

from conftest import ContextFactory, S2Lite, make_context
from support import from_list, read_text, read_until_error, stored_records

pytestmark = pytest.mark.timeout(60)

TRIM_WAIT = 20.0  # S2's trims are eventually consistent


async def _records_once_trimmed(client: S2Client, name: StreamName) -> list[SequencedRecord]:
    """The stream's records from its start, once the data before the end
    fence is gone (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TRIM_WAIT
    while True:
        records = await client.read(name, seq_num=0)
        if records and is_fence(records[0]) and records[0]["body"].startswith(("end-", "error-")):
            return records
        if loop.time() > deadline:
            raise AssertionError(f"not trimmed after {TRIM_WAIT} s: {records}")
        await asyncio.sleep(0.1)


def never_made() -> AsyncIterator[str]:
    raise AssertionError("make_stream was called for a finished stream")


async def test_a_finished_stream_is_trimmed_to_its_end_fence(
    s2lite: S2Lite, stream_id: str
) -> None:
    async with make_context(s2lite, trim_finished=True) as ctx:
        stream = await ctx.resumable_stream(stream_id, lambda: from_list(["gone ", "soon"]))
        assert await read_text(stream) == "gone soon"
        backend = ctx.backend
        assert isinstance(backend, S2Client)
        name = ctx.stream_name(stream_id)
        records = await _records_once_trimmed(backend, name)
        # The end fence, then the trim command that became the last record.
        assert len(records) == 2
        assert is_trim(records[1])
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        assert await ctx.resumable_stream(stream_id, never_made) is None
        with pytest.raises(StreamExistsError):
            await ctx.create_new_resumable_stream(stream_id, never_made)
        assert await ctx.resume_existing_stream(stream_id) is None
        # The seed's resume replays what is left: nothing, and it ends.
        assert await read_text(await ctx.resume_stream(stream_id)) == ""
        await ctx.stop_stream(stream_id)  # a finished stream is left as it is
        assert len(await backend.read(name, seq_num=0)) == 2


async def test_a_failed_stream_keeps_its_error_fence(s2lite: S2Lite, stream_id: str) -> None:
    async def failing() -> AsyncIterator[str]:
        yield "partial "
        raise RuntimeError("model went away")

    async with make_context(s2lite, trim_finished=True) as ctx:
        stream = await ctx.resumable_stream(stream_id, failing)
        _, error = await read_until_error(stream)
        assert isinstance(error, RuntimeError)
        backend = ctx.backend
        assert isinstance(backend, S2Client)
        await _records_once_trimmed(backend, ctx.stream_name(stream_id))
        _, replayed = await read_until_error(await ctx.resume_stream(stream_id))
        assert isinstance(replayed, StreamFailedError)
        assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_off_by_default_a_finished_stream_replays(
    new_context: ContextFactory, stream_id: str
) -> None:
    async with new_context() as ctx:
        stream = await ctx.resumable_stream(stream_id, lambda: from_list(["kept ", "text"]))
        assert await read_text(stream) == "kept text"
        await asyncio.sleep(0.2)
        assert await read_text(await ctx.resume_stream(stream_id)) == "kept text"
        last = await ctx.backend.last_record(ctx.stream_name(stream_id))
        assert last is not None
        assert is_closing_fence(last)
        assert len(await stored_records(ctx, stream_id)) == 4  # session fence, 2 data, end


@pytest.mark.parametrize("backend_name", ["embedded", "embedded-dir"])
async def test_the_embedded_backend_refuses_it(
    new_context: ContextFactory, backend_name: str
) -> None:
    with pytest.raises(ConfigurationError, match="trim_finished needs S2"):
        new_context(trim_finished=True)
