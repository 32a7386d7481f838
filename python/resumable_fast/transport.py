"""A lean HTTP/1.1 transport for httpx, made for many concurrent streams.

httpcore's default pool re-scans every queued request against every
connection whenever a request starts or ends, which grows with the square of
the load: with hundreds of concurrent streams (each read session holds a
connection) it costs more CPU than the requests themselves. This transport
keeps a LIFO stack of idle keep-alive connections per origin, so taking and
returning a connection is O(1), writes each request in one syscall, and reads
responses with asyncio's stream reader.

It plugs in below :class:`httpx.AsyncClient`, so requests, responses,
timeouts and errors keep httpx's types (``httpx.ConnectError``,
``httpx.ReadTimeout``, ...). The library sends its read sessions through it;
the short request/answer calls that make up most of the traffic (appends,
unary reads) skip httpx's models altogether (:mod:`resumable_fast.unary`).
"""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import httpx

__all__ = [
    "MAX_HEAD_BYTES",
    "Framing",
    "IdleConnections",
    "Origin",
    "PooledHTTP11Transport",
    "StaleConnection",
    "connect_errors",
    "default_ssl_context",
    "parse_framing",
    "timeout_after",
]

Origin = tuple[str, str, int]
"""``(scheme, host, port)``."""
_NO_BODY_STATUSES = frozenset({204, 304})
MAX_HEAD_BYTES = 64 * 1024


def timeout_after(seconds: float | None) -> AbstractAsyncContextManager[Any]:
    if seconds is None:
        return nullcontext()
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _LegacyTimeout(seconds)  # pragma: no cover - Python 3.10 only


class _LegacyTimeout:  # pragma: no cover - Python 3.10 only
    """``asyncio.timeout`` for Python 3.10: cancels the task when time is up."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._expired = True
            task.cancel()

        self._handle = loop.call_later(self._seconds, expire)

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        assert self._handle is not None
        self._handle.cancel()
        if self._expired and exc_type is asyncio.CancelledError:
            raise TimeoutError
        return False


def default_ssl_context() -> ssl.SSLContext:
    """Verifies servers against certifi's CA bundle."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


@contextmanager
def connect_errors(host: str, port: int) -> Iterator[None]:
    """Raises a failed or timed-out connect as httpx's error for it."""
    try:
        yield
    except TimeoutError:
        raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
    except OSError as exc:
        raise httpx.ConnectError(f"connecting to {host}:{port} failed: {exc!r}") from None


class _Reusable(Protocol):
    @property
    def origin(self) -> Origin: ...

    def is_usable(self) -> bool: ...

    def close(self) -> None: ...


ConnectionT = TypeVar("ConnectionT", bound=_Reusable)


class IdleConnections(Generic[ConnectionT]):
    """Kept-alive connections per origin, last given back first out, so
    taking one and giving it back are O(1)."""

    def __init__(self, max_per_origin: int) -> None:
        self._max_per_origin = max_per_origin
        self._stacks: dict[Origin, list[ConnectionT]] = {}
        self.closed = False

    def take(self, origin: Origin) -> ConnectionT | None:
        stack = self._stacks.get(origin)
        while stack:
            connection = stack.pop()
            if connection.is_usable():
                return connection
            connection.close()
        return None

    def give_back(self, connection: ConnectionT) -> None:
        """Keeps the connection for reuse, or closes it when it cannot be
        reused or there are enough."""
        stack = self._stacks.setdefault(connection.origin, [])
        if self.closed or len(stack) >= self._max_per_origin or not connection.is_usable():
            connection.close()
        else:
            stack.append(connection)

    def close(self) -> None:
        self.closed = True
        for stack in self._stacks.values():
            for connection in stack:
                connection.close()
        self._stacks.clear()


class _Connection:
    __slots__ = ("origin", "reader", "writer")

    def __init__(
        self, origin: Origin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer

    def is_usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


async def _read_chunked(
    reader: asyncio.StreamReader, read_timeout: float | None
) -> AsyncIterator[bytes]:
    while True:
        async with timeout_after(read_timeout):
            size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
        if size == 0:
            async with timeout_after(read_timeout):
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass  # trailers, ignored
            return
        async with timeout_after(read_timeout):
            data = await reader.readexactly(size + 2)
        yield data[:-2]


class _ResponseBody(httpx.AsyncByteStream):
    """The body of one response; gives its connection back once fully read."""

    def __init__(
        self,
        transport: PooledHTTP11Transport,
        connection: _Connection,
        request: httpx.Request,
        *,
        length: int | None,
        chunked: bool,
        reusable: bool,
        read_timeout: float | None,
        prefetched: bytes | None,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._request = request
        self._length = length
        self._chunked = chunked
        self._reusable = reusable
        self._read_timeout = read_timeout
        self._prefetched = prefetched
        self._complete = False
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self._prefetched is not None:
            data, self._prefetched = self._prefetched, None
            self._complete = True
            if data:
                yield data
            return
        reader = self._connection.reader
        try:
            if self._chunked:
                async for chunk in _read_chunked(reader, self._read_timeout):
                    yield chunk
            elif self._length is not None:
                remaining = self._length
                while remaining:
                    async with timeout_after(self._read_timeout):
                        data = await reader.read(min(remaining, 256 * 1024))
                    if not data:
                        raise httpx.RemoteProtocolError(
                            "server closed the connection mid-body", request=self._request
                        )
                    remaining -= len(data)
                    yield data
            else:
                while True:
                    async with timeout_after(self._read_timeout):
                        data = await reader.read(256 * 1024)
                    if not data:
                        break
                    yield data
            self._complete = True
        except TimeoutError:
            raise httpx.ReadTimeout(
                "timed out reading the response", request=self._request
            ) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            raise httpx.ReadError(
                f"reading the response failed: {exc!r}", request=self._request
            ) from None

    async def aclose(self) -> None:
        if self._released:
            return
        self._released = True
        if self._complete and self._reusable:
            self._transport._idle.give_back(self._connection)
        else:
            self._connection.close()


class PooledHTTP11Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive connections kept in an O(1) per-origin stack."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle_per_origin: int = 512,
    ) -> None:
        self._ssl_context = ssl_context
        self._idle: IdleConnections[_Connection] = IdleConnections(max_idle_per_origin)

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = default_ssl_context()
        return self._ssl_context

    async def _connect(self, origin: Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        with connect_errors(host, port):
            async with timeout_after(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl() if scheme == "https" else None,
                    limit=MAX_HEAD_BYTES,
                )
        return _Connection(origin, reader, writer)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._idle.closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, url.host, port)
        payload = self._serialize(request, await request.aread())
        # A kept-alive connection may have been closed by the server while it
        # sat idle; a GET that fails on one before any answer arrived is sent
        # again, once, on a new connection.
        connection = self._idle.take(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, request, payload)
            except StaleConnection as stale:
                connection.close()
                if request.method not in ("GET", "HEAD"):
                    # The server may have acted on it: the caller decides.
                    raise httpx.RemoteProtocolError(
                        "server closed a kept-alive connection", request=request
                    ) from stale.__cause__
        try:
            connection = await self._connect(
                origin, request.extensions.get("timeout", {}).get("connect")
            )
        except httpx.TransportError as exc:
            exc.request = request
            raise
        try:
            return await self._exchange(connection, request, payload)
        except StaleConnection as stale:
            connection.close()
            raise httpx.RemoteProtocolError(
                "server closed the connection without answering", request=request
            ) from stale.__cause__

    @staticmethod
    def _serialize(request: httpx.Request, body: bytes) -> bytes:
        parts = [request.method.encode(), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        parts.append(body)
        return b"".join(parts)

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, payload: bytes
    ) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        writer = connection.writer
        try:
            writer.write(payload)
            async with timeout_after(timeouts.get("write")):
                await writer.drain()
        except TimeoutError:
            connection.close()
            raise httpx.WriteTimeout("timed out sending the request", request=request) from None
        except OSError as exc:
            raise StaleConnection from exc
        try:
            async with timeout_after(read_timeout):
                head = await connection.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise StaleConnection from exc
            connection.close()
            raise httpx.RemoteProtocolError("truncated response head", request=request) from None
        except (OSError, asyncio.LimitOverrunError) as exc:
            if isinstance(exc, OSError):
                raise StaleConnection from exc
            connection.close()
            raise httpx.RemoteProtocolError("response head too large", request=request) from None
        return await self._response(connection, request, head, read_timeout)

    async def _response(
        self,
        connection: _Connection,
        request: httpx.Request,
        head: bytes,
        read_timeout: float | None,
    ) -> httpx.Response:
        try:
            parsed = _parse_head(head, no_body=request.method == "HEAD")
        except httpx.RemoteProtocolError as exc:
            connection.close()
            exc.request = request
            raise
        (status, length, chunked, reusable), headers = parsed
        prefetched: bytes | None = None
        if length is not None and not chunked and length <= 64 * 1024:
            # Small bodies are read now, so the connection is free again as
            # soon as the caller has the response.
            try:
                async with timeout_after(read_timeout):
                    prefetched = await connection.reader.readexactly(length)
            except TimeoutError:
                connection.close()
                raise httpx.ReadTimeout("timed out reading the response", request=request) from None
            except (OSError, asyncio.IncompleteReadError) as exc:
                connection.close()
                raise httpx.ReadError(
                    f"reading the response failed: {exc!r}", request=request
                ) from None
        body = _ResponseBody(
            self,
            connection,
            request,
            length=length,
            chunked=chunked,
            reusable=reusable,
            read_timeout=read_timeout,
            prefetched=prefetched,
        )
        return httpx.Response(
            status,
            headers=headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1"},
            request=request,
        )

    async def aclose(self) -> None:
        self._idle.close()


class Framing(NamedTuple):
    """What a response head says about the body after it."""

    status: int
    length: int | None
    """Body length; None: until the connection closes (or chunked)."""
    chunked: bool
    reusable: bool
    """Whether the connection may carry another exchange after this one."""


def _header_value(lowered_head: bytes, name: bytes) -> bytes | None:
    """A header's value, found in a head whose bytes were lowercased."""
    start = lowered_head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = lowered_head.find(b"\r\n", start)
    return lowered_head[start : end if end >= 0 else None].strip()


def parse_framing(head: bytes, *, no_body: bool = False) -> Framing:
    """The fields of a response head (status line and headers, without the
    empty line) that frame its body; ``no_body``: the answer to a HEAD."""
    status_line_end = head.find(b"\r\n")
    status_line = head if status_line_end < 0 else head[:status_line_end]
    try:
        version, status_text, *_ = status_line.split(b" ", 2)
        status = int(status_text)
    except ValueError:
        raise httpx.RemoteProtocolError(f"bad status line {status_line[:80]!r}") from None
    lowered = head.lower()
    length: int | None = None
    length_text = _header_value(lowered, b"content-length")
    if length_text is not None:
        try:
            length = int(length_text)
        except ValueError:
            raise httpx.RemoteProtocolError(f"bad Content-Length {length_text[:40]!r}") from None
        if length < 0:
            raise httpx.RemoteProtocolError(f"bad Content-Length {length_text[:40]!r}")
    encoding = _header_value(lowered, b"transfer-encoding")
    chunked = encoding is not None and b"chunked" in encoding
    connection = _header_value(lowered, b"connection")
    reusable = connection != b"close" if connection is not None else version.upper() == b"HTTP/1.1"
    if no_body or status in _NO_BODY_STATUSES or status < 200:
        length, chunked = 0, False
    if not chunked and length is None:
        reusable = False
    return Framing(status, length, chunked, reusable)


def _parse_head(head: bytes, *, no_body: bool) -> tuple[Framing, list[tuple[bytes, bytes]]]:
    """The framing of a response head (up to its empty line) and its headers,
    names lowercased."""
    framing = parse_framing(head[:-4], no_body=no_body)
    headers: list[tuple[bytes, bytes]] = []
    for line in head[:-4].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return framing, headers


class StaleConnection(Exception):
    """The connection failed before any part of an answer arrived."""
