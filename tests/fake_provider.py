"""A fake LLM provider on loopback: OpenAI chat completions and Anthropic
messages as the real services stream them, and a plain chunked text reply.

Every reply is ``reply_tokens(prompt, tokens)``, one token per event, with
``pace_s`` seconds before each, so a source built on a real SDK (or httpx)
pulls it chunk by chunk from a real socket. A prompt containing
``[stall-after=N]`` gets N tokens, then the connection is held open with
nothing more sent until the client goes (or the server stops): for testing a
source's own timeout.

In a test::

    with fake_provider_server(pace_s=0.005, tokens=30) as provider:
        AsyncOpenAI(base_url=provider.openai_base_url, ...)

As a process (prints ``fake provider on http://HOST:PORT`` once listening)::

    python tests/fake_provider.py --port 8123 [--host 127.0.0.1] [--pace 0.01] [--tokens 40]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeProvider", "ProviderStats", "fake_provider_server", "reply_tokens"]

_WORDS = (
    "the",
    "stream",
    "resumes",
    "where",
    "it",
    "left",
    "off",
    "model",
    "reply",
    "token",
    "naïve",
    "Zürich",
    "日本語",
    "𝛑",
    "🙂",
    "don't",
    "back\\slash",
    "<tag>",
)
# Always there, at these positions of every 20: a quote, a newline, non-ASCII.
_FIXED = {2: ' "quoted"', 5: "\n", 9: " café", 13: " 中文", 17: " 🙂\n"}
_STALL = re.compile(r"\[stall-after=(\d+)\]")


def reply_tokens(prompt: str, count: int = 40) -> list[str]:
    """The reply to ``prompt``: ``count`` non-empty tokens, the same every time."""
    rng = random.Random(hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).digest())
    tokens: list[str] = []
    for index in range(count):
        word = rng.choice(_WORDS)
        tokens.append(_FIXED.get(index % 20) or (word.capitalize() if index == 0 else " " + word))
    return tokens


def stall_after(prompt: str) -> int | None:
    """N when the prompt asks for ``[stall-after=N]``."""
    match = _STALL.search(prompt)
    return int(match.group(1)) if match else None


@dataclass
class ProviderStats:
    """What a server was asked: one ``(path, prompt)`` per request, in order."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, path: str, prompt: str) -> None:
        with self._lock:
            self.requests.append((path, prompt))

    def requests_for(self, prompt: str) -> int:
        """How many requests asked for ``prompt`` (on any route)."""
        with self._lock:
            return sum(1 for _, asked in self.requests if asked == prompt)

    @property
    def served(self) -> int:
        with self._lock:
            return len(self.requests)


@dataclass(frozen=True)
class FakeProvider:
    url: str
    """``http://127.0.0.1:PORT``"""
    stats: ProviderStats = field(default_factory=ProviderStats, compare=False, repr=False)

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def requests_for(self, prompt: str) -> int:
        return self.stats.requests_for(prompt)


# -- the app ---------------------------------------------------------------------


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """The last user message's text: a string, or text content blocks."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content", "")
        if isinstance(content, str):
            return content
        return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")
    return ""


def _openai_events(prompt: str, model: str) -> tuple[list[str], Callable[[str], str], list[str]]:
    created = int(time.time())
    ident = "chatcmpl-fake-" + hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
    ident = ident[:38]

    def chunk(delta: dict[str, str], finish_reason: str | None) -> str:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        return f"data: {_json(body)}\n\n"

    head = [chunk({"role": "assistant", "content": ""}, None)]
    tail = [chunk({}, "stop"), "data: [DONE]\n\n"]
    return head, lambda token: chunk({"content": token}, None), tail


def _anthropic_events(
    prompt: str, model: str, count: int
) -> tuple[list[str], Callable[[str], str], list[str]]:
    def event(name: str, data: dict[str, Any]) -> str:
        return f"event: {name}\ndata: {_json(data)}\n\n"

    message: dict[str, Any] = {
        "id": "msg_fake_"
        + hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:24],
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": model,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": max(1, len(prompt.split())), "output_tokens": 1},
    }
    head = [
        event("message_start", {"type": "message_start", "message": message}),
        event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        event("ping", {"type": "ping"}),
    ]

    def delta(token: str) -> str:
        return event(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": token},
            },
        )

    tail = [
        event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": count},
            },
        ),
        event("message_stop", {"type": "message_stop"}),
    ]
    return head, delta, tail


def create_app(
    *, pace_s: float, tokens: int, stats: ProviderStats, stopping: Callable[[], bool]
) -> Starlette:
    """The provider's routes; ``stopping()`` ends stalled replies at shutdown."""

    async def paced(
        prompt: str, head: list[str], token_event: Callable[[str], str], tail: list[str]
    ) -> AsyncIterator[bytes]:
        for item in head:
            yield item.encode()
        stall = stall_after(prompt)
        for index, token in enumerate(reply_tokens(prompt, tokens)):
            if stall is not None and index >= stall:
                # Hold the connection: Starlette cancels this when the client
                # goes. The server's stop is a flag set from another thread.
                while not stopping():  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                return
            await asyncio.sleep(pace_s)
            yield token_event(token).encode()
        for item in tail:
            yield item.encode()

    def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
        return StreamingResponse(
            body, media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    def streaming_only() -> Response:
        return JSONResponse(
            {"error": {"type": "invalid_request_error", "message": "only stream: true is faked"}},
            status_code=400,
        )

    async def chat_completions(request: Request) -> Response:
        body = await request.json()
        prompt = _last_user_text(body.get("messages", []))
        stats.record(request.url.path, prompt)
        if body.get("stream") is not True:
            return streaming_only()
        return event_stream(paced(prompt, *_openai_events(prompt, str(body.get("model")))))

    async def messages(request: Request) -> Response:
        body = await request.json()
        prompt = _last_user_text(body.get("messages", []))
        stats.record(request.url.path, prompt)
        if body.get("stream") is not True:
            return streaming_only()
        events = _anthropic_events(prompt, str(body.get("model")), tokens)
        return event_stream(paced(prompt, *events))

    async def text(request: Request) -> Response:
        prompt = request.query_params.get("prompt", "")
        stats.record(request.url.path, prompt)
        return StreamingResponse(
            paced(prompt, [], lambda token: token, []), media_type="text/plain; charset=utf-8"
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/text", text, methods=["GET"]),
        ]
    )


# -- serving -----------------------------------------------------------------------


@dataclass
class _Stopping:
    server: uvicorn.Server | None = None

    def __call__(self) -> bool:
        return self.server is not None and self.server.should_exit


def _make_server(
    host: str, port: int, pace_s: float, tokens: int
) -> tuple[uvicorn.Server, socket.socket, FakeProvider]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    stats = ProviderStats()
    stopping = _Stopping()
    app = create_app(pace_s=pace_s, tokens=tokens, stats=stats, stopping=stopping)
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    server = stopping.server = uvicorn.Server(config)
    provider = FakeProvider(f"http://{host}:{sock.getsockname()[1]}", stats)
    return server, sock, provider


@contextmanager
def fake_provider_server(
    *, pace_s: float = 0.01, tokens: int = 40, host: str = "127.0.0.1", port: int = 0
) -> Iterator[FakeProvider]:
    """Serve the fake provider from a thread with its own event loop."""
    server, sock, provider = _make_server(host, port, pace_s, tokens)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])),
        name=f"fake provider {provider.url}",
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake provider did not start on {provider.url}")
            time.sleep(0.005)
        yield provider
    finally:
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(5)
        sock.close()


async def _serve_foreground(host: str, port: int, pace_s: float, tokens: int) -> None:
    server, sock, provider = _make_server(host, port, pace_s, tokens)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            raise SystemExit(f"the fake provider did not start on {provider.url}")
        await asyncio.sleep(0.005)
    print(f"fake provider on {provider.url}", flush=True)
    await task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pace", type=float, default=0.01, help="seconds before each token")
    parser.add_argument("--tokens", type=int, default=40, help="tokens per reply")
    args = parser.parse_args(argv)
    asyncio.run(_serve_foreground(args.host, args.port, args.pace, args.tokens))


if __name__ == "__main__":
    main()
