"""Readers of one stream in one process share one S2 read session
(``resumable_fast.fanout``): fewer requests, the same text for every reader,
bounded memory for late and slow readers, failures reaching every reader."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from resumable_fast import ResumableStreamContext, ResumableStreamError
from resumable_fast import fanout as fanout_module

from conftest import S2Lite, make_context, start_s2lite, stop_s2lite
from support import TestingStream, read_text, recorded_context


def words(count: int) -> list[str]:
    return [f"word{index} " for index in range(count)]


async def write_in_steps(source: TestingStream, text: list[str]) -> None:
    """Ten chunks at a time, a pause between: the feed gets many batches."""
    for start in range(0, len(text), 10):
        for chunk in text[start : start + 10]:
            source.write(chunk)
        await asyncio.sleep(0.02)


async def follow_live(
    ctx: ResumableStreamContext, stream_id: str, readers: int, text: list[str]
) -> list[str]:
    """``readers`` resumes of a live stream, half before and half after the
    first half of the text; each one's whole text."""
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    assert producer is not None
    early = [await ctx.resume_stream(stream_id) for _ in range(readers // 2)]
    reading = [asyncio.ensure_future(read_text(r, timeout=60)) for r in early]
    half = len(text) // 2
    await write_in_steps(source, text[:half])
    late = [await ctx.resume_stream(stream_id) for _ in range(readers - len(early))]
    reading += [asyncio.ensure_future(read_text(r, timeout=60)) for r in late]
    await write_in_steps(source, text[half:])
    source.close()
    assert await read_text(producer) == "".join(text)
    return list(await asyncio.gather(*reading))


@pytest.mark.parametrize("shared", [True, False])
async def test_readers_of_one_live_stream_share_one_session(
    s2lite: S2Lite, stream_id: str, shared: bool
) -> None:
    text = words(300)
    ctx, http = recorded_context(s2lite, share_read_sessions=shared)
    async with ctx:
        with http.recording() as sent:
            texts = await follow_live(ctx, stream_id, 200, text)
    assert texts == ["".join(text)] * 200
    sessions = sum(request.startswith(b"SESSION ") for request in sent)
    unary = sum(request.startswith(b"GET ") for request in sent)
    if shared:
        # One feed; a reopened session after S2 ends one is allowed.
        assert sessions <= 2
        assert unary <= 5
    else:
        assert sessions >= 100  # the comparison: one per reader (the late ones may not need one)


async def test_a_reader_older_than_the_window_reads_that_part_on_its_own(
    s2lite: S2Lite,
    stream_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "resumable_fast")
    monkeypatch.setattr(fanout_module, "MAX_WINDOW_BYTES", 1500)
    text = words(400)
    async with make_context(s2lite, batch_size=5) as ctx:
        texts = await follow_live(ctx, stream_id, 6, text)
    assert texts == ["".join(text)] * 6
    assert "older than its feed keeps" in caplog.text


async def test_a_slow_reader_goes_on_alone_and_holds_the_others_back_not(
    s2lite: S2Lite,
    stream_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "resumable_fast")
    monkeypatch.setattr(fanout_module, "MAX_WINDOW_BYTES", 200)
    text = words(400)
    async with make_context(s2lite, batch_size=5) as ctx:
        source = TestingStream()
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        slow = await ctx.resume_stream(stream_id)
        fast = await ctx.resume_stream(stream_id)
        source.write(text[0])
        # The slow reader joins, then reads nothing for a while.
        assert await asyncio.wait_for(slow.__anext__(), 30) == "word0 "
        await write_in_steps(source, text[1:])
        source.close()
        assert await read_text(fast, timeout=60) == "".join(text)
        assert await read_text(producer) == "".join(text)
        assert "word0 " + await read_text(slow, timeout=60) == "".join(text)
    assert "fell behind its feed" in caplog.text


async def test_the_feed_closes_when_its_last_reader_leaves(s2lite: S2Lite, stream_id: str) -> None:
    async with make_context(s2lite) as ctx:
        source = TestingStream()
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        readers = [await ctx.resume_stream(stream_id) for _ in range(3)]
        source.write("hello ")
        for reader in readers:
            assert await reader.__anext__() == "hello "
        shared = ctx.shared_reads
        assert shared is not None
        assert shared.feeds == 1
        for reader in readers:
            await reader.aclose()
        assert shared.feeds == 0
        source.close()
        assert await read_text(producer) == "hello "


async def test_a_failed_session_reaches_every_reader_as_a_typed_error(tmp_path: Path) -> None:
    server = start_s2lite(tmp_path)
    try:
        async with make_context(server, retry_deadline=1.0, liveness_timeout=None) as ctx:
            stream_id = "fanout-failure"
            source = TestingStream()
            producer = await ctx.resumable_stream(stream_id, source.readable)
            assert producer is not None
            readers = [await ctx.resume_stream(stream_id) for _ in range(5)]
            source.write("before ")
            for reader in readers:
                assert await reader.__anext__() == "before "
            stop_s2lite(server)
            for reader in readers:
                with pytest.raises(ResumableStreamError):
                    await asyncio.wait_for(reader.__anext__(), 30)
            source.close()
    finally:
        stop_s2lite(server)


def test_the_window_is_counted_in_metered_bytes() -> None:
    assert fanout_module.metered_bytes([{"seq_num": 0, "body": "abc"}]) == 8 + 3
    # UTF-8 bytes, not characters; a header costs 2 bytes and its name and value.
    record = {"seq_num": 1, "headers": [["", "fence"]], "body": "café"}
    assert fanout_module.metered_bytes([record]) == 8 + 2 + 5 + 5  # type: ignore[list-item]


async def test_stalled_readers_are_positions_in_one_bounded_window(
    s2lite: S2Lite,
    stream_id: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "resumable_fast")
    monkeypatch.setattr(fanout_module, "MAX_WINDOW_BYTES", 2000)
    text = [f"mot{index}é " for index in range(400)]
    async with make_context(s2lite, batch_size=5) as ctx:
        source = TestingStream()
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        stalled = [await ctx.resume_stream(stream_id) for _ in range(50)]
        source.write(text[0])
        for reader in stalled:
            assert await asyncio.wait_for(reader.__anext__(), 30) == text[0]
        await write_in_steps(source, text[1:])
        source.close()
        assert await read_text(producer) == "".join(text)
        await asyncio.sleep(0.2)
        assert ctx.shared_reads is not None
        feed = ctx.shared_reads.feed(ctx.stream_name(stream_id))
        assert feed is not None
        # One window for all 50, bounded in bytes (one batch may pass the bound).
        sizes = [size for _, size in feed.window]
        assert sum(sizes) == feed.window_bytes
        assert feed.window_bytes <= 2000 + max(sizes)
        assert [fanout_module.metered_bytes(records) for records, _ in feed.window] == sizes
        assert feed.readers == 50
        # Their batches left the window: each goes on from the backend, losing nothing.
        for reader in stalled:
            assert text[0] + await read_text(reader, timeout=60) == "".join(text)
    assert "fell behind its feed" in caplog.text


def test_a_reader_from_any_position_starts_at_the_batch_holding_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    feed = fanout_module.Feed(0)
    for numbers in ([0, 1, 2], [3, 4], [5]):
        feed.deliver([{"seq_num": n, "body": "x" * 10} for n in numbers])
    assert [feed.index_of(n) for n in range(7)] == [0, 0, 0, 1, 1, 2, 3]
    # Past the bound, the oldest batches leave (one is always kept); numbers stay.
    monkeypatch.setattr(fanout_module, "MAX_WINDOW_BYTES", 40)
    feed.deliver([{"seq_num": 6, "body": "x" * 10}])
    assert feed.first_index == 2
    assert feed.window_start == 5
    assert feed.window_bytes == 2 * 18
    assert [feed.index_of(n) for n in (5, 6, 7)] == [2, 3, 4]
