"""A writer of many streams in its own OS process, for the durability tests.

Usage: python writer_process.py DATA_DIR PLAN_FILE

PLAN_FILE is JSON: ``generation`` (an int naming this process's source
texts), ``streams`` (``[stream_id, token_count]`` pairs), ``delay`` (seconds
before each token), ``liveness_timeout``, ``retention_seconds`` and ``hold``.
Every stream is asked for at once with ``ctx.resumable_stream``; its source
yields ``stream_token(stream_id, generation, i)`` for i in
``range(token_count)``. The process reports on stdout, one JSON object a line:
``claimed`` (with ``produced``: whether its ``make_stream`` was called, a new
stream or a takeover; else ``state`` is ``done`` or ``resumed``) once per
stream, ``ready`` once
every stream has been asked for, ``finished`` when a stream's reader reached
its end, ``incomplete`` or ``error`` for a reader that failed, ``all_done`` at
the end. With ``hold`` it then waits to be killed; else it closes its context
and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from producer_process import token_text
from resumable_fast import StreamIncompleteError, create_resumable_stream_context


def stream_token(stream_id: str, generation: int, index: int) -> str:
    """The text of a token: a pure function of the stream, the writer's
    generation and the token's index."""
    return f"{stream_id}|g{generation}|{token_text(index)}"


def report(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def tokens(stream_id: str, generation: int, count: int, delay: float) -> AsyncIterator[str]:
    for index in range(count):
        if delay:
            await asyncio.sleep(delay)
        yield stream_token(stream_id, generation, index)


async def main(data_dir: str, plan: dict[str, Any]) -> None:
    generation: int = plan["generation"]
    delay: float = plan["delay"]
    streams: list[tuple[str, int]] = [(sid, count) for sid, count in plan["streams"]]
    asked = 0

    async with create_resumable_stream_context(
        data_dir=data_dir,
        linger_ms=5,
        liveness_timeout=plan["liveness_timeout"],
        retention_seconds=plan["retention_seconds"],
        drain_timeout=5,
    ) as ctx:

        async def run(stream_id: str, count: int) -> None:
            nonlocal asked
            produced = False

            def make_stream() -> AsyncIterator[str]:
                nonlocal produced
                produced = True
                return tokens(stream_id, generation, count, delay)

            try:
                stream = await ctx.resumable_stream(stream_id, make_stream)
            except Exception as exc:
                report("error", id=stream_id, where="resumable_stream", error=repr(exc))
                stream = None
            else:
                state = "produced" if produced else ("done" if stream is None else "resumed")
                report("claimed", id=stream_id, produced=produced, state=state)
            asked += 1
            if asked == len(streams):
                report("ready")
            if stream is None:
                return
            try:
                await stream.read_all()
            except StreamIncompleteError:
                report("incomplete", id=stream_id)
            except Exception as exc:
                report("error", id=stream_id, where="read", error=repr(exc))
            else:
                report("finished", id=stream_id, produced=produced)

        await asyncio.gather(*(run(stream_id, count) for stream_id, count in streams))
        report("all_done")
        if plan["hold"]:
            await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(Path(sys.argv[2]).read_text())))
