"""What a stream holds: its record type, its fences and S2's limits.

The layout is shared with the TypeScript seed package, so a stream written by
either resumes in the other:

* seq 0: a fence command ``session-<random>`` appended with the empty token;
  only one producer can win it.
* seq 1..: header-less data records, one per chunk (a chunk over 1 MiB is
  split), written in batches under the session token, the first batch at
  ``match_seq_num`` 1.
* last: a fence ``end-<random>`` when the source finished, or
  ``error-<random>`` when it failed. ``stop_stream`` appends an ``end-`` fence
  without a token, which fences the producer out. Fences that set the session
  token again are heartbeats; a takeover appends a new ``session-`` fence.
"""

from __future__ import annotations

import enum
import secrets
from typing import Literal, NamedTuple, NewType, TypedDict

from resumable_fast._core import MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES, MAX_METERED_BYTES
from resumable_fast.errors import InvalidStreamIdError

__all__ = [
    "CLOSING_FENCE_PREFIXES",
    "END_FENCE_PREFIX",
    "ERROR_FENCE_PREFIX",
    "FENCE_HEADER",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_FENCING_TOKEN_BYTES",
    "MAX_STREAM_ID_BYTES",
    "NO_LANDING",
    "SESSION_FENCE_PREFIX",
    "Landing",
    "SequencedRecord",
    "StreamName",
    "StreamState",
    "StreamStatus",
    "is_closing_fence",
    "is_fence",
    "new_fence_token",
    "prefixed_stream_name",
    "status_of",
    "validate_stream_id",
]

# S2's limits. Those of appends are defined once, in the native core
# (rust/framing.rs), which frames batches within them; the Python side takes
# them from there.
MAX_STREAM_ID_BYTES = 512
MAX_BATCH_BYTES = MAX_METERED_BYTES  # metered bytes of one append (and of a record)

# A command record: one header whose name is empty.
FENCE_HEADER = ["", "fence"]
TRIM_HEADER = ["", "trim"]

SESSION_FENCE_PREFIX = "session-"
END_FENCE_PREFIX = "end-"
ERROR_FENCE_PREFIX = "error-"
CLOSING_FENCE_PREFIXES = (END_FENCE_PREFIX, ERROR_FENCE_PREFIX)

StreamState = Literal[True, "DONE"] | None
"""What :meth:`~resumable_fast.ResumableStreamContext.has_existing_stream`
answers, as Vercel's package does (:attr:`StreamStatus.public`)."""

StreamName = NewType("StreamName", str)
"""A stream's name in the backend: the caller's stream id (``stream_id``)
under the context's key prefix (:func:`prefixed_stream_name`)."""


class Landing(NamedTuple):
    """What a stream is once an append has landed. A retried append that S2's
    checks refuse may be refused by its own first attempt, which landed
    although its answer was lost: a tail at ``end_seq_num`` (a data batch) or
    the token ``new_fence`` (a fence) tells so."""

    end_seq_num: int | None = None
    """The stream's tail once the append has landed."""
    new_fence: str | None = None
    """The fencing token the append sets."""


NO_LANDING = Landing()
"""An append whose retry cannot tell its own first attempt (tests, tools)."""


class StreamStatus(enum.Enum):
    """Where a stream is in its life, as its last record tells."""

    ABSENT = "absent"
    """No record: never created, or dropped by retention."""
    LIVE = "live"
    """Claimed and not finished."""
    DONE = "done"
    """Its closing fence (``end-`` or ``error-``) is the last record."""

    @property
    def public(self) -> StreamState:
        """The Vercel-style value: None, True or ``"DONE"``."""
        if self is StreamStatus.ABSENT:
            return None
        return "DONE" if self is StreamStatus.DONE else True


class SequencedRecord(TypedDict, total=False):
    seq_num: int
    timestamp: int
    headers: list[list[str]]
    body: str


def is_fence(record: SequencedRecord) -> bool:
    """True for a fence command record."""
    headers = record.get("headers")
    return headers is not None and len(headers) == 1 and headers[0] == FENCE_HEADER


def is_command(record: SequencedRecord) -> bool:
    """True for any command record (a fence, or a trim S2 appends, e.g. when
    it deletes the stream): never a chunk of text."""
    headers = record.get("headers")
    return headers is not None and len(headers) > 0 and headers[0][0] == ""


def is_trim(record: SequencedRecord) -> bool:
    """True for a ``trim`` command record."""
    headers = record.get("headers")
    return headers is not None and len(headers) == 1 and headers[0] == TRIM_HEADER


def is_closing_fence(record: SequencedRecord) -> bool:
    """True for the ``end-`` or ``error-`` fence that finishes a stream."""
    return is_fence(record) and record.get("body", "").startswith(CLOSING_FENCE_PREFIXES)


def status_of(last: SequencedRecord | None) -> StreamStatus:
    """A stream's status from its last record (None: it has none)."""
    if last is None:
        return StreamStatus.ABSENT
    # We append a trim only after the end fence (``trim_finished``), so a
    # trim at the tail means finished; S2's own trim before a deletion
    # precedes a stream that is gone.
    finished = is_closing_fence(last) or is_trim(last)
    return StreamStatus.DONE if finished else StreamStatus.LIVE


_PATH_SEGMENTS = (".", "..")


def validate_stream_id(stream_id: object) -> str:
    """``stream_id`` if S2 can name a stream so, else :class:`InvalidStreamIdError`."""
    if not isinstance(stream_id, str):
        raise InvalidStreamIdError(f"stream id must be a str, got {type(stream_id).__name__}")
    if not stream_id:
        raise InvalidStreamIdError("stream id must not be empty")
    try:
        size = len(stream_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidStreamIdError("stream id must be valid Unicode text") from None
    if size > MAX_STREAM_ID_BYTES:
        raise InvalidStreamIdError(
            f"stream id is {size} bytes, S2 allows at most {MAX_STREAM_ID_BYTES}"
        )
    if stream_id in _PATH_SEGMENTS:
        # One segment of the records URL, which HTTP resolves as a path step.
        raise InvalidStreamIdError(f"stream id must not be {stream_id!r}: S2 refuses it")
    return stream_id


def prefixed_stream_name(key_prefix: str, stream_id: str) -> StreamName:
    """The backend's name for ``stream_id`` under ``key_prefix``: the id
    itself without a prefix (the TypeScript package's names), else the
    prefix with ``%`` and ``:`` escaped (``%25``, ``%3A``), a ``:``, and the
    id. The first ``:`` ends the prefix, so two different prefixes never name
    the same stream, whatever the ids (``tenant-1`` and ``tenant-12``,
    ``org/`` and ``org/team/``)."""
    if not key_prefix:
        return StreamName(stream_id)
    return StreamName(key_prefix.replace("%", "%25").replace(":", "%3A") + ":" + stream_id)


def new_fence_token(prefix: str) -> str:
    """A fence token: 12 random bytes as 24 hex digits after the prefix, so
    every fence fits S2's 36-byte limit."""
    return prefix + secrets.token_hex(12)
