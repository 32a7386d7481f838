"""The unary HTTP/1.1 client against a scripted loopback server: how answers
are framed, when connections are kept, and which typed error each fault gives.

(Against s2-lite the client carries every append and tail check of the other
tests; this file covers the answers s2-lite never gives.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from resumable_fast.unary import UnaryClient

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
    def origin(self) -> tuple[str, str, int]:
        assert self.server is not None
        return ("http", "127.0.0.1", self.server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
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
async def client() -> AsyncIterator[UnaryClient]:
    unary_client = UnaryClient()
    yield unary_client
    await unary_client.aclose()


async def serve(server: ScriptedServer) -> ScriptedServer:
    server.server = await asyncio.start_server(server._handle, "127.0.0.1", 0)
    return server


def request(body: bytes = b"{}") -> bytes:
    return b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def answer(status: int, body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n" % (status, len(body))
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


async def test_answers_split_anywhere_are_read_whole_and_connections_kept(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: UnaryClient,
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
        response = await client.unary(server.origin, request(), idempotent=False, timeout=5)
        assert (response.status, response.content) == (200, b'{"tail":7}')
        assert response.header(b"retry-after") == b"3"
        assert response.header(b"missing") is None
    assert server.connections == 1


async def test_chunked_close_delimited_and_bodiless_answers(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: UnaryClient,
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
    first = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert first.content == b"abcdef"
    without_trailers = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert without_trailers.content == b"abcd"
    second = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert (second.status, second.content) == (204, b"")
    third = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert third.content == b"until the end"
    assert server.connections == 1
    # The close-delimited answer ended its connection: the next one is new.
    server.replies.append([answer(200, b"ok")])
    fourth = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert fourth.content == b"ok"
    assert server.connections == 2


async def test_connection_close_and_stray_bytes_end_the_connection(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: UnaryClient,
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
        response = await client.unary(server.origin, request(), idempotent=False, timeout=5)
        assert response.content == expected
    assert server.connections == 3


async def test_kept_alive_connection_closed_by_the_server(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: UnaryClient,
) -> None:
    """The server closes a kept-alive connection when the next request comes:
    a GET is sent again on a new connection, a POST is left to the caller."""
    server = await serve(
        scripted([[answer(200, b"1")], [None], [answer(200, b"2")], [None], [answer(200, b"3")]])
    )
    await client.unary(server.origin, request(), idempotent=True, timeout=5)
    again = await client.unary(server.origin, request(), idempotent=True, timeout=5)
    assert again.content == b"2"
    assert server.connections == 2
    with pytest.raises(httpx.RemoteProtocolError, match="kept-alive"):
        await client.unary(server.origin, request(), idempotent=False, timeout=5)
    after = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert after.content == b"3"


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        ([b"HTTP/1.1 200 OK\r\ncontent-le", None], httpx.RemoteProtocolError, "truncated"),
        ([answer(200, b"0123456789")[:-4], None], httpx.ReadError, "mid-answer"),
        ([b"garbage\r\n\r\n"], httpx.RemoteProtocolError, "bad status line"),
        ([b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"], httpx.RemoteProtocolError, "Length"),
        ([b"HTTP/1.1 200 OK\r\n" + b"x" * 70_000], httpx.RemoteProtocolError, "too large"),
        (
            [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"],
            httpx.RemoteProtocolError,
            "chunk size",
        ),
        ([None], httpx.RemoteProtocolError, "without answering"),
    ],
)
async def test_broken_answers_are_typed_errors(
    scripted: Callable[[list[Reply]], ScriptedServer],
    reply: Reply,
    error: type[Exception],
    match: str,
    client: UnaryClient,
) -> None:
    server = await serve(scripted([reply, [answer(200, b"next")]]))
    with pytest.raises(error, match=match):
        await client.unary(server.origin, request(), idempotent=False, timeout=5)
    # The broken connection is not reused; the client goes on.
    response = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert response.content == b"next"
    assert server.connections == 2


async def test_no_answer_within_the_timeout_is_a_read_timeout(
    scripted: Callable[[list[Reply]], ScriptedServer],
) -> None:
    server = await serve(scripted([[b"HTTP/1.1 200 OK\r\n", 5.0], [answer(200, b"late")]]))
    client = UnaryClient()
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        with pytest.raises(httpx.ReadTimeout, match=r"within 0\.3 s"):
            await client.unary(server.origin, request(), idempotent=False, timeout=0.3)
        waited = loop.time() - began
        assert 0.3 <= waited < 1.0
        response = await client.unary(server.origin, request(), idempotent=False, timeout=5)
        assert response.content == b"late"
    finally:
        await client.aclose()
    assert client._sweeper is None


async def test_refused_connection_is_a_connect_error(client: UnaryClient) -> None:
    with socket_on_free_port() as port, pytest.raises(httpx.ConnectError):
        await client.unary(("http", "127.0.0.1", port), request(), idempotent=True, timeout=5)


async def test_a_cancelled_exchange_does_not_leave_its_connection_for_reuse(
    scripted: Callable[[list[Reply]], ScriptedServer],
    client: UnaryClient,
) -> None:
    server = await serve(scripted([[1.0, answer(200, b"first")], [answer(200, b"second")]]))
    pending = asyncio.ensure_future(
        client.unary(server.origin, request(), idempotent=False, timeout=5)
    )
    await asyncio.sleep(0.1)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    # The first answer must not be taken for the second request's.
    response = await client.unary(server.origin, request(), idempotent=False, timeout=5)
    assert response.content == b"second"
    assert server.connections == 2


async def test_closed_client_refuses_requests() -> None:
    client = UnaryClient()
    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.unary(("http", "127.0.0.1", 9), request(), idempotent=True, timeout=1)


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
