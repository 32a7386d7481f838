"""Load: 10,000 concurrent streams in one process against s2-lite, every text
exact, memory bounded while all of them are in flight."""

from __future__ import annotations

import asyncio
import gc
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from conftest import S2Lite, make_context
from support import read_text

STREAMS = 10_000
# Generous next to what `make bench` measures (about 8-11 KiB per stream):
# this catches a leak or a per-stream buffer, not noise.
MAX_KIB_PER_STREAM = 32


def rss_kib() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def words(index: int) -> list[str]:
    return [f"s{index} ", "é ", "😀 ", f"{index * 7}\n", "end"]


async def test_ten_thousand_concurrent_streams(s2lite: S2Lite) -> None:
    run = uuid.uuid4().hex[:8]
    ids = [f"load-{run}-{index}" for index in range(STREAMS)]
    halfway = asyncio.Event()
    release = asyncio.Event()
    held = 0

    async def source(index: int) -> AsyncIterator[str]:
        nonlocal held
        chunks = words(index)
        for position, chunk in enumerate(chunks):
            if position == 2:
                held += 1
                if held == STREAMS:
                    halfway.set()
                await release.wait()
            yield chunk

    async with make_context(s2lite, linger_ms=20) as ctx:
        gc.collect()
        baseline = rss_kib()

        async def produce(index: int) -> str:
            stream = await ctx.resumable_stream(ids[index], lambda: source(index))
            return await read_text(stream, timeout=240)

        produced = asyncio.ensure_future(
            asyncio.gather(*(produce(index) for index in range(STREAMS)))
        )
        await asyncio.wait_for(halfway.wait(), 240)
        await asyncio.sleep(0.5)
        in_flight_kib = rss_kib() - baseline
        release.set()
        texts = await produced
        assert texts == ["".join(words(index)) for index in range(STREAMS)]

        # Every stream, replayed, a few hundred at a time.
        slots = asyncio.Semaphore(500)

        async def replay(index: int) -> bool:
            async with slots:
                text = await read_text(await ctx.resume_stream(ids[index]), timeout=240)
                return text == "".join(words(index))

        exact = await asyncio.gather(*(replay(index) for index in range(STREAMS)))
        assert all(exact), f"{exact.count(False)} streams replayed wrong"
    assert in_flight_kib / STREAMS < MAX_KIB_PER_STREAM, f"{in_flight_kib / STREAMS:.1f} KiB"
