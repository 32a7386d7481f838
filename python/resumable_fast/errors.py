"""Typed errors raised by resumable_fast.

Every error the library raises derives from :class:`ResumableStreamError`.
Messages never carry the access token. The tree (a second parent from the
standard library in brackets, which an ``except`` of it also catches)::

    ResumableStreamError
    ├── ConfigurationError [ValueError]
    ├── InvalidArgumentError [TypeError, ValueError]
    ├── InvalidStreamIdError [ValueError]
    ├── InvalidResumePosition [ValueError]
    ├── InvalidChunkError [TypeError]
    ├── InvalidChatIdError [ValueError]
    ├── InvalidChatRequestError [ValueError]
    ├── EventStreamError [ValueError]
    ├── StreamExistsError
    ├── StreamFailedError
    ├── StreamIncompleteError
    ├── StreamDeletedError
    └── BackendError: the store the streams live in failed
        ├── S2Error: S2 answered with an error status
        │   ├── S2AuthError
        │   ├── StreamNotFoundError
        │   │   └── BasinMisconfiguredError [ConfigurationError]
        │   ├── FencingTokenMismatchError
        │   ├── SeqNumMismatchError
        │   └── RangeNotSatisfiableError
        ├── S2ConnectionError [ConnectionError]: S2 could not be reached
        │   └── TLSVerificationError
        ├── ResponseTooLargeError
        └── StorageError: the ``data_dir`` database failed
            └── StoreUnavailableError [ConfigurationError]
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BasinMisconfiguredError",
    "ConfigurationError",
    "EventStreamError",
    "FencingTokenMismatchError",
    "InvalidArgumentError",
    "InvalidChatIdError",
    "InvalidChatRequestError",
    "InvalidChunkError",
    "InvalidResumePosition",
    "InvalidStreamIdError",
    "RangeNotSatisfiableError",
    "ResponseTooLargeError",
    "ResumableStreamError",
    "S2AuthError",
    "S2ConnectionError",
    "S2Error",
    "SeqNumMismatchError",
    "StorageError",
    "StoreUnavailableError",
    "StreamDeletedError",
    "StreamExistsError",
    "StreamFailedError",
    "StreamIncompleteError",
    "StreamNotFoundError",
    "TLSVerificationError",
]


class ResumableStreamError(Exception):
    """Base class of every error raised by resumable_fast."""


class ConfigurationError(ResumableStreamError, ValueError):
    """An option or environment variable has an invalid value."""


class InvalidStreamIdError(ResumableStreamError, ValueError):
    """A stream id is empty, too long, or not a string."""


class InvalidArgumentError(ResumableStreamError, TypeError, ValueError):
    """An argument of the wrong type or out of range (``except TypeError``
    and ``except ValueError`` catch it too)."""


class InvalidChunkError(ResumableStreamError, TypeError):
    """A source yielded something that is not text S2 can store."""


class InvalidResumePosition(ResumableStreamError, ValueError):
    """A ``Last-Event-ID`` header or ``lastEventId`` parameter is not a valid position."""


class BackendError(ResumableStreamError):
    """The store the streams live in failed: S2 (:class:`S2Error`,
    :class:`S2ConnectionError`, :class:`ResponseTooLargeError`) or the
    ``data_dir`` database (:class:`StorageError`). What was committed before
    the failure stays."""


class StreamExistsError(ResumableStreamError):
    """``create_new_resumable_stream`` found the stream already started."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} already has a producer or is finished")
        self.stream_id = stream_id


class StreamFailedError(ResumableStreamError):
    """The producer's source failed; the stream ends with an ``error-`` fence."""

    def __init__(self, stream_id: str, fence: str) -> None:
        super().__init__(f"stream {stream_id!r} ended with an error ({fence})")
        self.stream_id = stream_id
        self.fence = fence


class StreamIncompleteError(ResumableStreamError):
    """No record arrived for ``liveness_timeout`` seconds while the stream was
    unfinished: its producer is gone (its process died) or S2 is unreachable.
    A later ``resumable_stream`` call may take the stream over."""

    def __init__(self, stream_id: str, silence_seconds: float) -> None:
        super().__init__(
            f"stream {stream_id!r} is incomplete: nothing new for {silence_seconds:g} s "
            "and no end; its producer is gone"
        )
        self.stream_id = stream_id
        self.silence_seconds = silence_seconds


class StreamDeletedError(ResumableStreamError):
    """The stream was deleted (``delete_stream``) while this reader was on it:
    the records it was to read next are gone."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} was deleted while it was being read")
        self.stream_id = stream_id


class StorageError(BackendError):
    """The embedded store's database in ``data_dir`` failed: the disk is full,
    the directory is read-only, the database is corrupt or locked past the
    wait, or the operating system refused a read or write. Nothing of the
    failed operation was written; what was committed before stays.

    ``reason`` names the cause: ``disk_full``, ``read_only``, ``corrupt``,
    ``locked``, ``io`` or ``closed``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StoreUnavailableError(StorageError, ConfigurationError):
    """``data_dir`` cannot hold the store: it is not a directory we can
    open a database in, or it holds streams in a format this version does
    not read."""


class S2Error(BackendError):
    """S2 answered with an error status."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        detail = f"{code}: {message}" if code else message
        super().__init__(f"S2 error {status}: {detail}")
        self.status = status
        self.code = code
        self.message = message
        self.attempts = 1


class S2AuthError(S2Error):
    """S2 refused the access token (401/403)."""


class S2ConnectionError(BackendError, ConnectionError):
    """S2 could not be reached, or the connection broke."""


class TLSVerificationError(S2ConnectionError):
    """S2's TLS certificate did not verify. Not retried: the message names the
    endpoint and the options that set which CAs are trusted."""


class ResponseTooLargeError(BackendError):
    """An answer's head or body was over the client's cap; the connection
    was dropped."""


class StreamNotFoundError(S2Error):
    """The stream (or basin) does not exist and was not created on demand."""


class BasinMisconfiguredError(StreamNotFoundError, ConfigurationError):
    """The basin does not exist, or does not create streams on append or on
    read (the setting is named in the message)."""


class FencingTokenMismatchError(S2Error):
    """An append carried a fencing token that is not the stream's current one."""

    def __init__(self, current_token: str) -> None:
        super().__init__(412, "fencing_token_mismatch", "fencing token mismatch")
        self.current_token = current_token


class SeqNumMismatchError(S2Error):
    """An append's ``match_seq_num`` is not the stream's next sequence number."""

    def __init__(self, expected_seq_num: int) -> None:
        super().__init__(
            412, "seq_num_mismatch", f"sequence number mismatch, tail is at {expected_seq_num}"
        )
        self.expected_seq_num = expected_seq_num


class RangeNotSatisfiableError(S2Error):
    """A read started past the stream's tail (416)."""

    def __init__(self, tail_seq_num: int | None) -> None:
        super().__init__(416, "range_not_satisfiable", f"read start is past tail {tail_seq_num}")
        self.tail_seq_num = tail_seq_num


class EventStreamError(ResumableStreamError, ValueError):
    """A ``text/event-stream`` body is malformed: it is not valid UTF-8 (or ends
    inside a UTF-8 sequence), or one of its lines, or one event's data, is
    larger than the parser's cap."""


class InvalidChatIdError(ResumableStreamError, ValueError):
    """A chat id (the AI SDK's ``useChat`` id) is empty, too long, not a
    string, or holds ``/`` or control characters."""


class InvalidChatRequestError(ResumableStreamError, ValueError):
    """A chat request (the AI SDK's POST body) is malformed or too large.
    ``status_code`` is the HTTP status to answer with (400 or 413)."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code
