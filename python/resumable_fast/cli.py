"""Command line: ``python -m resumable_fast demo``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence

from resumable_fast.context import create_resumable_stream_context

EMBEDDED_NOT_YET = (
    "resumable_fast demo: the embedded (zero-setup) backend and the chat page are not built "
    "yet.\nSet S2_BASIN (and S2_ACCESS_TOKEN, or S2_ACCOUNT_ENDPOINT/S2_BASIN_ENDPOINT for "
    "s2-lite) to run the producer/reader example on S2."
)


async def _tokens(count: int, delay: float) -> AsyncIterator[str]:
    for index in range(count):
        await asyncio.sleep(delay)
        yield f"token-{index} "


async def run_example(count: int = 40, delay: float = 0.02) -> None:
    """Produce a short stream, resume it mid-way from a second context, print both."""
    stream_id = f"demo-{uuid.uuid4().hex}"
    async with (
        create_resumable_stream_context() as producer_ctx,
        create_resumable_stream_context() as reader_ctx,
    ):
        producer = await producer_ctx.resumable_stream(stream_id, lambda: _tokens(count, delay))
        assert producer is not None
        first = [await producer.__anext__() for _ in range(count // 2)]
        resumed = await reader_ctx.resume_existing_stream(stream_id)
        assert resumed is not None
        rest = [chunk async for chunk in producer]
        replay = await resumed.read_all()
    print(f"stream {stream_id}")
    print(f"producer's client: {''.join(first + rest)}")
    print(f"resumed replica:   {replay}")
    print("identical" if replay == "".join(first + rest) else "MISMATCH")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resumable-fast")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="run the demo")
    args = parser.parse_args(argv)
    if args.command == "demo":
        if not os.environ.get("S2_BASIN"):
            print(EMBEDDED_NOT_YET)
            return 0
        asyncio.run(run_example())
    return 0


if __name__ == "__main__":
    sys.exit(main())
