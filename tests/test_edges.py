"""Edges a review found (issue 14): each test here failed before its fix."""

from __future__ import annotations

from typing import Any

import pytest

from resumable_fast import (
    InvalidArgumentError,
    ResumableStreamContext,
    S2ConnectionError,
)
from resumable_fast.http11 import ConnectFailed
from resumable_fast.records import is_fence
from resumable_fast.s2 import S2Client
from test_liveness import stored_records

from conftest import S2Lite, make_context
from support import TestingStream, read_text


@pytest.mark.parametrize("skip", [-1, "3", 1.5, True])
async def test_a_bad_skip_characters_is_a_typed_error(
    ctx: ResumableStreamContext, stream_id: str, skip: Any
) -> None:
    for call in (ctx.resume_stream, ctx.resume_existing_stream):
        with pytest.raises(InvalidArgumentError, match="skip_characters"):
            await call(stream_id, skip_characters=skip)
    with pytest.raises(InvalidArgumentError):
        await ctx.resumable_stream(stream_id, TestingStream().readable, skip_characters=skip)
    # Still what a caller catching the builtins expects.
    with pytest.raises(ValueError, match="skip_characters"):
        await ctx.resume_stream(stream_id, skip_characters=skip)


async def test_a_source_that_cannot_be_made_keeps_its_own_error_when_s2_is_away(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make_stream raises while S2 is away: the caller gets make_stream's
    exception, not the connection error of the error fence behind it."""
    backend = ctx._backend
    append = backend.append

    async def away_for_error_fences(name: str, body: bytes, **options: Any) -> None:
        if b'"error-' in body:
            raise S2ConnectionError("S2 unreachable (test)")
        await append(name, body, **options)

    monkeypatch.setattr(backend, "append", away_for_error_fences)

    class ProviderDown(Exception):
        pass

    def make_stream() -> Any:
        raise ProviderDown("the provider is down")

    with pytest.raises(ProviderDown):
        await ctx.create_new_resumable_stream(stream_id, make_stream)


async def test_stop_retried_after_a_lost_answer_appends_one_fence(
    s2lite: S2Lite, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop fence lands but its answer is lost: the retry is recognised,
    and the stream holds one end fence."""
    async with make_context(s2lite, retry_deadline=10) as ctx:
        producer = await ctx.resumable_stream(stream_id, TestingStream().readable)
        assert producer is not None
        backend = ctx._backend
        assert isinstance(backend, S2Client)
        send = backend._send
        lost: list[bytes] = []

        async def lose_the_first_stop_answer(*args: Any) -> tuple[int, bytes, float | None]:
            answer = await send(*args)
            content = args[-1]
            if content is not None and b'"end-' in content and not lost:
                lost.append(content)
                raise ConnectFailed("the answer was lost (test)")
            return answer

        monkeypatch.setattr(backend, "_send", lose_the_first_stop_answer)
        await ctx.stop_stream(stream_id)
        assert lost
        assert await read_text(producer) == ""
        records = await stored_records(ctx, stream_id)
    end_fences = [r for r in records if is_fence(r) and r.get("body", "").startswith("end-")]
    assert len(end_fences) == 1


async def test_stopping_a_finished_stream_appends_nothing(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("done")
    source.close()
    assert await read_text(producer) == "done"
    before = await stored_records(ctx, stream_id)
    await ctx.stop_stream(stream_id)
    assert await stored_records(ctx, stream_id) == before
