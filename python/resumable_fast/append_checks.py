"""What the embedded stores check of an ``AppendInput`` before they apply it,
as S2 does: the JSON shape, 1 to 1000 records, S2's metered-size limits and
the fencing token's length. A batch that fails a check is refused whole,
with S2's status (422) and a typed error, and nothing of it is stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from resumable_fast.errors import S2Error
from resumable_fast.records import (
    FENCE_HEADER,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_FENCING_TOKEN_BYTES,
    SequencedRecord,
)

__all__ = ["CheckedAppend", "check_append_input"]


@dataclass(frozen=True, slots=True)
class CheckedAppend:
    """An ``AppendInput`` that passed the checks, not yet given positions."""

    bodies: list[str]
    headed: list[tuple[int, list[list[str]]]]
    """The records that have headers: their index in the batch, and the headers."""
    fencing_token: str | None
    match_seq_num: int | None
    new_fencing_token: str | None
    """The body of the batch's last fence record: the stream's token once
    the batch is applied (None: the batch sets none)."""

    def sequenced(self, first_seq_num: int, timestamp_ms: int) -> list[SequencedRecord]:
        """The records at their positions from ``first_seq_num``, stamped."""
        records: list[SequencedRecord] = [
            {"seq_num": seq_num, "timestamp": timestamp_ms, "body": body}
            for seq_num, body in enumerate(self.bodies, first_seq_num)
        ]
        for index, headers in self.headed:
            records[index] = {
                "seq_num": first_seq_num + index,
                "timestamp": timestamp_ms,
                "headers": headers,
                "body": self.bodies[index],
            }
        return records


def _invalid(message: str) -> S2Error:
    return S2Error(422, "invalid", message)


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _headers_size(headers: object) -> int:
    """Metered bytes of a record's headers: 2 per header plus its name and value."""
    if type(headers) is not list:
        raise _invalid("headers must be a list of [name, value] pairs")
    size = 0
    for header in headers:
        if type(header) is not list or len(header) != 2:
            raise _invalid("headers must be a list of [name, value] pairs")
        name, value = header
        if type(name) is not str or type(value) is not str:
            raise _invalid("header names and values must be strings")
        size += 2 + _utf8_len(name) + _utf8_len(value)
    return size


def check_append_input(append_input: bytes) -> CheckedAppend:
    """The batch of an ``AppendInput`` body, or an :class:`S2Error` (422)
    naming the check it failed."""
    try:
        request = orjson.loads(append_input)
        records = request["records"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise _invalid("append input must be a JSON object with records") from None
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_BATCH_RECORDS:
        raise _invalid(f"a batch holds 1 to {MAX_BATCH_RECORDS} records")
    bodies: list[str] = []
    headed: list[tuple[int, list[list[str]]]] = []
    header_bytes = 0
    new_token: str | None = None
    # One pass over the records for their shape and headers (rare: fences);
    # the bodies' metered size is then taken over their joined text at once,
    # which costs a fraction of measuring each (the batches are mostly tokens).
    for record in records:
        if type(record) is not dict:
            raise _invalid("records must be objects with a string body")
        body = record.get("body", "")
        if type(body) is not str:
            raise _invalid("records must be objects with a string body")
        headers = record.get("headers")
        if headers:
            header_bytes += _headers_size(headers)
            if headers == [FENCE_HEADER]:
                if _utf8_len(body) > MAX_FENCING_TOKEN_BYTES:
                    raise _invalid("fencing token exceeds 36 bytes")
                new_token = body
            headed.append((len(bodies), headers))
        bodies.append(body)
    batch_bytes = 8 * len(bodies) + header_bytes + _utf8_len("".join(bodies))
    if batch_bytes > MAX_BATCH_BYTES:
        # Within a batch under the limit every record is; over it, S2 names
        # a record over its own limit first.
        headers_of = dict(headed)
        for index, body in enumerate(bodies):
            size = 8 + _utf8_len(body)
            if index in headers_of:
                size += _headers_size(headers_of[index])
            if size > MAX_BATCH_BYTES:
                raise _invalid("a record exceeds 1 MiB metered")
        raise _invalid("a batch exceeds 1 MiB metered")
    token = request.get("fencing_token")
    match = request.get("match_seq_num")
    if token is not None and type(token) is not str:
        raise _invalid("fencing_token must be a string")
    if match is not None and (type(match) is not int or match < 0):
        raise _invalid("match_seq_num must be a non-negative integer")
    return CheckedAppend(bodies, headed, token, match, new_token)
