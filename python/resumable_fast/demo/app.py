"""The demo's web app: a chat page whose replies are resumable streams.

Routes:

* ``GET /``: the page; ``GET /static/...``: its script and style sheet.
* ``GET /api/info``: which backend holds the streams and which model writes
  the replies (never a credential).
* ``POST /api/chat`` with ``{"prompt": str, "chat_id"?: str}``: starts the
  model's reply (the simulated LLM's, or a real model's: see
  :mod:`resumable_fast.demo.model`) as a new resumable stream and returns its
  id. The producer runs on its own: nobody has to read it for it to be
  persisted.
* ``GET /api/chat/{stream_id}/events``: the reply as Server-Sent Events, from
  ``Last-Event-ID`` (or the start): what was already written, then the live
  tail; a finished reply is replayed in full.
* ``POST /api/chat/{stream_id}/stop``: ends the reply for every reader.
* ``GET /metrics``: the library's metrics in Prometheus' text format, when
  the app was given a metrics source (the ``demo`` extra's OpenTelemetry SDK
  and Prometheus exporter: :mod:`resumable_fast.demo.metrics`), else 404 with
  what to install. The page's panel reads it.

When the stream store cannot be reached (S2 away, a full disk), the chat,
events and stop routes answer 503 with ``Retry-After`` and a short JSON
error, logged as one line; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from resumable_fast.asgi import resume_sse
from resumable_fast.context import ResumableStreamContext, new_stream_id
from resumable_fast.demo.llm import DEFAULT_TOKENS_PER_SECOND
from resumable_fast.demo.model import ModelSource, SimulatedModel
from resumable_fast.errors import ResumableStreamError
from resumable_fast.responses import failure_response, json_error

__all__ = [
    "MAX_PROMPT_CHARS",
    "DemoServer",
    "MetricsSource",
    "create_app",
    "start_server",
]

logger = logging.getLogger("resumable_fast")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_PROMPT_CHARS = 4000
MAX_BODY_BYTES = 64 * 1024
STREAM_ID_PREFIX = "demo-"
# The ids this app hands out: the prefix and resumable_fast.new_stream_id(). The
# event and stop routes accept nothing else, so the page cannot be used to read
# or stop other streams in the same basin.
STREAM_ID = re.compile(r"demo-[A-Za-z0-9_-]{22}")
CHAT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class MetricsSource(Protocol):
    """What ``GET /metrics`` serves (:class:`resumable_fast.demo.metrics.PrometheusMetrics`)."""

    content_type: str

    def render(self) -> bytes: ...


def new_chat_stream_id() -> str:
    return STREAM_ID_PREFIX + new_stream_id()


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


async def _read_body(request: Request) -> bytes | None:
    """The request body, or None when it is over MAX_BODY_BYTES."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def _validate_chat(payload: object) -> tuple[str, str | None] | str:
    """(prompt, chat_id) from a request body, or an error message."""
    if not isinstance(payload, dict):
        return "the body must be a JSON object"
    prompt = payload.get("prompt")
    if not isinstance(prompt, str):
        return "prompt must be a string"
    if not prompt.strip():
        return "prompt must not be empty"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"prompt must be at most {MAX_PROMPT_CHARS} characters, got {len(prompt)}"
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        return "prompt must be valid Unicode text (no lone surrogates)"
    chat_id = payload.get("chat_id")
    if chat_id is not None and (not isinstance(chat_id, str) or not CHAT_ID.fullmatch(chat_id)):
        return "chat_id must be 1-64 letters, digits, '-' or '_'"
    return prompt, chat_id


class _SecurityHeaders:
    """Adds the security headers to every HTTP response, streaming ones too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _EndStreamsOnShutdown:
    """Ends open event streams cleanly when the server shuts down.

    An event stream lasts as long as its reply, so a server that waits for
    connections to close would wait for every reply, then cancel them with an
    error. Instead, once ``shutting_down`` is set each event stream sees the
    client "disconnect" (its stream is closed as on any disconnect) and the
    response is ended properly. The page's ``EventSource`` then reconnects with
    ``Last-Event-ID`` and goes on exactly where it was, once a server is back.
    """

    def __init__(self, app: ASGIApp, *, shutting_down: asyncio.Event) -> None:
        self.app = app
        self.shutting_down = shutting_down

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/events"):
            await self.app(scope, receive, send)
            return
        shutting_down = self.shutting_down
        started = complete = cut = False

        async def receive_until_shutdown() -> Message:
            nonlocal cut
            if not shutting_down.is_set():
                receiving = asyncio.ensure_future(receive())
                stopping = asyncio.ensure_future(shutting_down.wait())
                try:
                    await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                except BaseException:
                    receiving.cancel()
                    stopping.cancel()
                    raise
                stopping.cancel()
                if receiving.done():
                    return receiving.result()
                receiving.cancel()
            cut = True
            return {"type": "http.disconnect"}

        async def tracking_send(message: Message) -> None:
            nonlocal started, complete
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        await self.app(scope, receive_until_shutdown, tracking_send)
        if cut and started and not complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(
    context: ResumableStreamContext,
    *,
    backend_name: str,
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND,
    model: ModelSource | None = None,
    heartbeat_interval: float = 15.0,
    metrics: MetricsSource | None = None,
) -> Starlette:
    """The demo app on a ready context. The caller owns the context and closes it.

    Replies come from ``model``; by default the simulated LLM at
    ``tokens_per_second``. ``metrics``: what ``GET /metrics`` serves, read
    from the meter provider the context was given (None: the route answers
    404).
    """
    if not tokens_per_second > 0:
        raise ValueError(f"tokens_per_second must be > 0, got {tokens_per_second!r}")
    source: ModelSource = model if model is not None else SimulatedModel(tokens_per_second)
    # The simulated LLM's pace, for the page; a real model sets its own.
    pace = source.tokens_per_second if isinstance(source, SimulatedModel) else None

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "backend": backend_name,
                "model": source.description,
                "simulated": pace is not None,
                "tokens_per_second": pace,
                "max_prompt_chars": MAX_PROMPT_CHARS,
                "metrics": metrics is not None,
            }
        )

    async def metrics_text(request: Request) -> Response:
        if metrics is None:
            return json_error(
                404,
                "metrics need the OpenTelemetry SDK and its Prometheus exporter: "
                "pip install 'resumable_fast[demo]'",
            )
        return Response(
            metrics.render(),
            headers={"content-type": metrics.content_type, "cache-control": "no-store"},
        )

    async def start_chat(request: Request) -> Response:
        if not _is_json(request):
            return json_error(415, "send the message as application/json")
        body = await _read_body(request)
        if body is None:
            return json_error(413, f"the body must be at most {MAX_BODY_BYTES} bytes")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            # RecursionError: JSON nested deeper than the parser's recursion
            # limit, well within MAX_BODY_BYTES.
            return json_error(400, "the body is not valid JSON")
        checked = _validate_chat(payload)
        if isinstance(checked, str):
            return json_error(400, checked)
        prompt, chat_id = checked
        stream_id = new_chat_stream_id()

        def make_stream() -> AsyncIterator[str]:
            return source.reply(prompt)

        try:
            stream = await context.resumable_stream(stream_id, make_stream)
        except ResumableStreamError as exc:
            return failure_response(
                exc, f"resumable_fast demo: starting stream {stream_id}", json_error
            )
        if stream is not None:
            # Nobody reads the producer's own stream: detaching it drops its
            # buffer, while the context persists the reply to the end. Pages
            # read it back through the events route.
            await stream.aclose()
        logger.info("resumable_fast demo: stream %s started (chat %s)", stream_id, chat_id or "-")
        return JSONResponse(
            {
                "stream_id": stream_id,
                "chat_id": chat_id,
                "events_url": f"/api/chat/{stream_id}/events",
            },
            status_code=201,
        )

    async def events(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not STREAM_ID.fullmatch(stream_id):
            return json_error(404, "no such stream")
        # resume_sse answers the store's failures itself (503, or 500).
        return await resume_sse(
            context,
            request,
            stream_id,
            heartbeat_interval=heartbeat_interval,
            replay_finished=True,
        )

    async def stop_chat(request: Request) -> Response:
        stream_id = request.path_params["stream_id"]
        if not STREAM_ID.fullmatch(stream_id):
            return json_error(404, "no such stream")
        if not _is_json(request):
            return json_error(415, "send the request as application/json")
        try:
            state = await context.has_existing_stream(stream_id)
            if state is None:
                return json_error(404, "no such stream")
            if state == "DONE":
                return JSONResponse({"stream_id": stream_id, "stopped": False, "state": "done"})
            await context.stop_stream(stream_id)
        except ResumableStreamError as exc:
            return failure_response(
                exc, f"resumable_fast demo: stopping stream {stream_id}", json_error
            )
        logger.info("resumable_fast demo: stream %s stopped", stream_id)
        return JSONResponse({"stream_id": stream_id, "stopped": True, "state": "done"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        logger.info("resumable_fast demo: streams live in %s", backend_name)
        logger.info("resumable_fast demo: replies come from %s", source.description)
        yield

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/api/info", info, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/api/chat", start_chat, methods=["POST"]),
            Route("/api/chat/{stream_id}/events", events, methods=["GET"]),
            Route("/api/chat/{stream_id}/stop", stop_chat, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        lifespan=lifespan,
    )
    shutting_down = asyncio.Event()
    app.add_middleware(_EndStreamsOnShutdown, shutting_down=shutting_down)
    app.add_middleware(_SecurityHeaders)
    app.state.backend_name = backend_name
    # Called by DemoServer.request_stop (or any server owner) when shutting down.
    app.state.end_event_streams = shutting_down.set
    return app


# -- serving -------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the owner decides when it stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


@dataclass
class DemoServer:
    """A running uvicorn serving the app, on this event loop."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    url: str
    on_stop: Callable[[], None] | None = None

    async def wait(self) -> None:
        """Until the server has stopped."""
        await asyncio.shield(self.task)

    def request_stop(self) -> None:
        """Stop accepting connections; a second call stops without waiting."""
        if self.server.should_exit:
            self.server.force_exit = True
        self.server.should_exit = True
        if self.on_stop is not None:
            self.on_stop()

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop and wait (open event streams get ``graceful_timeout`` to end)."""
        self.request_stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout)
        except asyncio.TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def start_server(
    app: Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    graceful_timeout: int = 3,
    startup_timeout: float = 10.0,
    log_config: dict[str, Any] | None = None,
) -> DemoServer:
    """Serve ``app`` with uvicorn on ``host:port`` (0: a free port) as a task on
    the running loop; return once it accepts connections.

    Raises OSError when the address cannot be bound. Signals are left to the
    caller. Event streams stay open until their reply ends, so shutdown gives
    them ``graceful_timeout`` seconds, then cancels them.
    """
    sock = _bind(host, port)
    bound_port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=log_config,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="resumable_fast demo server")
    deadline = asyncio.get_running_loop().time() + startup_timeout
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise RuntimeError("the demo server stopped while starting")
        if asyncio.get_running_loop().time() > deadline:
            server.force_exit = server.should_exit = True
            task.cancel()
            sock.close()
            raise RuntimeError(f"the demo server did not start within {startup_timeout} s")
        await asyncio.sleep(0.01)
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{bound_port}"
    logger.info(
        "resumable_fast demo serving at %s/ (backend: %s)",
        url,
        getattr(app.state, "backend_name", "unknown"),
    )
    return DemoServer(server, task, url, getattr(app.state, "end_event_streams", None))
