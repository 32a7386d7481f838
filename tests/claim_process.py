"""One of several processes racing ``resumable_stream`` for the same ids, for
tests/backends/test_workers.py.

Usage: python claim_process.py CLAIMS_FILE
The backend is the embedded one in RESUMABLE_FAST_DATA_DIR. The process opens
its context, prints ``ready`` and then reads rounds from stdin, one line each:
``go ID...``. For every id of a round at once it calls
``ctx.resumable_stream(id, make_stream)``; ``make_stream`` appends
``<pid> <id>`` to CLAIMS_FILE before returning the source. Each stream is read
to its end, then one JSON line per id is printed (``id``, ``text``, ``made``:
whether this process's make_stream was called, ``finished``: the call
returned None, the stream being done already) and ``round done``. It exits
at the end of stdin.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator

import orjson

from resumable_fast import ResumableStreamContext, create_resumable_stream_context

TOKENS = 60
TOKENS_PER_SECOND = 100.0


def claim_tokens(stream_id: str) -> list[str]:
    return [f"{stream_id}/{index} é\n" for index in range(TOKENS)]


async def paced(tokens: list[str]) -> AsyncIterator[str]:
    for token in tokens:
        await asyncio.sleep(1 / TOKENS_PER_SECOND)
        yield token


async def claim(ctx: ResumableStreamContext, claims_file: str, stream_id: str) -> dict[str, object]:
    made = False

    def make_stream() -> AsyncIterator[str]:
        nonlocal made
        made = True
        # One write of a short line with O_APPEND: the lines of the processes
        # never interleave.
        with open(claims_file, "a", encoding="utf-8") as claims:
            claims.write(f"{os.getpid()} {stream_id}\n")
        return paced(claim_tokens(stream_id))

    stream = await ctx.resumable_stream(stream_id, make_stream)
    if stream is None:
        return {"id": stream_id, "text": None, "made": made, "finished": True}
    text = "".join([chunk async for chunk in stream])
    return {"id": stream_id, "text": text, "made": made, "finished": False}


async def main(claims_file: str) -> None:
    async with create_resumable_stream_context(linger_ms=5) as ctx:
        # Open the database before the race (a read stores nothing).
        assert await ctx.has_existing_stream(f"warm-up-{os.getpid()}") is None
        print("ready", flush=True)
        while line := await asyncio.to_thread(sys.stdin.readline):
            command, *ids = line.split()
            assert command == "go", line
            # Each process claims in an order of its own, so that different
            # processes get to different ids first.
            order = random.sample(ids, len(ids))
            results = dict(
                zip(
                    order,
                    await asyncio.gather(*(claim(ctx, claims_file, i) for i in order)),
                    strict=True,
                )
            )
            for result in (results[i] for i in ids):
                sys.stdout.write(orjson.dumps(result).decode() + "\n")
            print("round done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
