"""The web helpers (resumable_fast.asgi) behind a real uvicorn server on loopback,
driven with httpx: SSE framing, ids, Last-Event-ID resume, heartbeats, end and
failed events, status codes, plain text, and client disconnects."""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import socket
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Scope

from resumable_fast import MakeStream, ResumableStream, ResumableStreamContext
from resumable_fast.asgi import (
    MAX_RESUME_POSITION,
    SSE_MEDIA_TYPE,
    InvalidResumePosition,
    last_event_position,
    resumable_sse,
    resume_sse,
    sse_response,
    text_response,
)

from support import TestingStream, from_list

pytestmark = pytest.mark.timeout(90)

READ_TIMEOUT = 15.0

# Text that breaks naive SSE framing: line breaks of every kind, quotes,
# backslashes, control characters, non-ASCII, and lines that look like SSE fields.
TRICKY_CHUNKS = [
    "plain ",
    "two\nlines",
    "crlf\r\nline",
    "lone\rcr",
    "\n",
    "\r\n\r\n",
    "\r",
    "trailing newline\n",
    "data: x",
    "\nid: 3\n",
    "\n:comment\n",
    "event: end\n\ndata: {}\n\n",
    "retry: 0",
    '"quoted" and \\backslash\\ and \\n not a newline',
    "é, 中文, עברית, emoji 😀👍🏽, flags 🇫🇷",
    "\u2028line separator\u2029paragraph separator\x85next line",
    "\t\x00\x01\x1b[31m\x7f",
    "\ufeffbyte order mark",
    "{}",
    "",
    "end",
]


# -- an SSE parser following the WHATWG event-stream interpretation ------------------


@dataclass
class Event:
    event: str
    data: str
    id: str | None


@dataclass
class SseParser:
    events: list[Event] = field(default_factory=list)
    # Events and comments in arrival order.
    items: list[Event | str] = field(default_factory=list)
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")()
    )
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None

    def feed(self, raw: bytes) -> None:
        self._buffer += self._decoder.decode(raw)
        while True:
            match = re.search(r"\r\n|\r|\n", self._buffer)
            # A final "\r" may be the first half of a "\r\n" still on its way.
            if match is None or (match.end() == len(self._buffer) and match.group() == "\r"):
                return
            line = self._buffer[: match.start()]
            self._buffer = self._buffer[match.end() :]
            self._line(line)

    def _line(self, line: str) -> None:
        if not line:
            if self._data:
                event = Event(self._event or "message", "\n".join(self._data), self._id)
                self.events.append(event)
                self.items.append(event)
            self._data = []
            self._event = ""
            self._id = None
            return
        if line.startswith(":"):
            self.items.append(line[1:].strip())
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value

    @property
    def last_id(self) -> str:
        ids = [event.id for event in self.events if event.id is not None]
        assert ids, "no event with an id yet"
        return ids[-1]

    def messages(self) -> list[Event]:
        return [event for event in self.events if event.event == "message"]

    def chunks(self) -> list[str]:
        chunks: list[str] = []
        for event in self.messages():
            chunk = json.loads(event.data)
            assert isinstance(chunk, str)
            chunks.append(chunk)
        return chunks

    def text(self) -> str:
        return "".join(self.chunks())


class SseReader:
    """Reads an httpx streaming response incrementally into an SseParser."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.status_code
        assert response.headers["content-type"].startswith(SSE_MEDIA_TYPE)
        self.response = response
        self.parser = SseParser()
        self.finished = False
        self._raw = response.aiter_raw()

    async def read(
        self, until: Callable[[SseParser], bool] | None = None, timeout: float = READ_TIMEOUT
    ) -> SseParser:
        """Read until ``until`` holds, or to the end of the body when None."""

        async def run() -> None:
            while until is None or not until(self.parser):
                try:
                    raw = await self._raw.__anext__()
                except StopAsyncIteration:
                    self.finished = True
                    if until is not None:
                        raise AssertionError("the response ended first") from None
                    return
                self.parser.feed(raw)

        await asyncio.wait_for(run(), timeout)
        return self.parser

    async def read_messages(self, count: int) -> SseParser:
        return await self.read(lambda parser: len(parser.messages()) >= count)


def cumulative_ids(chunks: list[str], start: int = 0) -> list[str]:
    ids = []
    position = start
    for chunk in chunks:
        position += len(chunk)
        ids.append(str(position))
    return ids


def assert_ended(parser: SseParser) -> None:
    assert parser.events, "no events"
    end = parser.events[-1]
    assert (end.event, end.data) == ("end", "{}")
    assert [event.event for event in parser.events[:-1]] == ["message"] * (len(parser.events) - 1)


# -- the app and the server ---------------------------------------------------------


class SpyStream(ResumableStream):
    """Wraps a stream and records that it was closed."""

    def __init__(self, inner: ResumableStream) -> None:
        self.stream_id = inner.stream_id
        self.inner = inner
        self.closed = asyncio.Event()

    async def __anext__(self) -> str:
        return await self.inner.__anext__()

    async def aclose(self) -> None:
        self.closed.set()
        await self.inner.aclose()


@dataclass
class Web:
    ctx: ResumableStreamContext
    client: httpx.AsyncClient
    sources: dict[str, MakeStream] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    spies: dict[str, SpyStream] = field(default_factory=dict)
    heartbeat_interval: float = 15.0

    def make_stream(self, stream_id: str) -> MakeStream:
        def make() -> AsyncIterable[str] | Awaitable[AsyncIterable[str]]:
            self.calls[stream_id] += 1
            return self.sources[stream_id]()

        return make


def build_app(web: Web) -> Starlette:
    ctx = web.ctx

    async def post_sse(request: Request) -> Response:
        stream_id = request.path_params["id"]
        return await resumable_sse(
            ctx,
            request,
            stream_id,
            web.make_stream(stream_id),
            heartbeat_interval=web.heartbeat_interval,
        )

    async def get_sse(request: Request) -> Response:
        return await resume_sse(
            ctx, request, request.path_params["id"], heartbeat_interval=web.heartbeat_interval
        )

    async def get_replay(request: Request) -> Response:
        return await resume_sse(
            ctx,
            request,
            request.path_params["id"],
            heartbeat_interval=web.heartbeat_interval,
            replay_finished=True,
        )

    async def post_text(request: Request) -> Response:
        stream_id = request.path_params["id"]
        stream = await ctx.resumable_stream(stream_id, web.make_stream(stream_id))
        assert stream is not None
        return text_response(stream, headers={"X-Extra": "1"})

    async def spy(request: Request) -> Response:
        stream_id = request.path_params["id"]
        stream: ResumableStream | None
        if request.method == "POST":
            stream = await ctx.resumable_stream(stream_id, web.make_stream(stream_id))
        else:
            stream = await ctx.resume_stream(stream_id)
        assert stream is not None
        web.spies[stream_id] = SpyStream(stream)
        return sse_response(web.spies[stream_id], heartbeat_interval=web.heartbeat_interval)

    return Starlette(
        routes=[
            Route("/sse/{id}", post_sse, methods=["POST"]),
            Route("/sse/{id}", get_sse, methods=["GET"]),
            Route("/replay/{id}", get_replay, methods=["GET"]),
            Route("/text/{id}", post_text, methods=["POST"]),
            Route("/spy/{id}", spy, methods=["GET", "POST"]),
        ]
    )


@pytest.fixture
async def web(ctx: ResumableStreamContext) -> AsyncIterator[Web]:
    # Bound here and handed to uvicorn: no window for another process to take the port.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=READ_TIMEOUT, trust_env=False
    ) as client:
        state = Web(ctx, client)
        config = uvicorn.Config(
            build_app(state),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            await wait_until(lambda: server.started or task.done())
            assert not task.done(), "uvicorn exited during start-up"
            yield state
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)
            sock.close()


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def wait_done(ctx: ResumableStreamContext, stream_id: str) -> None:
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        if await ctx.has_existing_stream(stream_id) == "DONE":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"stream {stream_id} did not finish in time")


async def post_all(web: Web, path: str, headers: dict[str, str] | None = None) -> SseParser:
    async with web.client.stream("POST", path, headers=headers) as response:
        return await SseReader(response).read()


async def get_all(
    web: Web, path: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> SseParser:
    async with web.client.stream("GET", path, headers=headers, params=params) as response:
        return await SseReader(response).read()


# -- framing and ids ----------------------------------------------------------------


async def test_tricky_text_survives_the_framing(web: Web, stream_id: str) -> None:
    web.sources[stream_id] = lambda: from_list(TRICKY_CHUNKS)
    sent = [chunk for chunk in TRICKY_CHUNKS if chunk]
    async with web.client.stream("POST", f"/sse/{stream_id}") as response:
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        live = await SseReader(response).read()
    assert_ended(live)
    assert live.chunks() == sent
    assert [event.id for event in live.messages()] == cumulative_ids(sent)

    # The same from storage: a full replay of the finished stream.
    await wait_done(web.ctx, stream_id)
    replay = await get_all(web, f"/replay/{stream_id}")
    assert_ended(replay)
    assert replay.chunks() == sent
    assert [event.id for event in replay.messages()] == cumulative_ids(sent)


async def test_every_data_line_is_one_json_string(web: Web, stream_id: str) -> None:
    web.sources[stream_id] = lambda: from_list(TRICKY_CHUNKS)
    response = await web.client.post(f"/sse/{stream_id}")
    lines = response.content.split(b"\n")
    data_lines = [line for line in lines if line.startswith(b"data: ")]
    assert len(data_lines) == len([chunk for chunk in TRICKY_CHUNKS if chunk]) + 1
    for line in data_lines[:-1]:
        assert isinstance(json.loads(line.removeprefix(b"data: ")), str)
    assert data_lines[-1] == b"data: {}"
    # Only "\n" separates lines: a CR in the body would be a line break to EventSource.
    assert b"\r" not in response.content
    assert response.content.endswith(b"event: end\ndata: {}\n\n")


async def test_lone_surrogate_keeps_positions(web: Web, stream_id: str) -> None:
    chunks = ["a\ud800b", "c"]
    web.sources[stream_id] = lambda: from_list(chunks)
    live = await post_all(web, f"/sse/{stream_id}")
    # The producer's client gets the chunk as the source made it...
    assert live.chunks() == chunks
    assert [event.id for event in live.messages()] == ["3", "4"]
    await wait_done(web.ctx, stream_id)
    # ...storage has U+FFFD in its place, one character for one.
    replay = await get_all(web, f"/replay/{stream_id}", headers={"Last-Event-ID": "1"})
    assert replay.text() == "\ufffdbc"
    assert [event.id for event in replay.messages()] == ["3", "4"]


async def test_ids_count_from_the_resume_position(web: Web, stream_id: str) -> None:
    chunks = ["héllo ", "wörld ", "😀 ", "end"]
    full = "".join(chunks)
    web.sources[stream_id] = lambda: from_list(chunks)
    await post_all(web, f"/sse/{stream_id}")
    await wait_done(web.ctx, stream_id)
    for position in range(len(full) + 2):
        replay = await get_all(
            web, f"/replay/{stream_id}", headers={"Last-Event-ID": str(position)}
        )
        assert_ended(replay)
        assert replay.text() == full[position:]
        ids = [event.id for event in replay.messages()]
        assert ids == cumulative_ids(replay.chunks(), start=position)
        if ids:
            assert ids[-1] == str(len(full))


# -- resuming over HTTP ----------------------------------------------------------------


async def test_last_event_id_resumes_a_live_stream_exactly(web: Web, stream_id: str) -> None:
    chunks = [f"token {i}{'é' if i % 3 else '😀'}\n" for i in range(100)]
    web.sources[stream_id] = lambda: from_list(chunks, delay=0.02)
    parts: list[str] = []

    # First leg: the producer's own response, cut off after a few events.
    async with web.client.stream("POST", f"/sse/{stream_id}") as response:
        first = await SseReader(response).read_messages(10)
    parts.extend(first.chunks())
    assert first.last_id == str(len("".join(parts)))
    assert await web.ctx.has_existing_stream(stream_id) is True, "the producer finished too soon"

    # Second leg: an EventSource-style reconnect with Last-Event-ID, cut off again.
    async with web.client.stream(
        "GET", f"/sse/{stream_id}", headers={"Last-Event-ID": first.last_id}
    ) as response:
        second = await SseReader(response).read_messages(10)
    assert int(second.messages()[0].id or "") > int(first.last_id)
    parts.extend(second.chunks())
    assert second.last_id == str(len("".join(parts)))
    assert await web.ctx.has_existing_stream(stream_id) is True, "the producer finished too soon"

    # Third leg: the position as a query parameter (a fresh page), read to the end.
    third = await get_all(web, f"/sse/{stream_id}", params={"lastEventId": second.last_id})
    assert_ended(third)
    parts.extend(third.chunks())
    assert "".join(parts) == "".join(chunks)
    assert third.last_id == str(len("".join(chunks)))


async def test_header_wins_over_query_parameter(web: Web, stream_id: str) -> None:
    web.sources[stream_id] = lambda: from_list(["0123456789"])
    await post_all(web, f"/sse/{stream_id}")
    await wait_done(web.ctx, stream_id)
    replay = await get_all(
        web, f"/replay/{stream_id}", headers={"Last-Event-ID": "7"}, params={"lastEventId": "2"}
    )
    assert replay.text() == "789"
    replay = await get_all(web, f"/replay/{stream_id}", params={"lastEventId": "2"})
    assert replay.text() == "23456789"
    # An empty header (EventSource never sends one, a proxy might) counts as absent.
    replay = await get_all(
        web, f"/replay/{stream_id}", headers={"Last-Event-ID": ""}, params={"lastEventId": "4"}
    )
    assert replay.text() == "456789"


async def test_joining_producer_post_resumes_after_position(web: Web, stream_id: str) -> None:
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/sse/{stream_id}") as response:
        producer = SseReader(response)
        source.write("abc")
        source.write("def")
        await producer.read_messages(2)
        # A second POST (another tab) joins the stream after what it has seen.
        async with web.client.stream(
            "POST", f"/sse/{stream_id}", headers={"Last-Event-ID": "4"}
        ) as response2:
            joined = SseReader(response2)
            source.write("ghi")
            source.close()
            await joined.read()
        await producer.read()
    assert web.calls[stream_id] == 1
    assert producer.parser.text() == "abcdefghi"
    assert joined.parser.text() == "efghi"
    assert joined.parser.last_id == "9"
    assert_ended(joined.parser)


async def test_producer_post_with_a_position_skips_it(web: Web, stream_id: str) -> None:
    # A POST that carries a position but becomes the producer: ids stay positions.
    web.sources[stream_id] = lambda: from_list(["abc", "def", "ghi"])
    parser = await post_all(web, f"/sse/{stream_id}", headers={"Last-Event-ID": "4"})
    assert web.calls[stream_id] == 1
    assert parser.chunks() == ["ef", "ghi"]
    assert [event.id for event in parser.messages()] == ["6", "9"]


# -- heartbeats, end and failure ------------------------------------------------------


async def test_heartbeats_while_the_producer_is_silent(web: Web, stream_id: str) -> None:
    web.heartbeat_interval = 0.1
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/sse/{stream_id}") as response:
        reader = SseReader(response)
        source.write("before")
        await reader.read_messages(1)
        await reader.read(lambda parser: parser.items.count("heartbeat") >= 3, timeout=5)
        source.write("after")
        source.close()
        await reader.read()
    items = reader.parser.items
    assert isinstance(items[0], Event)
    assert items[0].data == '"before"'
    heartbeats = [i for i, item in enumerate(items) if item == "heartbeat"]
    after = next(i for i, item in enumerate(items) if isinstance(item, Event) and item.id == "11")
    assert len(heartbeats) >= 3
    assert all(0 < i < after for i in heartbeats)
    assert reader.parser.text() == "beforeafter"
    assert_ended(reader.parser)


async def test_resumed_reader_gets_heartbeats_too(web: Web, stream_id: str) -> None:
    web.heartbeat_interval = 0.1
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/sse/{stream_id}") as response:
        producer = SseReader(response)
        async with web.client.stream("GET", f"/sse/{stream_id}") as response2:
            reader = SseReader(response2)
            await reader.read(lambda parser: parser.items.count("heartbeat") >= 2, timeout=5)
            source.write("x")
            source.close()
            await reader.read()
        await producer.read()
    assert reader.parser.text() == "x"
    assert_ended(reader.parser)


async def test_failed_source_sends_failed_event(web: Web, stream_id: str) -> None:
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/sse/{stream_id}") as response:
        producer = SseReader(response)
        async with web.client.stream("GET", f"/sse/{stream_id}") as response2:
            reader = SseReader(response2)
            source.write("partial ")
            await producer.read_messages(1)
            await reader.read_messages(1)
            source.fail(RuntimeError("upstream said: api key sk-secret-123 is invalid"))
            await reader.read()
        await producer.read()
    for parser in (producer.parser, reader.parser):
        assert parser.text() == "partial "
        failed = parser.events[-1]
        assert failed.event == "failed"
        message = json.loads(failed.data)["message"]
        assert isinstance(message, str)
        assert message
        assert "secret" not in failed.data
        assert [event.event for event in parser.events[:-1]] == ["message"]
    # The producer's client and a reader see the same failure.
    assert producer.parser.events[-1] == reader.parser.events[-1]
    # A failed stream is finished: no new producer, no resume.
    await wait_done(web.ctx, stream_id)
    assert (await web.client.post(f"/sse/{stream_id}")).status_code == 422
    assert (await web.client.get(f"/sse/{stream_id}")).status_code == 422
    assert web.calls[stream_id] == 1
    replay = await get_all(web, f"/replay/{stream_id}")
    assert replay.text() == "partial "
    assert replay.events[-1].event == "failed"


async def test_empty_stream_just_ends(web: Web, stream_id: str) -> None:
    web.sources[stream_id] = lambda: from_list(["", ""])
    parser = await post_all(web, f"/sse/{stream_id}")
    assert [event.event for event in parser.events] == ["end"]


# -- status codes ---------------------------------------------------------------------


async def test_finished_and_unknown_streams(web: Web, stream_id: str) -> None:
    unknown = f"{stream_id}-never"
    for path in (f"/sse/{unknown}", f"/replay/{unknown}"):
        response = await web.client.get(path)
        assert (response.status_code, response.text) == (404, "no such stream")
    assert await web.ctx.has_existing_stream(unknown) is None

    web.sources[stream_id] = lambda: from_list(["done"])
    await post_all(web, f"/sse/{stream_id}")
    await wait_done(web.ctx, stream_id)
    for method in ("POST", "GET"):
        response = await web.client.request(method, f"/sse/{stream_id}")
        assert (response.status_code, response.text) == (422, "stream is already done")
    assert web.calls[stream_id] == 1


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/sse/"), ("GET", "/sse/"), ("GET", "/replay/")]
)
async def test_invalid_stream_id_is_400(web: Web, method: str, path: str) -> None:
    response = await web.client.request(method, path + "x" * 600)
    assert response.status_code == 400
    assert "stream id" in response.text
    assert len(response.text) < 200


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Last-Event-ID": "abc"}, {}),
        ({"Last-Event-ID": "-1"}, {}),
        ({"Last-Event-ID": "+1"}, {}),
        ({"Last-Event-ID": "1.5"}, {}),
        ({"Last-Event-ID": "1_000"}, {}),
        ({"Last-Event-ID": "1e3"}, {}),
        ({"Last-Event-ID": str(MAX_RESUME_POSITION + 1)}, {}),
        ({"Last-Event-ID": "9" * 5000}, {}),
        ({}, {"lastEventId": "x"}),
        ({}, {"lastEventId": " 3"}),
        ({}, {"lastEventId": "٣"}),  # an Arabic-Indic digit: int() would take it
        ({"Last-Event-ID": "oops"}, {"lastEventId": "3"}),
    ],
)
async def test_invalid_position_is_400(
    web: Web, stream_id: str, headers: dict[str, str], params: dict[str, str]
) -> None:
    web.sources[stream_id] = lambda: from_list(["never produced"])
    for method, path in (("POST", "/sse/"), ("GET", "/sse/"), ("GET", "/replay/")):
        response = await web.client.request(
            method, path + stream_id, headers=headers, params=params
        )
        assert response.status_code == 400, (method, path)
        assert "expected a character position" in response.text
    assert web.calls[stream_id] == 0
    assert await web.ctx.has_existing_stream(stream_id) is None


# -- plain text -----------------------------------------------------------------------


async def test_text_response_streams_plain_text(web: Web, stream_id: str) -> None:
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/text/{stream_id}") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-extra"] == "1"
        body = response.aiter_text()
        source.write("first\r\nline 😀")
        # Delivered as it comes, not at the end.
        assert await asyncio.wait_for(body.__anext__(), READ_TIMEOUT) == "first\r\nline 😀"
        source.write(" and the rest\n")
        source.close()
        rest = "".join([text async for text in body])
    assert rest == " and the rest\n"


async def test_text_response_aborts_on_failure(web: Web, stream_id: str) -> None:
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/text/{stream_id}") as response:
        body = response.aiter_bytes()
        source.write("partial")
        assert await asyncio.wait_for(body.__anext__(), READ_TIMEOUT) == b"partial"
        source.fail(RuntimeError("boom"))
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(body.__anext__(), READ_TIMEOUT)


# -- client disconnects -------------------------------------------------------------------


async def test_disconnect_mid_stream_closes_the_stream(web: Web, stream_id: str) -> None:
    chunks = [f"chunk {i} " for i in range(60)]
    web.sources[stream_id] = lambda: from_list(chunks, delay=0.01)
    async with web.client.stream("POST", f"/spy/{stream_id}") as response:
        await SseReader(response).read_messages(3)
    spy = web.spies[stream_id]
    await asyncio.wait_for(spy.closed.wait(), 10)
    # The producer's client left; the producer persists to the end anyway.
    await wait_done(web.ctx, stream_id)
    replay = await get_all(web, f"/replay/{stream_id}")
    assert replay.text() == "".join(chunks)


async def test_disconnect_while_idle_closes_the_stream(web: Web, stream_id: str) -> None:
    source = TestingStream()
    web.sources[stream_id] = source.readable
    async with web.client.stream("POST", f"/spy/{stream_id}") as response:
        producer = SseReader(response)
        source.write("one ")
        await producer.read_messages(1)
        producer_spy = web.spies[stream_id]
        async with web.client.stream("GET", f"/spy/{stream_id}") as response2:
            await SseReader(response2).read_messages(1)
            reader_spy = web.spies[stream_id]
            assert reader_spy is not producer_spy
        # The reader left while nothing was coming: its read session is closed.
        await asyncio.wait_for(reader_spy.closed.wait(), 10)
        assert not producer_spy.closed.is_set()
    await asyncio.wait_for(producer_spy.closed.wait(), 10)
    # Both clients are gone; the source is still pulled and persisted.
    assert not source.closed_by_consumer
    source.write("two")
    source.close()
    await wait_done(web.ctx, stream_id)
    assert (await get_all(web, f"/replay/{stream_id}")).text() == "one two"


async def test_finished_response_closes_the_stream(web: Web, stream_id: str) -> None:
    web.sources[stream_id] = lambda: from_list(["a", "b"])
    parser = await post_all(web, f"/spy/{stream_id}")
    assert parser.text() == "ab"
    await asyncio.wait_for(web.spies[stream_id].closed.wait(), 10)


# -- without a server ---------------------------------------------------------------------


def make_request(headers: dict[str, str], query: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "query_string": query.encode(),
        }
    )


def test_last_event_position_values() -> None:
    assert last_event_position(make_request({})) == 0
    assert last_event_position(make_request({"Last-Event-ID": "0"})) == 0
    assert last_event_position(make_request({"Last-Event-ID": "0042"})) == 42
    assert last_event_position(make_request({}, "lastEventId=17")) == 17
    assert last_event_position(make_request({"Last-Event-ID": "5"}, "lastEventId=17")) == 5
    top = str(MAX_RESUME_POSITION)
    assert last_event_position(make_request({"Last-Event-ID": top})) == MAX_RESUME_POSITION
    for bad in ("x", "-0", "0x10", "1 ", "²"):
        with pytest.raises(InvalidResumePosition) as info:
            last_event_position(make_request({}, f"lastEventId={bad}"))
        assert isinstance(info.value, ValueError)


def test_sse_response_arguments() -> None:
    stream = SpyStream.__new__(SpyStream)
    with pytest.raises(ValueError, match="start_position"):
        sse_response(stream, start_position=-1)
    with pytest.raises(TypeError, match="start_position"):
        sse_response(stream, start_position=True)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        sse_response(stream, heartbeat_interval=0)
    with pytest.raises(ValueError, match="heartbeat_interval"):
        sse_response(stream, heartbeat_interval=float("nan"))
    response = sse_response(stream, headers={"Cache-Control": "no-store", "X-Custom": "y"})
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-custom"] == "y"
    assert response.media_type == SSE_MEDIA_TYPE


class ListStream(ResumableStream):
    """A stream of fixed chunks that records its closing."""

    def __init__(self, chunks: list[str]) -> None:
        self.stream_id = "local"
        self._chunks = iter(chunks)
        self.closed = False

    async def __anext__(self) -> str:
        await asyncio.sleep(0)
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("kind", ["sse", "text"])
async def test_failing_send_closes_the_stream(kind: str) -> None:
    # ASGI 2.4 servers report a gone client as OSError from send(), between two
    # chunks: the body is left suspended at a yield and must still be closed.
    stream = ListStream(["a", "b", "c", "d"])
    response = sse_response(stream) if kind == "sse" else text_response(stream)
    bodies: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            bodies.append(message["body"])
            if len(bodies) == 2:
                raise OSError("connection reset by peer")

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    scope: Scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
    with pytest.raises(ClientDisconnect):
        await asyncio.wait_for(response(scope, receive, send), READ_TIMEOUT)
    assert stream.closed


async def test_slow_client_holds_back_the_reader() -> None:
    pulled = 0

    class CountingStream(ListStream):
        async def __anext__(self) -> str:
            nonlocal pulled
            chunk = await super().__anext__()
            pulled += 1
            return chunk

    chunks = [f"{i} " for i in range(3000)]
    stream = CountingStream(chunks)
    response = sse_response(stream)
    parser = SseParser()
    released = asyncio.Event()

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            parser.feed(message["body"])
            # The client stalls after the first write.
            await released.wait()

    async def receive() -> Message:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    scope: Scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "GET"}
    serving = asyncio.ensure_future(response(scope, receive, send))
    try:
        await wait_until(lambda: pulled >= 200)
        await asyncio.sleep(0.1)
        assert pulled <= 300, "the reader ran ahead of a stalled client"
    finally:
        released.set()
    await asyncio.wait_for(serving, READ_TIMEOUT)
    assert parser.chunks() == chunks
    assert_ended(parser)
    assert stream.closed
