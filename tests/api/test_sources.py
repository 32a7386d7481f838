"""Real token sources against a fake provider server, cancelled at every point.

Each source is what an application would pass as ``make_stream``: the OpenAI
and Anthropic SDKs (httpx and anyio underneath), plain httpx, and sources
holding an ``asyncio.timeout``, an ``anyio.fail_after`` or a contextvar across
their yields. Each is wrapped in a :class:`TrackedSource` that records the
task of every step and of its ``aclose()``. The producer's client goes away at
each point of the reply:

* ``closed-before-first-chunk``: it closes the stream right after creating it;
* ``cancelled-before-first-chunk``: its task is cancelled while it waits for
  the first chunk;
* ``cancelled-inside-anext``: it reads a few chunks, then its task is
  cancelled while it awaits ``__anext__()`` (a web server cancelling the
  response task of a browser that went away);
* ``closed-between-chunks``: it reads a few chunks, then closes the stream;
* ``cancelled-after-source-ended``: it has every chunk and waits for the end,
  which is slowed down (the closing fence takes a while to land); that wait
  is cancelled.

Every client closes its stream at the end, as the web helpers do.

Whatever the point, the reply goes on without the client: a resumed reader
gets the exact text, the stream ends ``DONE`` (not with an ``error-`` fence),
nothing is logged at WARNING or above, the provider is asked once, and the
source ran in one task of its own, not the client's, from its first step to its
``aclose()``, which ran exactly once.

Then the same through the README's FastAPI wiring behind a real uvicorn, with a
client that drops its connection mid-reply; and a source whose own timeout
fires after its client has gone.
"""

from __future__ import annotations

import asyncio
import codecs
import contextvars
import json
import logging
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
import httpx
import pytest
import uvicorn
from anthropic import AsyncAnthropic
from fastapi import FastAPI, Request
from openai import AsyncOpenAI
from starlette.responses import Response

from resumable_fast import (
    NO_LANDING,
    Landing,
    ResumableStreamContext,
    StreamFailedError,
    StreamName,
)
from resumable_fast.asgi import resumable_sse, resume_sse

from conftest import ContextFactory, free_port
from fake_provider import FakeProvider, fake_provider_server, reply_tokens
from support import read_until_error

pytestmark = pytest.mark.timeout(120)

PACE_S = 0.005
TOKENS = 30
READ_BEFORE_LEAVING = 3  # chunks the client reads before it goes
DEADLINE = 10.0
API_KEY = "test-key-not-secret"


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with fake_provider_server(pace_s=PACE_S, tokens=TOKENS) as server:
        yield server


# -- sources -------------------------------------------------------------------------

# Set by the producer's client before it creates the stream; the contextvar
# source takes its prompt from it.
PROMPT: contextvars.ContextVar[str] = contextvars.ContextVar("test_sources_prompt")


async def openai_source(provider: FakeProvider, prompt: str) -> AsyncIterator[str]:
    async with AsyncOpenAI(
        base_url=provider.openai_base_url, api_key=API_KEY, max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="fake-gpt", messages=[{"role": "user", "content": prompt}], stream=True
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content


async def anthropic_source(provider: FakeProvider, prompt: str) -> AsyncIterator[str]:
    async with (
        AsyncAnthropic(
            base_url=provider.anthropic_base_url, api_key=API_KEY, max_retries=0
        ) as client,
        client.messages.stream(
            model="fake-claude", max_tokens=1024, messages=[{"role": "user", "content": prompt}]
        ) as stream,
    ):
        async for text in stream.text_stream:
            yield text


async def httpx_source(provider: FakeProvider, prompt: str) -> AsyncIterator[str]:
    async with (
        httpx.AsyncClient() as client,
        client.stream("GET", f"{provider.url}/v1/text", params={"prompt": prompt}) as response,
    ):
        response.raise_for_status()
        async for text in response.aiter_text():
            yield text


async def socket_text(provider: FakeProvider, prompt: str) -> AsyncIterator[str]:
    """The /v1/text reply read with plain asyncio streams (no httpx, no anyio):
    each step awaits a real socket read."""
    url = urlsplit(provider.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        target = "/v1/text?" + urlencode({"prompt": prompt})
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"transfer-encoding: chunked" in head.lower(), head
        decoder = codecs.getincrementaldecoder("utf-8")()
        while size := int((await reader.readline()).split(b";")[0], 16):
            text = decoder.decode((await reader.readexactly(size + 2))[:-2])
            if text:
                yield text
        if tail := decoder.decode(b"", final=True):
            yield tail
    finally:
        writer.close()


def asyncio_timeout(seconds: float) -> AbstractAsyncContextManager[object]:
    if sys.version_info < (3, 11):
        raise RuntimeError("asyncio.timeout needs Python 3.11")
    return asyncio.timeout(seconds)


async def asyncio_timeout_source(
    provider: FakeProvider, prompt: str, seconds: float = 30
) -> AsyncIterator[str]:
    async with asyncio_timeout(seconds):
        async for text in socket_text(provider, prompt):
            yield text


async def anyio_fail_after_source(
    provider: FakeProvider, prompt: str, seconds: float = 30
) -> AsyncIterator[str]:
    with anyio.fail_after(seconds):
        async for text in socket_text(provider, prompt):
            yield text


async def contextvar_source(provider: FakeProvider, prompt: str) -> AsyncIterator[str]:
    # The prompt the client set; a LookupError (a failed stream) if it is not seen.
    async for text in socket_text(provider, PROMPT.get()):
        yield text


async def plain_socket_source(provider: FakeProvider, prompt: str) -> AsyncIterator[str]:
    async for text in socket_text(provider, prompt):
        yield text


SourceFunction = Callable[[FakeProvider, str], AsyncIterator[str]]

SOURCES: dict[str, SourceFunction] = {
    "openai": openai_source,
    "anthropic": anthropic_source,
    "httpx": httpx_source,
    "asyncio-timeout": asyncio_timeout_source,
    "anyio-fail-after": anyio_fail_after_source,
    "contextvar": contextvar_source,
    "plain-socket": plain_socket_source,
}


class TrackedSource:
    """Wraps a source: records the task of the start and end of every
    ``__anext__()`` and of every ``aclose()``, and how the source ended."""

    def __init__(self, inner: AsyncIterator[str]) -> None:
        self._inner = inner
        self.step_tasks: list[asyncio.Task[Any] | None] = []
        self.close_tasks: list[asyncio.Task[Any] | None] = []
        self.in_anext = False
        self.ended = False
        self.error: BaseException | None = None

    def __aiter__(self) -> TrackedSource:
        return self

    async def __anext__(self) -> str:
        self.step_tasks.append(asyncio.current_task())
        self.in_anext = True
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self.ended = True
            raise
        except Exception as exc:
            self.ended = True
            self.error = exc
            raise
        finally:
            self.in_anext = False
            self.step_tasks.append(asyncio.current_task())

    async def aclose(self) -> None:
        self.close_tasks.append(asyncio.current_task())
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()

    def describe(self) -> str:
        state = "inside __anext__" if self.in_anext else "ended" if self.ended else "idle"
        return (
            f"{state}, {len(self.step_tasks) // 2} steps done, error {self.error!r}, "
            f"closed {len(self.close_tasks)} times"
        )


class SourceProbe:
    """The ``make_stream`` of a test: makes the tracked source and keeps it."""

    def __init__(self, make: Callable[[], AsyncIterator[str]]) -> None:
        self._make = make
        self.made: list[TrackedSource] = []

    @classmethod
    def of(cls, kind: str, provider: FakeProvider, prompt: str) -> SourceProbe:
        return cls(lambda: SOURCES[kind](provider, prompt))

    def __call__(self) -> TrackedSource:
        source = TrackedSource(self._make())
        self.made.append(source)
        return source

    @property
    def source(self) -> TrackedSource:
        assert len(self.made) == 1, f"make_stream was called {len(self.made)} times"
        return self.made[0]


# -- checks --------------------------------------------------------------------------


async def eventually(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while not condition():
        if loop.time() > until:
            pytest.fail(f"not within {deadline} s: {what}")
        await asyncio.sleep(0.005)


async def wait_until_done(
    ctx: ResumableStreamContext,
    stream_id: str,
    deadline: float = DEADLINE,
    source: TrackedSource | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    state = await ctx.has_existing_stream(stream_id)
    while state != "DONE":
        if loop.time() > until:
            where = "" if source is None else f" (its source: {source.describe()})"
            pytest.fail(f"the stream is still {state!r} after {deadline} s{where}")
        await asyncio.sleep(0.01)
        state = await ctx.has_existing_stream(stream_id)


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{record.levelname}: {record.getMessage()}"
        for record in caplog.records
        if record.name.startswith("resumable_fast") and record.levelno >= logging.WARNING
    ]


async def check_source_lifecycle(
    probe: SourceProbe, not_in: set[asyncio.Task[Any] | None]
) -> TrackedSource:
    """The source was made once, closed exactly once, and ran from its first
    step to its close in one task, none of ``not_in``."""
    source = probe.source
    await eventually(lambda: bool(source.close_tasks), "the source was closed")
    await asyncio.sleep(0.02)  # a second close would come right after the first
    assert len(source.close_tasks) == 1, f"aclose() ran {len(source.close_tasks)} times"
    tasks = list(dict.fromkeys(source.step_tasks + source.close_tasks))
    names = [task.get_name() if task else "no task" for task in tasks]
    assert len(tasks) == 1, f"the source ran in {len(tasks)} tasks, in this order: {names}"
    assert source.step_tasks[0] is source.close_tasks[0]
    assert source.step_tasks[0] is not None
    assert source.step_tasks[0] not in not_in, "the source ran in the client's (or test's) task"
    return source


async def check_finished_exactly(
    ctx: ResumableStreamContext,
    stream_id: str,
    prompt: str,
    probe: SourceProbe,
    provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    not_in: set[asyncio.Task[Any] | None],
) -> None:
    expected = "".join(reply_tokens(prompt, TOKENS))
    chunks, error = await read_until_error(await ctx.resume_stream(stream_id))
    source_error = probe.made[0].error if probe.made else None
    assert error is None, f"the resumed reader got {error!r}; the source raised {source_error!r}"
    assert "".join(chunks) == expected
    await wait_until_done(ctx, stream_id, source=probe.made[0] if probe.made else None)
    assert warnings_logged(caplog) == []
    source = await check_source_lifecycle(probe, not_in)
    assert source.error is None
    assert provider.requests_for(prompt) == 1


def slow_closing_fence(
    ctx: ResumableStreamContext, monkeypatch: pytest.MonkeyPatch, delay: float
) -> asyncio.Event:
    """Closing fences (``end-``, ``error-``) take ``delay`` seconds to land;
    the event is set when the first one starts."""
    started = asyncio.Event()
    append = ctx.backend.append

    async def slow_append(
        name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        fence = landing.new_fence
        if fence is not None and fence.startswith(("end-", "error-")):
            started.set()
            await asyncio.sleep(delay)
        await append(name, append_input, landing)

    monkeypatch.setattr(ctx.backend, "append", slow_append)
    return started


# -- the matrix: every source, every point, both backends ----------------------------

POINTS = [
    "closed-before-first-chunk",
    "cancelled-before-first-chunk",
    "cancelled-inside-anext",
    "closed-between-chunks",
    "cancelled-after-source-ended",
]


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("kind", list(SOURCES))
async def test_client_leaving_never_breaks_the_source(
    kind: str,
    point: str,
    new_context: ContextFactory,
    provider: FakeProvider,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompt = f"{kind} {point} {stream_id}"
    expected = "".join(reply_tokens(prompt, TOKENS))
    probe = SourceProbe.of(kind, provider, prompt)
    received: list[str] = []
    created, has_read_some = asyncio.Event(), asyncio.Event()
    async with new_context(drain_timeout=3) as ctx:
        fence_started = (
            slow_closing_fence(ctx, monkeypatch, 0.3)
            if point == "cancelled-after-source-ended"
            else asyncio.Event()
        )

        async def client() -> None:
            PROMPT.set(prompt)  # e.g. request-scoped state set by middleware
            stream = await ctx.create_new_resumable_stream(stream_id, probe)
            created.set()
            try:
                if point == "closed-before-first-chunk":
                    return
                if point != "cancelled-before-first-chunk":
                    for _ in range(READ_BEFORE_LEAVING):
                        received.append(await stream.__anext__())
                    has_read_some.set()
                if point == "closed-between-chunks":
                    return
                # Read on until cancelled or, after the source ended, wait for
                # the end (the closing fence landing) until cancelled.
                while point != "cancelled-after-source-ended" or (
                    len("".join(received)) < len(expected)
                ):
                    received.append(await stream.__anext__())
                await stream.__anext__()
                raise AssertionError("the end came before the closing fence landed")
            finally:
                await stream.aclose()  # as the web helpers do when a response ends

        client_task = asyncio.create_task(client(), name="the producer's client")
        if point == "cancelled-before-first-chunk":
            await asyncio.wait_for(created.wait(), DEADLINE)
            assert not client_task.done()
            client_task.cancel()
        elif point == "cancelled-inside-anext":
            await asyncio.wait_for(has_read_some.wait(), DEADLINE)
            await eventually(lambda: probe.source.in_anext, "the source is inside __anext__")
            assert not client_task.done()
            client_task.cancel()
        elif point == "cancelled-after-source-ended":
            await asyncio.wait_for(fence_started.wait(), DEADLINE)
            await asyncio.sleep(0.01)
            assert probe.source.ended
            assert not client_task.done(), "the client saw the end before the fence landed"
            client_task.cancel()
        await asyncio.wait({client_task}, timeout=DEADLINE)
        assert client_task.done()
        if point.startswith("cancelled-"):
            assert client_task.cancelled()
        else:
            assert client_task.result() is None
        if point.endswith("-before-first-chunk"):
            assert received == []
        elif point == "cancelled-after-source-ended":
            assert "".join(received) == expected
        else:
            assert len(received) >= READ_BEFORE_LEAVING
            assert expected.startswith("".join(received))

        me = asyncio.current_task()
        await check_finished_exactly(
            ctx, stream_id, prompt, probe, provider, caplog, {me, client_task}
        )


# -- the README's FastAPI wiring behind uvicorn --------------------------------------


def readme_app(
    streams: ResumableStreamContext, llm_tokens: Callable[[Request], AsyncIterator[str]]
) -> FastAPI:
    """As in the README's "Example (FastAPI / Starlette)"."""
    app = FastAPI()

    @app.post("/chat/{stream_id}")  # start the reply (or join it if it is running)
    async def post_chat(stream_id: str, request: Request) -> Response:
        return await resumable_sse(streams, request, stream_id, lambda: llm_tokens(request))

    @app.get("/chat/{stream_id}")  # a reload, a second tab, EventSource's own reconnect
    async def get_chat(stream_id: str, request: Request) -> Response:
        return await resume_sse(streams, request, stream_id)

    return app


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port, on this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="test app server")
    try:
        await eventually(lambda: server.started or task.done(), "the app server started")
        assert server.started, task
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            server.force_exit = True
            task.cancel()
            await asyncio.wait({task})
        sock.close()


@dataclass
class SseEvent:
    event: str
    id: str | None
    data: str


async def read_events(response: httpx.Response, count: int | None = None) -> list[SseEvent]:
    """Events (heartbeat comments left out) until ``count`` or the body's end."""
    events: list[SseEvent] = []
    event = "message"
    ident: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                events.append(SseEvent(event, ident, "\n".join(data)))
                if count is not None and len(events) >= count:
                    break
            event, ident, data = "message", None, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            ident = value
        elif name == "data":
            data.append(value)
    return events


@pytest.fixture(scope="module")
def paced_provider() -> Iterator[FakeProvider]:
    """Slower: a reply is still running when the dropped client's reload comes."""
    with fake_provider_server(pace_s=0.02, tokens=TOKENS) as server:
        yield server


@pytest.mark.parametrize("kind", ["openai", "anthropic", "httpx"])
async def test_readme_route_survives_a_dropped_connection(
    kind: str,
    new_context: ContextFactory,
    paced_provider: FakeProvider,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    prompt = f"readme {kind} {stream_id}"
    expected = "".join(reply_tokens(prompt, TOKENS))
    probe = SourceProbe.of(kind, paced_provider, prompt)

    request_tasks: set[asyncio.Task[Any] | None] = set()

    def llm_tokens(request: Request) -> AsyncIterator[str]:
        assert request.query_params["prompt"] == prompt
        request_tasks.add(asyncio.current_task())  # make_stream runs in the handler
        return probe()

    async with (
        new_context(drain_timeout=3) as streams,
        serve(readme_app(streams, llm_tokens)) as url,
    ):
        # The browser starts the reply, reads a few events and goes away.
        async with (
            httpx.AsyncClient(base_url=url, timeout=DEADLINE) as browser,
            browser.stream("POST", f"/chat/{stream_id}", params={"prompt": prompt}) as response,
        ):
            assert response.status_code == 200
            first = await read_events(response, READ_BEFORE_LEAVING)
        assert [event.event for event in first] == ["message"] * READ_BEFORE_LEAVING
        seen = "".join(json.loads(event.data) for event in first)
        assert expected.startswith(seen)
        assert first[-1].id == str(len(seen))

        # It reloads: the GET route replays the reply from the start and follows it.
        async with (
            httpx.AsyncClient(base_url=url, timeout=DEADLINE) as browser,
            browser.stream("GET", f"/chat/{stream_id}") as response,
        ):
            if response.status_code != 200:
                body = await response.aread()
                chunks, error = await read_until_error(await streams.resume_stream(stream_id))
                pytest.fail(
                    f"the reload got {response.status_code} {body!r}; the stream ended with "
                    f"{error!r} after {len(''.join(chunks))} of {len(expected)} characters; "
                    f"its source: {probe.source.describe()}"
                )
            events = await read_events(response)
        assert events[-1].event == "end", events[-1]
        assert "".join(json.loads(event.data) for event in events[:-1]) == expected

        await wait_until_done(streams, stream_id)
        assert warnings_logged(caplog) == []
        assert len(request_tasks) == 1
        source = await check_source_lifecycle(probe, request_tasks | {asyncio.current_task()})
        assert source.error is None
        assert paced_provider.requests_for(prompt) == 1
        chunks, error = await read_until_error(await streams.resume_stream(stream_id))
        assert error is None
        assert "".join(chunks) == expected


# -- a source's own timeout after its client has gone ---------------------------------


@pytest.mark.parametrize("client_leaves", ["cancelled-inside-anext", "closed-between-chunks"])
@pytest.mark.parametrize("kind", ["asyncio-timeout", "anyio-fail-after"])
async def test_a_sources_own_timeout_still_fires_after_its_client_left(
    kind: str,
    client_leaves: str,
    new_context: ContextFactory,
    provider: FakeProvider,
    stream_id: str,
) -> None:
    stall_after = 5
    prompt = f"stall {kind} {stream_id} [stall-after={stall_after}]"
    timed: Callable[[FakeProvider, str, float], AsyncIterator[str]] = (
        asyncio_timeout_source if kind == "asyncio-timeout" else anyio_fail_after_source
    )
    probe = SourceProbe(lambda: timed(provider, prompt, 0.5))

    async with new_context(drain_timeout=3) as ctx:

        async def client() -> list[str]:
            stream = await ctx.create_new_resumable_stream(stream_id, probe)
            received = [await stream.__anext__(), await stream.__anext__()]
            try:
                if client_leaves == "cancelled-inside-anext":
                    while True:  # the server stalls after a few tokens: this waits
                        received.append(await stream.__anext__())
                return received
            finally:
                await stream.aclose()

        client_task = asyncio.create_task(client(), name="the producer's client")
        if client_leaves == "cancelled-inside-anext":
            await asyncio.sleep(0.2)  # the stall has begun; the timeout has not fired
            assert not client_task.done()
            client_task.cancel()
        await asyncio.wait({client_task}, timeout=DEADLINE)
        assert client_task.done()
        assert client_task.cancelled() == (client_leaves == "cancelled-inside-anext")

        await wait_until_done(ctx, stream_id, deadline=5, source=probe.source)
        chunks, error = await read_until_error(await ctx.resume_stream(stream_id))
        assert isinstance(error, StreamFailedError), error
        assert "".join(chunks) == "".join(reply_tokens(prompt, TOKENS)[:stall_after])
        source = await check_source_lifecycle(probe, {asyncio.current_task(), client_task})
        assert isinstance(source.error, TimeoutError), source.error


# -- the fake provider as a process ----------------------------------------------------


def test_fake_provider_runs_as_a_process() -> None:
    port = free_port()
    script = Path(__file__).parent.parent / "fake_provider.py"
    process = subprocess.Popen(
        [sys.executable, str(script), "--port", str(port), "--pace", "0.001", "--tokens", "7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == f"fake provider on http://127.0.0.1:{port}\n"
        reply = httpx.get(f"http://127.0.0.1:{port}/v1/text", params={"prompt": "hi"}, timeout=10)
        assert reply.status_code == 200
        assert reply.text == "".join(reply_tokens("hi", 7))
    finally:
        process.terminate()
        # uvicorn shuts down, then re-raises the signal it caught.
        assert process.wait(timeout=10) in (0, -signal.SIGTERM)
