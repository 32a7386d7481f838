"""Whole request/answer exchanges over kept-alive HTTP/1.1 connections.

Most of the library's traffic is short calls whose answer is read whole:
appends (one per batch), tail checks and unary reads. Each costs more in the
client's own machinery than on the wire, so this path is built for them
alone. A connection is an :class:`asyncio.Protocol`: the answer is parsed as
its bytes arrive and handed over through one future, without a stream reader
in between; only the head fields the exchange needs are looked at, and
deadlines are kept by one sweeper per client rather than a timer per request
(``make bench-transport``).

Errors are httpx's types (``httpx.ConnectError``, ``httpx.ReadTimeout``,
``httpx.RemoteProtocolError``, ...), as for requests sent through httpx.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import NamedTuple

import httpx

from .transport import (
    MAX_HEAD_BYTES,
    Framing,
    IdleConnections,
    Origin,
    StaleConnection,
    connect_errors,
    default_ssl_context,
    parse_framing,
    timeout_after,
)

__all__ = ["UnaryClient", "UnaryResponse"]

# Deadlines are checked ten times per request timeout, but not more often
# than every _MIN_SWEEP_INTERVAL nor less often than every _MAX_SWEEP_INTERVAL
# seconds, so an exchange fails at most 10% (or a second) late.
_MIN_SWEEP_INTERVAL = 0.01
_MAX_SWEEP_INTERVAL = 1.0


class UnaryResponse(NamedTuple):
    """A whole answer: its status, its head as received, and its body."""

    status: int
    head: bytes
    content: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, by its lowercase name."""
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name:
                return value.strip()
        return None


class _UnaryConnection(asyncio.Protocol):
    """One kept-alive connection, one exchange at a time."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.deadline = 0.0
        self.timeout = 0.0
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[UnaryResponse] | None = None
        self._head: Framing | None = None
        self._raw_head = b""
        self._chunks: list[bytes] = []
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def is_usable(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def exchange(
        self, payload: bytes, deadline: float, timeout: float
    ) -> asyncio.Future[UnaryResponse]:
        """Sends one request; the future gets its whole answer."""
        assert self._transport is not None
        answer: asyncio.Future[UnaryResponse] = asyncio.get_running_loop().create_future()
        self._answer = answer
        self.deadline = deadline
        self.timeout = timeout
        self._head = None
        self._chunks = []
        self._transport.write(payload)
        return answer

    def time_out(self, message: str) -> None:
        self._fail(httpx.ReadTimeout(message))

    def data_received(self, data: bytes) -> None:
        if self._answer is None:
            # Bytes nobody asked for: the connection cannot be trusted again.
            self.close()
            return
        self._buffer += data
        try:
            self._parse()
        except httpx.RemoteProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        answer = self._answer
        if answer is None:
            return
        head = self._head
        if head is not None and head.length is None and not head.chunked:
            # A body delimited by the end of the connection.
            self._settle(UnaryResponse(head.status, self._raw_head, bytes(self._buffer)))
        elif head is None and not self._buffer:  # not a byte of an answer
            stale = StaleConnection()
            stale.__cause__ = exc
            self._fail(stale)
        elif head is None:
            self._fail(httpx.RemoteProtocolError("truncated response head"))
        else:
            self._fail(httpx.ReadError(f"connection lost mid-answer: {exc!r}"))

    def _settle(self, response: UnaryResponse) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(response)

    def _fail(self, error: BaseException) -> None:
        answer, self._answer = self._answer, None
        self.close()
        if answer is not None and not answer.done():
            answer.set_exception(error)

    def _parse(self) -> None:
        buffer = self._buffer
        head = self._head
        if head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise httpx.RemoteProtocolError("response head too large")
                return
            self._raw_head = bytes(buffer[:end])
            head = self._head = parse_framing(self._raw_head)
            del buffer[: end + 4]
        if head.chunked:
            if not self._take_chunks():
                return
            content = b"".join(self._chunks)
        elif head.length is None:
            return  # the body runs until the connection closes
        elif len(buffer) < head.length:
            return
        else:
            content = bytes(buffer[: head.length])
            del buffer[: head.length]
        if not head.reusable or buffer:
            self.close()
        self._settle(UnaryResponse(head.status, self._raw_head, content))

    def _take_chunks(self) -> bool:
        """Moves the whole chunks of a chunked body out of the buffer; True
        once the last chunk and the trailers are in."""
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return False
            try:
                size = int(bytes(buffer[:line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise httpx.RemoteProtocolError(
                    f"bad chunk size line {bytes(buffer[:40])!r}"
                ) from None
            if size == 0:
                # The trailer section (ignored) ends with an empty line.
                if buffer.startswith(b"\r\n", line_end + 2):
                    del buffer[: line_end + 4]
                    return True
                trailers_end = buffer.find(b"\r\n\r\n", line_end)
                if trailers_end < 0:
                    return False
                del buffer[: trailers_end + 4]
                return True
            start = line_end + 2
            if len(buffer) < start + size + 2:
                return False
            self._chunks.append(bytes(buffer[start : start + size]))
            del buffer[: start + size + 2]


class UnaryClient:
    """Kept-alive connections per origin, in an O(1) stack, for whole
    request/answer exchanges."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 512,
        max_in_flight: int = 256,
    ) -> None:
        self._ssl_context = ssl_context
        # Requests beyond this many wait for one to finish: thousands of
        # streams flushing at once then share a few hundred connections
        # instead of opening one each (each costs a connect, memory, and
        # server work).
        self._slots = asyncio.Semaphore(max_in_flight)
        self._idle: IdleConnections[_UnaryConnection] = IdleConnections(max_idle_per_origin)
        self._busy: set[_UnaryConnection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_interval = _MAX_SWEEP_INTERVAL

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return self._ssl_context

    async def unary(
        self, origin: Origin, payload: bytes, *, idempotent: bool, timeout: float
    ) -> UnaryResponse:
        """Send one serialized request (head and body) and read its whole
        answer, within ``timeout`` seconds (checked ten times per timeout).

        A request that fails on a kept-alive connection before any answer
        arrived is sent again on a new connection when it is ``idempotent``;
        otherwise the caller gets ``httpx.RemoteProtocolError`` and decides.
        """
        if self._idle.closed:
            raise RuntimeError("the client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._sweep_interval = min(self._sweep_interval, max(timeout / 10, _MIN_SWEEP_INTERVAL))
        async with self._slots:
            connection = self._idle.take(origin)
            if connection is not None:
                try:
                    return await self._exchange(connection, payload, deadline, timeout)
                except StaleConnection as stale:
                    if not idempotent:
                        raise httpx.RemoteProtocolError(
                            "server closed a kept-alive connection"
                        ) from stale.__cause__
            connection = await self._connect(origin, deadline - loop.time())
            try:
                return await self._exchange(connection, payload, deadline, timeout)
            except StaleConnection as stale:
                raise httpx.RemoteProtocolError(
                    "server closed the connection without answering"
                ) from stale.__cause__

    async def _connect(self, origin: Origin, timeout: float) -> _UnaryConnection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        with connect_errors(host, port):
            async with timeout_after(max(timeout, 0.0)):
                _, connection = await loop.create_connection(
                    lambda: _UnaryConnection(origin),
                    host,
                    port,
                    ssl=self._ssl() if scheme == "https" else None,
                )
        return connection

    async def _exchange(
        self, connection: _UnaryConnection, payload: bytes, deadline: float, timeout: float
    ) -> UnaryResponse:
        answer = connection.exchange(payload, deadline, timeout)
        busy = self._busy
        busy.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            response = await answer
        except BaseException:
            connection.close()  # an answer may still be on its way
            raise
        finally:
            busy.discard(connection)
        self._idle.give_back(connection)
        return response

    async def _sweep(self) -> None:
        """Fails the exchanges whose deadline has passed, while any is in flight."""
        loop = asyncio.get_running_loop()
        try:
            while self._busy:
                await asyncio.sleep(self._sweep_interval)
                now = loop.time()
                for connection in [c for c in self._busy if c.deadline <= now]:
                    connection.time_out(f"no answer within {connection.timeout:g} s")
        finally:
            self._sweeper = None

    async def aclose(self) -> None:
        self._idle.close()
        for connection in list(self._busy):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
