"""The ``s2_floor`` peer: the least any client can do to persist a stream on
S2 at a given batch rate, measured so that a target out of reach can be told
from one missed (issue 24).

It is ``raw_task`` (a source in a task of its own, each chunk handed to the
client through a channel) plus one append per batch to s2-lite with nothing
else around it: a batch is sealed by count alone (the batch size, or, paced,
the tokens one linger holds: no timer), its JSON body made by one
``orjson.dumps``, its request bytes by one format, sent on a kept-alive
connection of the stream's own (no pool, no deadline), and its answer read
only for its status line and ``Content-Length``. No fencing token, no
``match_seq_num``, no closing fence, no retries and no resume: what it
leaves out is what makes a stream safe to share, so it is a floor, ranked
against nobody. Its acknowledged tokens are awaited before its producer
client sees the end, as ours are.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import quote, urlsplit

import orjson

from resumable_fast.config import S2Config
from resumable_fast.streams import ChunkChannel

from peer_base import ChannelPeer, Options, Peer

__all__ = ["s2_floor"]


class _AppendConnection(asyncio.Protocol):
    """One stream's kept-alive connection: its appends one at a time, in
    order, each sent once the previous one's answer is in."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._queued: deque[bytes] = deque()
        self._in_flight = False
        self._answer = bytearray()
        self._settled: asyncio.Future[None] | None = None
        self.failure: Exception | None = None
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def append(self, request: bytes) -> None:
        self._queued.append(request)
        if not self._in_flight:
            self._send_next()

    def _send_next(self) -> None:
        assert self._transport is not None
        self._in_flight = True
        self.sent += 1
        self._transport.write(self._queued.popleft())

    def data_received(self, data: bytes) -> None:
        answer = self._answer
        answer += data
        head_end = answer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(answer[:head_end]).lower()
        length_at = head.find(b"content-length:")
        if length_at < 0:
            self._fail(RuntimeError("s2_floor: an answer without Content-Length"))
            return
        length = int(head[length_at + 15 : head.find(b"\r\n", length_at)].strip() or b"0")
        if len(answer) < head_end + 4 + length:
            return
        if not head.startswith(b"http/1.1 200"):
            status_line = bytes(answer[: answer.find(b"\r\n")])
            self._fail(RuntimeError(f"s2_floor: answered {status_line!r}"))
            return
        del answer[: head_end + 4 + length]
        self._in_flight = False
        if self._queued:
            self._send_next()
        elif self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._in_flight or self._queued:
            self._fail(exc or RuntimeError("s2_floor: connection closed mid-append"))

    def _fail(self, error: Exception) -> None:
        self.failure = error
        if self._settled is not None and not self._settled.done():
            self._settled.set_exception(error)

    async def settled(self) -> None:
        """Every queued append answered."""
        if self.failure is not None:
            raise self.failure
        if self._in_flight or self._queued:
            self._settled = asyncio.get_running_loop().create_future()
            await self._settled

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class S2FloorPeer(ChannelPeer):
    persists = False  # nothing it writes is fenced or read back; see the module

    def __init__(self, options: Options) -> None:
        super().__init__({"orjson": orjson.__version__})
        config = S2Config.from_options()
        url = urlsplit(config.basin_url)
        if url.scheme != "http" or url.hostname is None:
            raise SystemExit("s2_floor talks plain HTTP to s2-lite on loopback only")
        self._address = (url.hostname, url.port or 80)
        self._target = url.path.rstrip("/")
        head = f"Host: {url.netloc}\r\nContent-Type: application/json\r\n"
        if config.access_token:
            head += f"Authorization: Bearer {config.access_token}\r\n"
        if config.shared_basin_endpoint:
            head += f"s2-basin: {config.basin}\r\n"
        self._head = head
        # Paced, a batch holds what one linger gathers; unpaced, a batch size.
        per_linger = round(options.rate * options.linger_ms / 1000) if options.rate else 0
        self._per_batch = max(1, min(options.batch_size, per_linger or options.batch_size))

    async def drive(
        self, stream_id: str, source: AsyncIterator[str], channel: ChunkChannel
    ) -> None:
        request_line = (
            f"POST {self._target}/streams/{quote(stream_id, safe='')}/records HTTP/1.1\r\n"
        )
        prefix = (request_line + self._head).encode()
        _, connection = await asyncio.get_running_loop().create_connection(
            _AppendConnection, *self._address
        )
        per_batch = self._per_batch
        batch: list[dict[str, str]] = []
        put = channel.put
        failure: BaseException | None = None

        def send() -> None:
            body = orjson.dumps({"records": batch})
            connection.append(b"%sContent-Length: %d\r\n\r\n%s" % (prefix, len(body), body))
            self.counters.requests += 1
            self.counters.appends += 1
            batch.clear()

        try:
            async for chunk in source:
                put(chunk)
                batch.append({"body": chunk})
                if len(batch) >= per_batch:
                    send()
            if batch:
                send()
            await connection.settled()
        except BaseException as exc:
            failure = exc
            raise
        finally:
            connection.close()
            channel.close(failure)


async def s2_floor(options: Options) -> Peer:
    return S2FloorPeer(options)
