"""Loopback proxies that put faults between the library and a real s2-lite.

* :class:`FaultInjectingProxy` speaks just enough HTTP/1.1 to answer a seeded
  share of requests itself, with 500, 503 or 429 (and ``Retry-After``), in
  bursts, and forwards every other request to s2-lite unchanged.
* :class:`CuttingProxy` forwards bytes both ways and cuts a seeded share of
  connections after a random number of bytes, in either direction: requests
  lost on the way, answers lost after S2 acted, read sessions dropped.

Both listen on 127.0.0.1 only and count what they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

INJECTED_STATUSES = (500, 503, 429)
_REASONS = {500: b"Internal Server Error", 503: b"Service Unavailable", 429: b"Too Many Requests"}


@dataclass
class ProxyStats:
    connections: int = 0
    requests: int = 0
    injected: int = 0
    cut: int = 0
    injected_by_status: dict[int, int] = field(default_factory=dict)


class _Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._clients: set[asyncio.StreamWriter] = set()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._clients.add(writer)
        self.stats.connections += 1
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.transport.abort()
            self._clients.discard(writer)
            self._handlers.discard(task)

    def cut_open_connections(self) -> None:
        """Abort every connection open now."""
        for writer in list(self._clients):
            self.stats.cut += 1
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        # Aborted connections end their handlers without a cancellation.
        for writer in list(self._clients):
            writer.transport.abort()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()


async def _read_message_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The body that follows ``head`` when it is framed by Content-Length."""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return await reader.readexactly(int(value.strip()))
    return b""


class FaultInjectingProxy(_Proxy):
    """Answers a share of requests with an error instead of forwarding them.

    Faults come in bursts: once one is injected, the next ``burst - 1``
    requests on any connection get one too. ``retry_after`` (seconds) goes out
    with 503 and 429 answers.
    """

    def __init__(
        self,
        upstream_port: int,
        *,
        seed: int,
        share: float = 0.15,
        burst: int = 3,
        retry_after: float = 0.02,
        required_token: str | None = None,
    ) -> None:
        super().__init__(upstream_port)
        # With a token, requests carrying another get 403, as from s2.dev.
        self._required_authorization = (
            None if required_token is None else b"bearer " + required_token.encode()
        )
        self._random = random.Random(seed)
        self._share = share
        self._burst = burst
        self._retry_after = retry_after
        self._burst_left = 0

    def _inject(self) -> int | None:
        if self._burst_left == 0 and self._random.random() < self._share:
            self._burst_left = self._burst
        if self._burst_left == 0:
            return None
        self._burst_left -= 1
        return self._random.choice(INJECTED_STATUSES)

    def _authorized(self, head: bytes) -> bool:
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                return value.strip().lower() == self._required_authorization
        return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                body = await _read_message_body(reader, head)
                self.stats.requests += 1
                if self._required_authorization is not None and not self._authorized(head):
                    payload = b'{"code":"permission_denied","message":"invalid access token"}'
                    writer.write(
                        b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
                    )
                    await writer.drain()
                    continue
                status = self._inject()
                if status is not None:
                    self.stats.injected += 1
                    self.stats.injected_by_status[status] = (
                        self.stats.injected_by_status.get(status, 0) + 1
                    )
                    payload = b'{"code":"injected","message":"fault injected by the test proxy"}'
                    retry = (
                        b"Retry-After: %g\r\n" % self._retry_after if status in (503, 429) else b""
                    )
                    writer.write(
                        b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n%s\r\n%s"
                        % (status, _REASONS[status], len(payload), retry, payload)
                    )
                    await writer.drain()
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                up_reader, up_writer = upstream
                up_writer.write(head + body)
                await up_writer.drain()
                await self._relay_response(up_reader, writer)
        finally:
            if upstream is not None:
                upstream[1].transport.abort()

    @staticmethod
    async def _relay_response(
        up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        head = await up_reader.readuntil(b"\r\n\r\n")
        writer.write(head)
        lowered = head.lower()
        if b"transfer-encoding: chunked" in lowered:
            while True:
                size_line = await up_reader.readuntil(b"\r\n")
                writer.write(size_line)
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                data = await up_reader.readexactly(size + 2)
                writer.write(data)
                await writer.drain()
                if size == 0:
                    return
        else:
            writer.write(await _read_message_body(up_reader, head))
            await writer.drain()


class CuttingProxy(_Proxy):
    """Forwards bytes both ways; cuts a seeded share of connections after a
    random number of bytes (0-``max_bytes``) in a random direction."""

    def __init__(
        self, upstream_port: int, *, seed: int, share: float = 0.3, max_bytes: int = 3000
    ) -> None:
        super().__init__(upstream_port)
        self._random = random.Random(seed)
        self._share = share
        self._max_bytes = max_bytes
        # When set, every connection is cut before a byte reaches S2.
        self.refuse_all = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse_all:
            self.stats.cut += 1
            return
        cut_after: int | None = None
        to_server = self._random.random() < 0.5
        if self._random.random() < self._share:
            cut_after = self._random.randint(0, self._max_bytes)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        cut = asyncio.Event()

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, limited: bool
        ) -> None:
            budget = cut_after if limited else None
            while not cut.is_set():
                data = await source.read(65536)
                if not data:
                    return
                if budget is not None and len(data) >= budget:
                    sink.write(data[:budget])
                    self.stats.cut += 1
                    cut.set()
                    return
                if budget is not None:
                    budget -= len(data)
                sink.write(data)
                await sink.drain()

        pipes = [
            asyncio.ensure_future(pipe(reader, up_writer, to_server)),
            asyncio.ensure_future(pipe(up_reader, writer, not to_server)),
        ]
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up_writer.transport.abort()
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
