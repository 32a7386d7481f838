"""Stalled readers of one live reply, in a process of their own (issue 21).

Usage: python stalled_readers_process.py BACKEND [READERS] [CHARS] [--tracemalloc] [--late]
       [--no-read]

BACKEND is ``s2`` (the S2_* variables name the server), ``embedded`` (in
memory) or ``embedded-dir`` (RESUMABLE_FAST_DATA_DIR names the directory).
A producer starts a live reply; READERS readers (2,000) each read its first
chunk and then stop pulling, as a browser tab whose client stopped reading;
the producer writes the rest of the reply (CHARS characters, 150 KiB) to its
end. The RSS growth from before the readers to after the reply ended (readers
still attached) is measured from /proc/self/status after gc.collect(); then
every reader reads on and must get the exact full text. The last line printed
is a JSON object with the figures. With ``--tracemalloc`` the allocations
made meanwhile are traced and the largest sites printed too (slower; its RSS
figure then includes tracemalloc's own). With ``--late`` the readers open
the reply when half of it is written (their first read returns more).
With ``--no-read`` the readers are closed after the measurement, unread.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator

from resumable_fast import ResumableStream, create_resumable_stream_context

WORDS = ["the ", "model ", "streams ", "a ", "reply ", "to ", "café ", "naïve ", "tabs ", "of "]
TOKENS_PER_STEP = 10


def reply_tokens(chars: int) -> list[str]:
    """About ``chars`` characters of LLM-like tokens (some not ASCII)."""
    tokens: list[str] = []
    total = 0
    index = 0
    while total < chars:
        token = WORDS[index % len(WORDS)] if index % 7 else f"t{index} "
        tokens.append(token)
        total += len(token)
        index += 1
    return tokens


def rss_bytes() -> int:
    gc.collect()
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def main(
    backend: str, readers: int, chars: int, trace: bool, late: bool, read_on: bool = True
) -> dict[str, object]:
    options: dict[str, object] = {"linger_ms": 5}
    if backend != "s2":
        options["backend"] = "embedded"
    tokens = reply_tokens(chars)
    expected = "".join(tokens)
    go = asyncio.Event()
    # With late readers, where the source waits for them.
    half = len(tokens) // 2 // TOKENS_PER_STEP * TOKENS_PER_STEP + 1 if late else 1
    halfway = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        yield tokens[0]
        for start in range(1, len(tokens), TOKENS_PER_STEP):
            if start == half:
                halfway.set()
                await go.wait()
            for token in tokens[start : start + TOKENS_PER_STEP]:
                yield token
            await asyncio.sleep(0.001)  # a live reply: batch after batch

    stream_id = f"stalled-{uuid.uuid4().hex}"
    async with create_resumable_stream_context(**options) as ctx:  # type: ignore[arg-type]
        producer = await ctx.resumable_stream(stream_id, source)
        assert producer is not None
        assert await asyncio.wait_for(producer.__anext__(), 30) == tokens[0]
        producer_text = asyncio.ensure_future(producer.read_all())
        if late:
            await asyncio.wait_for(halfway.wait(), 120)
            await asyncio.sleep(0.5)  # the first half is stored
        # A warm-up reader, so what the first reader costs once is not counted.
        warm = await ctx.resume_stream(stream_id)
        assert await asyncio.wait_for(warm.__anext__(), 30) == tokens[0]
        await asyncio.sleep(0.2)
        before = rss_bytes()
        if trace:
            tracemalloc.start(8)
            traced_before = tracemalloc.take_snapshot()

        stalled: list[ResumableStream] = []
        for _ in range(readers):
            reader = await ctx.resume_stream(stream_id)
            stalled.append(reader)
        firsts = await asyncio.wait_for(
            asyncio.gather(*(reader.__anext__() for reader in stalled)), 60
        )
        assert all(first == tokens[0] for first in firsts)
        attached = rss_bytes()

        started = time.monotonic()
        go.set()
        assert await asyncio.wait_for(producer_text, 300) == expected[len(tokens[0]) :]
        await asyncio.sleep(0.5)  # the feed (if any) takes the closing fence too
        written = time.monotonic() - started
        after = rss_bytes()
        top: list[str] = []
        if trace:
            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.compare_to(traced_before, "lineno")
            top = [str(stat) for stat in stats[:20]]
            tracemalloc.stop()

        started = time.monotonic()
        exact = 0
        if read_on:
            rest = await asyncio.wait_for(
                asyncio.gather(*(reader.read_all() for reader in stalled)), 300
            )
            exact = sum(tokens[0] + text == expected for text in rest)
        for reader in stalled:
            await reader.aclose()
        read = time.monotonic() - started
        await warm.aclose()
    for line in top:
        print(line)
    return {
        "backend": backend,
        "readers": readers,
        "chars": len(expected),
        "utf8_bytes": len(expected.encode()),
        "chunks": len(tokens),
        "late": late,
        "rss_before": before,
        "rss_attached": attached,
        "rss_after": after,
        "growth": after - before,
        "growth_mb": round((after - before) / 1e6, 1),
        "per_reader": (after - before) // readers,
        "exact": exact,
        "write_seconds": round(written, 2),
        "read_seconds": round(read, 2),
    }


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if not argument.startswith("--")]
    backend = arguments[0]
    readers = int(arguments[1]) if len(arguments) > 1 else 2000
    chars = int(arguments[2]) if len(arguments) > 2 else 150 * 1024
    trace, late = "--tracemalloc" in sys.argv, "--late" in sys.argv
    read_on = "--no-read" not in sys.argv
    result = asyncio.run(main(backend, readers, chars, trace, late, read_on))
    print(json.dumps(result), flush=True)
