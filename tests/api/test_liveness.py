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

from resumable_fast import StreamIncompleteError
from resumable_fast.records import is_fence

from conftest import ContextFactory, S2Lite, make_context
from support import (
    abandoned_stream,
    from_list,
    read_chunks,
    read_text,
    read_until_error,
    stored_records,
)

HERE = Path(__file__).parent.parent
LIVENESS = 0.6  # seconds: heartbeats every 0.2 s


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
