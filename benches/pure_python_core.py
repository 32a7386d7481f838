"""The native core's accumulate-and-frame logic, written in pure Python.

A stdlib-only twin of ``resumable_fast._core.Accumulator`` (rust/batcher.rs,
rust/framing.rs, rust/binding.rs) with the same public surface and byte-identical
frames, kept as the baseline of ``benches/bench_core.py``. Only S2's limits come
from the library (``resumable_fast.records``), so they are defined once.

The design is the same batch-at-a-time one: each stream's pending chunks live in
a list owned by the caller, who appends to it and hands it over with ``drain``
once per batch (or when the linger clock armed by ``arm`` has passed, through
``seal_due``). It is written the way a careful Python implementation would be:
a pending list that fits one batch (the common case) is framed with one
``str.join`` over the C JSON string escaper that ``json.dumps(...,
ensure_ascii=False)`` uses and one ``str.encode``; only lists that need several
batches, oversize chunks, empty chunks or lone surrogates take the per-chunk loop.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from json.encoder import encode_basestring

from resumable_fast.records import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, MAX_FENCING_TOKEN_BYTES

__all__ = [
    "MAX_BATCH_RECORDS",
    "MAX_DATA_BODY_BYTES",
    "MAX_FENCING_TOKEN_BYTES",
    "MAX_METERED_BYTES",
    "Accumulator",
    "Frame",
    "split_for_records",
]

MAX_METERED_BYTES = MAX_BATCH_BYTES

RECORD_OVERHEAD = 8
MAX_DATA_BODY_BYTES = MAX_METERED_BYTES - RECORD_OVERHEAD
# UTF-8 never takes more than 4 bytes per code point. (A lone surrogate has no
# UTF-8 form: it makes the fast path's encode fail and takes the per-chunk loop.)
_MAX_UTF8_PER_CHAR = 4
_MAX_U64 = 2**64 - 1

# A str holding a surrogate code point cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
_FRAME_OPEN = '{"records":[{"body":'
_RECORD_SEPARATOR = '},{"body":'

Frame = tuple[bytes, int]
"""An ``AppendInput`` body and the stream's tail once it has landed."""


def split_for_records(data: bytes, limit: int = MAX_DATA_BODY_BYTES) -> list[tuple[str, int]]:
    """Cuts UTF-8 ``data`` into pieces of at most ``limit`` bytes on character
    boundaries; returns each piece with its size in bytes."""
    pieces: list[tuple[str, int]] = []
    start = 0
    end = len(data)
    while start < end:
        cut = min(start + limit, end)
        # A byte 0b10xxxxxx continues a character: back off to where one starts.
        while cut < end and data[cut] & 0xC0 == 0x80:
            cut -= 1
        pieces.append((data[start:cut].decode(), cut - start))
        start = cut
    return pieces


def _lossy(chunk: str) -> str:
    """The text with each lone surrogate replaced by one U+FFFD, as the core stores it."""
    return _SURROGATE.sub("\ufffd", chunk)


class _Stream:
    __slots__ = ("armed", "closing", "next_seq_num", "pending")

    def __init__(self, fencing_token: str, next_seq_num: int, pending: list[str]) -> None:
        self.pending = pending
        self.next_seq_num = next_seq_num
        # The epoch of the linger deadline armed for the pending batch, if any.
        self.armed: int | None = None
        token = encode_basestring(fencing_token)
        self.closing = '}],"fencing_token":' + token + ',"match_seq_num":'


class Accumulator:
    """Frames the pending chunks of many streams, with one linger clock for all."""

    def __init__(self, batch_size: int, max_batch_bytes: int, linger_ms: float) -> None:
        if not math.isfinite(linger_ms) or linger_ms < 0:
            raise ValueError(f"linger_ms must be a finite number >= 0, got {linger_ms}")
        if batch_size < 0 or max_batch_bytes < 0:
            raise OverflowError("can't convert negative int to unsigned")
        if not 1 <= batch_size <= MAX_BATCH_RECORDS:
            raise ValueError(
                f"batch_size must be between 1 and {MAX_BATCH_RECORDS} records, got {batch_size}"
            )
        if not 1 <= max_batch_bytes <= MAX_METERED_BYTES:
            raise ValueError(
                f"max_batch_bytes must be between 1 and {MAX_METERED_BYTES}, got {max_batch_bytes}"
            )
        self._max_records = batch_size
        self._max_bytes = max_batch_bytes
        self._linger = linger_ms / 1000.0
        self._streams: dict[int, _Stream] = {}
        # (deadline, slot, epoch) in arming order, which is deadline order
        # because the linger is the same for every stream. An entry whose epoch
        # is no longer its stream's armed one was framed early and is skipped.
        self._lingering: deque[tuple[float, int, int]] = deque()
        self._next_epoch = 0
        # Closed slots are handed out again, most recently closed first.
        self._free_slots: list[int] = []
        self._next_slot = 0

    def _stream(self, slot: int) -> _Stream:
        try:
            return self._streams[slot]
        except KeyError:
            raise KeyError(f"no open stream in slot {slot}") from None

    def open(self, fencing_token: str, next_seq_num: int, pending: list[str]) -> int:
        """Opens a stream whose pending chunks are collected in ``pending``."""
        if not isinstance(pending, list):
            raise TypeError(f"pending must be a list, not {type(pending).__name__}")
        if not 0 <= next_seq_num <= _MAX_U64:
            raise OverflowError("next_seq_num must fit in an unsigned 64-bit integer")
        token_bytes = len(fencing_token.encode())
        if token_bytes > MAX_FENCING_TOKEN_BYTES:
            raise ValueError(
                f"fencing token is {token_bytes} bytes, S2 allows at most {MAX_FENCING_TOKEN_BYTES}"
            )
        if self._free_slots:
            slot = self._free_slots.pop()
        else:
            slot = self._next_slot
            self._next_slot = slot + 1
        self._streams[slot] = _Stream(fencing_token, next_seq_num, pending)
        return slot

    def arm(self, slot: int) -> bool:
        """Starts the linger clock of a stream's pending batch. True when the
        clock was idle, so the caller's timer must look at it again."""
        stream = self._stream(slot)
        if stream.armed is not None:
            return False
        epoch = self._next_epoch
        self._next_epoch = epoch + 1
        stream.armed = epoch
        lingering = self._lingering
        wake = not lingering
        lingering.append((time.monotonic() + self._linger, slot, epoch))
        return wake

    def drain(self, slot: int) -> list[Frame]:
        """Frames every pending chunk of a stream; returns its frames, oldest first."""
        try:
            stream = self._streams[slot]
        except KeyError:
            raise KeyError(f"no open stream in slot {slot}") from None
        return self._frame(stream)

    def _frame(self, stream: _Stream) -> list[Frame]:
        """Empties a stream's pending list and frames what it held."""
        pending = stream.pending
        try:
            text = "".join(pending)
        except TypeError as error:
            raise TypeError(f"chunks must be str: {error}") from None
        chunks = pending.copy()
        pending.clear()
        stream.armed = None
        count = len(chunks)
        if not count:
            return []
        # The common case: every chunk fits one batch, one record each.
        if count <= self._max_records and "" not in chunks:
            overhead = RECORD_OVERHEAD * count
            size = len(text)
            if size * _MAX_UTF8_PER_CHAR + overhead > self._max_bytes and not text.isascii():
                try:
                    size = len(text.encode())
                except UnicodeEncodeError:  # lone surrogates: the per-chunk path
                    size = self._max_bytes
            if size + overhead <= self._max_bytes:
                seq_num = stream.next_seq_num
                body = (
                    _FRAME_OPEN
                    + _RECORD_SEPARATOR.join(map(encode_basestring, chunks))
                    + stream.closing
                    + str(seq_num)
                    + "}"
                )
                try:
                    frame = body.encode()
                except UnicodeEncodeError:
                    pass
                else:
                    end_seq_num = seq_num + count
                    stream.next_seq_num = end_seq_num
                    return [(frame, end_seq_num)]
        return self._frame_chunks(stream, chunks)

    def _frame_chunks(self, stream: _Stream, chunks: list[str]) -> list[Frame]:
        """Frames chunks one record at a time: several batches, oversize or odd chunks."""
        max_records = self._max_records
        max_bytes = self._max_bytes
        closing = stream.closing
        seq_num = stream.next_seq_num
        frames: list[Frame] = []
        bodies: list[str] = []
        metered = 0
        for chunk in chunks:
            try:
                data = chunk.encode()
            except UnicodeEncodeError:
                chunk = _lossy(chunk)
                data = chunk.encode()
            size = len(data)
            if size > MAX_DATA_BODY_BYTES:
                pieces = split_for_records(data)
            elif size:
                pieces = [(chunk, size)]
            else:
                continue
            for piece, piece_size in pieces:
                size = RECORD_OVERHEAD + piece_size
                if bodies and (len(bodies) == max_records or metered + size > max_bytes):
                    body = _FRAME_OPEN + _RECORD_SEPARATOR.join(bodies) + closing
                    frames.append(((body + str(seq_num) + "}").encode(), seq_num + len(bodies)))
                    seq_num += len(bodies)
                    bodies = []
                    metered = 0
                bodies.append(encode_basestring(piece))
                metered += size
        if bodies:
            body = _FRAME_OPEN + _RECORD_SEPARATOR.join(bodies) + closing
            frames.append(((body + str(seq_num) + "}").encode(), seq_num + len(bodies)))
            seq_num += len(bodies)
        stream.next_seq_num = seq_num
        return frames

    def seal_due(self) -> list[tuple[int, list[Frame]]]:
        """Frames the pending chunks of every stream whose linger has passed."""
        now = time.monotonic()
        lingering = self._lingering
        streams = self._streams
        slots: list[int] = []
        while lingering and lingering[0][0] <= now:
            _, slot, epoch = lingering.popleft()
            stream = streams.get(slot)
            if stream is not None and stream.armed == epoch:
                stream.armed = None
                slots.append(slot)
        sealed: list[tuple[int, list[Frame]]] = []
        for slot in slots:
            frames = self._frame(self._stream(slot))
            if frames:
                sealed.append((slot, frames))
        return sealed

    def next_deadline_in(self) -> float | None:
        """Seconds until the next lingering batch may be due, or None when idle."""
        if not self._lingering:
            return None
        return max(0.0, self._lingering[0][0] - time.monotonic())

    def close(self, slot: int) -> list[Frame]:
        """Frames what is pending, closes the stream and returns its last frames."""
        frames = self.drain(slot)
        self.discard(slot)
        return frames

    def reserve(self, slot: int, records: int) -> int:
        """Reserves the next ``records`` sequence numbers; returns the first."""
        stream = self._stream(slot)
        first = stream.next_seq_num
        stream.next_seq_num += records
        return first

    def discard(self, slot: int) -> None:
        """Forgets a stream and whatever it had pending."""
        if self._streams.pop(slot, None) is not None:
            self._free_slots.append(slot)

    @property
    def open_streams(self) -> int:
        return len(self._streams)
