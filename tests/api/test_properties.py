"""Property tests: whatever chunks a source yields (any Unicode, any sizes,
empty ones, chunks past S2's record limit), at whatever batch size and
linger, the producer's client, a live reader and a replay all see exactly
the same text, on both backends; ``skip_characters`` cuts exactly that many
characters. The Rust framing has its own property tests (``cargo test``)."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resumable_fast import ResumableStreamContext, create_resumable_stream_context

from conftest import S2Lite, make_context
from support import read_text

# Text S2 can store as-is (lone surrogates become U+FFFD, tested elsewhere).
TEXT = st.characters(codec="utf-8")
CHUNK = st.one_of(
    st.text(TEXT, max_size=8),
    st.text(TEXT, max_size=400),
    st.sampled_from(['"', "\\", "\n", "\r\n", "\x00", "\u2028", "😀", "\ud7ff", ""]),
)
# A chunk just over one record's 1 MiB: split on character boundaries.
HUGE = st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "é", "語", "😀"]), st.just(600_000))


async def chunks_of(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        await asyncio.sleep(0)
        yield item


def new_context(
    backend: str, s2lite: S2Lite, batch_size: int, linger_ms: float
) -> ResumableStreamContext:
    if backend == "s2":
        return make_context(s2lite, batch_size=batch_size, linger_ms=linger_ms)
    data_dir = tempfile.mkdtemp(prefix="prop-") if backend == "embedded-dir" else None
    return create_resumable_stream_context(
        backend="embedded", batch_size=batch_size, linger_ms=linger_ms, data_dir=data_dir
    )


async def round_trip(
    ctx: ResumableStreamContext, chunks: list[str], skip: int
) -> tuple[str, str, str, str]:
    stream_id = f"prop-{uuid.uuid4().hex}"
    producer = await ctx.resumable_stream(stream_id, lambda: chunks_of(chunks))
    live = await ctx.resume_stream(stream_id)
    produced, followed = await asyncio.gather(read_text(producer), read_text(live))
    replayed = await read_text(await ctx.resume_stream(stream_id))
    skipped = await read_text(await ctx.resume_stream(stream_id, skip_characters=skip))
    return produced, followed, replayed, skipped


@pytest.mark.parametrize("backend", ["s2", "embedded", "embedded-dir"])
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    chunks=st.lists(CHUNK, max_size=60),
    batch_size=st.integers(1, 15),
    linger_ms=st.sampled_from([0, 1, 5]),
    skip_share=st.floats(0, 1.2),
)
def test_any_chunks_round_trip_exactly(
    s2lite: S2Lite,
    backend: str,
    chunks: list[str],
    batch_size: int,
    linger_ms: float,
    skip_share: float,
) -> None:
    expected = "".join(chunks)
    skip = int(len(expected) * skip_share)

    async def check() -> None:
        async with new_context(backend, s2lite, batch_size, linger_ms) as ctx:
            produced, followed, replayed, skipped = await round_trip(ctx, chunks, skip)
        assert produced == expected
        assert followed == expected
        assert replayed == expected
        assert skipped == expected[skip:]

    asyncio.run(check())


@pytest.mark.parametrize("backend", ["s2", "embedded", "embedded-dir"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(st.one_of(CHUNK, HUGE), min_size=1, max_size=3).filter(
        lambda items: any(len(item) >= 600_000 for item in items)
    )
)
def test_chunks_past_the_record_limit_round_trip_exactly(
    s2lite: S2Lite, backend: str, chunks: list[str]
) -> None:
    expected = "".join(chunks)

    async def check() -> None:
        async with new_context(backend, s2lite, 10, 1) as ctx:
            produced, followed, replayed, _ = await round_trip(ctx, chunks, 0)
        assert produced == expected
        assert followed == expected
        assert replayed == expected

    asyncio.run(check())
