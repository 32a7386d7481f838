"""HTTP paths side by side against one s2-lite: what S2Client does (requests on
resumable_fast.http11's connections, answers parsed by httptools/llhttp) and
the same calls through httpx's own stack (httpcore with h11 for HTTP/1.1, h2
for HTTP/2 over cleartext). Prints medians of CPU per request and wall time.

Usage: python benches/experiments/bench_transport.py [--rounds N]   (needs S2LITE_BIN)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from resumable_fast import S2Config
from resumable_fast._core import fence_append_input
from resumable_fast.endpoints import Origin, Redactor
from resumable_fast.http11 import Request, Response, StreamingResponse
from resumable_fast.records import StreamName
from resumable_fast.s2 import S2Client

from conftest import S2Lite, start_s2lite, stop_s2lite

SEQUENTIAL = 200
CONCURRENT = 300
OURS = "S2Client (http11 + httptools)"


def httpx_default(http2: bool) -> Callable[[], httpx.AsyncClient]:
    return lambda: httpx.AsyncClient(http1=not http2, http2=http2, timeout=30)


class ThroughHttpx:
    """An S2Client's HTTP collaborator (its ``http=``) made of an httpx
    client: its unary calls go through httpx's own stack. (The bench opens no
    read session.)"""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.redactor = Redactor()

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response:
        fields = dict(
            line.split(": ", 1) for line in request.headers.decode().split("\r\n") if line
        )
        response = await self.http.request(
            request.method.decode(),
            f"{origin.scheme}://{origin.authority}{request.target.decode()}",
            headers=fields,
            content=request.body,
        )
        return Response(response.status_code, response.headers.raw, response.content)

    def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        raise NotImplementedError("the bench sends unary calls only")

    async def aclose(self) -> None:
        await self.http.aclose()


async def measure(
    server: S2Lite, make_http: Callable[[], httpx.AsyncClient] | None
) -> tuple[float, ...]:
    """``make_http`` None: S2Client as it is; else its unary calls go through
    the httpx client it makes."""
    client = S2Client(
        S2Config(
            basin=server.basin, account_endpoint=server.endpoint, basin_endpoint=server.endpoint
        ),
        http=ThroughHttpx(make_http()) if make_http is not None else None,
    )
    try:
        stream = StreamName(f"bench-{uuid.uuid4().hex}")
        await client.append(stream, fence_append_input("session-b", "", 0))
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(SEQUENTIAL):
            await client.check_tail(stream)
        seq_cpu = (time.process_time() - cpu) / SEQUENTIAL
        seq_wall = (time.perf_counter() - wall) / SEQUENTIAL
        body = b'{"records":[{"body":"token"}]}'
        names = [StreamName(f"{stream}-{i}") for i in range(CONCURRENT)]
        await asyncio.gather(*(client.append(name, body) for name in names))
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client.append(name, body) for name in names))
        conc_cpu = (time.process_time() - cpu) / CONCURRENT
        conc_wall = time.perf_counter() - wall
        return seq_cpu, seq_wall, conc_cpu, conc_wall
    finally:
        await client.aclose()


async def main(rounds: int) -> None:
    server = start_s2lite(Path(tempfile.mkdtemp()))
    peers: dict[str, Callable[[], httpx.AsyncClient] | None] = {
        "httpx HTTP/1.1 (httpcore + h11)": httpx_default(False),
        "httpx HTTP/2 (h2c)": httpx_default(True),
        OURS: None,
    }
    results: dict[str, list[tuple[float, ...]]] = {name: [] for name in peers}
    try:
        for round_number in range(rounds):
            for name, make_http in peers.items():
                results[name].append(await measure(server, make_http))
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
    finally:
        stop_s2lite(server)
    print(
        f"median of {rounds} rounds; {SEQUENTIAL} sequential tail checks, "
        f"{CONCURRENT} concurrent appends to {CONCURRENT} streams"
    )
    print(
        f"{'transport':34} {'seq CPU/req':>12} {'seq wall/req':>13} "
        f"{'conc CPU/req':>13} {'conc wall':>10}"
    )
    ours = [statistics.median(r[i] for r in results[OURS]) for i in range(4)]
    for name, rows in results.items():
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(
            f"{name:34} {med[0] * 1e3:10.3f}ms {med[1] * 1e3:11.3f}ms "
            f"{med[2] * 1e3:11.3f}ms {med[3]:9.3f}s   "
            f"(CPU x{med[0] / ours[0]:.1f} / x{med[2] / ours[2]:.1f} of ours)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args().rounds))
