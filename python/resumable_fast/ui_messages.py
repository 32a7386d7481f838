"""The AI SDK's UI message stream protocol (``ai`` 6, the version tested), as text.

A UI message stream is Server-Sent Events: one ``data: {json}`` event per
part, then ``data: [DONE]``, served with the header
``x-vercel-ai-ui-message-stream: v1``. :func:`to_ui_message_stream` turns a
token source into that text, which is what a chat reply's resumable stream
stores: a resumed reply replays the very events the first client got,
``start`` and its ``messageId`` included, so the message id is the same on
every replica and after every reload.

No web framework is needed here; the Starlette routes are in
:mod:`resumable_fast.ai_sdk`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
from typing import Any, Literal

import orjson

from resumable_fast.errors import InvalidArgumentError, InvalidChunkError

__all__ = [
    "DONE_EVENT",
    "UI_MESSAGE_STREAM_HEADERS",
    "InputFormat",
    "encode_ui_message_part",
    "new_message_id",
    "to_ui_message_stream",
]

# The AI SDK's own response headers for a UI message stream (its
# UI_MESSAGE_STREAM_HEADERS); ``useChat`` reads the body as SSE.
UI_MESSAGE_STREAM_HEADERS: Mapping[str, str] = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "connection": "keep-alive",
    "x-vercel-ai-ui-message-stream": "v1",
    # nginx buffers proxied responses unless told not to.
    "x-accel-buffering": "no",
}

DONE_EVENT = "data: [DONE]\n\n"

InputFormat = Literal["text", "sse"]
"""``"text"``: the source yields reply text (``str``) and UI message parts
(mappings). ``"sse"``: its ``str`` items are ready UI message stream text
(from another AI SDK backend, say), passed on unchanged."""


def new_message_id() -> str:
    """A fresh UI message id: 96 random bits, URL-safe."""
    return "msg-" + secrets.token_urlsafe(12)


def encode_ui_message_part(part: Mapping[str, Any]) -> str:
    """One part as one SSE event: ``data: <json>`` and a blank line.

    JSON holds no raw line break, so the event is always one ``data:`` line.
    Raises :class:`InvalidChunkError` for a part without a string ``type``
    or with values JSON cannot hold.
    """
    if not isinstance(part, Mapping):
        raise InvalidChunkError(f"a UI message part must be a mapping, got {type(part).__name__}")
    kind = part.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidChunkError("a UI message part needs a non-empty string 'type'")
    try:
        encoded = orjson.dumps(part).decode("utf-8")
    except orjson.JSONEncodeError as exc:
        # orjson refuses lone surrogates; \uXXXX escapes carry them and
        # JSON.parse in the page restores them.
        try:
            encoded = json.dumps(dict(part), ensure_ascii=True, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidChunkError(f"UI message part {kind!r} is not JSON: {exc}") from None
    return f"data: {encoded}\n\n"


async def to_ui_message_stream(
    source: AsyncIterable[str | Mapping[str, Any]],
    *,
    message_id: str | None = None,
    input_format: InputFormat = "text",
) -> AsyncGenerator[str, None]:
    """The UI message stream of ``source``, as SSE text, one or more whole
    events per item.

    With ``input_format="text"`` (the default), reply text becomes::

        start (messageId), text-start, text-delta ..., text-end, finish, [DONE]

    Mappings are UI message parts, passed through as they are (a text part
    that is open is ended first; the next text opens a new one, with a new
    id). A source whose first item is its own ``start`` part, or that yields
    its own ``finish``, gets no second one. Empty strings are skipped.
    ``message_id`` defaults to :func:`new_message_id`.

    With ``input_format="sse"`` the ``str`` items are UI message stream text
    already and go out unchanged (mappings are encoded); nothing is added.

    If the source raises, or yields an item that is neither text nor a part
    (:class:`InvalidChunkError`), so does this generator (no ``finish``, no
    ``[DONE]``): the resumable stream then ends with an error fence, and the
    route helpers send every client an ``error`` part.

    The source's iterator is closed (its ``aclose()``, when it has one) before
    this generator ends, fails or is closed, in the task iterating it: a
    provider's connection and the generation behind it are released at once,
    not when the garbage collector finds them (which would run the source's
    clean-up in another task).
    """
    iterator = aiter(source)
    try:
        if input_format not in ("text", "sse"):
            raise InvalidArgumentError(
                f"input_format must be 'text' or 'sse', got {input_format!r}"
            )
        if message_id is not None and (not isinstance(message_id, str) or not message_id):
            raise InvalidArgumentError("message_id must be a non-empty str or None")
        if input_format == "sse":
            async for item in iterator:
                yield _sse_item(item)
            return
        parts = _text_parts(iterator, message_id or new_message_id())
        try:
            async for event in parts:
                yield event
        finally:
            await parts.aclose()
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _sse_item(item: object) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping):
        return encode_ui_message_part(item)
    raise InvalidChunkError(
        f"an SSE source must yield str or UI message parts, got {type(item).__name__}"
    )


async def _text_parts(
    source: AsyncIterator[str | Mapping[str, Any]], message_id: str
) -> AsyncGenerator[str, None]:
    started = finished = False
    text_parts = 0
    open_text: str | None = None  # the id of the text part being written
    async for item in source:
        if isinstance(item, str):
            if not item:
                continue
            events = ""
            if not started:
                started = True
                events = encode_ui_message_part({"type": "start", "messageId": message_id})
            if open_text is None:
                open_text = f"text-{text_parts}"
                text_parts += 1
                events += encode_ui_message_part({"type": "text-start", "id": open_text})
            yield events + encode_ui_message_part(
                {"type": "text-delta", "id": open_text, "delta": item}
            )
        elif isinstance(item, Mapping):
            part = encode_ui_message_part(item)
            kind = item["type"]
            events = ""
            if not started:
                started = True
                if kind != "start":
                    events = encode_ui_message_part({"type": "start", "messageId": message_id})
            if open_text is not None:
                events += encode_ui_message_part({"type": "text-end", "id": open_text})
                open_text = None
            finished = finished or kind == "finish"
            yield events + part
        else:
            raise InvalidChunkError(
                "a reply source must yield str (text) or mappings (UI message parts), "
                f"got {type(item).__name__}"
            )
    events = ""
    if not started:
        events = encode_ui_message_part({"type": "start", "messageId": message_id})
    if open_text is not None:
        events += encode_ui_message_part({"type": "text-end", "id": open_text})
    if not finished:
        events += encode_ui_message_part({"type": "finish"})
    yield events + DONE_EVENT
