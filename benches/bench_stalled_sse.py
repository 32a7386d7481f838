"""Memory of stalled SSE readers (issue 21): 2,000 connections to
``resume_sse`` whose clients stopped reading after the first event, while one
live reply runs to its end, against the same number of bare Starlette
``StreamingResponse`` connections stalled the same way (the framework's own
per-connection floor). The ASGI app is driven directly (no sockets): each
connection's ``send`` blocks once its first event is out, as a stalled
socket's does once the server pauses writing.

Each case runs in a process of its own; RSS growth after ``gc.collect()``.

Usage: python benches/bench_stalled_sse.py [--readers 2000] [--chunks 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from resumable_fast import create_resumable_stream_context
from resumable_fast.asgi import resume_sse

CASES = ("floor", "in-memory", "data_dir")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def stalled_connections(app: Starlette, readers: int, stall: asyncio.Event) -> list[Any]:
    """Connections to ``/s/s`` whose client reads the first body part only."""

    async def connection() -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/s/s",
            "raw_path": b"/s/s",
            "query_string": b"",
            "headers": [],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1),
            "root_path": "",
        }
        bodies = 0

        async def receive() -> dict[str, Any]:
            await stall.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies >= 2:
                    await stall.wait()  # the client stopped reading

        await app(scope, receive, send)

    return [asyncio.ensure_future(connection()) for _ in range(readers)]


def app_of(endpoint: Callable[[Request], Awaitable[Response]]) -> Starlette:
    return Starlette(routes=[Route("/s/{stream_id}", endpoint)])


async def floor(readers: int, pending_bytes: int) -> float:
    forever, stall = asyncio.Event(), asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        yield b"x" * pending_bytes
        await forever.wait()

    async def endpoint(request: Request) -> Response:
        return StreamingResponse(body(), media_type="text/event-stream")

    gc.collect()
    before = rss_mb()
    tasks = await stalled_connections(app_of(endpoint), readers, stall)
    await asyncio.sleep(2)
    gc.collect()
    grown = rss_mb() - before
    stall.set()
    forever.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return grown


async def ours(readers: int, chunks: int, data_dir: str | None) -> float:
    context = create_resumable_stream_context(backend="embedded", data_dir=data_dir, linger_ms=5)
    gate, stall = asyncio.Event(), asyncio.Event()

    async def source() -> AsyncIterator[str]:
        yield "first "
        await gate.wait()
        for index in range(chunks):
            yield f"tok{index} "
            if index % 200 == 0:
                await asyncio.sleep(0)

    async def endpoint(request: Request) -> Response:
        return await resume_sse(context, request, request.path_params["stream_id"])

    producer = await context.resumable_stream("s", source)
    assert producer is not None
    await producer.__anext__()
    gc.collect()
    before = rss_mb()
    tasks = await stalled_connections(app_of(endpoint), readers, stall)
    await asyncio.sleep(1)
    gate.set()
    async for _ in producer:
        pass
    await asyncio.sleep(1)
    gc.collect()
    grown = rss_mb() - before
    stall.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await context.aclose()
    return grown


def run_case(case: str, readers: int, chunks: int) -> float:
    """One case in a process of its own; its RSS growth in MB."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--case",
            case,
            "--readers",
            str(readers),
            "--chunks",
            str(chunks),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--chunks", type=int, default=30_000)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case == "floor":
        # The most a stalled connection of ours holds pending: 256 events.
        print(asyncio.run(floor(args.readers, 6400)))
        return
    if args.case is not None:
        with tempfile.TemporaryDirectory(prefix="bench-stalled-") as directory:
            data_dir = directory if args.case == "data_dir" else None
            print(asyncio.run(ours(args.readers, args.chunks, data_dir)))
        return
    grown = {case: run_case(case, args.readers, args.chunks) for case in CASES}
    print(
        f"{args.readers} stalled SSE connections, one live reply of {args.chunks} chunks "
        "(RSS growth, MB, each case in its own process)"
    )
    print(f"  Starlette floor (a bare StreamingResponse, 6.4 KB pending): {grown['floor']:7.1f}")
    for case in ("in-memory", "data_dir"):
        extra = grown[case] - grown["floor"]
        print(f"  resume_sse, {case:9}: {grown[case]:7.1f}  (over the floor: {extra:6.1f})")


if __name__ == "__main__":
    main()
