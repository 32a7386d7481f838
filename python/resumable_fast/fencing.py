"""The fences that decide who writes a stream: claiming it, taking over an
abandoned one, stopping it, and ending it with an error.

S2 applies a fence command only if the append's ``fencing_token`` (and, where
given, ``match_seq_num``) match, so of several writers racing for a stream
exactly one wins each fence; the layout is in :mod:`resumable_fast.records`.
"""

from __future__ import annotations

import logging
import time

from resumable_fast import _core
from resumable_fast.backends import Backend
from resumable_fast.errors import (
    FencingTokenMismatchError,
    ResumableStreamError,
    SeqNumMismatchError,
)
from resumable_fast.records import (
    END_FENCE_PREFIX,
    ERROR_FENCE_PREFIX,
    SESSION_FENCE_PREFIX,
    Landing,
    SequencedRecord,
    StreamName,
    StreamStatus,
    new_fence_token,
    status_of,
)

__all__ = ["append_error_fence", "claim", "claim_tail", "is_abandoned", "stop"]

logger = logging.getLogger("resumable_fast")

# Tries of stop()'s fence at the tail before it goes in unconditionally.
STOP_ATTEMPTS = 5


async def claim(backend: Backend, name: StreamName) -> str | None:
    """Append the session fence at seq 0: the new producer's token, or None
    if another producer got there first."""
    return await _fence_at(backend, name, 0, "")


async def claim_tail(backend: Backend, name: StreamName, seq_num: int) -> str | None:
    """Append a new session fence at ``seq_num``, the tail of an abandoned
    stream (only if nothing was appended since): it fences the old producer
    out should it still be alive. The new token, or None if another writer
    got there first."""
    return await _fence_at(backend, name, seq_num, None)


async def _fence_at(
    backend: Backend, name: StreamName, seq_num: int, fencing_token: str | None
) -> str | None:
    """A new session fence at exactly ``seq_num``. A mismatch may be our own
    fence: an attempt that landed although its answer was lost, then retried.
    The record at ``seq_num`` tells (the token has 96 random bits)."""
    token = new_fence_token(SESSION_FENCE_PREFIX)
    landed = await _append_fence_at(backend, name, seq_num, token, fencing_token)
    return token if landed else None


async def _append_fence_at(
    backend: Backend, name: StreamName, seq_num: int, fence: str, fencing_token: str | None
) -> bool:
    """Whether the fence ``fence`` is now the record at ``seq_num``."""
    try:
        await backend.append(
            name, _core.fence_append_input(fence, fencing_token, seq_num), Landing(new_fence=fence)
        )
    except (FencingTokenMismatchError, SeqNumMismatchError) as exc:
        if exc.attempts == 1:
            return False  # refused at the only attempt: certainly not ours
        return await _record_body(backend, name, seq_num) == fence
    return True


async def _record_body(backend: Backend, name: StreamName, seq_num: int) -> str | None:
    """The body of the record at ``seq_num``, or None if there is none."""
    if (last := await backend.last_record(name)) is None or last["seq_num"] < seq_num:
        return None
    session = backend.read_session(name, seq_num)
    try:
        async for records in session:
            for record in records:
                if record["seq_num"] == seq_num:
                    return record.get("body")
            return None
    finally:
        await session.aclose()
    return None


async def stop(backend: Backend, name: StreamName) -> None:
    """End a stream now with an ``end-`` fence appended without a token check,
    which fences its producer out; readers end. The fence goes at the tail
    seen just before (``match_seq_num``), so a retry whose first attempt
    landed fails instead of appending a second fence, and is recognised as
    ours by the record at that position; a stream already finished is left
    as it is. Should producers keep appending in between, the fence goes in
    unconditionally after a few tries."""
    for _ in range(STOP_ATTEMPTS):
        last = await backend.last_record(name)
        if status_of(last) is StreamStatus.DONE:
            return
        seq_num = 0 if last is None else last["seq_num"] + 1
        if await _append_fence_at(backend, name, seq_num, new_fence_token(END_FENCE_PREFIX), None):
            return
        # Appended to since we looked: look again.
    fence = new_fence_token(END_FENCE_PREFIX)
    await backend.append(name, _core.fence_append_input(fence, None), Landing(new_fence=fence))


async def append_error_fence(backend: Backend, name: StreamName, token: str) -> None:
    """End a stream whose source could not be made with an ``error-`` fence,
    under the producer's token. A failure (S2 refusing it, or away past the
    retry deadline) is logged, not raised: the caller is already raising the
    source's own error, which must not be replaced."""
    fence = new_fence_token(ERROR_FENCE_PREFIX)
    try:
        await backend.append(name, _core.fence_append_input(fence, token), Landing(new_fence=fence))
    except ResumableStreamError as exc:
        logger.error("stream %r: could not append error fence: %s", name, exc)


def is_abandoned(last: SequencedRecord, liveness_timeout: float | None) -> bool:
    """An unfinished stream's last record is older than the liveness timeout
    (live producers heartbeat well within it), by S2's clock against ours."""
    timestamp = last.get("timestamp")
    if liveness_timeout is None or timestamp is None:
        return False
    return time.time() * 1000 - timestamp > liveness_timeout * 1000
