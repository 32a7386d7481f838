"""A producer replica in its own OS process, for the two-process test.

Usage: python producer_process.py STREAM_ID TOKENS DELAY_SECONDS [hold]
The backend comes from the environment: S2 with the S2_* variables, else the
embedded backend in RESUMABLE_FAST_DATA_DIR. With ``hold`` the process prints
``done`` when its stream has ended and then waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

from resumable_fast import create_resumable_stream_context


def token_text(index: int) -> str:
    return f"tok{index}-é "


async def tokens(count: int, delay: float) -> AsyncIterator[str]:
    for index in range(count):
        await asyncio.sleep(delay)
        yield token_text(index)


async def main(stream_id: str, count: int, delay: float, hold: bool) -> None:
    async with create_resumable_stream_context(linger_ms=5) as ctx:
        stream = await ctx.resumable_stream(stream_id, lambda: tokens(count, delay))
        assert stream is not None
        async for _chunk in stream:
            pass
        if hold:
            print("done", flush=True)
            await asyncio.sleep(3600)


if __name__ == "__main__":
    hold = sys.argv[4:] == ["hold"]
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), hold))
