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
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import AsyncGenerator, Callable, Mapping

import orjson

try:
    import anyio
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response, StreamingResponse
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "resumable_fast.asgi needs Starlette: pip install 'resumable_fast[web]'"
    ) from exc

from resumable_fast.context import MakeStream, ResumableStreamContext
from resumable_fast.errors import (
    InvalidResumePosition,
    InvalidStreamIdError,
    ResumableStreamError,
    S2ConnectionError,
    S2Error,
    StorageError,
    StreamFailedError,
    StreamIncompleteError,
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

logger = logging.getLogger("resumable_fast")

SSE_MEDIA_TYPE = "text/event-stream"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"

# JavaScript's largest exact integer: any real position is far below it, and a
# page can hold every valid id as a number.
MAX_RESUME_POSITION = 2**53 - 1
_POSITION = re.compile(r"[0-9]{1,16}")

# The Retry-After of a 503 answered while the stream store cannot be reached:
# the backend already retried for retry_deadline, so the outage is not a blip.
RETRY_AFTER_SECONDS = 5

_HEARTBEAT = b": heartbeat\n\n"
_END = b"event: end\ndata: {}\n\n"
# The reader stops pulling once this many chunks wait for a slow client, so a
# long replay to a stalled connection does not pile up in memory.
_HIGH_WATER = 256

_STREAMING_HEADERS = {
    "cache-control": "no-cache",
    # nginx buffers proxied responses unless told not to; SSE must not wait.
    "x-accel-buffering": "no",
}


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


def store_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the stream store cannot be reached now, so
    that a route should answer 503 and the client try again later: S2 could
    not be reached (:class:`~resumable_fast.errors.S2ConnectionError`, after
    ``retry_deadline``), S2 answered 5xx or 429 past its retries, or the
    embedded store's database failed (:class:`~resumable_fast.errors.StorageError`:
    a full disk, a read-only ``data_dir``)."""
    if isinstance(error, (S2ConnectionError, StorageError)):
        return True
    return isinstance(error, S2Error) and (error.status >= 500 or error.status == 429)


def _failure_response(
    error: ResumableStreamError,
    doing: str,
    respond: Callable[[int, str], Response],
) -> Response:
    """The answer of a route whose call into the library raised ``error``
    while ``doing`` (for the log line): 503 with ``Retry-After`` when the
    store is unavailable (:func:`store_unavailable`), else 500. Logs one line
    naming the error (no traceback: the error is ours and says what failed);
    ``respond(status, message)`` builds the response with a short message."""
    name = type(error).__name__
    if store_unavailable(error):
        logger.error(
            "%s: the stream store is unavailable, answered 503 (%s: %s)", doing, name, error
        )
        response = respond(503, "the stream store is unavailable; try again later")
        response.headers["retry-after"] = str(RETRY_AFTER_SECONDS)
        return response
    logger.error("%s failed, answered 500 (%s: %s)", doing, name, error)
    return respond(500, "internal error: see the server log")


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
    Closing the response, including on a client disconnect, closes the stream.
    """
    if isinstance(start_position, bool) or not isinstance(start_position, int):
        raise TypeError("start_position must be an int")
    if start_position < 0:
        raise ValueError("start_position must be >= 0")
    if not heartbeat_interval > 0:
        raise ValueError("heartbeat_interval must be > 0")
    return _ClosingStreamingResponse(
        _sse_body(stream, start_position, heartbeat_interval),
        headers=_merge_headers(headers),
        media_type=SSE_MEDIA_TYPE,
    )


def text_response(
    stream: ResumableStream, *, headers: Mapping[str, str] | None = None
) -> StreamingResponse:
    """Serve ``stream`` as plain ``text/plain; charset=utf-8``, chunk by chunk.

    There is no in-band end or error marker: if the stream fails, the response
    is aborted, so the client sees a truncated body (an incomplete chunked
    transfer), never a short one passed off as complete.
    """
    return _ClosingStreamingResponse(
        _text_body(stream), headers=_merge_headers(headers), media_type=TEXT_MEDIA_TYPE
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
    except (InvalidResumePosition, InvalidStreamIdError) as exc:
        return _bad_request(exc)
    except ResumableStreamError as exc:
        return _failure_response(exc, f"stream {stream_id!r}: starting or joining it", _plain)
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
    except (InvalidResumePosition, InvalidStreamIdError) as exc:
        return _bad_request(exc)
    except ResumableStreamError as exc:
        return _failure_response(exc, f"stream {stream_id!r}: resuming it", _plain)
    return sse_response(stream, start_position=position, heartbeat_interval=heartbeat_interval)


# -- responses -----------------------------------------------------------------


def _merge_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(_STREAMING_HEADERS)
    if headers:
        merged.update((name.lower(), value) for name, value in headers.items())
    return merged


def _plain(status_code: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status_code)


def _bad_request(error: Exception) -> Response:
    return PlainTextResponse(str(error), status_code=400)


def _not_found() -> Response:
    return PlainTextResponse("no such stream", status_code=404)


def _already_done() -> Response:
    return PlainTextResponse("stream is already done", status_code=422)


class _ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its body, hence the stream.

    Starlette leaves the body iterator suspended when the client disconnects
    (it cancels the sending task between two chunks); without this the stream,
    and for a resumed stream its S2 read session, would linger until garbage
    collection.
    """

    def __init__(
        self, body: AsyncGenerator[bytes, None], *, headers: dict[str, str], media_type: str
    ) -> None:
        super().__init__(body, headers=headers, media_type=media_type)
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: after a disconnect Starlette's cancel scope would cancel
            # every await here, and the stream would stay open.
            with anyio.CancelScope(shield=True):
                await self._body.aclose()


# -- bodies --------------------------------------------------------------------


async def _text_body(stream: ResumableStream) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in stream:
            if chunk:
                yield _utf8(chunk)
    finally:
        with anyio.CancelScope(shield=True):
            await _aclose_quietly(stream)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; store it as S2 does, as U+FFFD.
        return re.sub("[\ud800-\udfff]", "\ufffd", text).encode("utf-8")


def _json_string(text: str) -> bytes:
    try:
        return orjson.dumps(text)
    except orjson.JSONEncodeError:
        # orjson refuses lone surrogates; \uXXXX escapes carry them exactly,
        # and JSON.parse in the page restores them.
        return json.dumps(text).encode("ascii")


def _failed_event(error: BaseException) -> bytes:
    if isinstance(error, StreamIncompleteError):
        message = "the stream is incomplete: its producer stopped without finishing"
    elif isinstance(error, (S2Error, S2ConnectionError, StorageError)):
        message = "the stream could not be read from storage"
    else:
        # StreamFailedError for readers; the producer's client gets the source's
        # own exception (or InvalidChunkError): the same failure either way.
        message = "the stream failed: its source raised an error"
    return b"event: failed\ndata: %s\n\n" % orjson.dumps({"message": message})


async def _sse_body(
    stream: ResumableStream, position: int, heartbeat_interval: float
) -> AsyncGenerator[bytes, None]:
    # A separate reader task pulls the stream: waiting for the next chunk with a
    # timeout (for heartbeats) must not cancel the stream's own __anext__. It
    # also lets chunks that arrive together go out in one write.
    pipe = _Pipe()
    reader = asyncio.ensure_future(pipe.fill(stream))
    try:
        while True:
            chunks = pipe.take()
            if chunks:
                events: list[bytes] = []
                for chunk in chunks:
                    if chunk:
                        position += len(chunk)
                        events.append(b"id: %d\ndata: %s\n\n" % (position, _json_string(chunk)))
                if events:
                    body = b"".join(events)
                    # A stalled client keeps this generator at its yield:
                    # hold one bytes object there, not one per event too.
                    del events, chunks
                    yield body
                    del body
                continue
            if pipe.finished:
                if pipe.error is None:
                    yield _END
                else:
                    # The producer already logged its source's failure; each
                    # reader of the error fence only notes it.
                    level = (
                        logging.INFO
                        if isinstance(pipe.error, StreamFailedError)
                        else logging.WARNING
                    )
                    logger.log(
                        level,
                        "stream %r failed while served as SSE: %r",
                        stream.stream_id,
                        pipe.error,
                    )
                    yield _failed_event(pipe.error)
                return
            if not await pipe.wait(heartbeat_interval):
                yield _HEARTBEAT
    finally:
        with anyio.CancelScope(shield=True):
            reader.cancel()
            # The stream cannot be closed while the reader is inside __anext__.
            await asyncio.wait({reader})
            await _aclose_quietly(stream)


class _Pipe:
    """Chunks from the reader task to the response, with a wake-up and a timeout."""

    __slots__ = ("_room", "_waiter", "error", "finished", "items")

    def __init__(self) -> None:
        self.items: list[str] = []
        self.finished = False
        self.error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None

    async def fill(self, stream: ResumableStream) -> None:
        try:
            async for chunk in stream:
                # self.items, not a local alias: take() swaps in a new list.
                items = self.items
                items.append(chunk)
                if len(items) == 1:
                    self._wake()
                elif len(items) >= _HIGH_WATER:
                    self._room = asyncio.get_running_loop().create_future()
                    await self._room
        except Exception as exc:
            self.error = exc
        except asyncio.CancelledError:
            # Only the response cancels the reader, and it is gone by then; any
            # other cancellation must not look like a complete stream.
            self.error = ResumableStreamError("reading the stream was cancelled")
            raise
        finally:
            self.finished = True
            self._wake()

    def take(self) -> list[str]:
        items = self.items
        if items:
            self.items = []
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)
        return items

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, patience: float) -> bool:
        """Wait for chunks or the end; False if ``patience`` seconds passed first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(patience, _resolve, waiter) if math.isfinite(patience) else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self.items) or self.finished


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _aclose_quietly(stream: ResumableStream) -> None:
    try:
        await stream.aclose()
    except Exception as exc:
        logger.debug("closing stream %r raised %r", stream, exc)
