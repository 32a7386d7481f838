"""An incremental parser of ``text/event-stream`` bodies (Server-Sent Events).

It follows the HTML standard's "Parsing an event stream" and "Interpreting an
event stream" (https://html.spec.whatwg.org/multipage/server-sent-events.html),
with two deliberate differences: a body that is not valid UTF-8 raises
:class:`~resumable_fast.errors.EventStreamError` instead of decoding to U+FFFD,
and memory is bounded (a line, or one event's data, over ``max_event_bytes``
raises the same error).

Bytes are fed as they arrive; every call returns the events the bytes
completed::

    parser = EventStreamParser()
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            ...
    parser.close()  # end of stream: drops an unfinished event

The parser works on whole buffers: it cuts each fed chunk at its last line end,
decodes what lies before (line ends are ASCII, so a complete line never ends
inside a UTF-8 sequence) and keeps the rest, undecoded, for the next chunk.
"""

from __future__ import annotations

from contextlib import suppress
from typing import NamedTuple

from .errors import EventStreamError, InvalidArgumentError

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "Event", "EventStreamParser"]

DEFAULT_MAX_EVENT_BYTES = 8 * 1024 * 1024
"""Default cap on one line and on one event's data: S2 read-session batches
(up to about 1 MiB of records, as JSON) fit well within it."""


class Event(NamedTuple):
    """One dispatched event (a named tuple: ``type, data, id = event`` works).

    A named tuple rather than a frozen dataclass because the parser builds one
    per event, and ``tuple.__new__`` does that about twice as fast.
    """

    type: str
    """The ``event:`` field, or ``"message"`` when there was none (or it was empty)."""
    data: str
    """The ``data:`` lines, joined by LF."""
    id: str
    """The last event ID when the event was dispatched (it persists across events)."""


class EventStreamParser:
    """Parses one event stream, fed as bytes in chunks of any size.

    ``max_event_bytes`` caps, in UTF-8 bytes, both a single line (a partial
    line is never buffered beyond it) and one event's data (its ``data:``
    values joined by LF): past either, :meth:`feed` raises
    :class:`~resumable_fast.errors.EventStreamError`. So the parser holds at
    most about ``max_event_bytes`` plus one fed chunk (:attr:`buffered_bytes`
    says how much of an unterminated line it keeps between two feeds). A
    ``max_event_bytes`` below 1 raises
    :class:`~resumable_fast.errors.InvalidArgumentError`.

    After an error the parser is spent: further calls raise again.
    """

    __slots__ = (
        "_data",
        "_data_size",
        "_event_type",
        "_fed",
        "_id_buffer",
        "_last_event_id",
        "_max",
        "_partial",
        "_partial_size",
        "_retry_ms",
        "_skip_lf",
        "_spent",
        "_started",
    )

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        if max_event_bytes < 1:
            raise InvalidArgumentError("max_event_bytes must be positive")
        self._max = max_event_bytes
        self._partial: list[bytes] = []  # an unterminated line, not decoded yet
        self._partial_size = 0
        self._skip_lf = False  # the last chunk ended in CR: an LF opening the next is its pair
        self._started = False  # a leading BOM has been looked for
        self._fed = 0  # bytes fed so far (for error positions)
        self._data: list[str] = []  # the data buffer, one item per data line
        self._data_size = 0  # its size in UTF-8 bytes, with one LF per line
        self._event_type = ""
        self._id_buffer = ""  # the spec's "last event ID buffer"
        self._last_event_id = ""  # the spec's "last event ID string"
        self._retry_ms: int | None = None
        self._spent: str | None = None  # why feed() refuses: closed, or failed

    @property
    def last_event_id(self) -> str:
        """The last event ID as of the last blank line (what an ``EventSource``
        would send as ``Last-Event-ID`` when reconnecting); ``""`` if none."""
        return self._last_event_id

    @property
    def buffered_bytes(self) -> int:
        """The bytes of an unterminated line the parser holds, undecoded, until
        a later chunk ends it: at most ``max_event_bytes`` (past it,
        :meth:`feed` raises); 0 after :meth:`close` or an error."""
        return self._partial_size

    @property
    def retry_ms(self) -> int | None:
        """The reconnection time the stream last set with ``retry:``, in ms."""
        return self._retry_ms

    def close(self) -> None:
        """End the stream: an unfinished event is discarded (as the standard
        says), but a partial last line must still be valid UTF-8.

        Raises :class:`~resumable_fast.errors.EventStreamError` if the stream
        ended inside a UTF-8 sequence or with invalid UTF-8 on its last line.
        Calling it again does nothing.
        """
        if self._spent is not None:
            return
        self._spent = "is closed"
        partial = b"".join(self._partial)
        self._partial, self._partial_size = [], 0
        self._data, self._data_size, self._event_type = [], 0, ""
        if partial:
            try:
                partial.decode()
            except UnicodeDecodeError as exc:
                raise self._decode_error(exc, self._fed - len(partial)) from None

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse the next bytes of the stream; return the events they complete."""
        if self._spent is not None:
            raise EventStreamError(f"the event stream parser {self._spent}")
        if not chunk:
            return []
        self._fed += len(chunk)
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        last = chunk[-1]
        has_cr = 0x0D in chunk  # an int: `b"\r" in chunk` costs several times more
        if last == 0x0A or last == 0x0D:  # the chunk ends with a line end (the live case)
            head, tail = chunk, b""
            self._skip_lf = last == 0x0D
        else:
            end = chunk.rfind(0x0A)  # the chunk's last line end
            if has_cr:
                cr = chunk.rfind(0x0D)
                if cr > end:
                    end = cr
            if end < 0:
                self._partial.append(chunk)
                self._partial_size += len(chunk)
                if self._partial_size > self._max:
                    raise self._line_too_long(self._partial_size)
                return []
            head, tail = chunk[: end + 1], chunk[end + 1 :]
            if len(tail) > self._max:
                raise self._line_too_long(len(tail))
        if self._partial:
            self._partial.append(head)
            head = b"".join(self._partial)
            self._partial = []
        if tail:
            self._partial = [tail]
        self._partial_size = len(tail)
        if len(head) > self._max:  # rare: a single line in it might be over the cap
            longest = max(map(len, head.splitlines()))  # bytes: splits at CR, LF, CRLF only
            if longest > self._max:
                raise self._line_too_long(longest)
        try:
            text = head.decode()
        except UnicodeDecodeError as exc:
            raise self._decode_error(exc, self._fed - len(tail) - len(head)) from None
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if has_cr:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # the text ends with a line end

        events: list[Event] = []
        data = self._data
        data_size = self._data_size
        event_type = self._event_type
        limit = self._max + 1  # the data buffer counts one LF per line, the data one less
        for line in lines:
            if not line:  # a blank line dispatches the event
                self._last_event_id = self._id_buffer
                if data:
                    events.append(
                        _new_event(
                            Event,
                            (
                                event_type or "message",
                                data[0] if len(data) == 1 else "\n".join(data),
                                self._id_buffer,
                            ),
                        )
                    )
                    data = []
                    data_size = 0
                event_type = ""
                continue
            # The common fields first, without the general split.
            if line.startswith("data:"):
                value = line[6:] if line.startswith(" ", 5) else line[5:]
                data.append(value)
                data_size += (len(value) if value.isascii() else len(value.encode())) + 1
                if data_size > limit:
                    raise self._fail(f"an event's data is over the cap of {self._max} bytes")
                continue
            if line.startswith("event:"):
                event_type = line[7:] if line.startswith(" ", 6) else line[6:]
                continue
            colon = line.find(":")
            if colon == 0:  # a comment
                continue
            if colon < 0:
                field, value = line, ""
            else:
                field = line[:colon]
                value = line[colon + 2 :] if line.startswith(" ", colon + 1) else line[colon + 1 :]
            if field == "id":
                if "\0" not in value:
                    self._id_buffer = value
            elif field == "retry":
                if value.isascii() and value.isdigit():
                    # More digits than int() converts (sys.get_int_max_str_digits()): ignored.
                    with suppress(ValueError):
                        self._retry_ms = int(value)
            elif field == "data":  # "data" without a colon: an empty value
                data.append("")
                data_size += 1
                if data_size > limit:
                    raise self._fail(f"an event's data is over the cap of {self._max} bytes")
            elif field == "event":  # "event" without a colon
                event_type = ""
        self._data = data
        self._data_size = data_size
        self._event_type = event_type
        return events

    def _fail(self, message: str) -> EventStreamError:
        """The error to raise; the parser is spent from then on."""
        self._spent = "already failed"
        self._partial, self._partial_size = [], 0
        self._data, self._data_size = [], 0
        return EventStreamError(message)

    def _line_too_long(self, size: int) -> EventStreamError:
        return self._fail(
            f"an event stream line is over the cap of {self._max} bytes "
            f"({size} bytes without a line end)"
        )

    def _decode_error(self, exc: UnicodeDecodeError, start: int) -> EventStreamError:
        """The error for invalid UTF-8 at ``start + exc.start`` in the stream; it
        shows the offending bytes only (at most 4), not the payload."""
        bad = bytes(exc.object[exc.start : min(exc.end, exc.start + 4)])
        return self._fail(
            f"the event stream is not valid UTF-8: {exc.reason} at byte "
            f"{start + exc.start} ({bad!r})"
        )


_new_event = tuple.__new__  # Event(...) runs a Python-level __new__; this does not
