"""HTTP/1.1 requests: whole answers for unary calls, streamed bodies for long
answers read as they come.

Every request goes through :class:`HttpClient`. Response framing is parsed by
httptools (llhttp, the parser uvicorn uses) as bytes arrive on an
:class:`asyncio.Protocol`: strict chunked framing, interim 1xx answers
skipped, no parser of ours. Around it:

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
  credentials the client sends, for its owner (who adds its own) to clean
  what answers say;
* deadlines for whole exchanges kept by one sweeper per client rather than a
  timer per request, and an idle timeout for streamed bodies.

One request and its answer are an *exchange*, an object of its own on the
connection it was sent on (the connection holds only its transport and the
exchange in progress). An exchange goes through these phases, driven by the
parser's callbacks and the connection's end::

    HEAD ──1xx head──> INTERIM ──its end──> HEAD      (100 Continue, 103 Early Hints)
    HEAD ──final head──> BODY ──message end──> DONE   (the connection may be kept)
      │                    └──connection end──> DONE  (a body delimited by it: not kept)
      └──(any phase but DONE) a fault, a cap, the deadline──> FAILED (connection dropped)

A whole answer (:meth:`HttpClient.request`) settles at DONE; a streamed one
(:meth:`HttpClient.stream`) settles at BODY, its body read on from the same
exchange. Both get their connection the same way: a kept-alive one from the
idle stack, else a new one; a kept-alive connection that the server had closed
(it ends before any byte of the answer) is replaced by a new one once, when
the request may be sent twice.

Failures that the same request may get past later (a refused or dropped
connection, a timeout, a malformed answer) are :class:`TransportError`; the
caller decides whether to retry, and maps them to its own errors.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, NamedTuple, TypeVar

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
from resumable_fast.waiters import resolve

T = TypeVar("T")

__all__ = [
    "ClientClosed",
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
# A whole answer is held in memory until it is complete.
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


class ClientClosed(ResumableStreamError):
    """A request to a client that was closed: no request will succeed."""


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
    """An answer whose body is read as it arrives."""

    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: _StreamedAnswer
    ) -> None:
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


# -- exchanges ------------------------------------------------------------------------


class _Phase(IntEnum):
    """Where an exchange is (see the module docstring); ordered, so that
    ``< BODY`` is "the head is not in" and ``>= DONE`` is "over"."""

    HEAD = 0
    INTERIM = 1
    BODY = 2
    DONE = 3
    FAILED = 4


# Module names for the phases: looking a member up on its enum class costs
# more than a global, on every callback of every exchange.
_HEAD, _INTERIM, _BODY, _DONE, _FAILED = _Phase


class _Exchange(Generic[T]):
    """One request's answer on a connection, parsed by httptools as bytes
    arrive (the parser calls the ``on_*`` methods). ``settled`` gets what the
    sender waits for: a whole answer, or the head of a streamed one."""

    def __init__(self, connection: _Connection, deadline: float, timeout: float) -> None:
        self.connection = connection
        self.deadline = deadline
        self.timeout = timeout
        self.settled: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self.phase = _HEAD
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = False
        self._head_bytes = 0
        # Let go of when the exchange ends: the parser holds the exchange
        # (its callbacks), and the cycle would wait for the garbage collector.
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)

    # what the connection passes on

    def feed(self, data: bytes) -> None:
        parser = self._parser
        assert parser is not None  # the connection feeds only an exchange in progress
        if self.phase < _BODY:
            self._head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # A callback's own exception comes back as the context of the
            # parser's callback error.
            overrun = exc.__context__
            if isinstance(overrun, _Overrun):
                self.fail(overrun.error)
            else:
                redact = self.connection.redact
                self.fail(ProtocolViolation(redact(f"malformed answer: {exc}", 500)))
            return
        if self.phase < _BODY and self._head_bytes > self.connection.max_head_bytes:
            self.fail(ResponseTooLargeError(f"a response head over {self._head_bytes} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        phase = self.phase
        if phase >= _DONE:
            return
        if phase is _BODY:
            if (
                _header(self.headers, b"content-length") is None
                and _header(self.headers, b"transfer-encoding") is None
            ):
                self._finish(keep_alive=False)  # a body delimited by the end of the connection
            else:
                self.fail(ProtocolViolation(f"the connection closed mid-body: {exc!r}"))
        elif self._head_bytes == 0:
            stale = _StaleConnection("the connection closed before any answer")
            stale.__cause__ = exc
            self.fail(stale)
        else:
            self.fail(ProtocolViolation("the connection closed mid-head"))

    def fail(self, error: BaseException) -> None:
        """End the exchange with ``error`` (unless it is over) and drop its
        connection, on which an answer may still be on its way."""
        self.connection.close()
        if self.phase < _DONE:
            self.phase = _FAILED
            self._parser = None
            self._failed(error)

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.phase >= _DONE:
            raise _Overrun(ProtocolViolation("bytes after the answer"))
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None  # callbacks come only while it parses
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self.phase = _INTERIM  # 100 Continue, 103 Early Hints: the answer follows
            return
        self.status = status
        self.phase = _BODY
        self._head_in()

    def on_body(self, body: bytes) -> None:
        if self.phase is _BODY:
            self._body(body)

    def on_message_complete(self) -> None:
        if self.phase is _INTERIM:
            self.phase = _HEAD
        else:
            assert self._parser is not None  # callbacks come only while it parses
            self._finish(self._parser.should_keep_alive())

    def _finish(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.phase = _DONE
        self._parser = None
        self._done()

    # what each kind of exchange does

    def _head_in(self) -> None:
        """The final head is in (``status`` and ``headers``)."""

    def _body(self, data: bytes) -> None:
        raise NotImplementedError

    def _done(self) -> None:
        raise NotImplementedError

    def _failed(self, error: BaseException) -> None:
        if not self.settled.done():
            self.settled.set_exception(error)


class _WholeAnswer(_Exchange[Response]):
    """An exchange whose answer is read whole, its body capped."""

    def __init__(self, connection: _Connection, deadline: float, timeout: float) -> None:
        super().__init__(connection, deadline, timeout)
        self._parts: list[bytes] = []
        self._size = 0

    def _body(self, data: bytes) -> None:
        self._size += len(data)
        cap = self.connection.max_body_bytes
        if self._size > cap:
            raise _Overrun(ResponseTooLargeError(f"an answer's body over {cap} bytes"))
        self._parts.append(data)

    def _done(self) -> None:
        if not self.settled.done():
            self.settled.set_result(Response(self.status, self.headers, b"".join(self._parts)))


class _StreamedAnswer(_Exchange[StreamingResponse]):
    """An exchange settled by its head, whose body chunks go to the consumer
    as it reads them, with flow control: the connection stops reading while
    more than :data:`STREAM_HIGH_WATER` bytes wait."""

    def __init__(self, connection: _Connection, deadline: float, timeout: float) -> None:
        super().__init__(connection, deadline, timeout)
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _head_in(self) -> None:
        if not self.settled.done():
            self.settled.set_result(StreamingResponse(self.status, self.headers, self))

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > STREAM_HIGH_WATER:
            self.connection.pause_reading()
        self._wake()

    def _done(self) -> None:
        self._wake()

    def _failed(self, error: BaseException) -> None:
        super()._failed(error)
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
                    self.connection.resume_reading()
                yield data
                continue
            if self.phase is _DONE:
                return
            if self._error is not None:
                raise self._error
            self._waiter = loop.create_future()
            timer = loop.call_later(idle_timeout, resolve, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._chunks and self.phase < _DONE:
                raise RequestTimeout(f"no data for {idle_timeout:g} s")


class _Overrun(Exception):
    """Raised from a parser callback to stop parsing with ``error``."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# -- connections ------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One kept-alive connection: its transport and the exchange in progress
    (one at a time), to which it passes what arrives."""

    def __init__(
        self, key: tuple[Origin, Proxy | None], settings: HttpSettings, redact: Redactor
    ) -> None:
        self.key = key
        self.redact = redact
        self.max_head_bytes = settings.max_head_bytes
        self.max_body_bytes = settings.max_body_bytes
        self.exchange: _Exchange[Any] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None or exchange.phase >= _DONE:
            # Bytes nobody asked for: the connection cannot be trusted again.
            self.close()
            return
        exchange.feed(data)

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self.exchange is not None:
            self.exchange.connection_lost(exc)

    def pause_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    # exchanges

    def send(self, exchange: _Exchange[Any], payload: bytes) -> None:
        assert self._transport is not None
        self.exchange = exchange
        self._transport.write(payload)

    def is_usable(self) -> bool:
        return not self._closed and self._transport is not None and not self._transport.is_closing()

    @property
    def reusable(self) -> bool:
        """Its last exchange ended whole, and both sides keep it alive."""
        exchange = self.exchange
        return (
            exchange is not None
            and exchange.phase is _DONE
            and exchange.keep_alive
            and self.is_usable()
        )

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()


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
        self.stacks: dict[tuple[Origin, Proxy | None], list[_Connection]] = {}
        self.closed = False

    def take(self, key: tuple[Origin, Proxy | None]) -> _Connection | None:
        stack = self.stacks.get(key)
        while stack:
            connection = stack.pop()
            if connection.is_usable():
                return connection
            connection.close()
        return None

    def give_back(self, connection: _Connection) -> None:
        stack = self.stacks.setdefault(connection.key, [])
        if self.closed or len(stack) >= self._max_per_key or not connection.reusable:
            connection.close()
        else:
            stack.append(connection)

    def close(self) -> None:
        self.closed = True
        for stack in self.stacks.values():
            for connection in stack:
                connection.close()
        self.stacks.clear()


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
        self._busy: set[_Exchange[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._sweep_interval = _MAX_SWEEP_INTERVAL

    @property
    def sweeping(self) -> bool:
        """Whether the task that fails exchanges past their deadline runs
        (it does only while an exchange awaits its answer)."""
        return self._sweeper is not None

    def idle_connections(self, origin: Origin) -> int:
        """How many kept-alive connections to ``origin`` wait for a request."""
        return len(self._idle.stacks.get(self._key(origin), ()))

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
        async with self._slots:
            connection, response = await self._exchange(
                _WholeAnswer, origin, request, timeout, resend_if_stale=idempotent
            )
            self._idle.give_back(connection)
        return response

    @asynccontextmanager
    async def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AsyncIterator[StreamingResponse]:
        """Send one request (a GET, sent again if its kept-alive connection
        was stale); the answer's head within ``timeout`` seconds, its body
        read as it comes. The connection is kept for reuse only if the body
        was read to its end."""
        connection, response = await self._exchange(
            _StreamedAnswer, origin, request, timeout, resend_if_stale=True
        )
        try:
            yield response
        finally:
            self._idle.give_back(connection)

    async def _exchange(
        self,
        kind: type[_Exchange[T]],
        origin: Origin,
        request: Request,
        timeout: float,
        *,
        resend_if_stale: bool,
    ) -> tuple[_Connection, T]:
        """Send ``request`` on a kept-alive connection if one is idle, else
        on a new one, and wait for the exchange to settle; the connection it
        went on comes back with what it settled to."""
        if self._idle.closed:
            raise ClientClosed("the HTTP client is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._sweep_interval = min(self._sweep_interval, max(timeout / 10, _MIN_SWEEP_INTERVAL))
        key = self._key(origin)
        payload = self._serialize(key, request)
        connection = self._idle.take(key)
        if connection is not None:
            try:
                return connection, await self._settle(kind(connection, deadline, timeout), payload)
            except _StaleConnection as stale:
                if not resend_if_stale:
                    raise ProtocolViolation(
                        "the server closed a kept-alive connection"
                    ) from stale.__cause__
        connection = await self._connect(key, deadline - loop.time())
        try:
            return connection, await self._settle(kind(connection, deadline, timeout), payload)
        except _StaleConnection as stale:
            raise ProtocolViolation(
                "the server closed the connection without answering"
            ) from stale.__cause__

    async def _settle(self, exchange: _Exchange[T], payload: bytes) -> T:
        """Send ``payload`` on the exchange's connection and wait for what
        the exchange settles to, its deadline watched meanwhile."""
        exchange.connection.send(exchange, payload)
        self._busy.add(exchange)
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())
        try:
            return await exchange.settled
        except BaseException:
            exchange.connection.close()  # an answer may still be on its way
            raise
        finally:
            self._busy.discard(exchange)

    async def _sweep(self) -> None:
        """Fails the exchanges whose deadline has passed, while any is in flight."""
        loop = asyncio.get_running_loop()
        try:
            while self._busy:
                await asyncio.sleep(self._sweep_interval)
                now = loop.time()
                for exchange in [e for e in self._busy if e.deadline <= now]:
                    exchange.fail(RequestTimeout(f"no answer within {exchange.timeout:g} s"))
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
        for exchange in list(self._busy):
            exchange.connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
