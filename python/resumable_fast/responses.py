"""Streaming HTTP responses of resumable streams, and what their routes answer
when the library fails: the one piece that :mod:`resumable_fast.asgi` (SSE,
plain text) and :mod:`resumable_fast.ai_sdk` (the AI SDK's UI message
streams) both stand on.

Needs the ``web`` extra (Starlette); importing this module (or either of the
two above) without it raises :class:`ImportError` saying how to install it.

The body
--------
:func:`stream_body` is the body of a streaming response. Only *how* chunks
are written differs between the formats; that is a :class:`BodyFormat`.
The body:

* pulls the :class:`~resumable_fast.streams.ResumableStream` in a reader
  task of its own, so that waiting with a timeout (for heartbeats) never
  cancels the stream's own ``__anext__``, and chunks that arrive together go
  out in one write. The reader stops pulling while
  :data:`HIGH_WATER_CHUNKS` chunks wait for a slow client, so a long replay to
  a stalled connection does not pile up in memory.
* writes a heartbeat (:meth:`BodyFormat.heartbeat`) each time the producer
  was silent for ``heartbeat_interval`` seconds, so that proxies and load
  balancers keep the connection open.
* ends with :meth:`BodyFormat.end`, or, when the stream failed, logs the
  failure as one line (INFO for :class:`~resumable_fast.errors.StreamFailedError`,
  whose producer already logged its source's error; WARNING otherwise) and
  ends with :meth:`BodyFormat.failure`. The error's text never reaches the
  client: :func:`failure_reason` says which generic message to send.
* always closes the stream, shielded from cancellation, whether it ended,
  failed, or the client went away. :class:`ClosingStreamingResponse` makes
  sure the body itself is closed when the client disconnects.

The routes' answers
-------------------
:func:`error_response` is the one mapping from a library error raised before
a response starts to what a route answers: 400 for a bad request (an invalid
stream id, chat id or resume position), 503 with ``Retry-After``
(:data:`RETRY_AFTER_SECONDS`) when the stream store cannot be reached
(:func:`store_unavailable`), else 500. 503 and 500 are logged as one line
naming the error; the client gets a short message, never the error's detail.
(404 "no such stream" and 422 "stream is already done" are outcomes of the
routes, not errors; they use the same ``respond`` builders.)
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Literal, Protocol

try:
    import anyio
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.types import Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "resumable_fast's web helpers (resumable_fast.asgi, resumable_fast.ai_sdk) "
        "need Starlette: pip install 'resumable_fast[web]'"
    ) from exc

from resumable_fast.errors import (
    BackendError,
    InvalidArgumentError,
    InvalidChatIdError,
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
    "HIGH_WATER_CHUNKS",
    "RETRY_AFTER_SECONDS",
    "STREAMING_HEADERS",
    "BodyFormat",
    "ClosingStreamingResponse",
    "FailureReason",
    "Respond",
    "aclose_quietly",
    "encode_utf8",
    "error_response",
    "failure_reason",
    "failure_response",
    "json_error",
    "merge_headers",
    "plain_error",
    "store_unavailable",
    "stream_body",
    "streaming_response",
]

logger = logging.getLogger("resumable_fast")

HIGH_WATER_CHUNKS = 256
"""The reader task of :func:`stream_body` stops pulling the stream once this
many chunks wait for the client, and goes on when the client took them."""

RETRY_AFTER_SECONDS = 5
"""The ``Retry-After`` of a 503 answered while the stream store cannot be
reached: the backend already retried for ``retry_deadline``, so the outage
is not a blip."""

STREAMING_HEADERS: Mapping[str, str] = {
    "cache-control": "no-cache",
    # nginx buffers proxied responses unless told not to; a stream must not wait.
    "x-accel-buffering": "no",
}
"""The default headers of :func:`streaming_response` (the SSE and text
responses'; the UI message streams send the AI SDK's, which include them)."""

Respond = Callable[[int, str], Response]
"""Builds a route's short answer from a status code and a message:
:func:`plain_error` or :func:`json_error`."""

FailureReason = Literal["incomplete", "storage", "source"]
"""Why a stream failed, as far as its client may know: see :func:`failure_reason`."""


# -- the routes' answers -----------------------------------------------------------


def plain_error(status_code: int, message: str) -> Response:
    """``message`` as ``text/plain``, with ``status_code`` (the SSE helpers' answers)."""
    return PlainTextResponse(message, status_code=status_code)


def json_error(status_code: int, message: str) -> Response:
    """``{"error": message}`` with ``status_code`` (the AI SDK's and the demo's answers)."""
    return JSONResponse({"error": message}, status_code=status_code)


def store_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the stream store cannot be reached now, so
    that a route should answer 503 and the client try again later: S2 could
    not be reached (:class:`~resumable_fast.errors.S2ConnectionError`, after
    ``retry_deadline``), S2 answered 5xx or 429 past its retries, or the
    embedded store's database failed (:class:`~resumable_fast.errors.StorageError`:
    a full disk, a read-only ``data_dir``).

    Every other :class:`~resumable_fast.errors.BackendError` is not: S2
    refusing the token or the request (4xx), or an S2 answer over the
    client's cap (:class:`~resumable_fast.errors.ResponseTooLargeError`),
    will not get better by waiting.
    """
    if isinstance(error, S2Error):
        return error.status >= 500 or error.status == 429
    return isinstance(error, (S2ConnectionError, StorageError))


def failure_response(error: ResumableStreamError, doing: str, respond: Respond) -> Response:
    """The answer of a route whose call into the library raised ``error``
    while ``doing`` (for the log line): 503 with ``Retry-After``
    (:data:`RETRY_AFTER_SECONDS`) when the store is unavailable
    (:func:`store_unavailable`), else 500. Logs one line at ERROR naming the
    error (no traceback: the error is ours and says what failed);
    ``respond(status, message)`` builds the response with a short message
    that holds nothing of the error."""
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


def error_response(error: ResumableStreamError, doing: str, respond: Respond) -> Response:
    """The answer of a route whose call into the library raised ``error``
    while ``doing``: the client's mistake (an
    :class:`~resumable_fast.errors.InvalidStreamIdError`,
    :class:`~resumable_fast.errors.InvalidChatIdError` or
    :class:`~resumable_fast.errors.InvalidResumePosition`) answers 400 with
    the error's message, not logged; any other error is
    :func:`failure_response`'s (503 or 500, logged)."""
    if isinstance(error, (InvalidStreamIdError, InvalidChatIdError, InvalidResumePosition)):
        return respond(400, str(error))
    return failure_response(error, doing, respond)


# -- the response --------------------------------------------------------------------


def merge_headers(defaults: Mapping[str, str], headers: Mapping[str, str] | None) -> dict[str, str]:
    """``defaults`` with ``headers`` over them; names are lower-cased, so
    ``Cache-Control`` replaces ``cache-control``."""
    merged = dict(defaults)
    if headers:
        merged.update((name.lower(), value) for name, value in headers.items())
    return merged


class ClosingStreamingResponse(StreamingResponse):
    """A :class:`~starlette.responses.StreamingResponse` that always closes
    its body (hence the stream the body serves) when it ends, however it
    ends.

    Starlette leaves the body iterator suspended when the client disconnects
    (it cancels the sending task between two chunks, or ``send`` raises);
    without this the stream, and for a resumed stream its S2 read session,
    would linger until garbage collection.
    """

    def __init__(
        self, body: AsyncGenerator[bytes, None], *, headers: Mapping[str, str], media_type: str
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


def streaming_response(
    stream: ResumableStream,
    body_format: BodyFormat,
    *,
    media_type: str,
    heartbeat_interval: float,
    headers: Mapping[str, str] | None = None,
    default_headers: Mapping[str, str] = STREAMING_HEADERS,
) -> ClosingStreamingResponse:
    """A response serving ``stream`` through :func:`stream_body` in
    ``body_format``, with ``default_headers`` and ``headers`` over them
    (:func:`merge_headers`). Closing the response, including on a client
    disconnect, closes the stream.

    Raises :class:`~resumable_fast.errors.InvalidArgumentError` unless
    ``heartbeat_interval`` is a number > 0 (``math.inf``: no heartbeats).
    """
    if not heartbeat_interval > 0:
        raise InvalidArgumentError("heartbeat_interval must be > 0")
    return ClosingStreamingResponse(
        stream_body(stream, body_format, heartbeat_interval),
        headers=merge_headers(default_headers, headers),
        media_type=media_type,
    )


# -- the body ------------------------------------------------------------------------


class BodyFormat(Protocol):
    """How :func:`stream_body` writes a stream. One object per response: it
    may keep state across calls (a position, the last characters sent). A
    method that returns ``b""`` has nothing to send then."""

    served_as: str
    """What the stream is served as, for the log line of a failure (``"SSE"``)."""

    def chunks(self, chunks: list[str]) -> bytes:
        """The bytes of ``chunks``, the stream's next chunks (one or more,
        read together; some may be empty)."""
        ...

    def heartbeat(self) -> bytes:
        """What to send after ``heartbeat_interval`` seconds without a chunk."""
        ...

    def end(self) -> bytes:
        """What to send when the stream finished."""
        ...

    def failure(self, error: BaseException) -> bytes:
        """What to send when reading the stream raised ``error`` (already
        logged); nothing of the error's own text (see :func:`failure_reason`)."""
        ...


def failure_reason(error: BaseException) -> FailureReason:
    """Why a stream failed, in the words a client may hear: ``"incomplete"``
    (:class:`~resumable_fast.errors.StreamIncompleteError`: its producer
    stopped without finishing), ``"storage"`` (a
    :class:`~resumable_fast.errors.BackendError`: it could not be read from
    the store) or ``"source"`` (anything else: its source raised; readers
    get :class:`~resumable_fast.errors.StreamFailedError`, the producer's
    client the source's own exception)."""
    if isinstance(error, StreamIncompleteError):
        return "incomplete"
    if isinstance(error, BackendError):
        return "storage"
    return "source"


def encode_utf8(text: str) -> bytes:
    """``text`` as UTF-8; a lone surrogate, which UTF-8 cannot hold, becomes
    U+FFFD, as S2 stores it."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return re.sub("[\ud800-\udfff]", "\ufffd", text).encode("utf-8")


async def aclose_quietly(stream: ResumableStream) -> None:
    """Close ``stream``, shielded from the calling task's cancellation (a
    client disconnect cancels the response's task): what ``aclose`` raises
    is logged at DEBUG, not raised, since nobody is left to tell."""
    with anyio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except Exception as exc:
            logger.debug("closing stream %r raised %r", stream, exc)


async def stream_body(
    stream: ResumableStream, body_format: BodyFormat, heartbeat_interval: float
) -> AsyncGenerator[bytes, None]:
    """The bytes of ``stream`` in ``body_format``, with a heartbeat every
    ``heartbeat_interval`` seconds of silence (the contract is in the module
    docstring). Closing the generator, or its end, closes the stream."""
    pipe = _Pipe()
    reader = asyncio.ensure_future(pipe.fill(stream))
    try:
        while True:
            chunks = pipe.take()
            if chunks:
                body = body_format.chunks(chunks)
                # A stalled client keeps this generator at its yield: hold
                # one bytes object there, not the chunks too.
                del chunks
                if body:
                    yield body
                del body
                continue
            if pipe.finished:
                if pipe.error is None:
                    body = body_format.end()
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
                        "stream %r failed while served as %s: %r",
                        stream.stream_id,
                        body_format.served_as,
                        pipe.error,
                    )
                    body = body_format.failure(pipe.error)
                if body:
                    yield body
                return
            if not await pipe.wait(heartbeat_interval):
                body = body_format.heartbeat()
                if body:
                    yield body
    finally:
        with anyio.CancelScope(shield=True):
            reader.cancel()
            # The stream cannot be closed while the reader is inside __anext__.
            await asyncio.wait({reader})
            await aclose_quietly(stream)


class _Pipe:
    """Chunks from the reader task to the body, with a wake-up and a timeout."""

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
                elif len(items) >= HIGH_WATER_CHUNKS:
                    self._room = asyncio.get_running_loop().create_future()
                    await self._room
        except Exception as exc:
            self.error = exc
        except asyncio.CancelledError:
            # Only the body cancels the reader, and it is gone by then; any
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
        self._waiter = waiter = loop.create_future()
        # The timer wakes this waiter only: it is cancelled before the next one.
        timer = loop.call_later(patience, self._wake) if math.isfinite(patience) else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self.items) or self.finished
