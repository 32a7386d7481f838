"""What S2's answers mean to :class:`~resumable_fast.s2.S2Client`: the typed
error of an answer (what it says passed through a redactor first, issue 21),
whether a fault is worth retrying and after how long, and the records of a
read, checked against S2's API.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from resumable_fast.endpoints import Redactor
from resumable_fast.errors import (
    BasinMisconfiguredError,
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    S2AuthError,
    S2Error,
    SeqNumMismatchError,
    StreamNotFoundError,
)
from resumable_fast.records import SequencedRecord

__all__ = [
    "backoff",
    "error_from_response",
    "explain_not_found",
    "invalid_answer",
    "is_transient",
    "records_of",
    "retry_after",
]

MAX_BACKOFF_SECONDS = 2.0
# How much of an error's answer its message keeps: a body that is not JSON
# (an excerpt), a JSON message, a code.
ERROR_EXCERPT_CHARS = 200
ERROR_MESSAGE_CHARS = 1000
ERROR_CODE_CHARS = 100


def is_transient(error: S2Error) -> bool:
    """Faults after which the same request may succeed."""
    return error.status in (429, 500, 502, 503, 504) or (
        error.status == 409 and error.code == "transaction_conflict"
    )


def invalid_answer(what: str) -> S2Error:
    """S2 (or something in between) answered with JSON its API does not specify."""
    return S2Error(200, "invalid_response", f"S2 answered {what} not as its API specifies")


def records_of(data: bytes | str) -> list[SequencedRecord]:
    """The records of a read's answer or a session's batch, checked."""
    try:
        records = orjson.loads(data)["records"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise invalid_answer("records") from None
    if type(records) is not list:
        raise invalid_answer("records")
    for record in records:
        if (
            type(record) is not dict
            or type(record.get("seq_num")) is not int
            or type(record.get("body", "")) is not str
            or type(record.get("headers", [])) is not list
        ):
            raise invalid_answer("a record")
    return records


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.025 * 2**attempt))


def retry_after(value: str | bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        return None


def explain_not_found(error: S2Error, basin: str, setting: str) -> S2Error:
    """A 404 from a basin call means the basin is missing or is not set to
    create streams on demand, which the stream layout relies on."""
    if not isinstance(error, StreamNotFoundError):
        return error
    if error.code == "basin_not_found":
        message = f"basin {basin!r} does not exist (create it, or check S2_BASIN)"
    elif error.code == "stream_not_found":
        message = (
            f"basin {basin!r} does not create streams on demand: "
            f"enable {setting} in its configuration"
        )
    else:
        return error
    misconfigured = BasinMisconfiguredError(error.status, error.code, message)
    misconfigured.attempts = error.attempts
    return misconfigured


def error_from_response(status: int, content: bytes, redact: Redactor) -> S2Error:
    """The typed error for an answer. Nothing of the answer reaches the
    error but through ``redact``: an upstream may echo the request, with
    its credentials, in any field."""
    try:
        payload: Any = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        payload = None
    if status == 412 and isinstance(payload, dict):
        if "fencing_token_mismatch" in payload:
            token = redact(str(payload["fencing_token_mismatch"]), ERROR_CODE_CHARS)
            return FencingTokenMismatchError(token)
        if "seq_num_mismatch" in payload:
            expected = payload["seq_num_mismatch"]
            if type(expected) is not int:
                return invalid_answer("a sequence number mismatch")
            return SeqNumMismatchError(expected)
    if status == 416:
        tail = payload.get("tail") if isinstance(payload, dict) else None
        seq_num = tail.get("seq_num") if isinstance(tail, dict) else None
        return RangeNotSatisfiableError(seq_num if type(seq_num) is int else None)
    raw_code = payload.get("code") if isinstance(payload, dict) else None
    code = None if raw_code is None else redact(str(raw_code), ERROR_CODE_CHARS)
    if isinstance(payload, dict):
        message = redact(str(payload.get("message", "")), ERROR_MESSAGE_CHARS)
    else:
        # Enough bytes for the excerpt's characters and the look past its cut.
        text = content[: 4 * (ERROR_EXCERPT_CHARS + 16)].decode("utf-8", "replace")
        message = redact(text, ERROR_EXCERPT_CHARS)
    if status in (401, 403):
        return S2AuthError(status, code, message or "access token refused")
    if status == 404:
        return StreamNotFoundError(status, code, message or "not found")
    return S2Error(status, code, message)
