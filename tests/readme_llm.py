"""The "LLM" of tests/readme_app.py: a deterministic, paced token source whose
reply is a pure function of the stream id, so a test knows the exact text
every reader of a reply must get."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request

TOKENS = 150
TOKENS_PER_SECOND = 100.0


def reply_tokens(stream_id: str) -> list[str]:
    # Non-ASCII, quotes, a backslash and a newline in every token: the SSE
    # framing (one JSON string per event) must carry them exactly.
    return [f'{index}:{stream_id} é "q" \\ ✓\n' for index in range(TOKENS)]


def reply_text(stream_id: str) -> str:
    return "".join(reply_tokens(stream_id))


async def llm_tokens(request: Request) -> AsyncIterator[str]:
    """The reply for the route's ``stream_id``, at TOKENS_PER_SECOND (paced
    against a start time, so a slow loop does not stretch the reply)."""
    stream_id: str = request.path_params["stream_id"]
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, token in enumerate(reply_tokens(stream_id)):
        await asyncio.sleep(max(0.0, start + (index + 1) / TOKENS_PER_SECOND - loop.time()))
        yield token
