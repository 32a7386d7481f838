"""A loopback HTTP/1.1 server that echoes requests back in its errors (issue 21).

:class:`EchoingUpstream` stands for a misbehaving S2 endpoint, gateway or
forward proxy: it answers a request it chooses to fail with ``status`` and
the whole request it received (request line, every header, the body) in the
answer, as text, as JSON (``{"message": ...}``) or in an SSE ``error`` event,
and in a response header too. Requests it does not fail are forwarded to an
upstream (s2-lite) unchanged but for ``Connection: close`` and, when it is
used as a proxy, the absolute-form target made an origin-form one.

It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson

FORMS = ("text", "json")
_REASONS = {
    200: b"OK",
    401: b"Unauthorized",
    403: b"Forbidden",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
}


def _header_value(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def _origin_form(head: bytes) -> bytes:
    """The request head with an absolute-form target (``http://host/path``)
    made origin-form, ``Proxy-Authorization`` dropped and the connection
    closed after the answer."""
    line, _, rest = head.partition(b"\r\n")
    method, target, version = line.split(b" ", 2)
    if target.startswith(b"http://"):
        target = b"/" + target[len(b"http://") :].partition(b"/")[2]
    kept = [
        header
        for header in rest.split(b"\r\n")
        if header
        and header.partition(b":")[0].strip().lower() not in (b"proxy-authorization", b"connection")
    ]
    return b"\r\n".join([b" ".join((method, target, version)), *kept, b"Connection: close"]) + (
        b"\r\n\r\n"
    )


class EchoingUpstream:
    """Fails the requests ``fails(head)`` picks (all by default) with
    ``status`` and an echo of the request in ``form``: ``"text"``,
    ``"json"`` or ``"sse"`` (a 200 event stream whose ``error`` event holds
    the JSON echo)."""

    def __init__(
        self,
        status: int,
        form: str,
        *,
        upstream_port: int | None = None,
        fails: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.status = status
        self.form = form
        self.upstream_port = upstream_port
        self.fails = fails or (lambda head: True)
        self.echoed = 0
        self.forwarded = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def proxy_url(self, username: str, password: str) -> str:
        return self.url.replace("http://", f"http://{username}:{password}@")

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        # Aborted connections end their handlers without a cancellation.
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
            self._writers.discard(writer)
            self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            length = _header_value(head, b"content-length")
            body = await reader.readexactly(int(length)) if length else b""
            if self.upstream_port is not None and not self.fails(head):
                self.forwarded += 1
                await self._forward(_origin_form(head) + body, writer)
                return
            self.echoed += 1
            writer.write(self._echo(head + body))
            await writer.drain()

    def _echo(self, request: bytes) -> bytes:
        text = request.decode("latin-1")
        status = self.status
        if self.form == "json":
            content_type = b"application/json"
            payload = orjson.dumps({"code": "echo", "message": text})
        elif self.form == "sse":
            status = 200
            content_type = b"text/event-stream"
            data = orjson.dumps({"code": "echo", "message": text})
            payload = b"event: error\ndata: " + data + b"\n\n"
        else:
            content_type = b"text/plain"
            payload = request
        authorization = b""
        for name in (b"authorization", b"proxy-authorization"):
            value = _header_value(request.partition(b"\r\n\r\n")[0], name)
            if value is not None:
                authorization += b"X-Echo-" + name + b": " + value + b"\r\n"
        return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\n%sContent-Length: %d\r\n\r\n%s" % (
            status,
            _REASONS[status],
            content_type,
            authorization,
            len(payload),
            payload,
        )

    async def _forward(self, request: bytes, writer: asyncio.StreamWriter) -> None:
        assert self.upstream_port is not None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            up_writer.write(request)
            await up_writer.drain()
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        finally:
            up_writer.transport.abort()
