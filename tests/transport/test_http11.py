"""The HTTP/1.1 client against a scripted loopback server: how answers are
framed, when connections are kept, and which typed error each fault gives.

(Against s2-lite the client carries every request of the other tests; this
file covers the answers s2-lite never gives, hostile ones included.)
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from resumable_fast.endpoints import Origin
from resumable_fast.errors import ResponseTooLargeError, ResumableStreamError
from resumable_fast.http11 import (
    ConnectFailed,
    HttpClient,
    HttpSettings,
    ProtocolViolation,
    Request,
    RequestTimeout,
)

from support import read_request

Reply = Sequence[bytes | float | None]
"""Sent in order: bytes are written, a float pauses that many seconds, None
closes the connection."""


@dataclass
class ScriptedServer:
    """Answers the n-th request it reads (over all connections) with ``replies[n]``."""

    replies: list[Reply]
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def origin(self) -> Origin:
        assert self.server is not None
        return Origin("http", "127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        try:
            while True:
                head, body = await read_request(reader)
                self.requests.append(head + body)
                for step in self.replies[len(self.requests) - 1]:
                    if step is None:
                        writer.close()
                        return
                    if isinstance(step, float):
                        await asyncio.sleep(step)
                    else:
                        writer.write(step)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[list[Reply]], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(replies: list[Reply]) -> ScriptedServer:
        server = ScriptedServer(replies)
        servers.append(server)
        return server

    yield start
    for server in servers:
        if server.server is not None:
            server.server.close()
        for task in list(server.handlers):
            task.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http_client = HttpClient(HttpSettings(trust_env=False))
    yield http_client
    await http_client.aclose()


async def serve(server: ScriptedServer) -> ScriptedServer:
    server.server = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    return server


def request(body: bytes = b"{}") -> Request:
    return Request(b"POST", b"/x", b"", body)


def answer(status: int, body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n" % (status, len(body))
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


async def test_answers_split_anywhere_are_read_whole_and_connections_kept(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    whole = answer(200, b'{"tail":7}', b"Retry-After: 3")
    # One answer byte by byte, one in two pieces, one at once.
    pieces: list[Reply] = [
        [bytes([byte]) for byte in whole],
        [whole[:20], 0.01, whole[20:]],
        [whole],
    ]
    server = await serve(scripted(pieces))
    for _ in pieces:
        response = await client.request(server.origin, request(), idempotent=False, timeout=5)
        assert (response.status, response.content) == (200, b'{"tail":7}')
        assert response.header(b"retry-after") == b"3"
        assert response.header(b"missing") is None
    assert server.connections == 1


async def test_chunked_close_delimited_and_bodiless_answers(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n"
    server = await serve(
        scripted(
            [
                [chunked, 0.01, b"2\r\nef\r\n0\r\nX-Trailer: 1\r\n\r\n"],
                [chunked + b"0\r\n", 0.01, b"\r\n"],
                [b"HTTP/1.1 204\r\n\r\n"],
                [b"HTTP/1.0 200 OK\r\n\r\nuntil the end", None],
            ]
        )
    )
    first = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert first.content == b"abcdef"
    without_trailers = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert without_trailers.content == b"abcd"
    second = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert (second.status, second.content) == (204, b"")
    third = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert third.content == b"until the end"
    assert server.connections == 1
    # The close-delimited answer ended its connection: the next one is new.
    server.replies.append([answer(200, b"ok")])
    fourth = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert fourth.content == b"ok"
    assert server.connections == 2


async def test_connection_close_and_stray_bytes_end_the_connection(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    server = await serve(
        scripted(
            [
                [answer(200, b"a", b"Connection: close")],
                [answer(200, b"b") + b"stray"],
                [answer(200, b"c")],
            ]
        )
    )
    for expected in (b"a", b"b", b"c"):
        response = await client.request(server.origin, request(), idempotent=False, timeout=5)
        assert response.content == expected
    assert server.connections == 3


async def test_kept_alive_connection_closed_by_the_server(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    """The server closes a kept-alive connection when the next request comes:
    a GET is sent again on a new connection, a POST is left to the caller."""
    server = await serve(
        scripted([[answer(200, b"1")], [None], [answer(200, b"2")], [None], [answer(200, b"3")]])
    )
    await client.request(server.origin, request(), idempotent=True, timeout=5)
    again = await client.request(server.origin, request(), idempotent=True, timeout=5)
    assert again.content == b"2"
    assert server.connections == 2
    with pytest.raises(ProtocolViolation, match="kept-alive"):
        await client.request(server.origin, request(), idempotent=False, timeout=5)
    after = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert after.content == b"3"


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        ([b"HTTP/1.1 200 OK\r\ncontent-le", None], ProtocolViolation, "mid-head"),
        ([answer(200, b"0123456789")[:-4], None], ProtocolViolation, "mid-body"),
        ([b"garbage\r\n\r\n"], ProtocolViolation, "malformed"),
        ([b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"], ProtocolViolation, "Length"),
        ([b"HTTP/1.1 200 OK\r\nx: " + b"x" * 70_000], ResponseTooLargeError, "head"),
        (
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            ProtocolViolation,
            "chunk size",
        ),
        # Strict chunked framing: a negative or prefixed size, data longer
        # than its size.
        (
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n-1\r\nx\r\n"],
            ProtocolViolation,
            "chunk size",
        ),
        (
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0x1a\r\n"],
            ProtocolViolation,
            "chunk size",
        ),
        (
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n"],
            ProtocolViolation,
            "LF after chunk data",
        ),
        ([None], ProtocolViolation, "without answering"),
    ],
)
async def test_broken_answers_are_typed_errors(
    scripted: Callable[[list[Reply]], ScriptedServer],
    reply: Reply,
    error: type[Exception],
    match: str,
    client: HttpClient,
) -> None:
    server = await serve(scripted([reply, [answer(200, b"next")]]))
    with pytest.raises(error, match=match):
        await client.request(server.origin, request(), idempotent=False, timeout=5)
    # The broken connection is not reused; the client goes on.
    response = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert response.content == b"next"
    assert server.connections == 2


async def test_no_answer_within_the_timeout_is_a_read_timeout(
    scripted: Callable[[list[Reply]], ScriptedServer],
) -> None:
    server = await serve(scripted([[b"HTTP/1.1 200 OK\r\n", 5.0], [answer(200, b"late")]]))
    client = HttpClient(HttpSettings(trust_env=False))
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        with pytest.raises(RequestTimeout, match=r"within 0\.3 s"):
            await client.request(server.origin, request(), idempotent=False, timeout=0.3)
        waited = loop.time() - began
        assert 0.3 <= waited < 1.0
        response = await client.request(server.origin, request(), idempotent=False, timeout=5)
        assert response.content == b"late"
    finally:
        await client.aclose()
    assert not client.sweeping


async def test_refused_connection_is_a_connect_error(client: HttpClient) -> None:
    with socket_on_free_port() as port, pytest.raises(ConnectFailed):
        await client.request(
            Origin("http", "127.0.0.1", port), request(), idempotent=True, timeout=5
        )


async def test_a_cancelled_exchange_does_not_leave_its_connection_for_reuse(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    server = await serve(scripted([[1.0, answer(200, b"first")], [answer(200, b"second")]]))
    pending = asyncio.ensure_future(
        client.request(server.origin, request(), idempotent=False, timeout=5)
    )
    await asyncio.sleep(0.1)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    # The first answer must not be taken for the second request's.
    response = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert response.content == b"second"
    assert server.connections == 2


async def test_closed_client_refuses_requests() -> None:
    client = HttpClient(HttpSettings(trust_env=False))
    await client.aclose()
    with pytest.raises(ResumableStreamError, match="closed"):
        await client.request(Origin("http", "127.0.0.1", 9), request(), idempotent=True, timeout=1)


async def test_interim_answers_are_skipped(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    """A CDN's 103 Early Hints (or a 100 Continue) before the answer is not
    the answer: an append is landed only when its 200 says so."""
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n"
    server = await serve(
        scripted([[early, 0.01, b"HTTP/1.1 100 Continue\r\n\r\n", answer(412, b"{}")]])
    )
    response = await client.request(server.origin, request(), idempotent=False, timeout=5)
    assert (response.status, response.content) == (412, b"{}")
    assert response.header(b"link") is None


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_cap_is_a_typed_error_with_bounded_memory(
    scripted: Callable[[list[Reply]], ScriptedServer], chunked: bool
) -> None:
    """An oversized (or endless chunked) body: the client stops at its cap and
    drops the connection instead of buffering whatever is sent."""
    cap = 64 * 1024
    piece = b"x" * 4096
    if chunked:
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        body: list[bytes | float | None] = [b"1000\r\n" + piece + b"\r\n"] * 10_000
    else:
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 40960000\r\n\r\n"
        body = [piece] * 10_000
    server = await serve(scripted([[head, *body], [answer(200, b"next")]]))
    client = HttpClient(HttpSettings(trust_env=False, max_body_bytes=cap))
    tracemalloc.start()
    try:
        with pytest.raises(ResponseTooLargeError, match="body over"):
            await client.request(server.origin, request(), idempotent=False, timeout=5)
        _, peak = tracemalloc.get_traced_memory()
        # The server had 40 MB to send; the client held about its cap.
        assert peak < 1024 * 1024
        assert client.idle_connections(server.origin) == 0
        response = await client.request(server.origin, request(), idempotent=False, timeout=5)
        assert response.content == b"next"
    finally:
        tracemalloc.stop()
        await client.aclose()


async def test_a_streamed_body_arrives_as_it_is_sent(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    server = await serve(
        scripted([[head, b"3\r\none\r\n", 0.05, b"3\r\ntwo\r\n", 0.05, b"0\r\n\r\n"]])
    )
    received: list[bytes] = []
    async with client.stream(server.origin, request(), timeout=5) as response:
        assert response.status == 200
        async for data in response.iter_bytes(idle_timeout=5):
            received.append(data)
    assert b"".join(received) == b"onetwo"
    assert len(received) == 2


async def test_a_streamed_body_that_goes_quiet_times_out(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: HttpClient,
) -> None:
    head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    server = await serve(scripted([[head, b"3\r\none\r\n", 5.0]]))
    async with client.stream(server.origin, request(), timeout=5) as response:
        chunks = response.iter_bytes(idle_timeout=0.2)
        assert await chunks.__anext__() == b"one"
        with pytest.raises(RequestTimeout, match="no data"):
            await chunks.__anext__()


class socket_on_free_port:
    """A loopback port nobody listens on, held bound (not listening) meanwhile."""

    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        port: int = self._socket.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
