"""Edges a review found (issue 14): each test here failed before its fix."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from resumable_fast import (
    EmbeddedBackend,
    EmbeddedStore,
    InvalidArgumentError,
    ResumableStreamContext,
    ResumableStreamError,
    S2Config,
    S2ConnectionError,
    S2Error,
    SqliteStore,
)
from resumable_fast import producer as producer_module
from resumable_fast.config import BatchSettings
from resumable_fast.records import NO_LANDING, Landing, StreamName, is_fence
from resumable_fast.s2 import S2Client
from resumable_fast.sqlite_store import DATABASE_FILE_NAME

from conftest import S2Lite
from support import (
    TestingStream,
    abandoned_stream,
    from_list,
    read_text,
    recorded_context,
    stored_records,
)


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
    backend = ctx.backend
    append = backend.append

    async def away_for_error_fences(
        name: StreamName, body: bytes, landing: Landing = NO_LANDING
    ) -> None:
        if b'"error-' in body:
            raise S2ConnectionError("S2 unreachable (test)")
        await append(name, body, landing)

    monkeypatch.setattr(backend, "append", away_for_error_fences)

    class ProviderDown(Exception):
        pass

    def make_stream() -> Any:
        raise ProviderDown("the provider is down")

    with pytest.raises(ProviderDown):
        await ctx.create_new_resumable_stream(stream_id, make_stream)


async def test_stop_retried_after_a_lost_answer_appends_one_fence(
    s2lite: S2Lite, stream_id: str
) -> None:
    """The stop fence lands but its answer is lost: the retry is recognised,
    and the stream holds one end fence."""
    ctx, http = recorded_context(s2lite, retry_deadline=10)
    async with ctx:
        producer = await ctx.resumable_stream(stream_id, TestingStream().readable)
        assert producer is not None
        lost = http.lose_first_answer(b'"end-')
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


class SessionEndpoint:
    """A stand-in for S2's records endpoint on loopback: an empty stream to
    catch up on, then read sessions answered by ``session_answer``."""

    def __init__(self, session_answer: bytes) -> None:
        self.session_answer = session_answer
        self.sessions = 0
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                target = head.split(" ", 2)[1]
                if "text/event-stream" in head:
                    self.sessions += 1
                    writer.write(self.session_answer)
                elif target.endswith("/tail"):
                    body = b'{"tail":{"seq_num":0,"timestamp":0}}'
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                    )
                else:  # a catch-up read at the tail
                    body = b'{"tail":{"seq_num":0,"timestamp":0}}'
                    writer.write(
                        b"HTTP/1.1 416 X\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


ERROR_EVENT = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    b'3f\r\nevent: error\ndata: {"code":"internal","message":"try again"}\n\n\r\n0\r\n\r\n'
)
CLEAN_END = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize(
    ("answer", "error"),
    [(ERROR_EVENT, S2Error), (CLEAN_END, S2ConnectionError)],
    ids=["error-event", "sessions-ending-at-once"],
)
async def test_read_sessions_back_off_on_error_events_and_sessions_ending_at_once(
    answer: bytes, error: type[Exception]
) -> None:
    """An ``event: error`` is retried like a failed request, and a server
    that ends every session at once gets a backoff, not a hot loop; both
    give up with a typed error at the retry deadline."""
    endpoint = SessionEndpoint(answer)
    endpoint.server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
    client = S2Client(
        S2Config(
            basin="edges-test-basin",
            account_endpoint=endpoint.url,
            basin_endpoint=endpoint.url,
            retry_deadline=1.0,
        )
    )
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def follow() -> None:
        async for _ in client.read_session(StreamName("s"), 0):
            pass

    try:
        with pytest.raises(error):
            await asyncio.wait_for(follow(), 10)
    finally:
        await client.aclose()
        endpoint.server.close()
    assert loop.time() - began < 5
    assert 2 <= endpoint.sessions < 60


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"records": 3}', b'{"records": [{"body": "x"}]}', b"[]"],
)
async def test_malformed_answers_from_s2_are_typed_errors(body: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = S2Client(S2Config(basin="edges-test-basin", account_endpoint=url, basin_endpoint=url))
    try:
        with pytest.raises(S2Error, match="not as its API specifies"):
            await client.read(StreamName("s"), seq_num=0)
        with pytest.raises(S2Error, match="not as its API specifies"):
            await client.check_tail(StreamName("s"))
    finally:
        await client.aclose()
        server.close()


async def test_streams_read_after_their_context_closed_raise_a_typed_error(
    new_context: Any, backend_name: str, stream_id: str
) -> None:
    ctx = new_context()
    source = TestingStream()
    producer = await ctx.resumable_stream(stream_id, source.readable)
    source.write("kept")
    source.close()
    assert await read_text(producer) == "kept"
    resumed = await ctx.resume_stream(stream_id)
    await ctx.aclose()
    with pytest.raises(ResumableStreamError, match="closed"):
        await ctx.resume_stream(stream_id)
    if backend_name == "embedded":
        # The store outlives its contexts, as S2 does.
        assert await read_text(resumed) == "kept"
    else:
        # The context's HTTP client (or its data_dir's database) is closed
        # (was: a bare RuntimeError).
        with pytest.raises(ResumableStreamError, match="closed"):
            await read_text(resumed)


async def test_a_claim_retried_after_a_lost_answer_is_still_ours(
    s2lite: S2Lite, stream_id: str
) -> None:
    ctx, http = recorded_context(s2lite, retry_deadline=10)
    async with ctx:
        lost = http.lose_first_answer(b'"session-')
        producer = await ctx.create_new_resumable_stream(
            stream_id, lambda: from_list(["claimed ", "once"])
        )
        assert lost
        assert await read_text(producer) == "claimed once"
        assert await read_text(await ctx.resume_stream(stream_id)) == "claimed once"


async def test_a_takeover_retried_after_a_lost_answer_is_still_ours(
    s2lite: S2Lite, stream_id: str
) -> None:
    liveness = 0.6
    ctx, http = recorded_context(s2lite, retry_deadline=10, liveness_timeout=liveness)
    async with ctx:
        await abandoned_stream(ctx, stream_id, ["half ", "a ", "reply"])
        await asyncio.sleep(liveness * 1.5)
        # The takeover's fence, not the claim at seq 0 (with token "") that
        # resumable_stream tries first and S2 refuses.
        lost = http.lose_first_answer(b'"session-', without=b'"fencing_token":""')
        taken = await ctx.resumable_stream(stream_id, lambda: from_list([", continued"]))
        assert lost
        assert await read_text(taken) == "half a reply, continued"
        assert await ctx.has_existing_stream(stream_id) == "DONE"


def private_embedded_context(retention_seconds: float) -> ResumableStreamContext:
    return ResumableStreamContext(
        EmbeddedBackend(EmbeddedStore(retention_seconds=retention_seconds))
    )


async def test_asking_about_streams_that_do_not_exist_stores_nothing(tmp_path: Path) -> None:
    """An app's resume route takes ids from anyone: unknown ids cost nothing,
    in memory or in a data_dir."""
    store = EmbeddedStore(retention_seconds=3600)
    async with ResumableStreamContext(EmbeddedBackend(store)) as ctx:
        tracemalloc.start()
        try:
            for _ in range(20_000):
                stream_id = secrets.token_hex(8)
                assert await ctx.has_existing_stream(stream_id) is None
                assert await ctx.resume_existing_stream(stream_id) is None
            grown, _ = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(store.stream_names()) == 0
        assert grown < 256 * 1024
    async with ResumableStreamContext(EmbeddedBackend(SqliteStore(tmp_path))) as ctx:
        for _ in range(2_000):
            stream_id = secrets.token_hex(8)
            assert await ctx.has_existing_stream(stream_id) is None
            assert await ctx.resume_existing_stream(stream_id) is None
    with contextlib.closing(sqlite3.connect(tmp_path / DATABASE_FILE_NAME)) as database:
        assert database.execute("SELECT count(*) FROM streams").fetchone() == (0,)


async def test_an_unfinished_stream_whose_producer_died_is_dropped_after_the_retention() -> None:
    async with private_embedded_context(0.2) as ctx:
        await abandoned_stream(ctx, "abandoned", ["half ", "a reply"])
        assert await ctx.has_existing_stream("abandoned") is True
        await asyncio.sleep(0.3)
        assert await ctx.has_existing_stream("abandoned") is None


async def test_a_stream_a_reader_waited_on_is_dropped_once_the_reader_is_gone() -> None:
    store = EmbeddedStore(retention_seconds=0.2)
    async with ResumableStreamContext(EmbeddedBackend(store)) as ctx:
        producer = await ctx.resumable_stream("finished", lambda: from_list(["done"]))
        assert await read_text(producer) == "done"
        name = ctx.stream_name("finished")
        last = await ctx.backend.last_record(name)
        assert last is not None
        # A reader at the end, waiting for a next record (past the tail a wait
        # is refused, as S2 refuses such a read).
        waiter = store.wait_for_records(name, last["seq_num"] + 1)
        assert waiter is not None
        await asyncio.sleep(0.3)
        assert await ctx.has_existing_stream("finished") == "DONE"  # kept for its reader
        waiter.cancel()
        await asyncio.sleep(0.5)
        assert await ctx.has_existing_stream("finished") is None


@pytest.mark.parametrize("skip", [0, 150, 20_000])
async def test_a_client_that_falls_behind_goes_on_from_the_backend(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch, skip: int
) -> None:
    """A producer's client that stops reading does not have the reply
    buffered for it past a bound: it goes on from the backend, exactly."""
    monkeypatch.setattr(producer_module, "MAX_CLIENT_BUFFER_CHARS", 10_000)
    chunks = [f"{index:05d}" + "x" * 95 for index in range(500)]  # 50,000 characters

    async def source() -> AsyncIterator[str]:
        for chunk in chunks:
            await asyncio.sleep(0)
            yield chunk

    stream = await ctx.resumable_stream(stream_id, source, skip_characters=skip)
    assert stream is not None
    producer = ctx.producer(stream_id)
    assert producer is not None
    channel = producer.channel
    first = await read_text(stream, 1)
    for _ in range(500):  # the client reads nothing while the source runs on
        if await ctx.has_existing_stream(stream_id) == "DONE":
            break
        await asyncio.sleep(0.01)
    assert not channel.holds_chunks  # what it had buffered was let go
    assert channel.overflowed
    rest = await read_text(stream)
    assert first + rest == "".join(chunks)[skip:]


async def test_data_dir_writes_run_off_the_event_loop(tmp_path: Path) -> None:
    """A stalled database does not stall the loop: while another process
    holds the write lock, the producer's client gets every chunk and the
    loop keeps ticking; the appends commit once the lock is free, and the
    text reloads exactly."""
    chunks = [f"chunk {index} " for index in range(30)]
    batching = BatchSettings(batch_size=1, linger_ms=0)
    async with ResumableStreamContext(EmbeddedBackend(SqliteStore(tmp_path)), batching) as ctx:
        other_process = sqlite3.connect(tmp_path / DATABASE_FILE_NAME, isolation_level=None)
        other_process.execute("BEGIN IMMEDIATE")  # the write lock, held
        try:
            ticks = 0
            started = time.monotonic()
            claim = asyncio.ensure_future(
                ctx.create_new_resumable_stream("on-disk", lambda: from_list(chunks))
            )
            while time.monotonic() - started < 0.3:
                await asyncio.sleep(0.01)
                ticks += 1
            assert not claim.done()  # its transaction waits for the lock
            assert ticks >= 10  # the loop did not
        finally:
            other_process.execute("ROLLBACK")
            other_process.close()
        stream = await asyncio.wait_for(claim, 10)
        assert await read_text(stream) == "".join(chunks)
    async with ResumableStreamContext(EmbeddedBackend(SqliteStore(tmp_path))) as fresh:
        assert await read_text(await fresh.resume_stream("on-disk")) == "".join(chunks)
