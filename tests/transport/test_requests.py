"""What each call costs in S2 requests (s2.dev bills requests), and that the
requests saved keep every guarantee: a claim in one request, the closing
fence carried by the last data append, both recognised when retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from resumable_fast import ResumableStreamContext
from resumable_fast.records import END_FENCE_PREFIX, is_fence

from conftest import S2Lite
from support import TestingStream, from_list, read_text, recorded_context, stored_records


async def tail_reaches(ctx: ResumableStreamContext, stream_id: str, records: int) -> None:
    for _ in range(500):
        last = await ctx.backend.last_record(ctx.stream_name(stream_id))
        if last is not None and last["seq_num"] + 1 >= records:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the stream never held {records} records")


async def test_a_new_stream_is_claimed_in_one_request(s2lite: S2Lite, stream_id: str) -> None:
    ctx, http = recorded_context(s2lite)
    async with ctx:
        source = TestingStream()
        with http.recording() as sent:
            producer = await ctx.resumable_stream(stream_id, source.readable)
        assert len(sent) == 1
        assert sent[0].startswith(b"POST ")
        source.write("one request")
        source.close()
        assert await read_text(producer) == "one request"


async def test_a_finished_stream_costs_a_refused_claim_and_a_tail_read(
    s2lite: S2Lite, stream_id: str
) -> None:
    ctx, http = recorded_context(s2lite)
    async with ctx:
        assert (
            await read_text(
                await ctx.create_new_resumable_stream(stream_id, lambda: from_list(["done"]))
            )
            == "done"
        )
        with http.recording() as sent:
            assert await ctx.resumable_stream(stream_id, lambda: from_list(["never"])) is None
        # A claim refused at its only attempt is not read back to check.
        assert [request.split(b" ")[0] for request in sent] == [b"POST", b"GET"]


async def test_the_last_data_append_carries_the_end_fence(s2lite: S2Lite, stream_id: str) -> None:
    """15 chunks in batches of 10: the claim, 10 chunks, then 5 chunks and
    the end fence in one append, as S2's own package writes it."""
    chunks = [f"c{index} " for index in range(15)]
    ctx, http = recorded_context(s2lite, batch_size=10, linger_ms=60_000)
    async with ctx:
        source = TestingStream()
        with http.recording() as sent:
            producer = await ctx.create_new_resumable_stream(stream_id, source.readable)
            for chunk in chunks[:10]:
                source.write(chunk)
            await tail_reaches(ctx, stream_id, 11)
            for chunk in chunks[10:]:
                source.write(chunk)
            source.close()
            assert await read_text(producer) == "".join(chunks)
        appends = [request for request in sent if request.startswith(b"POST ")]
        assert len(appends) == 3
        records = await stored_records(ctx, stream_id)
        assert len(records) == 17
        assert [is_fence(record) for record in records] == [True] + [False] * 15 + [True]
        assert records[-1]["body"].startswith(END_FENCE_PREFIX)
        assert await read_text(await ctx.resume_stream(stream_id)) == "".join(chunks)


@pytest.mark.parametrize("chunks", [3, 25])
async def test_a_merged_end_retried_after_a_lost_answer_lands_once(
    s2lite: S2Lite, stream_id: str, chunks: int
) -> None:
    """The append with the last data and the end fence lands, its answer is
    lost, the retry is refused by S2 and recognised as ours: the client sees a
    clean end and the stream holds one end fence after its data."""
    text = [f"w{index} " for index in range(chunks)]

    async def source() -> AsyncIterator[str]:
        for chunk in text:
            yield chunk

    ctx, http = recorded_context(s2lite, retry_deadline=10, batch_size=10, linger_ms=60_000)
    async with ctx:
        lost = http.lose_first_answer(b'"end-')
        producer = await ctx.create_new_resumable_stream(stream_id, source)
        assert await read_text(producer) == "".join(text)
        assert lost
        assert b'"body":"w' in lost[0]
        records = await stored_records(ctx, stream_id)
        assert [is_fence(record) for record in records] == [True] + [False] * chunks + [True]
        assert await ctx.has_existing_stream(stream_id) == "DONE"
