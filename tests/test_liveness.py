"""A producer that dies mid-reply does not leave readers hanging: live
producers heartbeat while idle, readers of a silent unfinished stream end with
StreamIncompleteError, and a later resumable_stream call takes it over."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from resumable_fast import ResumableStreamContext, StreamIncompleteError, _core
from resumable_fast.records import SequencedRecord, is_fence

from conftest import ContextFactory, S2Lite, make_context
from support import from_list, read_chunks, read_text, read_until_error

HERE = Path(__file__).parent
LIVENESS = 0.6  # seconds: heartbeats every 0.2 s


async def stored_records(ctx: ResumableStreamContext, stream_id: str) -> list[SequencedRecord]:
    """Every record of a finished stream, fences included."""
    records: list[SequencedRecord] = []
    session = ctx.backend.read_session(ctx.stream_name(stream_id), 0)
    try:
        async for batch in session:
            records += batch
            last = batch[-1]
            if is_fence(last) and last.get("body", "").startswith(("end-", "error-")):
                return records
    finally:
        await session.aclose()
    return records


async def abandoned_stream(ctx: ResumableStreamContext, stream_id: str, text: list[str]) -> None:
    """What a producer that died mid-reply leaves: its session fence and some
    data, no end."""
    backend = ctx.backend
    name = ctx.stream_name(stream_id)
    await backend.append(name, _core.fence_append_input("session-dead", "", 0))
    accumulator = _core.Accumulator(10, _core.MAX_METERED_BYTES, 5.0)
    pending = list(text)
    slot = accumulator.open("session-dead", 1, pending)
    for body, end_seq_num in accumulator.drain(slot):
        await backend.append(name, body, end_seq_num=end_seq_num)


async def test_idle_producer_heartbeats_and_readers_keep_waiting(
    new_context: ContextFactory, stream_id: str
) -> None:
    async def thinking() -> AsyncIterator[str]:
        yield "before "
        await asyncio.sleep(LIVENESS * 2.5)  # a model thinking, longer than the timeout
        yield "after"

    async with new_context(liveness_timeout=LIVENESS) as ctx:
        producer = await ctx.resumable_stream(stream_id, thinking)
        reader = await ctx.resume_stream(stream_id)
        produced, followed = await asyncio.gather(read_text(producer), read_text(reader))
        assert produced == followed == "before after"
        records = await stored_records(ctx, stream_id)
    session_token = records[0]["body"]
    heartbeats = [r for r in records[1:] if is_fence(r) and r.get("body") == session_token]
    assert len(heartbeats) >= 2


async def test_readers_of_an_abandoned_stream_end_with_a_typed_error(
    new_context: ContextFactory, stream_id: str
) -> None:
    async with new_context(liveness_timeout=LIVENESS) as ctx:
        await abandoned_stream(ctx, stream_id, ["half ", "a ", "reply"])
        started = time.monotonic()
        chunks, error = await read_until_error(await ctx.resume_stream(stream_id))
        waited = time.monotonic() - started
    assert "".join(chunks) == "half a reply"
    assert isinstance(error, StreamIncompleteError)
    assert LIVENESS * 0.9 <= waited < LIVENESS + 3


async def test_abandoned_stream_is_taken_over_and_continued(
    new_context: ContextFactory, stream_id: str
) -> None:
    async with new_context(liveness_timeout=LIVENESS) as ctx:
        await abandoned_stream(ctx, stream_id, ["half ", "a ", "reply"])
        await asyncio.sleep(LIVENESS * 1.5)
        # The caller had received 5 characters ("half ") before the producer died.
        taken = await ctx.resumable_stream(
            stream_id, lambda: from_list([", continued", " to the end"]), skip_characters=5
        )
        assert await read_text(taken) == "a reply, continued to the end"
        whole = "half a reply, continued to the end"
        assert await read_text(await ctx.resume_stream(stream_id)) == whole
        assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_a_heartbeating_producer_is_not_taken_over(
    new_context: ContextFactory, stream_id: str
) -> None:
    release = asyncio.Event()

    async def slow() -> AsyncIterator[str]:
        yield "mine "
        await release.wait()
        yield "only"

    called: list[bool] = []

    def intruder() -> AsyncIterator[str]:
        called.append(True)
        return from_list(["stolen"])

    async with new_context(liveness_timeout=LIVENESS) as ctx:
        producer = await ctx.resumable_stream(stream_id, slow)
        assert await read_text(producer, 1) == "mine "
        await asyncio.sleep(LIVENESS * 2)
        async with new_context(liveness_timeout=LIVENESS) as other:
            resumed = await other.resumable_stream(stream_id, intruder)
            release.set()
            assert await read_text(resumed) == "mine only"
        assert await read_text(producer) == "only"
    assert called == []


async def test_producer_process_killed_mid_reply(s2lite: S2Lite, stream_id: str) -> None:
    """SIGKILL, no end fence: readers end with the typed error within the
    liveness timeout, then a new producer takes over."""
    env = {**os.environ, **s2lite.env()}
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "producer_process.py"), stream_id, "2000", "0.005", env=env
    )
    try:
        async with make_context(s2lite, liveness_timeout=1.0) as ctx:
            for _ in range(300):
                if await ctx.has_existing_stream(stream_id):
                    break
                await asyncio.sleep(0.02)
            reader = await ctx.resume_stream(stream_id)
            first = await read_chunks(reader, 20, timeout=30)
            child.send_signal(signal.SIGKILL)
            await child.wait()
            started = time.monotonic()
            rest, error = await read_until_error(reader, timeout=30)
            assert isinstance(error, StreamIncompleteError)
            assert time.monotonic() - started < 1.0 + 3
            partial = "".join(first + rest)
            assert partial
            assert await ctx.has_existing_stream(stream_id) is True

            await asyncio.sleep(1.2)  # silent for longer than the liveness timeout
            taken = await ctx.resumable_stream(stream_id, lambda: from_list(["[continued]"]))
            assert await read_text(taken) == partial + "[continued]"
            assert await read_text(await ctx.resume_stream(stream_id)) == partial + "[continued]"
            assert await ctx.has_existing_stream(stream_id) == "DONE"
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
