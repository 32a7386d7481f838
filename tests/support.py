"""Helpers shared by the tests: a writable source stream and bounded readers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from resumable_fast import ResumableStream, ResumableStreamContext
from resumable_fast.s2 import S2Client

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


@contextmanager
def sent_requests(ctx: ResumableStreamContext) -> Iterator[list[bytes]]:
    """What the context's S2 client sends meanwhile: ``b"METHOD target"`` for
    each unary request (one per attempt), ``b"SESSION target"`` for each read
    session it opens."""
    backend = ctx.backend
    assert isinstance(backend, S2Client)
    send, open_stream = backend._send, backend._http.stream
    sent: list[bytes] = []

    async def recording_send(method: str, endpoint: Any, path: str, *rest: Any) -> Any:
        sent.append(f"{method} {path}".encode())
        return await send(method, endpoint, path, *rest)

    def recording_stream(origin: Any, request: Any, **options: Any) -> Any:
        sent.append(b"SESSION " + request.target)
        return open_stream(origin, request, **options)

    backend._send = recording_send  # type: ignore[method-assign,assignment]
    backend._http.stream = recording_stream  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        backend._send = send  # type: ignore[method-assign]
        backend._http.stream = open_stream  # type: ignore[method-assign]


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
