"""HTTP/1.1 to S2: whole answers for unary calls, streamed bodies for read sessions.

Every request the library sends goes through :class:`HttpClient`. Response
framing is parsed by httptools (llhttp, the parser uvicorn uses), fed on an
:class:`asyncio.Protocol` as bytes arrive: strict chunked framing, interim 1xx
answers skipped, no parser of ours. Around it:

* kept-alive connections per origin, in an O(1) stack;
* TLS set up as httpx does it (``verify=``: True, False, a CA bundle or
  directory, or an :class:`ssl.SSLContext`; ``SSL_CERT_FILE`` and
  ``SSL_CERT_DIR`` honoured with ``trust_env``). A certificate that does not
  verify is a :class:`~resumable_fast.errors.TLSVerificationError` at once;
* proxies from ``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY`` and ``NO_PROXY``
  (with ``trust_env``) or ``proxy=``: plain HTTP through the proxy, HTTPS
  through a ``CONNECT`` tunnel;
* caps on a response's head and on a whole answer's body: over them, a
  :class:`~resumable_fast.errors.ResponseTooLargeError` and the connection is
  dropped; a streamed body is read only as fast as it is consumed;
* a :class:`~resumable_fast.endpoints.Redactor` that learns the proxy
  credentials the client sends, for its owner to clean what answers say
  (:mod:`resumable_fast.s2` passes its own, which also knows the token);
* deadlines for whole exchanges kept by one sweeper per client rather than a
  timer per request, and an idle timeout for streamed bodies.

Failures that the same request may get past later (a refused or dropped
connection, a timeout, a malformed answer) are :class:`TransportError`; the
caller retries those.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import httptools

from resumable_fast.endpoints import (
    Origin,
    Proxy,
    Redactor,
    Verify,
    make_ssl_context,
    proxy_for,
)
from resumable_fast.errors import (
    ResponseTooLargeError,
    ResumableStreamError,
    TLSVerificationError,
)
from resumable_fast.timeouts import timeout_after

T = TypeVar("T")

__all__ = [
    "ConnectFailed",
    "HttpClient",
    "HttpSettings",
    "ProtocolViolation",
    "Request",
    "RequestTimeout",
    "Response",
    "StreamingResponse",
    "TransportError",
]

MAX_HEAD_BYTES = 64 * 1024
# S2 answers a read with at most 1 MiB of records, which JSON makes larger.
MAX_BODY_BYTES = 16 * 1024 * 1024
# A streamed body stops being read from the socket past this much unconsumed.
STREAM_HIGH_WATER = 1024 * 1024
# Deadlines are checked ten times per request timeout, but not more often
# than every _MIN_SWEEP_INTERVAL nor less often than every _MAX_SWEEP_INTERVAL
# seconds, so an exchange fails at most 10% (or a second) late.
_MIN_SWEEP_INTERVAL = 0.01
_MAX_SWEEP_INTERVAL = 1.0


class TransportError(Exception):
    """A request failed on the way; the same request may succeed later."""


class ConnectFailed(TransportError):
    """No connection could be made (refused, unreachable, timed out)."""


class RequestTimeout(TransportError):
    """No whole answer (or no more of a streamed body) in time."""


class ProtocolViolation(TransportError):
    """The answer was not valid HTTP/1.1, or the connection broke mid-answer."""


class _StaleConnection(TransportError):
    """A kept-alive connection failed before any part of an answer arrived."""


@dataclass(frozen=True)
class HttpSettings:
    verify: Verify = True
    trust_env: bool = True
    proxy: str | None = None
    connect_timeout: float = 10.0
    max_head_bytes: int = MAX_HEAD_BYTES
    max_body_bytes: int = MAX_BODY_BYTES


# -- requests and answers -------------------------------------------------------------


class Request(NamedTuple):
    """One request: ``headers`` are serialized lines (``Name: value\\r\\n``)
    without Host, Content-Length or proxy headers, which the client adds."""

    method: bytes
    target: bytes
    headers: bytes
    body: bytes | None = None


class Response(NamedTuple):
    """A whole answer."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header, by its lowercase name."""
        return _header(self.headers, name)


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class StreamingResponse:
    """An answer whose body is read as it arrives (a read session)."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: _BodyStream) -> None:
        self.status = status
        self.headers = headers
        self._body = body

    def header(self, name: bytes) -> bytes | None:
        return _header(self.headers, name)

    def iter_bytes(self, idle_timeout: float) -> AsyncIterator[bytes]:
        """The body's bytes; no bytes for ``idle_timeout`` seconds is a
        :class:`RequestTimeout`."""
        return self._body.chunks(idle_timeout)

    async def read(self, timeout: float, limit: int = MAX_HEAD_BYTES) -> bytes:
        """The whole (small) body, such as an error's."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.iter_bytes(timeout):
            size += len(chunk)
            if size > limit:
                raise ResponseTooLargeError(f"an error answer over {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


class _BodyStream:
    """Body chunks from a connection to the consumer, with flow control."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def push(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > STREAM_HIGH_WATER:
            self._connection.pause_reading()
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self._done = True
        self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self, idle_timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._buffered <= STREAM_HIGH_WATER // 2:
                    self._connection.resume_reading()
                yield data
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            self._waiter = loop.create_future()
            timer = loop.call_later(idle_timeout, _resolve, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._chunks and not self._done:
                raise RequestTimeout(f"no data for {idle_timeout:g} s")


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# -- connections ------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One kept-alive connection, one exchange at a time, its answers parsed
    by httptools as bytes arrive (the parser calls the ``on_*`` methods)."""

    def __init__(
        self,
        key: tuple[Origin, Proxy | None],
        settings: HttpSettings,
        redact: Redactor | None = None,
    ) -> None:
        self.key = key
        self._redact = redact or Redactor()
        self.deadline = 0.0
        self.timeout = 0.0
        self._settings = settings
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._closed = False
        # The exchange in progress: a whole answer, or a streamed body.
        self._answer: asyncio.Future[Response] | None = None
        self._head: asyncio.Future[StreamingResponse] | None = None
        self._body_stream: _BodyStream | None = None
        self._status = 0
        self._interim = False  # the message being parsed is a 1xx answer
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_done = False
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._complete = False
        self._reusable = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        if self._answer is None and self._body_stream is None and self._head is None:
            # Bytes nobody asked for: the connection cannot be trusted again.
            self.close()
            return
        if not self._head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's own exception comes back as the context of the
            # parser's callback error.
            overrun = exc.__context__
            if isinstance(overrun, _Overrun):
                self._fail(overrun.error)
            else:
                self._fail(ProtocolViolation(self._redact(f"malformed answer: {exc}", 500)))
            return
        if not self._head_done and self._head_bytes > self._settings.max_head_bytes:
            self._fail(ResponseTooLargeError(f"a response head over {self._head_bytes} bytes"))

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._complete:
            return
        if (
            self._head_done
            and _header(self._headers, b"content-length") is None
            and (_header(self._headers, b"transfer-encoding") is None)
        ):
            # A body delimited by the end of the connection.
            self._reusable = False
            self.on_message_complete()
            return
        if not self._head_done and self._head_bytes == 0:
            stale = _StaleConnection("the connection closed before any answer")
            stale.__cause__ = exc
            self._fail(stale)
        elif not self._head_done:
            self._fail(ProtocolViolation("the connection closed mid-head"))
        else:
            self._fail(ProtocolViolation(f"the connection closed mid-body: {exc!r}"))

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._complete:
            raise _Overrun(ProtocolViolation("bytes after the answer"))
        self._headers = []
        self._head_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True  # 100 Continue, 103 Early Hints: the answer follows
            return
        self._interim = False
        self._status = status
        self._head_done = True
        if self._head is not None:
            stream = self._body_stream = _BodyStream(self)
            head, self._head = self._head, None
            if not head.done():
                head.set_result(StreamingResponse(status, self._headers, stream))

    def on_body(self, body: bytes) -> None:
        if self._interim:
            return
        if self._body_stream is not None:
            self._body_stream.push(body)
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._settings.max_body_bytes:
            raise _Overrun(
                ResponseTooLargeError(
                    f"an answer's body over {self._settings.max_body_bytes} bytes"
                )
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._reusable = self._reusable and self._parser.should_keep_alive()
        stream, self._body_stream = self._body_stream, None
        if stream is not None:
            stream.finish()
            return
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_result(Response(self._status, self._headers, b"".join(self._body)))

    # exchanges

    def is_usable(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self._complete and self._reusable and self.is_usable()

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _start(self, payload: bytes, deadline: float, timeout: float) -> None:
        assert self._transport is not None
        self.deadline = deadline
        self.timeout = timeout
        self._parser = httptools.HttpResponseParser(self)
        self._status = 0
        self._interim = False
        self._headers = []
        self._head_bytes = 0
        self._head_done = False
        self._body = []
        self._body_bytes = 0
        self._complete = False
        self._reusable = True
        self._transport.write(payload)

    def exchange(self, payload: bytes, deadline: float, timeout: float) -> asyncio.Future[Response]:
        """Send one request; the future gets its whole answer."""
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._answer = answer
        self._start(payload, deadline, timeout)
        return answer

    def open_stream(
        self, payload: bytes, deadline: float, timeout: float
    ) -> asyncio.Future[StreamingResponse]:
        """Send one request; the future gets the answer's head, its body follows."""
        head: asyncio.Future[StreamingResponse] = asyncio.get_running_loop().create_future()
        self._head = head
        self._start(payload, deadline, timeout)
        return head

    def time_out(self, message: str) -> None:
        self._fail(RequestTimeout(message))

    def _fail(self, error: BaseException) -> None:
        self.close()
        self._complete = True
        self._reusable = False
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(error)
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)
        stream, self._body_stream = self._body_stream, None
        if stream is not None:
            stream.finish(error)


class _Overrun(Exception):
    """Raised from a parser callback to stop parsing with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _TunnelHandshake(asyncio.Protocol):
    """The proxy's answer to CONNECT: its status, once its head is in."""

    def __init__(self) -> None:
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._parser = httptools.HttpResponseParser(self)
        self._received = 0

    def data_received(self, data: bytes) -> None:
        self._received += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._settle_error(ProtocolViolation(f"malformed proxy answer: {exc}"))
        if self._received > MAX_HEAD_BYTES:
            self._settle_error(ResponseTooLargeError("a proxy answer head over 64 KiB"))

    def on_headers_complete(self) -> None:
        if not self.answered.done():
            self.answered.set_result(self._parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._settle_error(ConnectFailed(f"the proxy closed the connection: {exc!r}"))

    def _settle_error(self, error: BaseException) -> None:
        if not self.answered.done():
            self.answered.set_exception(error)


# -- the client -------------------------------------------------------------------------


class _IdleConnections:
    """Kept-alive connections per key, last given back first out."""

    def __init__(self, max_per_key: int) -> None:
        self._max_per_key = max_per_key
        self._stacks: dict[tuple[Origin, Proxy | None], list[_Connection]] = {}
        self.closed = False

    def take(self, key: tuple[Origin, Proxy | None]) -> _Connection | None:
        stack = self._stacks.get(key)
        while stack:
            connection = stack.pop()
            if connection.is_usable():
                return connection
            connection.close()
        return None

    def give_back(self, connection: _Connection) -> None:
        stack = self._stacks.setdefault(connection.key, [])
        if self.closed or len(stack) >= self._max_per_key or not connection.reusable:
            connection.close()
        else:
            stack.append(connection)

    def close(self) -> None:
        self.closed = True
        for stack in self._stacks.values():
            for connection in stack:
                connection.close()
        self._stacks.clear()


class HttpClient:
    """HTTP/1.1 requests to a few origins (see the module docstring)."""

    def __init__(
        self,
        settings: HttpSettings | None = None,
        *,
        max_idle_per_origin: int = 512,
        max_in_flight: int = 256,
        redactor: Redactor | None = None,
    ) -> None:
        self.settings = settings or HttpSettings()
        # The credentials this client sends; it adds each proxy's as it
        # resolves it, before any request goes through that proxy.
        self.redactor = redactor if redactor is not None else Redactor()
        self._ssl_context: ssl.SSLContext | None = None
        self._proxies: dict[Origin, Proxy | None] = {}
        # Host header values (IDNA-encoded authorities), made once per origin.
        self._hosts: dict[Origin, bytes] = {}
        # Whole exchanges beyond this many wait for one to finish: thousands
        # of streams flushing at once then share a few hundred connections
        # instead of opening one each.
        self._slots = asyncio.Semaphore(max_in_flight)
        self._idle = _IdleConnections(max_idle_per_origin)
        self._busy: set[_Connection] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_interval = _MAX_SWEEP_INTERVAL

    def _ssl(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = make_ssl_context(
                self.settings.verify, trust_env=self.settings.trust_env
            )
        return self._ssl_context

    def _key(self, origin: Origin) -> tuple[Origin, Proxy | None]:
        if origin not in self._proxies:
            proxy = proxy_for(origin, self.settings.proxy, trust_env=self.settings.trust_env)
            if proxy is not None:
                self.redactor.add(*proxy.secrets)
            self._proxies[origin] = proxy
        return origin, self._proxies[origin]

    def _serialize(self, key: tuple[Origin, Proxy | None], request: Request) -> bytes:
        origin, proxy = key
        target = request.target
        host = self._hosts.get(origin)
        if host is None:
            host = self._hosts[origin] = origin.authority.encode("idna")
        parts = [request.method, b" "]
        if proxy is not None and origin.scheme == "http":
            # Through a plain proxy the target is the absolute URL.
            parts += (b"http://", host, target)
            if proxy.authorization is not None:
                parts += (b" HTTP/1.1\r\nProxy-Authorization: ", proxy.authorization)
            else:
                parts.append(b" HTTP/1.1")
        else:
            parts += (target, b" HTTP/1.1")
        parts += (b"\r\nHost: ", host, b"\r\n", request.headers)
        body = request.body
        if body is not None:
            parts += (b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response:
        """Send one request and read its whole answer within ``timeout``
        seconds. A request that fails on a kept-alive connection before any
        answer arrived is sent again on a new connection when ``idempotent``;
        otherwise the caller gets a :class:`ProtocolViolation` and decides."""
        if self._idle.closed:
            raise ResumableStreamError("the S2 client is closed (its context was closed)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._sweep_interval = min(self._sweep_interval, max(timeout / 10, _MIN_SWEEP_INTERVAL))
        key = self._key(origin)
        payload = self._serialize(key, request)
        async with self._slots:
            connection = self._idle.take(key)
            if connection is not None:
                try:
                    return await self._exchange(connection, payload, deadline, timeout)
                except _StaleConnection as stale:
                    if not idempotent:
                        raise ProtocolViolation(
                            "the server closed a kept-alive connection"
                        ) from stale.__cause__
            connection = await self._connect(key, deadline - loop.time())
            try:
                return await self._exchange(connection, payload, deadline, timeout)
            except _StaleConnection as stale:
                raise ProtocolViolation(
                    "the server closed the connection without answering"
                ) from stale.__cause__

    async def _exchange(
        self, connection: _Connection, payload: bytes, deadline: float, timeout: float
    ) -> Response:
        response = await self._settled(connection, connection.exchange(payload, deadline, timeout))
        self._idle.give_back(connection)
        return response

    async def _settled(self, connection: _Connection, waiting: asyncio.Future[T]) -> T:
        """What ``waiting`` (an answer or a head on ``connection``) settles to,
        with the connection's deadline watched meanwhile."""
        self._busy.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            return await waiting
        except BaseException:
            connection.close()  # an answer may still be on its way
            raise
        finally:
            self._busy.discard(connection)

    @asynccontextmanager
    async def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AsyncIterator[StreamingResponse]:
        """Send one request; the answer's head within ``timeout`` seconds, its
        body read as it comes (a read session). The connection is kept for
        reuse only if the body was read to its end."""
        if self._idle.closed:
            raise ResumableStreamError("the S2 client is closed (its context was closed)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = self._key(origin)
        payload = self._serialize(key, request)
        connection = self._idle.take(key)
        response: StreamingResponse | None = None
        if connection is not None:
            try:
                response = await self._open(connection, payload, deadline, timeout)
            except _StaleConnection:
                connection = None  # GETs only: open it again on a new connection
        if response is None or connection is None:
            connection = await self._connect(key, deadline - loop.time())
            try:
                response = await self._open(connection, payload, deadline, timeout)
            except _StaleConnection as stale:
                raise ProtocolViolation(
                    "the server closed the connection without answering"
                ) from stale.__cause__
        try:
            yield response
        finally:
            self._idle.give_back(connection)

    async def _open(
        self, connection: _Connection, payload: bytes, deadline: float, timeout: float
    ) -> StreamingResponse:
        return await self._settled(connection, connection.open_stream(payload, deadline, timeout))

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

    async def _connect(self, key: tuple[Origin, Proxy | None], timeout: float) -> _Connection:
        origin, proxy = key
        loop = asyncio.get_running_loop()
        timeout = max(min(timeout, self.settings.connect_timeout), 0.0)
        connection = _Connection(key, self.settings, self.redactor)
        tls = self._ssl() if origin.scheme == "https" else None
        via = origin if proxy is None else proxy.origin
        where = f"{via.scheme}://{via.authority}" if proxy is None else f"proxy {proxy.display}"
        try:
            async with timeout_after(timeout):
                if proxy is None:
                    await loop.create_connection(
                        lambda: connection, origin.host, origin.port, ssl=tls
                    )
                elif tls is None:
                    await loop.create_connection(lambda: connection, via.host, via.port)
                else:
                    await self._tunnel(connection, origin, proxy, tls)
        except ssl.SSLCertVerificationError as exc:
            raise TLSVerificationError(
                f"the TLS certificate of {origin.scheme}://{origin.authority} did not verify "
                f"({exc.verify_message}): give its CA with verify= (a CA bundle path or an "
                "ssl.SSLContext) or SSL_CERT_FILE"
            ) from None
        except TimeoutError:
            raise ConnectFailed(f"connecting to {where} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"connecting to {where} failed: {exc!r}") from None
        return connection

    async def _tunnel(
        self, connection: _Connection, origin: Origin, proxy: Proxy, tls: ssl.SSLContext
    ) -> None:
        loop = asyncio.get_running_loop()
        transport, handshake = await loop.create_connection(
            _TunnelHandshake, proxy.origin.host, proxy.origin.port
        )
        try:
            authority = origin.authority.encode("idna")
            lines = [b"CONNECT ", authority, b" HTTP/1.1\r\nHost: ", authority, b"\r\n"]
            if proxy.authorization is not None:
                lines += (b"Proxy-Authorization: ", proxy.authorization, b"\r\n")
            transport.write(b"".join(lines) + b"\r\n")
            status = await handshake.answered
            if not 200 <= status < 300:
                raise ConnectFailed(f"proxy {proxy.display} refused the tunnel: {status}")
            tls_transport = await loop.start_tls(
                transport, connection, tls, server_hostname=origin.host
            )
        except BaseException:
            transport.abort()
            raise
        assert tls_transport is not None
        connection.connection_made(tls_transport)

    async def aclose(self) -> None:
        self._idle.close()
        for connection in list(self._busy):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
