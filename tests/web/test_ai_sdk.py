"""The AI SDK's useChat served from Python (issue 16).

The converter and the request parser on their own, then the README recipe's
FastAPI app behind uvicorn on loopback, driven by the real ``ai`` npm package
(``tests/interop/ai_sdk_client.mjs``, pinned in ``tests/interop/package-lock.json``,
installed by ``make interop-deps``): its ``DefaultChatTransport`` and its
``AbstractChat``, the state machine behind ``useChat``. Every app test runs on
both backends; the replica tests on two apps, each with its own context, behind
one s2-lite.

The reply's source sends its first tokens, then waits for the Node script to
say it has reconnected: the reconnect always lands mid-reply, whatever the
machine's load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.responses import Response

from resumable_fast import (
    EmbeddedBackend,
    EmbeddedStore,
    InvalidArgumentError,
    InvalidChatIdError,
    InvalidChatRequestError,
    InvalidChunkError,
    ResumableStreamContext,
    ResumableStreamError,
    SqliteStore,
    active_chat_stream,
    encode_ui_message_part,
    resume_chat_stream,
    start_chat_stream,
    to_ui_message_stream,
)
from resumable_fast.ai_sdk import (
    ChatRequest,
    MakeChatStream,
    chat_response,
    delete_chat_response,
    parse_chat_request,
    resume_chat_response,
    stop_chat_response,
)
from resumable_fast.chats import validate_chat_id
from resumable_fast.demo.app import DemoServer, start_server

from conftest import ContextFactory, S2Lite
from support import read_text

pytestmark = pytest.mark.timeout(120)

INTEROP_DIR = Path(__file__).parent.parent / "interop"
CLIENT = INTEROP_DIR / "ai_sdk_client.mjs"
AI_PACKAGE = INTEROP_DIR / "node_modules" / "ai"
NODE_TIMEOUT = 60.0
HELD_AFTER = 20  # tokens sent before the source waits for the reconnect

# Text that is easy to get wrong between JSON, SSE and two languages' strings.
TOKENS = [
    f'token {i}: «ünï» 🚀 "q" \\ ' + ("data: [DONE]\n\n" if i % 7 == 3 else "") + "\r\n"
    for i in range(200)
]
REPLY = "".join(TOKENS)


# -- the app: the README recipe, with a source the test controls -----------------


class Reply:
    """A reply source: the first ``held_after`` tokens at once, then waits
    for :attr:`release` (set by the test), then the rest."""

    def __init__(
        self, tokens: list[str], held_after: int = HELD_AFTER, fail_after: int | None = None
    ) -> None:
        self.tokens = tokens
        self.held_after = held_after
        self.fail_after = fail_after
        self.release = asyncio.Event()
        self.requests: list[ChatRequest] = []

    async def __call__(self, chat: ChatRequest) -> AsyncIterator[str]:
        self.requests.append(chat)
        for index, token in enumerate(self.tokens):
            if index == self.fail_after:
                raise RuntimeError("the model went away (secret detail)")
            if index == self.held_after:
                await asyncio.wait_for(self.release.wait(), NODE_TIMEOUT)
            if index > self.held_after:
                await asyncio.sleep(0.001)
            yield token


def create_app(streams: ResumableStreamContext, reply: MakeChatStream) -> FastAPI:
    """As in the README's AI SDK recipe (plus its optional stop route)."""
    app = FastAPI()

    @app.post("/api/chat")
    async def post_chat(request: Request) -> Response:
        return await chat_response(streams, request, reply, heartbeat_interval=0.05)

    @app.get("/api/chat/{chat_id}/stream")
    async def resume_chat(chat_id: str) -> Response:
        return await resume_chat_response(streams, chat_id, heartbeat_interval=0.05)

    @app.post("/api/chat/{chat_id}/stop")
    async def stop_chat(chat_id: str) -> Response:
        return await stop_chat_response(streams, chat_id)

    @app.delete("/api/chat/{chat_id}")
    async def delete_chat(chat_id: str) -> Response:
        return await delete_chat_response(streams, chat_id)

    return app


Serve = Callable[[ResumableStreamContext, MakeChatStream], Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts the app on a context, on loopback: ``await serve(ctx, reply)``
    gives the ``api`` URL."""
    servers: list[DemoServer] = []

    async def start(context: ResumableStreamContext, reply: MakeChatStream) -> str:
        server = await start_server(create_app(context, reply), graceful_timeout=1)
        servers.append(server)
        return f"{server.url}/api/chat"

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
def chat_id() -> str:
    return f"chat-{uuid.uuid4().hex}"


# -- Node ------------------------------------------------------------------------


@pytest.fixture
def processes() -> Iterator[list[asyncio.subprocess.Process]]:
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()


async def run_client(
    processes: list[asyncio.subprocess.Process],
    mode: str,
    options: Mapping[str, object],
    on_waiting: Callable[[], None] = lambda: None,
) -> dict[str, Any]:
    """Run ai_sdk_client.mjs; call ``on_waiting`` when it says it waits.
    Fails (never skips) without Node or the ``ai`` package."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the AI SDK tests need Node.js 18 or later")
    if not AI_PACKAGE.is_dir():
        pytest.fail(f"{AI_PACKAGE} is missing: run `make interop-deps` (npm ci in {INTEROP_DIR})")
    process = await asyncio.create_subprocess_exec(
        "node",
        str(CLIENT),
        mode,
        json.dumps(options),
        cwd=INTEROP_DIR,
        env=dict(os.environ),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    processes.append(process)
    assert process.stdout is not None
    assert process.stderr is not None
    result: dict[str, Any] | None = None

    async def read() -> None:
        nonlocal result
        assert process.stdout is not None
        while line := await process.stdout.readline():
            message = json.loads(line)
            if "waiting" in message:
                on_waiting()
            else:
                result = message["result"]

    try:
        await asyncio.wait_for(asyncio.gather(read(), process.wait()), NODE_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        pytest.fail(f"node did not finish within {NODE_TIMEOUT} s")
    stderr = (await process.stderr.read()).decode()
    assert process.returncode == 0, f"node exited with {process.returncode}: {stderr[-4000:]}"
    assert result is not None, f"node printed no result: {stderr[-4000:]}"
    return result


def deltas(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["delta"] for chunk in chunks if chunk["type"] == "text-delta")


def assert_whole_reply(chunks: list[dict[str, Any]], message_id: str) -> None:
    """A full replay: start (the same message id), one text part, finish."""
    assert chunks[0] == {"type": "start", "messageId": message_id}
    assert chunks[1] == {"type": "text-start", "id": "text-0"}
    assert deltas(chunks) == REPLY
    assert chunks[-2:] == [{"type": "text-end", "id": "text-0"}, {"type": "finish"}]


async def check_transport_run(
    processes: list[asyncio.subprocess.Process], reply: Reply, post: str, reconnect: str, chat: str
) -> None:
    result = await run_client(
        processes,
        "transport",
        {"post": post, "reconnect": reconnect, "chat": chat, "prompt": "hi", "abortAfter": 5},
        reply.release.set,
    )
    first, resumed = result["first"], result["resumed"]
    # The aborted request: start, a text part, and part of the reply.
    assert first[0]["type"] == "start"
    message_id = first[0]["messageId"]
    assert message_id == reply.requests[0].response_message_id
    got_first = deltas(first)
    assert 0 < len(got_first) < len(REPLY)
    assert REPLY.startswith(got_first)
    assert not result["firstEnded"]
    # The reconnect replays the whole reply from its start, under the same
    # message id (the transport resets the message on it): with what the
    # aborted request had, the reply is there once, nothing repeated.
    assert resumed is not None, "reconnectToStream returned null mid-reply"
    assert result["resumedEnded"]
    assert_whole_reply(resumed, message_id)
    # After the finish, and for a chat never used: nothing to resume.
    assert result["afterFinish"] is None
    assert result["unknown"] is None
    assert len(reply.requests) == 1


# -- through the real AI SDK -----------------------------------------------------


async def test_transport_abort_mid_reply_then_reconnect(
    ctx: ResumableStreamContext,
    serve: Serve,
    chat_id: str,
    processes: list[asyncio.subprocess.Process],
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    await check_transport_run(processes, reply, api, api, chat_id)
    assert reply.requests[0].last_user_text == "hi"


async def check_chat_run(
    processes: list[asyncio.subprocess.Process], reply: Reply, post: str, reconnect: str, chat: str
) -> None:
    result = await run_client(
        processes,
        "chat",
        {
            "post": post,
            "reconnect": reconnect,
            "chat": chat,
            "prompt": "tell me",
            "abortAfterChars": 40,
        },
        reply.release.set,
    )
    message_id = reply.requests[0].response_message_id
    stopped = result["stopped"]["messages"]
    assert [m["role"] for m in stopped] == ["user", "assistant"]
    assert stopped[1]["id"] == message_id
    assert 40 <= len(stopped[1]["text"]) < len(REPLY)
    # The same tab resuming, and a reloaded page with only the user's
    # message: each has the reply once, as one text part, under its id.
    for view in (result["tabBack"], result["reloaded"]):
        assert view["status"] == "ready"
        assert view["error"] is None
        assert [(m["role"], m["text"]) for m in view["messages"]] == [
            ("user", "tell me"),
            ("assistant", REPLY),
        ]
        assert view["messages"][1]["id"] == message_id
        assert view["messages"][1]["textParts"] == 1
    # A page loaded after the finish finds nothing to resume.
    assert result["later"]["messages"] == result["reloaded"]["messages"]
    assert result["later"]["status"] == "ready"


async def test_use_chat_stop_then_resume_and_reload(
    ctx: ResumableStreamContext,
    serve: Serve,
    chat_id: str,
    processes: list[asyncio.subprocess.Process],
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    await check_chat_run(processes, reply, api, api, chat_id)


@pytest.mark.parametrize("backend_name", ["s2"])
@pytest.mark.parametrize("mode", ["transport", "chat"])
async def test_two_replicas_behind_one_s2lite(
    mode: str,
    new_context: ContextFactory,
    serve: Serve,
    chat_id: str,
    processes: list[asyncio.subprocess.Process],
) -> None:
    """Sent to one replica, resumed on another: the mapping is in S2."""
    reply = Reply(TOKENS)
    idle = Reply(["never"])
    async with new_context() as replica_a, new_context() as replica_b:
        api_a = await serve(replica_a, reply)
        api_b = await serve(replica_b, idle)
        check = check_transport_run if mode == "transport" else check_chat_run
        await check(processes, reply, api_a, api_b, chat_id)
        assert idle.requests == []


async def test_error_answers_through_the_transport(
    ctx: ResumableStreamContext,
    serve: Serve,
    chat_id: str,
    processes: list[asyncio.subprocess.Process],
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    result = await run_client(processes, "errors", {"post": api, "chat": chat_id})
    # sendMessages throws with the server's answer, a JSON error.
    error = json.loads(result["malformed"]["error"])
    assert error == {"error": "'messages' must be a list of UI messages"}
    assert result["unknown"] is None
    assert reply.requests == []


# -- the HTTP edge ---------------------------------------------------------------


async def stream_names(context: ResumableStreamContext, s2lite: S2Lite, prefix: str) -> list[str]:
    """The streams under ``prefix`` in the context's backend (without looking
    any up, which would create it on S2)."""
    backend = context.backend
    if isinstance(backend, EmbeddedBackend) and isinstance(backend.store, SqliteStore):
        with contextlib.closing(sqlite3.connect(backend.store.path)) as database:
            rows = database.execute("SELECT name FROM streams").fetchall()
        return [name for (name,) in rows if name.startswith(prefix)]
    if isinstance(backend, EmbeddedBackend):
        assert isinstance(backend.store, EmbeddedStore)
        return [name for name in backend.store.stream_names() if name.startswith(prefix)]
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{s2lite.endpoint}/v1/streams",
            params={"prefix": prefix},
            headers={"s2-basin": s2lite.basin},
        )
    answer.raise_for_status()
    return [stream["name"] for stream in answer.json()["streams"]]


MALFORMED: list[tuple[bytes, str]] = [
    (b"", "not JSON"),
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"messages": []}', "'id'"),
    (b'{"id": "", "messages": []}', "'id'"),
    (b'{"id": "a/b", "messages": []}', "'/'"),
    (b'{"id": 7, "messages": []}', "'id'"),
    (b'{"id": "CHAT"}', "'messages'"),
    (b'{"id": "CHAT", "messages": {"role": "user"}}', "'messages' must be a list"),
    (b'{"id": "CHAT", "messages": [5]}', "messages[0]"),
    (b'{"id": "CHAT", "messages": [{"role": "robot", "parts": []}]}', "messages[0].role"),
    (b'{"id": "CHAT", "messages": [{"role": "user"}]}', "messages[0].parts"),
    (b'{"id": "CHAT", "messages": [{"role": "user", "parts": [{"text": "x"}]}]}', ".parts"),
    (b'{"id": "CHAT", "messages": [{"role": "user", "parts": [], "id": 3}]}', ".id"),
    (b'{"id": "CHAT", "message": "hi"}', "message must be"),
    (b'{"id": "CHAT", "messages": [], "trigger": "resume-stream"}', "'trigger'"),
    (b'{"id": "CHAT", "messages": [], "messageId": 5}', "'messageId'"),
]


async def test_malformed_bodies_answer_400_and_create_nothing(
    ctx: ResumableStreamContext, s2lite: S2Lite, serve: Serve, chat_id: str
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    async with httpx.AsyncClient(timeout=10) as client:
        for body, reason in MALFORMED:
            answer = await client.post(api, content=body.replace(b"CHAT", chat_id.encode()))
            assert answer.status_code == 400, body
            assert answer.headers["content-type"] == "application/json"
            assert reason in answer.json()["error"], (body, answer.json())
        # Over the size limit: refused from Content-Length, or while read.
        big = json.dumps({"id": chat_id, "messages": [], "pad": "x" * (1024 * 1024)}).encode()
        answer = await client.post(api, content=big)
        assert answer.status_code == 413
        assert "over 1048576 bytes" in answer.json()["error"]

        async def chunked() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b" " * 65536

        answer = await client.post(api, content=chunked())
        assert answer.status_code == 413
    assert reply.requests == []
    assert await stream_names(ctx, s2lite, f"ai-chat/{chat_id}") == []


async def test_resume_answers_204_unless_a_reply_is_in_progress(
    ctx: ResumableStreamContext, serve: Serve, chat_id: str
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    body = {
        "id": chat_id,
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
        "trigger": "submit-message",
        "messageId": None,
    }
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{api}/{chat_id}/stream")).status_code == 204  # unknown
        reply.release.set()
        answer = await client.post(api, json=body)
        assert answer.status_code == 200
        assert answer.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert answer.headers["content-type"].startswith("text/event-stream")
        assert answer.text.endswith("data: [DONE]\n\n")
        assert (await client.get(f"{api}/{chat_id}/stream")).status_code == 204  # finished
        for bad in ("x" * 300, "tab%09here"):
            answer = await client.get(f"{api}/{bad}/stream")
            assert answer.status_code == 400
            assert "chat id" in answer.json()["error"]


async def test_stop_route_ends_the_reply_for_every_reader(
    ctx: ResumableStreamContext, serve: Serve, chat_id: str
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    body = {"id": chat_id, "messages": [{"role": "user", "parts": []}]}
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", api, json=body) as answer:
            assert answer.status_code == 200
            stop = await client.post(f"{api}/{chat_id}/stop")
            assert stop.json() == {"stopped": True}
            text = (await answer.aread()).decode()
        assert "token 0:" in text
        assert "token 199" not in text
        assert (await client.get(f"{api}/{chat_id}/stream")).status_code == 204
        assert (await client.post(f"{api}/{chat_id}/stop")).json() == {"stopped": False}


async def test_delete_route_deletes_the_chat_and_its_running_reply(
    ctx: ResumableStreamContext, serve: Serve, chat_id: str
) -> None:
    reply = Reply(TOKENS)
    api = await serve(ctx, reply)
    body = {"id": chat_id, "messages": [{"role": "user", "parts": []}]}
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", api, json=body) as answer:
            assert answer.status_code == 200
            deleted = await client.delete(f"{api}/{chat_id}")
            assert deleted.json() == {"deleted": 1}
            text = (await answer.aread()).decode()
        assert "token 0:" in text
        assert "token 199" not in text
        assert (await client.get(f"{api}/{chat_id}/stream")).status_code == 204
        assert (await client.delete(f"{api}/{chat_id}")).json() == {"deleted": 0}
        assert (await client.delete(f"{api}/tab%09here")).status_code == 400


async def test_failing_source_sends_an_error_part(
    ctx: ResumableStreamContext, serve: Serve, chat_id: str
) -> None:
    reply = Reply(TOKENS, fail_after=5)
    api = await serve(ctx, reply)
    body = {"id": chat_id, "messages": [{"role": "user", "parts": []}]}
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.post(api, json=body)).text
        assert (await client.get(f"{api}/{chat_id}/stream")).status_code == 204
    events = text.split("\n\n")
    assert json.loads(events[-2].removeprefix("data: ")) == {
        "type": "error",
        "errorText": "the reply failed",
    }
    assert "data: [DONE]\n\n" not in text
    assert "secret" not in text


async def test_keep_alives_never_split_a_passed_through_event(
    ctx: ResumableStreamContext, serve: Serve, chat_id: str
) -> None:
    """Ready SSE text may arrive cut mid-event; keep-alives wait for the line's end."""

    async def upstream(chat: ChatRequest) -> AsyncIterator[str]:
        yield 'data: {"type":"start","messageId":"m1"}\n\ndata: {"type":"text-st'
        await asyncio.sleep(0.3)  # six keep-alive intervals
        yield 'art","id":"t"}\n'
        await asyncio.sleep(0.3)
        yield '\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n'

    async with SSEAppServer(ctx, upstream) as api, httpx.AsyncClient(timeout=10) as client:
        text = (await client.post(api, json={"id": chat_id, "message": _user("x")})).text
    # None inside the cut line; comment lines once it ended; whole ones
    # (": keep-alive" and a blank line) only between events.
    pattern = (
        "(: keep-alive\n\n)*"
        + re.escape('data: {"type":"start","messageId":"m1"}\n\ndata: {"type":"text-st')
        + re.escape('art","id":"t"}\n')
        + "(: keep-alive\n)+"
        + re.escape('\ndata: {"type":"finish"}\n\ndata: [DONE]\n\n')
    )
    assert re.fullmatch(pattern, text), text


def _user(text: str) -> dict[str, Any]:
    return {"id": "u", "role": "user", "parts": [{"type": "text", "text": text}]}


class SSEAppServer:
    """``async with SSEAppServer(ctx, make_stream) as api``: the app with
    ready SSE sources (``input_format="sse"``) on loopback."""

    def __init__(self, context: ResumableStreamContext, make_stream: MakeChatStream) -> None:
        app = FastAPI()

        @app.post("/api/chat")
        async def post_chat(request: Request) -> Response:
            return await chat_response(
                context, request, make_stream, input_format="sse", heartbeat_interval=0.05
            )

        self.app = app
        self.server: DemoServer | None = None

    async def __aenter__(self) -> str:
        self.server = await start_server(self.app, graceful_timeout=1)
        return f"{self.server.url}/api/chat"

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        await self.server.stop()


# -- the mapping -----------------------------------------------------------------


async def test_a_new_reply_becomes_the_active_one(
    ctx: ResumableStreamContext, chat_id: str
) -> None:
    assert await active_chat_stream(ctx, chat_id) is None
    assert await resume_chat_stream(ctx, chat_id) is None
    gate = asyncio.Event()

    async def held(text: str) -> AsyncIterator[str]:
        yield text
        await gate.wait()

    first = await start_chat_stream(ctx, chat_id, lambda: held("first "))
    assert await active_chat_stream(ctx, chat_id) == first.stream_id
    second = await start_chat_stream(ctx, chat_id, lambda: held("second "))
    assert second.stream_id != first.stream_id
    assert second.stream_id.startswith(f"ai-chat/{chat_id}/")
    assert await active_chat_stream(ctx, chat_id) == second.stream_id
    resumed = await resume_chat_stream(ctx, chat_id)
    gate.set()
    assert await read_text(resumed) == "second "
    assert await read_text(first) == "first "
    assert await read_text(second) == "second "
    with pytest.raises(InvalidChatIdError):
        await active_chat_stream(ctx, "a/b")


async def test_closed_context_is_a_typed_error(new_context: ContextFactory, chat_id: str) -> None:
    context = new_context()
    await context.aclose()
    with pytest.raises(ResumableStreamError, match="closed"):
        await active_chat_stream(context, chat_id)


# -- the converter ---------------------------------------------------------------


def parse_events(text: str) -> list[Any]:
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [
        "[DONE]" if event == "data: [DONE]" else json.loads(event.removeprefix("data: "))
        for event in events
    ]


async def convert(items: list[Any], **options: Any) -> str:
    async def source() -> AsyncIterator[Any]:
        for item in items:
            yield item

    return "".join([event async for event in to_ui_message_stream(source(), **options)])


async def test_text_becomes_ui_message_parts() -> None:
    text = await convert(["Hel", "", "lo\n", 'data: "x"\r\n\n'], message_id="m1")
    assert parse_events(text) == [
        {"type": "start", "messageId": "m1"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Hel"},
        {"type": "text-delta", "id": "text-0", "delta": "lo\n"},
        {"type": "text-delta", "id": "text-0", "delta": 'data: "x"\r\n\n'},
        {"type": "text-end", "id": "text-0"},
        {"type": "finish"},
        "[DONE]",
    ]
    assert parse_events(await convert([], message_id="m2")) == [
        {"type": "start", "messageId": "m2"},
        {"type": "finish"},
        "[DONE]",
    ]
    generated = parse_events(await convert(["x"]))[0]["messageId"]
    assert generated.startswith("msg-")
    assert len(generated) > 12


async def test_parts_pass_through_and_end_the_open_text() -> None:
    data = {"type": "data-weather", "data": {"city": "Zürich", "t": 21.5}}
    text = await convert(["a", data, "b", {"type": "finish"}], message_id="m")
    assert parse_events(text) == [
        {"type": "start", "messageId": "m"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "a"},
        {"type": "text-end", "id": "text-0"},
        data,
        {"type": "text-start", "id": "text-1"},
        {"type": "text-delta", "id": "text-1", "delta": "b"},
        {"type": "text-end", "id": "text-1"},
        {"type": "finish"},
        "[DONE]",
    ]
    own_start = {"type": "start", "messageId": "theirs", "messageMetadata": {"k": 1}}
    assert parse_events(await convert([own_start, "x"], message_id="ours"))[:2] == [
        own_start,
        {"type": "text-start", "id": "text-0"},
    ]


async def test_ready_sse_text_passes_through_unchanged() -> None:
    upstream = ['data: {"type":"start"}\n\nda', 'ta: {"type":"finish"}\n\n', "data: [DONE]\n\n"]
    assert await convert(upstream, input_format="sse") == "".join(upstream)
    assert await convert([{"type": "finish"}], input_format="sse") == (
        'data: {"type":"finish"}\n\n'
    )


@pytest.mark.parametrize(
    "item", [42, b"bytes", None, {"no": "type"}, {"type": ""}, {"type": "x", "v": object()}]
)
@pytest.mark.parametrize("input_format", ["text", "sse"])
async def test_items_that_are_not_text_or_parts_are_typed_errors(
    item: object, input_format: str
) -> None:
    with pytest.raises(InvalidChunkError):
        await convert(["ok", item], input_format=input_format)


async def test_bad_converter_options_are_typed_errors() -> None:
    with pytest.raises(InvalidArgumentError):
        await convert(["x"], input_format="json")
    with pytest.raises(InvalidArgumentError):
        await convert(["x"], message_id="")


def test_tricky_text_survives_json() -> None:
    for text in ["\ud800 lone", "\u2028\u2029", '</script>"\\', "\x00\x1b", "👩‍👩‍👧"]:
        event = encode_ui_message_part({"type": "text-delta", "id": "t", "delta": text})
        assert event.startswith("data: ")
        assert event.endswith("\n\n")
        assert "\n" not in event[:-2]
        assert "\r" not in event
        assert json.loads(event[6:-2])["delta"] == text


# -- the request -----------------------------------------------------------------


def test_parse_the_transports_body() -> None:
    user = _user("Hello ")
    assistant = {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "Hi!"}]}
    body = {
        "id": "c1",
        "messages": [user, assistant, _user("again")],
        "trigger": "regenerate-message",
        "messageId": "a9",
        "extra": [1],
    }
    chat = parse_chat_request(json.dumps(body))
    assert (chat.chat_id, chat.trigger, chat.message_id) == ("c1", "regenerate-message", "a9")
    assert chat.body["extra"] == [1]
    assert chat.last_user_text == "again"
    assert chat.text_messages() == [
        {"role": "user", "content": "Hello "},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "again"},
    ]
    assert chat.response_message_id.startswith("msg-")
    # Continuing an assistant message keeps its id, as the AI SDK's server does.
    continued = parse_chat_request(json.dumps({"id": "c1", "messages": [user, assistant]}))
    assert continued.response_message_id == "a1"
    assert continued.trigger == "submit-message"
    # The AI SDK's persistence examples send the last message only.
    single = parse_chat_request(json.dumps({"id": "c1", "message": user}).encode())
    assert single.messages == [user]


@pytest.mark.parametrize(("body", "reason"), MALFORMED)
def test_malformed_requests_are_typed_errors(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidChatRequestError) as caught:
        parse_chat_request(body)
    assert reason in str(caught.value)
    assert caught.value.status_code == 400
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("bad", ["", ".", "..", "a/b", "x\n", "\x7f", "é" * 129, None, 3])
def test_invalid_chat_ids(bad: object) -> None:
    with pytest.raises(InvalidChatIdError):
        validate_chat_id(bad)
    assert validate_chat_id("é" * 128) == "é" * 128
