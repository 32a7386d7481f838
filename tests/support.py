"""Helpers shared by the tests: a writable source stream, bounded readers,
and an S2 context whose requests are recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from typing import Any

from resumable_fast import BatchSettings, ResumableStream, ResumableStreamContext, S2Config, _core
from resumable_fast.endpoints import Origin
from resumable_fast.http11 import ConnectFailed, HttpClient, Request, Response, StreamingResponse
from resumable_fast.records import Landing, SequencedRecord, is_fence
from resumable_fast.s2 import S2Client
from resumable_fast.s2_transport import DelegatingHttp, http_settings

from conftest import S2Lite

READ_TIMEOUT = 15.0


class TestingStream:
    """A source the test writes into, like Vercel's ``createTestingStream``."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self.pulled = 0
        self.closed_by_consumer = False

    def write(self, chunk: str) -> None:
        self._queue.put_nowait(chunk)

    def close(self) -> None:
        self._queue.put_nowait(None)

    def fail(self, error: BaseException) -> None:
        self._queue.put_nowait(error)

    async def readable(self) -> AsyncIterator[str]:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.pulled += 1
                yield item
        except (GeneratorExit, asyncio.CancelledError):
            self.closed_by_consumer = True
            raise


async def from_list(chunks: list[str], delay: float = 0.0) -> AsyncIterator[str]:
    for chunk in chunks:
        if delay:
            await asyncio.sleep(delay)
        yield chunk


async def read_chunks(
    stream: ResumableStream | None, max_reads: int | None = None, timeout: float = READ_TIMEOUT
) -> list[str]:
    """Read up to ``max_reads`` chunks (all when None), failing after ``timeout``."""
    assert stream is not None, "expected a stream, got None"
    chunks: list[str] = []

    async def read() -> None:
        while max_reads is None or len(chunks) < max_reads:
            try:
                chunks.append(await stream.__anext__())
            except StopAsyncIteration:
                return

    await asyncio.wait_for(read(), timeout)
    return chunks


async def read_text(
    stream: ResumableStream | None, max_reads: int | None = None, timeout: float = READ_TIMEOUT
) -> str:
    return "".join(await read_chunks(stream, max_reads, timeout))


async def read_until_error(
    stream: ResumableStream | None, timeout: float = READ_TIMEOUT
) -> tuple[list[str], BaseException | None]:
    """Read to the end; return the chunks and the error the stream ended with."""
    assert stream is not None, "expected a stream, got None"
    chunks: list[str] = []

    async def read() -> BaseException | None:
        try:
            async for chunk in stream:
                chunks.append(chunk)
        except Exception as exc:
            return exc
        return None

    error = await asyncio.wait_for(read(), timeout)
    return chunks, error


class RecordingHttp(DelegatingHttp):
    """An :class:`HttpClient` for an S2Client's ``http=``: notes what is sent
    while :meth:`recording` (``b"METHOD target"`` for each unary request, one
    per attempt, ``b"SESSION target"`` for each read session it opens), and
    loses an answer on its way back when told to (:meth:`lose_first_answer`)."""

    def __init__(self, inner: HttpClient) -> None:
        super().__init__(inner)
        self._sent: list[bytes] | None = None
        # (marker, without, where the lost request's body goes)
        self._losing: tuple[bytes, bytes, list[bytes]] | None = None

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response:
        if self._sent is not None:
            self._sent.append(request.method + b" " + request.target)
        answer = await self.inner.request(origin, request, idempotent=idempotent, timeout=timeout)
        body, losing = request.body, self._losing
        if losing is not None and body is not None:
            marker, without, lost = losing
            if marker in body and without not in body:
                self._losing = None
                lost.append(body)
                raise ConnectFailed("the answer was lost (test)")
        return answer

    def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        if self._sent is not None:
            self._sent.append(b"SESSION " + request.target)
        return self.inner.stream(origin, request, timeout=timeout)

    @contextmanager
    def recording(self) -> Iterator[list[bytes]]:
        """What is sent meanwhile."""
        sent: list[bytes] = []
        self._sent = sent
        try:
            yield sent
        finally:
            self._sent = None

    def lose_first_answer(self, marker: bytes, without: bytes = b"\0") -> list[bytes]:
        """The first request whose body holds ``marker`` (and not ``without``)
        lands, but its answer is lost on the way back: S2Client retries it.
        The list returned gets that request's body."""
        lost: list[bytes] = []
        self._losing = (marker, without, lost)
        return lost


def recorded_context(
    server: S2Lite, **options: Any
) -> tuple[ResumableStreamContext, RecordingHttp]:
    """A context on ``server`` as conftest's ``make_context`` makes one, with
    its options (``retry_deadline``, ``batch_size``, ``linger_ms`` and the
    context's own, ``meter_provider`` for both), and the :class:`RecordingHttp` its S2 client sends
    through."""
    config = S2Config.from_options(
        basin=server.basin,
        access_token="test-token-not-checked",
        account_endpoint=server.endpoint,
        basin_endpoint=server.endpoint,
        retry_deadline=options.pop("retry_deadline", None),
    )
    batching = BatchSettings.from_options(
        batch_size=options.pop("batch_size", None), linger_ms=options.pop("linger_ms", 5)
    )
    http = RecordingHttp(HttpClient(http_settings(config)))
    # The client counts its retries where the context's metrics go.
    client = S2Client(config, http=http, meter_provider=options.get("meter_provider"))
    return ResumableStreamContext(client, batching, **options), http


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 request from a fake server's connection: its head (up to
    the blank line) and its body (by ``content-length``)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


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
        await backend.append(name, body, Landing(end_seq_num))
