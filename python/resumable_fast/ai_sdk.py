"""Serve the AI SDK's ``useChat`` (``ai`` 6, the version tested) with resumable replies.

Needs the ``web`` extra (Starlette). Two routes, as ``useChat({ resume: true })``
with ``DefaultChatTransport`` expects them::

    POST {api}                    -> chat_response(context, request, make_stream)
    GET  {api}/{chat_id}/stream   -> resume_chat_response(context, chat_id)

The POST body is the transport's: ``id`` (the chat id), ``messages`` (the UI
messages; or ``message``, the last one only, as the AI SDK's persistence
examples send), ``trigger`` (``submit-message`` or ``regenerate-message``)
and ``messageId``. A new reply stream is made the chat's active one (see
:mod:`resumable_fast.chats`), ``make_stream(chat_request)`` is called for its
source, and the answer is the UI message stream (:mod:`resumable_fast.ui_messages`)
with the AI SDK's headers. A body that is not such a request answers 400 (413
when over ``max_body_bytes``) with ``{"error": "..."}``, and nothing is created.
Every route answers 503 with ``Retry-After`` when the stream store cannot be
reached, and 500 for any other error of the library (a ``make_stream`` that
returns no async iterable), each logged as one line (see
:mod:`resumable_fast.responses`, which also writes the body).

The GET answers the chat's reply in progress, replayed from its ``start``
part (``DefaultChatTransport`` treats a resumed stream as a replay and
rebuilds the message from it), or 204 when there is none: no reply yet, an
unknown chat, or a finished or stopped reply; the transport then returns
``null``.

While a reply is silent, ``: keep-alive`` comments keep proxies from closing
the connection (only where they cannot split an event). If the reply fails,
the client gets an ``error`` part with a generic text (the exception is
logged, never sent).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

# First: without Starlette it raises an ImportError that says how to install it.
from resumable_fast.responses import (
    FailureReason,
    encode_utf8,
    error_response,
    failure_reason,
    json_error,
    streaming_response,
)

# isort: split
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from resumable_fast.chats import (
    active_chat_stream,
    delete_chat_stream,
    resume_chat_stream,
    start_chat_stream,
    stop_chat_stream,
    validate_chat_id,
)
from resumable_fast.context import ResumableStreamContext
from resumable_fast.errors import (
    InvalidChatIdError,
    InvalidChatRequestError,
    InvalidChunkError,
    ResumableStreamError,
)
from resumable_fast.streams import ResumableStream
from resumable_fast.ui_messages import (
    UI_MESSAGE_STREAM_HEADERS,
    InputFormat,
    encode_ui_message_part,
    new_message_id,
    to_ui_message_stream,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "UI_MESSAGE_STREAM_HEADERS",
    "ChatRequest",
    "ChatSource",
    "MakeChatStream",
    "active_chat_stream",
    "chat_response",
    "delete_chat_response",
    "delete_chat_stream",
    "parse_chat_request",
    "read_chat_request",
    "resume_chat_response",
    "resume_chat_stream",
    "start_chat_stream",
    "stop_chat_response",
    "stop_chat_stream",
    "to_ui_message_stream",
    "ui_message_response",
]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_ROLES = ("system", "user", "assistant")
_TRIGGERS = ("submit-message", "regenerate-message")

Trigger = Literal["submit-message", "regenerate-message"]
ChatSource = AsyncIterable[str | Mapping[str, Any]]


@dataclass(frozen=True)
class ChatRequest:
    """A parsed POST from ``DefaultChatTransport``."""

    chat_id: str
    messages: list[dict[str, Any]]
    """The UI messages sent (each has ``role`` and ``parts``)."""
    trigger: Trigger
    message_id: str | None
    """The request's ``messageId`` (the message to regenerate), if any."""
    response_message_id: str
    """The id of the reply's message (its ``start`` part): the last message's
    id when that is an assistant message being continued, else a new one."""
    body: dict[str, Any] = field(repr=False)
    """The whole JSON body, with any extra fields the client sent."""

    def text_messages(self) -> list[dict[str, str]]:
        """The messages as ``{"role", "content"}`` with their text parts
        joined (for chat completion APIs); messages without text are left out."""
        result: list[dict[str, str]] = []
        for message in self.messages:
            text = _text_of(message)
            if text:
                result.append({"role": message["role"], "content": text})
        return result

    @property
    def last_user_text(self) -> str:
        """The text of the last user message ("" if there is none)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return _text_of(message)
        return ""


MakeChatStream = Callable[[ChatRequest], ChatSource | Awaitable[ChatSource]]


def _text_of(message: Mapping[str, Any]) -> str:
    return "".join(
        part["text"]
        for part in message["parts"]
        if part.get("type") == "text" and isinstance(part.get("text"), str)
    )


# -- the request -----------------------------------------------------------------


def parse_chat_request(body: bytes | str) -> ChatRequest:
    """Parse a chat POST body; :class:`InvalidChatRequestError` (400) if it is
    not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidChatRequestError("the request body is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidChatRequestError("the request body must be a JSON object")
    try:
        chat_id = validate_chat_id(data.get("id"))
    except InvalidChatIdError as exc:
        raise InvalidChatRequestError(f"'id': {exc}") from None
    messages = data.get("messages")
    if messages is None:
        if data.get("message") is None:
            raise InvalidChatRequestError(
                "the request needs 'messages' (a list of UI messages) or 'message'"
            )
        _check_message("message", data["message"])
        messages = [data["message"]]
    elif not isinstance(messages, list):
        raise InvalidChatRequestError("'messages' must be a list of UI messages")
    else:
        for index, message in enumerate(messages):
            _check_message(f"messages[{index}]", message)
    trigger = data.get("trigger", "submit-message")
    if trigger not in _TRIGGERS:
        raise InvalidChatRequestError("'trigger' must be 'submit-message' or 'regenerate-message'")
    message_id = data.get("messageId")
    if message_id is not None and not isinstance(message_id, str):
        raise InvalidChatRequestError("'messageId' must be a string or null")
    last = messages[-1] if messages else None
    continued = last.get("id") if last is not None and last["role"] == "assistant" else None
    return ChatRequest(
        chat_id=chat_id,
        messages=messages,
        trigger=trigger,
        message_id=message_id,
        response_message_id=continued if continued else new_message_id(),
        body=data,
    )


def _check_message(where: str, message: object) -> None:
    if not isinstance(message, dict):
        raise InvalidChatRequestError(f"{where} must be a UI message object")
    if message.get("role") not in _ROLES:
        raise InvalidChatRequestError(f"{where}.role must be 'system', 'user' or 'assistant'")
    parts = message.get("parts")
    if not isinstance(parts, list) or not all(
        isinstance(part, dict) and isinstance(part.get("type"), str) for part in parts
    ):
        raise InvalidChatRequestError(f"{where}.parts must be a list of parts with a 'type'")
    if not isinstance(message.get("id", ""), str):
        raise InvalidChatRequestError(f"{where}.id must be a string")


async def read_chat_request(
    request: Request, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> ChatRequest:
    """Read and parse the body, at most ``max_body_bytes`` of it (more is an
    :class:`InvalidChatRequestError` with status 413, without reading on)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise InvalidChatRequestError("invalid Content-Length")
        if int(declared) > max_body_bytes:
            raise InvalidChatRequestError(
                f"the request body is over {max_body_bytes} bytes", status_code=413
            )
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > max_body_bytes:
                raise InvalidChatRequestError(
                    f"the request body is over {max_body_bytes} bytes", status_code=413
                )
    except ClientDisconnect:
        raise InvalidChatRequestError("the client went away while sending the body") from None
    return parse_chat_request(bytes(body))


# -- the routes ------------------------------------------------------------------


async def chat_response(
    context: ResumableStreamContext,
    request: Request,
    make_stream: MakeChatStream,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    input_format: InputFormat = "text",
    heartbeat_interval: float = 15.0,
) -> Response:
    """Handler body of the POST chat route: start a reply and answer with its
    UI message stream.

    ``make_stream(chat_request)`` returns (or resolves to) an async iterable
    of reply text, UI message parts (mappings), or with
    ``input_format="sse"`` ready UI message stream text; see
    :func:`~resumable_fast.ui_messages.to_ui_message_stream`. It runs in a
    task of its own: the client going away never stops it, and a reload
    resumes the reply through :func:`resume_chat_response`. That task also
    closes it (``aclose``) when it ends, fails (an item the UI message stream
    refuses, say) or is stopped.
    """
    try:
        chat = await read_chat_request(request, max_body_bytes=max_body_bytes)
    except InvalidChatRequestError as exc:
        return json_error(exc.status_code, str(exc))

    async def make() -> AsyncIterable[str]:
        source = make_stream(chat)
        if inspect.isawaitable(source):
            source = await source
        if not isinstance(source, AsyncIterable):
            raise InvalidChunkError(
                f"make_stream must return an async iterable, got {type(source).__name__}"
            )
        return to_ui_message_stream(
            source, message_id=chat.response_message_id, input_format=input_format
        )

    try:
        stream = await start_chat_stream(context, chat.chat_id, make)
    except ResumableStreamError as exc:
        # An InvalidStreamIdError (400): the context's key prefix leaves no room.
        return error_response(exc, f"chat {chat.chat_id!r}: starting a reply", json_error)
    return ui_message_response(stream, heartbeat_interval=heartbeat_interval)


async def resume_chat_response(
    context: ResumableStreamContext, chat_id: str, *, heartbeat_interval: float = 15.0
) -> Response:
    """Handler body of ``GET {api}/{chat_id}/stream``: the chat's reply in
    progress, replayed from its start, or 204 when there is none."""
    try:
        stream = await resume_chat_stream(context, chat_id)
    except ResumableStreamError as exc:
        return error_response(exc, f"chat {chat_id!r}: resuming its reply", json_error)
    if stream is None:
        return Response(status_code=204)
    return ui_message_response(stream, heartbeat_interval=heartbeat_interval)


async def stop_chat_response(context: ResumableStreamContext, chat_id: str) -> Response:
    """Handler body of a stop route (``POST {api}/{chat_id}/stop``, as the AI
    SDK's docs suggest for an explicit Stop button; ``useChat``'s own
    ``stop()`` only disconnects): ends the reply in progress for every
    reader. Answers ``{"stopped": true}`` or ``false`` when none was running."""
    try:
        stopped = await stop_chat_stream(context, chat_id)
    except ResumableStreamError as exc:
        return error_response(exc, f"chat {chat_id!r}: stopping its reply", json_error)
    return JSONResponse({"stopped": stopped})


async def delete_chat_response(context: ResumableStreamContext, chat_id: str) -> Response:
    """Handler body of a delete route (``DELETE {api}/{chat_id}``, for a user
    deleting a chat): its replies, a running one stopped first, and its
    active-reply pointer are deleted. Answers ``{"deleted": n}``, the number
    of replies deleted (0 for an unknown chat)."""
    try:
        deleted = await delete_chat_stream(context, chat_id)
    except ResumableStreamError as exc:
        return error_response(exc, f"chat {chat_id!r}: deleting it", json_error)
    return JSONResponse({"deleted": deleted})


def ui_message_response(
    stream: ResumableStream,
    *,
    heartbeat_interval: float = 15.0,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """Serve a stream of UI message stream text with the AI SDK's headers
    (``headers`` over them). Closing the response, including on a client
    disconnect, closes the stream (never the reply's producer).

    Raises :class:`~resumable_fast.errors.InvalidArgumentError` unless
    ``heartbeat_interval`` is a number > 0.
    """
    return streaming_response(
        stream,
        _UiMessageFormat(),
        media_type=UI_MESSAGE_STREAM_HEADERS["content-type"],
        heartbeat_interval=heartbeat_interval,
        headers=headers,
        default_headers=_UI_HEADERS,
    )


# -- the body --------------------------------------------------------------------

# The content type goes as the response's media type: a content-type among the
# caller's headers still wins, as it would over any media type.
_UI_HEADERS = {
    name: value for name, value in UI_MESSAGE_STREAM_HEADERS.items() if name != "content-type"
}
_ERROR_TEXTS: dict[FailureReason, str] = {
    "incomplete": "the reply is incomplete: its producer stopped without finishing",
    "storage": "the reply could not be read from storage",
    "source": "the reply failed",
}


def _to_event_boundary(tail: str) -> str:
    """What to send after text ending in ``tail`` so that an event may follow."""
    if not tail or tail.endswith("\n\n"):
        return ""
    return "\n" if tail.endswith("\n") else "\n\n"


class _UiMessageFormat:
    """The stored UI message stream text as it is, keep-alive comments only
    where they cannot split an event, and an ``error`` part if it failed
    (its ``[DONE]`` is in the text already when it finished)."""

    __slots__ = ("tail",)

    served_as = "a UI message stream"

    def __init__(self) -> None:
        self.tail = ""  # the last characters sent: are we between two events?

    def chunks(self, chunks: list[str]) -> bytes:
        text = "".join(chunks)
        if not text:
            return b""
        self.tail = (self.tail + text)[-2:]
        return encode_utf8(text)

    def heartbeat(self) -> bytes:
        boundary = _to_event_boundary(self.tail)
        if boundary == "":
            return b": keep-alive\n\n"
        if boundary == "\n":
            return b": keep-alive\n"  # a comment line inside an event
        return b""  # inside a line: a comment would cut it

    def end(self) -> bytes:
        return b""

    def failure(self, error: BaseException) -> bytes:
        part = {"type": "error", "errorText": _ERROR_TEXTS[failure_reason(error)]}
        return encode_utf8(_to_event_boundary(self.tail) + encode_ui_message_part(part))
