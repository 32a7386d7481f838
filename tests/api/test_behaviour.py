"""Stop, a departing client, failing sources, large and arbitrary text, many
streams at once, and two replicas in two OS processes, all on s2-lite."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from resumable_fast import (
    InvalidChunkError,
    ResumableStreamContext,
    StreamExistsError,
    StreamFailedError,
    StreamName,
)
from resumable_fast.records import NO_LANDING, Landing

from conftest import ContextFactory, S2Lite, make_context
from support import TestingStream, from_list, read_chunks, read_text, read_until_error

HERE = Path(__file__).parent.parent


@pytest.fixture(params=["s2", "embedded", "embedded-dir", "s2-tls"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """This module's suite also runs over TLS: s2-lite with a certificate
    from a private CA, given with ``verify=``."""
    name: str = request.param
    return name


async def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if await predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("same_context", [True, False])
async def test_stop_fences_producer_out(
    new_context: ContextFactory, ctx: ResumableStreamContext, stream_id: str, same_context: bool
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    reader = await ctx.resume_existing_stream(stream_id)
    source.write("before stop ")
    assert await read_text(producer, 1) == "before stop "
    assert await read_text(reader, 1) == "before stop "

    stopper = ctx if same_context else new_context()
    try:
        await stopper.stop_stream(stream_id)
    finally:
        if stopper is not ctx:
            await stopper.aclose()
    # Another replica's stop is only seen by the producer at its next append.
    source.write("after stop ")
    tail = await read_chunks(producer)
    assert tail in ([], ["after stop "])
    assert await read_chunks(reader) == []
    await wait_until(lambda: _true(source.closed_by_consumer))
    assert await ctx.has_existing_stream(stream_id) == "DONE"
    assert await read_text(await ctx.resume_stream(stream_id)) == "before stop "


async def _true(value: bool) -> bool:
    return value


async def test_producer_client_going_away_does_not_stop_persistence(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("one ")
    assert await read_text(producer, 1) == "one "
    assert producer is not None
    await producer.aclose()  # the page reloads
    for word in ("two ", "three ", "four"):
        source.write(word)
    # The reload comes while the reply is still going (once it has
    # finished, resumable_stream answers None).
    resumed = await ctx.resumable_stream(stream_id, source.readable)
    source.close()
    assert await read_text(resumed) == "one two three four"
    await wait_until(lambda: _is_done(ctx, stream_id))


async def _is_done(ctx: ResumableStreamContext, stream_id: str) -> bool:
    return await ctx.has_existing_stream(stream_id) == "DONE"


async def test_failing_source_reaches_client_and_readers(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    reader = await ctx.resume_existing_stream(stream_id)
    source.write("partial ")
    source.write("answer")
    source.fail(ValueError("model crashed"))

    received, client_error = await read_until_error(producer)
    assert received == ["partial ", "answer"]
    assert isinstance(client_error, ValueError)
    assert str(client_error) == "model crashed"

    resumed, reader_error = await read_until_error(reader)
    assert resumed == ["partial ", "answer"]
    assert isinstance(reader_error, StreamFailedError)
    assert reader_error.stream_id == stream_id
    assert reader_error.fence.startswith("error-")
    assert await ctx.has_existing_stream(stream_id) == "DONE"
    assert await ctx.resume_existing_stream(stream_id) is None


async def test_non_str_chunk_is_a_typed_source_failure(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    async def bad_source() -> AsyncIterator[str]:
        yield "fine "
        yield b"bytes"  # type: ignore[misc]

    producer = await ctx.resumable_stream(stream_id, bad_source)
    with pytest.raises(InvalidChunkError, match="bytes"):
        await read_chunks(producer)
    with pytest.raises(StreamFailedError):
        await read_chunks(await ctx.resume_stream(stream_id))
    assert await read_text(await ctx.resume_stream(stream_id), 1) == "fine "


async def test_make_stream_failure_ends_stream_with_error(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    def broken() -> AsyncIterator[str]:
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError, match="no model"):
        await ctx.resumable_stream(stream_id, broken)
    assert await ctx.has_existing_stream(stream_id) == "DONE"
    with pytest.raises(StreamFailedError):
        await read_chunks(await ctx.resume_stream(stream_id))


async def test_create_new_on_existing_stream_is_refused(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    producer = await ctx.create_new_resumable_stream(stream_id, lambda: from_list(["x"]))
    assert await read_chunks(producer) == ["x"]
    with pytest.raises(StreamExistsError):
        await ctx.create_new_resumable_stream(stream_id, lambda: from_list(["y"]))
    assert await read_chunks(await ctx.resume_stream(stream_id)) == ["x"]


def arbitrary_text(rng: random.Random, length: int) -> str:
    alphabet = [chr(c) for c in range(0, 0x80)] + list(
        "éßø€—\u201c\u201d\u2018\u2019😀🚀𝄞\u2028\u2029\ufeff中文"
    )
    return "".join(rng.choice(alphabet) for _ in range(length))


async def test_three_mib_chunks_and_arbitrary_unicode(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    rng = random.Random(1234)
    chunks = [
        arbitrary_text(rng, 50),
        "😀" * (3 * 1024 * 1024 // 4 + 7),  # 3 MiB of 4-byte characters
        '"quoted" \\back\\slash\\ \n\r\t\x00\x1f\x7f',
        "ü" * (3 * 1024 * 1024 // 2 + 1),
        *(arbitrary_text(rng, rng.randint(1, 40)) for _ in range(200)),
    ]
    producer = await ctx.resumable_stream(stream_id, lambda: from_list(chunks))
    # The source yields 7.5 MiB without waiting once, more than a client's
    # channel holds: the client goes on from the backend, where chunks over
    # 1 MiB are split into records, so only the text is compared.
    assert "".join(await read_chunks(producer, timeout=60)) == "".join(chunks)
    resumed = await read_text(await ctx.resume_stream(stream_id), timeout=60)
    assert resumed == "".join(chunks)


async def test_five_hundred_streams_at_once(ctx: ResumableStreamContext) -> None:
    count = 500
    ids = [f"many-{os.getpid()}-{random.getrandbits(64):x}-{i}" for i in range(count)]

    # The sources hold their second word until every reader is attached: a
    # loaded machine can take longer to open 500 readers than a source takes
    # to finish, and resume_existing_stream answers None for a finished stream.
    readers_attached = asyncio.Event()

    def words(i: int) -> list[str]:
        return [f"s{i}w{j} " for j in range(20)]

    async def gated(i: int) -> AsyncIterator[str]:
        for j, word in enumerate(words(i)):
            if j == 1:
                await readers_attached.wait()
            await asyncio.sleep(0.005)
            yield word

    producers = await asyncio.gather(
        *(ctx.resumable_stream(sid, lambda i=i: gated(i)) for i, sid in enumerate(ids))  # type: ignore[misc]
    )
    readers = await asyncio.gather(*(ctx.resume_existing_stream(sid) for sid in ids))
    readers_attached.set()
    produced, resumed = await asyncio.gather(
        asyncio.gather(*(read_chunks(p, timeout=120) for p in producers)),
        asyncio.gather(*(read_chunks(r, timeout=120) for r in readers)),
    )
    for i in range(count):
        assert produced[i] == words(i)
        assert resumed[i] == words(i)


async def test_producer_and_reader_in_two_processes(s2lite: S2Lite, stream_id: str) -> None:
    count, delay = 200, 0.005
    env = {**os.environ, **s2lite.env()}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "producer_process.py"),
        stream_id,
        str(count),
        str(delay),
        env=env,
    )
    try:
        async with make_context(s2lite) as reader_ctx:
            await wait_until(lambda: _in_progress(reader_ctx, stream_id), timeout=30)
            reader = await reader_ctx.resume_existing_stream(stream_id)
            text = await read_text(reader, timeout=60)
        assert await asyncio.wait_for(child.wait(), 30) == 0
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    sys.path.insert(0, str(HERE))
    from producer_process import token_text

    assert text == "".join(token_text(i) for i in range(count))


async def _in_progress(ctx: ResumableStreamContext, stream_id: str) -> bool:
    return await ctx.has_existing_stream(stream_id) is True


async def test_lone_surrogate_is_stored_as_replacement_character(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    chunks = ["before ", "bad \ud800 half", " after"]
    producer = await ctx.resumable_stream(stream_id, lambda: from_list(chunks))
    assert await read_chunks(producer) == chunks
    assert await read_text(await ctx.resume_stream(stream_id)) == "before bad \ufffd half after"


async def test_skip_characters_applies_to_every_kind_of_stream(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    chunks = ["ab", "cd", "ef"]
    producer = await ctx.resumable_stream(stream_id, lambda: from_list(chunks), 3)
    assert await read_text(producer) == "def"
    assert await read_text(await ctx.resume_stream(stream_id, skip_characters=5)) == "f"
    assert await read_text(await ctx.resume_stream(stream_id, skip_characters=9)) == ""
    with pytest.raises(ValueError, match="skip_characters"):
        await ctx.resume_stream(stream_id, skip_characters=-1)


async def test_long_stream_replays_exactly_while_live_and_after(
    new_context: ContextFactory, stream_id: str
) -> None:
    """Thousands of records: the catch-up reads in parallel ranges, then follows."""
    chunks = [f"{i}," for i in range(4500)]
    async with new_context(batch_size=1000) as ctx:
        source = TestingStream()
        producer = await ctx.resumable_stream(stream_id, source.readable)
        for chunk in chunks[:3000]:
            source.write(chunk)
        assert await read_chunks(producer, max_reads=3000) == chunks[:3000]
        live = await ctx.resume_existing_stream(stream_id)
        for chunk in chunks[3000:]:
            source.write(chunk)
        source.close()
        assert await read_chunks(live, timeout=60) == chunks
        assert await read_chunks(await ctx.resume_stream(stream_id), timeout=60) == chunks


async def test_batches_queued_behind_an_append_go_out_together(
    new_context: ContextFactory, stream_id: str
) -> None:
    """With batch_size 1 every chunk is its own batch; those that pile up while an
    append is in flight are merged into one append, records unchanged."""
    chunks = [f"c{i} " for i in range(300)]
    async with new_context(batch_size=1) as ctx:
        appends = 0
        append = ctx.backend.append

        async def counting_append(
            name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
        ) -> None:
            nonlocal appends
            appends += 1
            await append(name, append_input, landing)

        ctx.backend.append = counting_append  # type: ignore[method-assign]
        producer = await ctx.resumable_stream(stream_id, lambda: from_list(chunks))
        assert await read_chunks(producer, timeout=60) == chunks
        assert appends < len(chunks) / 2, f"{appends} appends for {len(chunks)} batches"
        assert await read_chunks(await ctx.resume_stream(stream_id), timeout=60) == chunks
