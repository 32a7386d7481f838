"""Route failures (issue 21): every route we ship behind a real uvicorn on
loopback, when the stream store cannot be reached, when a body would crash
it, when an AI SDK source fails, and when ``make_stream`` is a programming
error.

* The store away: S2 on a closed loopback port, S2 answering 503 to
  everything, each with a short ``retry_deadline``; the embedded store on a
  full disk (a 512 KiB tmpfs). Every route answers 503 with ``Retry-After``
  and a short body, logs one line (no traceback), and the server goes on
  serving.
* A deeply nested JSON body under the demo's 64 KiB cap answers 400.
* A source the UI message stream refuses an item of is closed, with
  ``aclose``, in the task that iterated it, before the response ends.
* A ``make_stream`` returning a sync iterator answers 500 with a short body
  and one log line naming the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import PlainTextResponse, Response

from disks import fill_disk, small_tmpfs
from resumable_fast import (
    BasinMisconfiguredError,
    InvalidChunkError,
    ResumableStreamContext,
    ResumableStreamError,
    S2AuthError,
    S2ConnectionError,
    S2Error,
    StorageError,
    create_resumable_stream_context,
    to_ui_message_stream,
)
from resumable_fast.ai_sdk import (
    ChatRequest,
    MakeChatStream,
    chat_response,
    resume_chat_response,
    stop_chat_response,
)
from resumable_fast.asgi import RETRY_AFTER_SECONDS, resumable_sse, resume_sse, store_unavailable
from resumable_fast.demo.app import DemoServer, create_app, new_chat_stream_id, start_server
from resumable_fast.demo.model import SimulatedModel

from conftest import free_port
from support import from_list, read_request

pytestmark = pytest.mark.timeout(90)

RETRY_DEADLINE = 0.5
HTTP_TIMEOUT = httpx.Timeout(20.0)
INTERNAL_ERROR = "internal error: see the server log"
UNAVAILABLE = "the stream store is unavailable; try again later"


# -- the apps: the README's two recipes, and the demo ----------------------------


async def reply(chat: ChatRequest) -> AsyncIterator[str]:
    for token in ("Hello", " there"):
        yield token


def recipes_app(streams: ResumableStreamContext, make_reply: MakeChatStream = reply) -> FastAPI:
    """The README's SSE example and AI SDK recipe on one app, with a route
    whose ``make_stream`` returns a sync iterator, and a health route."""
    app = FastAPI()

    @app.post("/chat/{stream_id}")
    async def post_chat(stream_id: str, request: Request) -> Response:
        return await resumable_sse(streams, request, stream_id, lambda: from_list(["a", "b"]))

    @app.get("/chat/{stream_id}")
    async def get_chat(stream_id: str, request: Request) -> Response:
        return await resume_sse(streams, request, stream_id)

    @app.post("/sync/{stream_id}")
    async def post_sync(stream_id: str, request: Request) -> Response:
        return await resumable_sse(streams, request, stream_id, lambda: iter(["a"]))  # type: ignore[arg-type,return-value]

    @app.post("/api/chat")
    async def post_ai_chat(request: Request) -> Response:
        return await chat_response(streams, request, make_reply, heartbeat_interval=0.05)

    @app.get("/api/chat/{chat_id}/stream")
    async def resume_ai_chat(chat_id: str) -> Response:
        return await resume_chat_response(streams, chat_id)

    @app.post("/api/chat/{chat_id}/stop")
    async def stop_ai_chat(chat_id: str) -> Response:
        return await stop_chat_response(streams, chat_id)

    @app.get("/health")
    async def health() -> Response:
        return PlainTextResponse("ok")

    return app


@dataclass
class Served:
    recipes: str
    demo: str
    servers: list[DemoServer] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serve(streams: ResumableStreamContext) -> AsyncIterator[Served]:
    recipes = await start_server(recipes_app(streams), graceful_timeout=1)
    demo = await start_server(
        create_app(streams, backend_name="test", model=SimulatedModel(2000.0)), graceful_timeout=1
    )
    try:
        yield Served(recipes.url, demo.url, [recipes, demo])
    finally:
        for server in (recipes, demo):
            await server.stop()


def chat_body(chat_id: str) -> dict[str, Any]:
    return {
        "id": chat_id,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "trigger": "submit-message",
    }


@dataclass(frozen=True)
class Call:
    name: str
    method: str
    path: str  # {recipes} or {demo} first
    json: Any = None
    writes: bool = False  # fails on a full disk too (reads still work there)


def every_route(chat_id: str) -> list[Call]:
    demo_stream = new_chat_stream_id()
    return [
        Call("resumable_sse", "POST", "{recipes}/chat/s-1", writes=True),
        Call("resume_sse", "GET", "{recipes}/chat/s-1"),
        Call("chat_response", "POST", "{recipes}/api/chat", chat_body(chat_id), writes=True),
        Call("resume_chat_response", "GET", f"{{recipes}}/api/chat/{chat_id}/stream"),
        Call("stop_chat_response", "POST", f"{{recipes}}/api/chat/{chat_id}/stop"),
        Call("demo chat", "POST", "{demo}/api/chat", {"prompt": "hi"}, writes=True),
        Call("demo events", "GET", f"{{demo}}/api/chat/{demo_stream}/events"),
        Call("demo stop", "POST", f"{{demo}}/api/chat/{demo_stream}/stop", {}),
    ]


async def send(http: httpx.AsyncClient, served: Served, call: Call) -> httpx.Response:
    url = call.path.format(recipes=served.recipes, demo=served.demo)
    return await http.request(call.method, url, json=call.json)


# -- logs --------------------------------------------------------------------------


def library_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "resumable_fast" and record.levelno >= logging.ERROR
    ]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    with_traceback = [
        f"{record.name}: {record.getMessage()}" for record in caplog.records if record.exc_info
    ]
    assert with_traceback == []


# -- the store away ------------------------------------------------------------------


def s2_in_trouble(status: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
    """S2 in trouble: ``status`` (503 or 429) to every request, on a
    kept-alive connection."""
    reason = {503: b"Service Unavailable", 429: b"Too Many Requests"}[status]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                body = b'{"code":"unavailable","message":"overloaded"}'
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                    b"retry-after: 0.1\r\ncontent-length: %d\r\n\r\n%s"
                    % (status, reason, len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return answer


@contextlib.asynccontextmanager
async def s2_away(kind: str) -> AsyncIterator[ResumableStreamContext]:
    """A context on S2 that cannot be reached: a closed loopback port, or a
    server answering 503 to everything."""
    server: asyncio.Server | None = None
    if kind == "closed-port":
        port = free_port()
    else:
        status = int(kind.removeprefix("answers-"))
        server = await asyncio.start_server(s2_in_trouble(status), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    streams = create_resumable_stream_context(
        backend="s2",
        basin="resumable-fast-test",
        access_token="test-token-not-checked",
        account_endpoint=endpoint,
        basin_endpoint=endpoint,
        retry_deadline=RETRY_DEADLINE,
        drain_timeout=2,
    )
    try:
        yield streams
    finally:
        await streams.aclose()
        if server is not None:
            server.close()
            await server.wait_closed()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs under tmp_path, unmounted afterwards."""
    with small_tmpfs(tmp_path) as mount_point:
        yield mount_point


async def assert_every_route_answers_503(
    streams: ResumableStreamContext,
    caplog: pytest.LogCaptureFixture,
    *,
    only_writes: bool = False,
) -> None:
    caplog.set_level(logging.INFO)
    async with serve(streams) as served, httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        for call in every_route(f"chat-{uuid.uuid4().hex}"):
            if only_writes and not call.writes:
                continue
            caplog.clear()
            response = await send(http, served, call)
            assert response.status_code == 503, (call.name, response.status_code, response.text)
            assert response.headers["retry-after"] == str(RETRY_AFTER_SECONDS), call.name
            assert len(response.content) < 100, (call.name, response.text)
            assert "unavailable" in response.text, (call.name, response.text)
            logged = library_errors(caplog)
            assert len(logged) == 1, (call.name, [r.getMessage() for r in logged])
            assert "unavailable" in logged[0].getMessage(), call.name
            assert_no_traceback(caplog)
            # The server goes on serving.
            assert (await http.get(f"{served.recipes}/health")).text == "ok"
            assert (await http.get(f"{served.demo}/api/info")).status_code == 200


@pytest.mark.parametrize("kind", ["closed-port", "answers-503", "answers-429"])
async def test_every_route_answers_503_while_s2_is_away(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with s2_away(kind) as streams:
        await assert_every_route_answers_503(streams, caplog)


async def test_every_writing_route_answers_503_on_a_full_disk(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with create_resumable_stream_context(
        backend="embedded", data_dir=small_disk / "data", linger_ms=5
    ) as streams:
        first = await streams.resumable_stream("before", lambda: from_list(["x" * 1000] * 4))
        assert first is not None
        assert "".join([chunk async for chunk in first]) == "x" * 4000
        fill_disk(small_disk)
        await assert_every_route_answers_503(streams, caplog, only_writes=True)
        assert await streams.has_existing_stream("s-1") is None


def test_which_errors_mean_the_store_is_unavailable() -> None:
    assert store_unavailable(S2ConnectionError("refused"))
    assert store_unavailable(S2Error(503, "unavailable", "overloaded"))
    assert store_unavailable(S2Error(500, None, "internal"))
    assert store_unavailable(S2Error(429, "rate_limited", "slow down"))
    assert store_unavailable(StorageError("disk_full", "the disk is full"))
    assert store_unavailable(StorageError("read_only", "read-only"))
    # Configuration and programming errors: retrying will not help (500).
    assert not store_unavailable(S2AuthError(401, None, "bad token"))
    assert not store_unavailable(BasinMisconfiguredError(404, "basin_not_found", "no basin"))
    assert not store_unavailable(S2Error(400, "invalid", "bad request"))
    assert not store_unavailable(InvalidChunkError("not text"))
    assert not store_unavailable(ResumableStreamError("the context is closed"))


# -- bodies that crash a route --------------------------------------------------------


@pytest.mark.parametrize("route", ["demo", "ai-sdk"])
async def test_deeply_nested_json_answers_400(route: str) -> None:
    streams = create_resumable_stream_context(backend="embedded")
    async with streams, serve(streams) as served, httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        if route == "demo":
            url, key = f"{served.demo}/api/chat", b"prompt"
        else:
            url, key = f"{served.recipes}/api/chat", b"messages"
        # Valid JSON, 30,000 levels deep.
        body = b'{"%s": %s%s}' % (key, b"[" * 30_000, b"]" * 30_000)
        assert len(body) < 64 * 1024
        response = await http.post(url, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert "JSON" in response.json()["error"]
        assert (await http.get(f"{served.demo}/api/info")).status_code == 200


# -- a failing AI SDK source is closed in its own task ---------------------------------


@dataclass
class ClosingSource:
    """An async generator source that records the task iterating it and the
    task its ``finally`` ran in."""

    bad_item: object
    iterated_in: asyncio.Task[Any] | None = None
    closed_in: asyncio.Task[Any] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, chat: ChatRequest) -> AsyncIterator[Any]:
        self.iterated_in = asyncio.current_task()
        try:
            yield "Hello"
            yield self.bad_item
            yield "never sent"
        finally:
            self.closed_in = asyncio.current_task()
            self.closed.set()


def _already_running(message: str) -> bool:
    return "already running" in message


@pytest.mark.parametrize(
    "bad_item",
    [None, {"delta": "no type"}, {"type": ""}],
    ids=["none-from-a-finish-chunk", "part-without-type", "empty-type"],
)
async def test_a_source_failing_the_ui_stream_is_closed_in_its_own_task(
    bad_item: object, caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    caplog.set_level(logging.DEBUG)
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: loop_errors.append(str(context)))
    source = ClosingSource(bad_item)
    streams = create_resumable_stream_context(backend="embedded", linger_ms=5)
    try:
        async with (
            streams,
            serve_recipes(streams, source) as url,
            httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http,
        ):
            response = await http.post(f"{url}/api/chat", json=chat_body("chat-x"))
            # The response has ended: the source must be closed by now.
            closed_in, iterated_in = source.closed_in, source.iterated_in
            assert response.status_code == 200
            assert '"type":"error"' in response.text
            assert "never sent" not in response.text
        gc.collect()
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous_handler)
    assert iterated_in is not None
    assert closed_in is iterated_in, "the source was not closed in the task that iterated it"
    assert not any(_already_running(message) for message in loop_errors), loop_errors
    assert not any(_already_running(record.getMessage()) for record in caplog.records)
    assert not any(_already_running(str(warning.message)) for warning in recwarn)


@contextlib.asynccontextmanager
async def serve_recipes(
    streams: ResumableStreamContext, make_reply: MakeChatStream
) -> AsyncIterator[str]:
    server = await start_server(recipes_app(streams, make_reply), graceful_timeout=1)
    try:
        yield server.url
    finally:
        await server.stop()


@pytest.mark.parametrize("how", ["fails", "closed-early"])
async def test_to_ui_message_stream_closes_its_source_in_the_iterating_task(how: str) -> None:
    source = ClosingSource({"no": "type"})
    chat = ChatRequest("c", [], "submit-message", None, "m", {})
    events = to_ui_message_stream(source(chat), message_id="m")
    first = await events.__anext__()
    assert '"text-delta"' in first
    if how == "fails":
        with pytest.raises(Exception, match="type"):
            await events.__anext__()
    else:
        await events.aclose()
    assert source.closed_in is asyncio.current_task()


# -- make_stream returning a sync iterator ----------------------------------------------


async def sync_reply(chat: ChatRequest) -> Any:
    return iter(["not", "async"])


@pytest.mark.parametrize("route", ["resumable_sse", "chat_response"])
async def test_a_sync_iterator_from_make_stream_answers_500_with_one_clear_log_line(
    route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    streams = create_resumable_stream_context(backend="embedded")
    async with (
        streams,
        serve_recipes(streams, sync_reply) as url,
        httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http,
    ):
        caplog.clear()
        if route == "resumable_sse":
            response = await http.post(f"{url}/sync/s-sync")
            assert response.text == INTERNAL_ERROR
        else:
            response = await http.post(f"{url}/api/chat", json=chat_body("chat-sync"))
            assert response.json() == {"error": INTERNAL_ERROR}
        assert response.status_code == 500
        assert "retry-after" not in response.headers
        logged = library_errors(caplog)
        assert len(logged) == 1, [record.getMessage() for record in logged]
        message = logged[0].getMessage()
        assert "InvalidChunkError" in message, message
        assert "make_stream" in message, message
        assert_no_traceback(caplog)
        assert (await http.get(f"{url}/health")).text == "ok"
