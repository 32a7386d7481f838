"""The event loop's latency while streams write to an embedded ``data_dir``:
file writes on the store's writer thread (what the library does) against the
same writes made in the loop (as before issue 14), side by side.

A ticker task asks to wake every millisecond; how late it wakes is the time
the loop was busy elsewhere, as every other stream and request on the loop
would feel it. Prints the median, p99 and maximum lateness of each mode.

Usage: python benches/bench_embedded_disk.py [--streams 100] [--tokens 300] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from resumable_fast import EmbeddedBackend, EmbeddedStore, ResumableStreamContext
from resumable_fast.config import BatchSettings


class _InLoop(concurrent.futures.Executor):
    """Runs each write at once, in the caller's thread: the loop."""

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


async def run(streams: int, tokens: int, in_loop: bool) -> list[float]:
    store = EmbeddedStore(Path(tempfile.mkdtemp(prefix="bench-disk-")))
    if in_loop:
        store._write_thread = _InLoop()  # type: ignore[assignment]
    context = ResumableStreamContext(
        EmbeddedBackend(store), BatchSettings(batch_size=1, linger_ms=0)
    )
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            lateness.append(max(0.0, time.perf_counter() - due))

    async def source() -> AsyncIterator[str]:
        for index in range(tokens):
            await asyncio.sleep(0.02)  # 50 tokens/s, as a model streams
            yield f"token {index} " * 8

    async def produce(index: int) -> None:
        stream = await context.create_new_resumable_stream(f"disk-{index}", source)
        async for _ in stream:
            pass

    tick = asyncio.ensure_future(ticker())
    await asyncio.gather(*(produce(index) for index in range(streams)))
    done.set()
    await tick
    await context.aclose()
    return lateness


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"writer thread (ours)": [], "writes in the loop": []}
    for _ in range(args.rounds):
        for name, in_loop in (("writer thread (ours)", False), ("writes in the loop", True)):
            results[name] += asyncio.run(run(args.streams, args.tokens, in_loop))
    print(
        f"event-loop lateness, {args.streams} streams x {args.tokens} appends of one record "
        f"to a data_dir, {args.rounds} interleaved rounds"
    )
    for name, values in results.items():
        ordered = sorted(values)
        p99 = ordered[int(len(ordered) * 0.99) - 1]
        print(
            f"  {name:22} median {statistics.median(ordered) * 1e3:7.3f} ms   "
            f"p99 {p99 * 1e3:7.3f} ms   max {ordered[-1] * 1e3:7.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
