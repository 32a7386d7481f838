"""Smoke checks of an installed resumable_fast wheel (or sdist), for `make test-wheel`.

Each fresh venv's Python runs a copy of this file in isolated mode (``-I``) from
a directory outside the source tree, so ``resumable_fast`` can only come from
that venv. Its name keeps pytest from collecting it: the main suite tests the
development build, this tests what users install. Everything talks to this
process or to s2-lite on loopback.

    python -I wheel_smoke.py PATH_TO_S2LITE_SERVER
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Scope

import resumable_fast
from resumable_fast import ResumableStreamContext, create_resumable_stream_context
from resumable_fast._core import MAX_BATCH_RECORDS
from resumable_fast.ai_sdk import ChatRequest, chat_response, resume_chat_response
from resumable_fast.asgi import resumable_sse, resume_sse

BASIN = "resumable-fast-smoke"
TIMEOUT = 30.0


def installed() -> None:
    """The package, its compiled core and its typing marker come from the venv."""
    site = Path(sysconfig.get_paths()["purelib"])
    package = Path(resumable_fast.__file__).parent
    assert package.parent == site, f"resumable_fast imported from {package}, not from {site}"
    assert (package / "py.typed").is_file()
    assert MAX_BATCH_RECORDS > 0


async def greeting(gate: asyncio.Event) -> AsyncIterator[str]:
    yield "Hello, "
    await gate.wait()
    yield "world"


async def ticking() -> AsyncIterator[str]:
    yield "tick "
    # Never ends by itself: only a stop ends it.
    await asyncio.Event().wait()


async def create_and_resume(writer: ResumableStreamContext, reader: ResumableStreamContext) -> None:
    """A stream created by ``writer`` and resumed mid-way through ``reader``."""
    gate = asyncio.Event()
    assert await reader.has_existing_stream("greeting") is None
    stream = await writer.create_new_resumable_stream("greeting", lambda: greeting(gate))
    assert await anext(stream) == "Hello, "
    assert await reader.has_existing_stream("greeting") is True
    resumed = await reader.resume_existing_stream("greeting")
    assert resumed is not None
    gate.set()
    assert await stream.read_all() == "world"
    assert await resumed.read_all() == "Hello, world"
    assert await reader.has_existing_stream("greeting") == "DONE"


async def embedded() -> None:
    async with create_resumable_stream_context(backend="embedded") as context:
        await create_and_resume(context, context)
        stream = await context.create_new_resumable_stream("ticking", ticking)
        assert await anext(stream) == "tick "
        reader = await context.resume_existing_stream("ticking")
        assert reader is not None
        # Once a reader has the chunk, it is stored: the stop ends the stream after it.
        assert await anext(reader) == "tick "
        await context.stop_stream("ticking")
        assert await stream.read_all() == ""
        assert await reader.read_all() == ""
        assert await context.has_existing_stream("ticking") == "DONE"
        assert await (await context.resume_stream("ticking")).read_all() == "tick "


async def in_data_dir() -> None:
    """Two contexts on one data_dir, as two workers would share it (this
    Python's sqlite3), then a fresh one reading what they committed."""
    with tempfile.TemporaryDirectory(prefix="wheel-smoke-") as directory:
        async with (
            create_resumable_stream_context(data_dir=directory) as writer,
            create_resumable_stream_context(data_dir=directory, retention_seconds=60) as reader,
        ):
            await create_and_resume(writer, reader)
        async with create_resumable_stream_context(data_dir=directory) as fresh:
            assert await (await fresh.resume_stream("greeting")).read_all() == "Hello, world"


async def request(
    app: Starlette, method: str, path: str, body: bytes = b"", last_event_id: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One request straight through the ASGI interface (no server, no socket)."""
    headers = [(b"host", b"smoke"), (b"content-type", b"application/json")]
    if last_event_id:
        headers.append((b"last-event-id", last_event_id.encode()))
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    answer: dict[str, str] = {}
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        if pending:
            return pending.pop()
        # The client stays connected: this waits until the response is done.
        never: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        return await never

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            answer.update((k.decode(), v.decode()) for k, v in message.get("headers", []))
        else:
            chunks.append(message.get("body", b""))

    await asyncio.wait_for(app(scope, receive, send), TIMEOUT)
    return status, answer, b"".join(chunks)


def web_app(context: ResumableStreamContext) -> Starlette:
    """The README's two recipes: SSE streams and the AI SDK's chat routes."""

    async def post_stream(http: Request) -> Response:
        gate = asyncio.Event()
        gate.set()  # the whole reply at once
        return await resumable_sse(
            context, http, http.path_params["stream_id"], lambda: greeting(gate)
        )

    async def get_stream(http: Request) -> Response:
        return await resume_sse(context, http, http.path_params["stream_id"], replay_finished=True)

    async def reply(chat: ChatRequest) -> AsyncIterator[str]:
        yield f"You said: {chat.last_user_text}"

    async def post_chat(http: Request) -> Response:
        return await chat_response(context, http, reply)

    async def resume_chat(http: Request) -> Response:
        return await resume_chat_response(context, http.path_params["chat_id"])

    return Starlette(
        routes=[
            Route("/streams/{stream_id}", post_stream, methods=["POST"]),
            Route("/streams/{stream_id}", get_stream, methods=["GET"]),
            Route("/api/chat", post_chat, methods=["POST"]),
            Route("/api/chat/{chat_id}/stream", resume_chat, methods=["GET"]),
        ]
    )


async def web() -> None:
    async with create_resumable_stream_context(backend="embedded") as context:
        app = web_app(context)
        status, headers, body = await request(app, "POST", "/streams/s1")
        assert status == 200
        assert headers["content-type"].startswith("text/event-stream")
        end = b"event: end\ndata: {}\n\n"
        assert body == b'id: 7\ndata: "Hello, "\n\nid: 12\ndata: "world"\n\n' + end, body
        status, _, body = await request(app, "GET", "/streams/s1", last_event_id="7")
        assert (status, body) == (200, b'id: 12\ndata: "world"\n\n' + end), body
        status, _, _ = await request(app, "GET", "/streams/never-made")
        assert status == 404

        message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
        chat = {"id": "c1", "messages": [message], "trigger": "submit-message"}
        status, headers, body = await request(app, "POST", "/api/chat", json.dumps(chat).encode())
        assert status == 200
        assert headers["x-vercel-ai-ui-message-stream"] == "v1"
        events = [line.removeprefix("data: ") for line in body.decode().split("\n\n") if line]
        assert events[-1] == "[DONE]", events
        parts = [json.loads(event) for event in events[:-1]]
        types = [part["type"] for part in parts]
        assert types == ["start", "text-start", "text-delta", "text-end", "finish"], parts
        assert parts[2]["delta"] == "You said: hi"
        # The reply is finished: nothing to resume.
        status, _, _ = await request(app, "GET", "/api/chat/c1/stream")
        assert status == 204
        status, _, body = await request(app, "POST", "/api/chat", b"{}")
        assert status == 400, body


def command_line() -> None:
    for command in (
        [sys.executable, "-I", "-m", "resumable_fast", "--help"],
        [str(Path(sys.executable).parent / "resumable-fast"), "--help"],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=True)
        assert "demo" in done.stdout, done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def on_s2lite(server: Path) -> None:
    """One stream created through one context and resumed through another,
    so the reader gets it back from s2-lite."""
    with tempfile.TemporaryDirectory() as workdir:
        init_file = Path(workdir) / "init.json"
        config = {"create_stream_on_append": True, "create_stream_on_read": True}
        init_file.write_text(json.dumps({"basins": [{"name": BASIN, "config": config}]}))
        port = free_port()
        with (Path(workdir) / "s2lite.log").open("wb") as log:
            process = subprocess.Popen(
                [str(server), "--port", str(port), "--init-file", str(init_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                endpoint = f"http://127.0.0.1:{port}"
                wait_healthy(endpoint, process)
                asyncio.run(s2_round_trip(endpoint))
            finally:
                process.terminate()
                process.wait(timeout=TIMEOUT)


def wait_healthy(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    # No proxy from the environment: s2-lite is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"s2-lite exited with {process.returncode}"
        try:
            with opener.open(f"{endpoint}/health", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"s2-lite did not become healthy on {endpoint}")


async def s2_round_trip(endpoint: str) -> None:
    def context() -> ResumableStreamContext:
        return create_resumable_stream_context(
            backend="s2",
            basin=BASIN,
            access_token="smoke-token-not-checked",
            account_endpoint=endpoint,
            basin_endpoint=endpoint,
            trust_env=False,
        )

    async with context() as writer, context() as reader:
        await create_and_resume(writer, reader)


def main() -> int:
    parser = argparse.ArgumentParser(description="Smoke checks of an installed wheel.")
    parser.add_argument("s2lite_server", type=Path)
    server: Path = parser.parse_args().s2lite_server
    checks: list[tuple[str, Callable[[], None]]] = [
        ("installed from the venv", installed),
        ("embedded create, resume, stop, has_existing_stream", lambda: asyncio.run(embedded())),
        ("embedded in a data_dir (SQLite)", lambda: asyncio.run(in_data_dir())),
        ("ASGI and AI SDK helpers", lambda: asyncio.run(web())),
        ("python -m resumable_fast --help", command_line),
        ("create and resume on s2-lite", lambda: on_s2lite(server)),
    ]
    print(f"smoke checks on Python {platform.python_version()}", flush=True)
    failed = 0
    for name, check in checks:
        try:
            check()
        except Exception:
            traceback.print_exc()
            failed += 1
            print(f"FAILED {name}", flush=True)
        else:
            print(f"ok {name}", flush=True)
    print(f"smoke: {len(checks) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
