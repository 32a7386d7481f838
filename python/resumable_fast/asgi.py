"""Serve resumable streams over HTTP from Starlette (or FastAPI) handlers.

Needs the ``web`` extra (Starlette). Import it explicitly::

    from resumable_fast.asgi import resumable_sse, resume_sse

SSE wire format
---------------
:func:`sse_response` sends ``text/event-stream``, UTF-8, lines ending in ``\\n``:

* each non-empty chunk is one event::

      id: <position>
      data: <the chunk as a JSON string>
      <blank line>

  The data is the chunk JSON-encoded as a string literal (``data: "a\\nb"``),
  so it is always exactly one line: newlines, ``\\r\\n``, lone ``\\r``, quotes,
  control characters and text that looks like SSE fields (``data: x``,
  ``id: 3``, ``:comment``) cannot break the framing, and ``JSON.parse`` in the
  page gives back the chunk exactly (non-ASCII is sent as UTF-8, not escaped).
  ``<position>`` is the number of characters (Python ``str`` code points) of
  the stream delivered up to and including this event, counted from the
  stream's start. It is opaque to the page: the browser's ``EventSource``
  sends the last one back as ``Last-Event-ID`` when it reconnects, and the
  server resumes exactly after it.
* ``: heartbeat`` comment lines (and a blank line) while the producer is silent,
  every ``heartbeat_interval`` seconds, so proxies and load balancers keep the
  connection open. ``EventSource`` ignores them.
* at the end, ``event: end`` with ``data: {}``: the page should close its
  ``EventSource`` then, otherwise it reconnects (and gets 422).
* if the stream fails, ``event: failed`` with ``data: {"message": "..."}``,
  then the response ends. The message is generic: a source's exception text
  can carry anything (URLs, keys), so it is logged, never sent.

The handler bodies answer 400 (invalid stream id or resume position),
404 (``resume_sse``: no such stream) and 422 (the stream is already done,
as in Vercel's examples) with a short ``text/plain`` body. When the stream
store cannot be reached (S2 away past ``retry_deadline``, S2 answering 5xx or
429, a full disk or read-only ``data_dir``: see :func:`store_unavailable`)
they answer 503 with ``Retry-After`` (:data:`RETRY_AFTER_SECONDS`); any other
error of the library (a ``make_stream`` that returns no async iterable, say)
answers 500. Either is logged as one line naming the error, and nothing of
its detail reaches the client.

The body, its heartbeats and its clean-up, and these answers, are
:mod:`resumable_fast.responses`' (shared with :mod:`resumable_fast.ai_sdk`);
``store_unavailable`` and ``RETRY_AFTER_SECONDS`` are defined there and
importable from here, as is :class:`~resumable_fast.errors.InvalidResumePosition`
from :mod:`resumable_fast.errors`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncGenerator, Mapping

import orjson

# First: without Starlette it raises an ImportError that says how to install it.
from resumable_fast.responses import (
    RETRY_AFTER_SECONDS,
    STREAMING_HEADERS,
    ClosingStreamingResponse,
    FailureReason,
    aclose_quietly,
    encode_utf8,
    error_response,
    failure_reason,
    merge_headers,
    plain_error,
    store_unavailable,
    streaming_response,
)

# isort: split
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from resumable_fast.context import MakeStream, ResumableStreamContext
from resumable_fast.errors import (
    InvalidArgumentError,
    InvalidResumePosition,
    ResumableStreamError,
)
from resumable_fast.streams import ResumableStream

__all__ = [
    "MAX_RESUME_POSITION",
    "RETRY_AFTER_SECONDS",
    "SSE_MEDIA_TYPE",
    "InvalidResumePosition",
    "last_event_position",
    "resumable_sse",
    "resume_sse",
    "sse_response",
    "store_unavailable",
    "text_response",
]

SSE_MEDIA_TYPE = "text/event-stream"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"

# JavaScript's largest exact integer: any real position is far below it, and a
# page can hold every valid id as a number.
MAX_RESUME_POSITION = 2**53 - 1
_POSITION = re.compile(r"[0-9]{1,16}")


def last_event_position(request: Request) -> int:
    """The resume position the client asks for.

    The ``Last-Event-ID`` header (sent by ``EventSource`` on reconnect) wins
    over a ``lastEventId`` query parameter: a reconnecting ``EventSource``
    repeats its original URL, whose parameter is older than the header. An
    empty value counts as absent. Without either, 0.

    Raises :class:`InvalidResumePosition` unless the value is a decimal
    integer from 0 to :data:`MAX_RESUME_POSITION`.
    """
    for source, value in (
        ("Last-Event-ID header", request.headers.get("last-event-id")),
        ("lastEventId parameter", request.query_params.get("lastEventId")),
    ):
        if value:
            # fullmatch on [0-9] rather than int(): int() also takes signs,
            # underscores, spaces and non-ASCII digits.
            if _POSITION.fullmatch(value) is None or int(value) > MAX_RESUME_POSITION:
                raise InvalidResumePosition(
                    f"invalid {source}: expected a character position from 0 to "
                    f"{MAX_RESUME_POSITION}"
                )
            return int(value)
    return 0


def sse_response(
    stream: ResumableStream,
    *,
    start_position: int = 0,
    heartbeat_interval: float = 15.0,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """Serve ``stream`` as Server-Sent Events (format in the module docstring).

    ``start_position`` is the position of the stream's first character (the
    number of characters the client already has): event ids count from it.
    ``headers`` are sent over the defaults (``cache-control: no-cache``,
    ``x-accel-buffering: no``). Closing the response, including on a client
    disconnect, closes the stream.

    Raises :class:`~resumable_fast.errors.InvalidArgumentError` (a
    ``TypeError`` and a ``ValueError``) unless ``start_position`` is an int
    >= 0 and ``heartbeat_interval`` a number > 0.
    """
    if isinstance(start_position, bool) or not isinstance(start_position, int):
        raise InvalidArgumentError("start_position must be an int")
    if start_position < 0:
        raise InvalidArgumentError("start_position must be >= 0")
    return streaming_response(
        stream,
        _SseFormat(start_position),
        media_type=SSE_MEDIA_TYPE,
        heartbeat_interval=heartbeat_interval,
        headers=headers,
    )


def text_response(
    stream: ResumableStream, *, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """Serve ``stream`` as plain ``text/plain; charset=utf-8``, chunk by chunk.

    There is no in-band end or error marker: if the stream fails, the response
    is aborted, so the client sees a truncated body (an incomplete chunked
    transfer), never a short one passed off as complete. Closing the
    response, including on a client disconnect, closes the stream.
    """
    return ClosingStreamingResponse(
        _text_body(stream),
        headers=merge_headers(STREAMING_HEADERS, headers),
        media_type=TEXT_MEDIA_TYPE,
    )


async def resumable_sse(
    context: ResumableStreamContext,
    request: Request,
    stream_id: str,
    make_stream: MakeStream,
    *,
    heartbeat_interval: float = 15.0,
) -> Response:
    """Handler body that starts (or joins) a stream, for POST routes.

    Produces the stream with ``make_stream`` if nobody does yet, else resumes
    it after :func:`last_event_position`. A finished stream answers 422
    ``stream is already done`` (``make_stream`` is not called).
    """
    try:
        position = last_event_position(request)
        stream = await context.resumable_stream(stream_id, make_stream, skip_characters=position)
    except ResumableStreamError as exc:
        return error_response(exc, f"stream {stream_id!r}: starting or joining it", plain_error)
    if stream is None:
        return _already_done()
    return sse_response(stream, start_position=position, heartbeat_interval=heartbeat_interval)


async def resume_sse(
    context: ResumableStreamContext,
    request: Request,
    stream_id: str,
    *,
    heartbeat_interval: float = 15.0,
    replay_finished: bool = False,
) -> Response:
    """Handler body that resumes a stream after :func:`last_event_position`,
    for GET routes (reloads, ``EventSource`` reconnects).

    A stream that was never created answers 404 ``no such stream``. A finished
    one answers 422 ``stream is already done``, as in Vercel's examples,
    unless ``replay_finished`` is true: then it is replayed from the position.
    """
    try:
        position = last_event_position(request)
        stream: ResumableStream | None
        if replay_finished:
            if await context.has_existing_stream(stream_id) is None:
                return _not_found()
            stream = await context.resume_stream(stream_id, skip_characters=position)
        else:
            stream = await context.resume_existing_stream(stream_id, skip_characters=position)
            if stream is None:
                state = await context.has_existing_stream(stream_id)
                if state is None:
                    return _not_found()
                if state is True:
                    # Created between the two checks: it is live now.
                    stream = await context.resume_existing_stream(
                        stream_id, skip_characters=position
                    )
                if stream is None:
                    return _already_done()
    except ResumableStreamError as exc:
        return error_response(exc, f"stream {stream_id!r}: resuming it", plain_error)
    return sse_response(stream, start_position=position, heartbeat_interval=heartbeat_interval)


def _not_found() -> Response:
    return plain_error(404, "no such stream")


def _already_done() -> Response:
    return plain_error(422, "stream is already done")


# -- bodies --------------------------------------------------------------------


async def _text_body(stream: ResumableStream) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in stream:
            if chunk:
                yield encode_utf8(chunk)
    finally:
        await aclose_quietly(stream)


def _json_string(text: str) -> bytes:
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates; \uXXXX escapes carry them exactly,
        # and JSON.parse in the page restores them.
        return json.dumps(text).encode("ascii")


_HEARTBEAT = b": heartbeat\n\n"
_END = b"event: end\ndata: {}\n\n"
_FAILURE_MESSAGES: dict[FailureReason, str] = {
    "incomplete": "the stream is incomplete: its producer stopped without finishing",
    "storage": "the stream could not be read from storage",
    # StreamFailedError for readers; the producer's client gets the source's
    # own exception (or InvalidChunkError): the same failure either way.
    "source": "the stream failed: its source raised an error",
}


class _SseFormat:
    """The SSE events of one response (the format is in the module docstring)."""

    __slots__ = ("position",)

    served_as = "SSE"

    def __init__(self, position: int) -> None:
        self.position = position  # of the last character sent

    def chunks(self, chunks: list[str]) -> bytes:
        events: list[bytes] = []
        for chunk in chunks:
            if chunk:
                self.position += len(chunk)
                events.append(b"id: %d\ndata: %s\n\n" % (self.position, _json_string(chunk)))
        return b"".join(events)

    def heartbeat(self) -> bytes:
        return _HEARTBEAT

    def end(self) -> bytes:
        return _END

    def failure(self, error: BaseException) -> bytes:
        message = _FAILURE_MESSAGES[failure_reason(error)]
        return b"event: failed\ndata: %s\n\n" % orjson.dumps({"message": message})
