"""Which reply of a chat is the active one, kept where every replica sees it.

A chat's replies are resumable streams named ``ai-chat/<chat id>/<random>``
(a new one per reply: streams are append-only and a finished one cannot be
produced again). Beside them, the chat's pointer stream
``ai-chat/<chat id>/active`` gets one record per reply, whose body is that
reply's stream id; its last record names the active reply. The pointer lives
in the context's backend: in S2 (every replica reads the same record, one
request) or in the embedded store of this process (dropped with the replies,
``retention_seconds`` after its last record). The reasons are in
``docs/design.md`` ("AI SDK").

Deleting a chat (:func:`delete_chat_stream`) deletes every reply its pointer
names, then the pointer.

A reply is active while its stream is in progress: a finished (or stopped)
reply, or none at all, means nothing to resume.
"""

from __future__ import annotations

import logging
import re
from contextlib import aclosing

import orjson

from resumable_fast.backends import Backend
from resumable_fast.context import MakeStream, ResumableStreamContext, new_stream_id
from resumable_fast.errors import InvalidChatIdError
from resumable_fast.records import StreamName
from resumable_fast.streams import ResumableStream

__all__ = [
    "CHAT_STREAM_PREFIX",
    "MAX_CHAT_ID_BYTES",
    "active_chat_stream",
    "delete_chat_stream",
    "resume_chat_stream",
    "start_chat_stream",
    "stop_chat_stream",
    "validate_chat_id",
]

logger = logging.getLogger("resumable_fast")

CHAT_STREAM_PREFIX = "ai-chat/"
_POINTER_SUFFIX = "/active"
# Room for the prefix, a reply's random part and a context's key prefix
# within S2's 512-byte stream names.
MAX_CHAT_ID_BYTES = 256
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f/]")


def validate_chat_id(chat_id: object) -> str:
    """``chat_id`` if it can name a chat, else :class:`InvalidChatIdError`.

    A chat id is the ``id`` of ``useChat``: 1 to 256 bytes of UTF-8, no ``/``
    (the AI SDK puts it in one URL path segment), no control characters,
    and neither ``.`` nor ``..``.
    """
    if not isinstance(chat_id, str):
        raise InvalidChatIdError(f"chat id must be a string, got {type(chat_id).__name__}")
    if not chat_id or chat_id in (".", ".."):
        raise InvalidChatIdError("chat id must not be empty, '.' or '..'")
    try:
        size = len(chat_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidChatIdError("chat id must be valid Unicode text") from None
    if size > MAX_CHAT_ID_BYTES:
        raise InvalidChatIdError(f"chat id is {size} bytes, at most {MAX_CHAT_ID_BYTES} allowed")
    if _FORBIDDEN.search(chat_id):
        raise InvalidChatIdError("chat id must not contain '/' or control characters")
    return chat_id


def _reply_prefix(chat_id: str) -> str:
    return f"{CHAT_STREAM_PREFIX}{chat_id}/"


def _pointer(context: ResumableStreamContext, chat_id: str) -> tuple[Backend, StreamName]:
    """The backend and the backend's name of the chat's pointer stream
    (:class:`ResumableStreamError` once the context is closed): the same
    backend, under the same key prefix, as the streams."""
    return context.backend, context.stream_name(_reply_prefix(chat_id)[:-1] + _POINTER_SUFFIX)


async def start_chat_stream(
    context: ResumableStreamContext, chat_id: str, make_stream: MakeStream
) -> ResumableStream:
    """Produce a new reply for the chat and make it the chat's active one.

    The pointer record goes first, then the reply's stream is claimed: a
    reply that is produced is always findable, and a failure between the two
    leaves a pointer to a stream that never started (nothing to resume).
    ``make_stream`` is called only once the pointer is written. The
    returned stream is the producer's (its ``stream_id`` is the reply's).
    """
    validate_chat_id(chat_id)
    reply_id = _reply_prefix(chat_id) + new_stream_id()
    backend, pointer = _pointer(context, chat_id)
    # No match_seq_num: of concurrent replies the last pointer wins, and a
    # retried append that had landed only repeats the same record.
    await backend.append(pointer, orjson.dumps({"records": [{"body": reply_id}]}))
    return await context.create_new_resumable_stream(reply_id, make_stream)


async def active_chat_stream(context: ResumableStreamContext, chat_id: str) -> str | None:
    """The stream id of the chat's latest reply (in progress or not), or
    None when the chat has none."""
    validate_chat_id(chat_id)
    backend, pointer = _pointer(context, chat_id)
    last = await backend.last_record(pointer)
    if last is None:
        return None
    reply_id = last.get("body", "")
    if last.get("headers") or not reply_id.startswith(_reply_prefix(chat_id)):
        logger.warning("chat %r: its pointer stream holds a record we did not write", chat_id)
        return None
    return reply_id


async def resume_chat_stream(
    context: ResumableStreamContext, chat_id: str
) -> ResumableStream | None:
    """The chat's active reply, replayed from its start and followed to its
    end; None when the chat has no reply in progress."""
    reply_id = await active_chat_stream(context, chat_id)
    if reply_id is None:
        return None
    return await context.resume_existing_stream(reply_id)


async def stop_chat_stream(
    context: ResumableStreamContext, chat_id: str, stream_id: str | None = None
) -> bool:
    """Stop the chat's reply in progress (its producer is fenced out and
    stops pulling its source; readers end). With ``stream_id``, only if that
    reply is still the active one (a stale stop leaves a newer reply alone).
    True if a reply was stopped."""
    reply_id = await active_chat_stream(context, chat_id)
    if reply_id is None or (stream_id is not None and stream_id != reply_id):
        return False
    if await context.has_existing_stream(reply_id) is not True:
        return False
    await context.stop_stream(reply_id)
    return True


async def _replies(backend: Backend, pointer: StreamName, chat_id: str) -> list[str]:
    """Every reply the chat's pointer stream names, oldest first, without
    repeats (a retried pointer append repeats its record)."""
    last = await backend.last_record(pointer)
    if last is None:
        return []
    replies: dict[str, None] = {}
    prefix = _reply_prefix(chat_id)
    async with aclosing(backend.read_session(pointer, 0)) as batches:
        async for batch in batches:
            for record in batch:
                body = record.get("body", "")
                if not record.get("headers") and body.startswith(prefix):
                    replies[body] = None
            if batch[-1]["seq_num"] >= last["seq_num"]:
                break
    return list(replies)


async def delete_chat_stream(context: ResumableStreamContext, chat_id: str) -> int:
    """Delete a chat for good: every reply its pointer names (a reply in
    progress is stopped first, see
    :meth:`~resumable_fast.context.ResumableStreamContext.delete_stream`),
    then the pointer, so a failure midway leaves a pointer that a retry
    follows to what is left. The number of replies deleted."""
    validate_chat_id(chat_id)
    backend, pointer = _pointer(context, chat_id)
    replies = await _replies(backend, pointer, chat_id)
    for reply_id in replies:
        await context.delete_stream(reply_id)
    await backend.delete(pointer)
    return len(replies)
