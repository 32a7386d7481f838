"""The native core's accumulate-and-frame logic, written in pure Python.

A stdlib-only twin of ``resumable_fast._core.Accumulator`` (rust/batcher.rs,
rust/framing.rs, rust/binding.rs) with the same public surface and byte-identical
frames, kept as the baseline of ``benches/bench_core.py``. It is written the way a
careful Python implementation would be: one dict of per-stream state, escaped
record bodies kept as a list of strings and joined once per sealed batch, the C
JSON string escaper that ``json.dumps(..., ensure_ascii=False)`` uses, and the
clock read only when a batch opens.
"""

from __future__ import annotations

import math
import time
from collections import deque
from json.encoder import encode_basestring

FRAMES_READY = 1
WAKE_TIMER = 2
MAX_METERED_BYTES = 1024 * 1024
MAX_BATCH_RECORDS = 1000
MAX_FENCING_TOKEN_BYTES = 36

RECORD_OVERHEAD = 8
MAX_DATA_BODY_BYTES = MAX_METERED_BYTES - RECORD_OVERHEAD

_FRAME_OPEN = '{"records":[{"body":'
_RECORD_SEPARATOR = '},{"body":'


def split_for_records(text: str, limit: int = MAX_DATA_BODY_BYTES) -> list[str]:
    """Cuts ``text`` into pieces of at most ``limit`` UTF-8 bytes, on character boundaries."""
    data = text.encode()
    pieces: list[str] = []
    start = 0
    while start < len(data):
        cut = min(start + limit, len(data))
        # A byte 0b10xxxxxx continues a character: back off to where one starts.
        while cut < len(data) and data[cut] & 0xC0 == 0x80:
            cut -= 1
        pieces.append(data[start:cut].decode())
        start = cut
    return pieces


class _Stream:
    __slots__ = ("bodies", "closing", "generation", "metered", "next_seq_num", "sealed")

    def __init__(self, fencing_token: str, next_seq_num: int) -> None:
        # Escaped bodies of the open batch; its record count is their number.
        self.bodies: list[str] = []
        self.metered = 0
        self.next_seq_num = next_seq_num
        self.generation = 0
        # Sealed frames as (AppendInput body, end seq num once it has landed).
        self.sealed: list[tuple[bytes, int]] = []
        token = encode_basestring(fencing_token)
        self.closing = '}],"fencing_token":' + token + ',"match_seq_num":'

    def seal(self) -> None:
        bodies = self.bodies
        seq_num = self.next_seq_num
        frame = _FRAME_OPEN + _RECORD_SEPARATOR.join(bodies) + self.closing + str(seq_num) + "}"
        end_seq_num = seq_num + len(bodies)
        self.sealed.append((frame.encode(), end_seq_num))
        self.next_seq_num = end_seq_num
        self.bodies = []
        self.metered = 0
        self.generation += 1


class Accumulator:
    """Batches for every stream of one context, and their shared linger clock."""

    def __init__(self, batch_size: int, max_batch_bytes: int, linger_ms: float) -> None:
        if not math.isfinite(linger_ms) or linger_ms < 0:
            raise ValueError(f"linger_ms must be a finite number >= 0, got {linger_ms}")
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
        # (deadline, slot, generation) in arming order, which is deadline order
        # because the linger is the same for every stream. Entries whose batch
        # was sealed early are stale and skipped by generation.
        self._lingering: deque[tuple[float, int, int]] = deque()
        self._next_slot = 0

    def open(self, fencing_token: str, next_seq_num: int) -> int:
        """Opens a stream; returns its slot."""
        token_bytes = len(fencing_token.encode())
        if token_bytes > MAX_FENCING_TOKEN_BYTES:
            raise ValueError(
                f"fencing token is {token_bytes} bytes, S2 allows at most {MAX_FENCING_TOKEN_BYTES}"
            )
        if next_seq_num < 0:
            raise OverflowError("next_seq_num must be >= 0")
        slot = self._next_slot
        self._next_slot = slot + 1
        self._streams[slot] = _Stream(fencing_token, next_seq_num)
        return slot

    def push(self, slot: int, chunk: str) -> int:
        """Adds a chunk. Returns bit flags: 1 = frames ready, 2 = wake the timer."""
        stream = self._streams.get(slot)
        if stream is None:
            raise KeyError(f"no open stream in slot {slot}")
        size = len(chunk) if chunk.isascii() else len(chunk.encode())
        if size > MAX_DATA_BODY_BYTES:
            flags = 0
            for piece in split_for_records(chunk):
                flags |= self.push(slot, piece)
            return flags
        if not size:
            return 0
        size += RECORD_OVERHEAD
        flags = 0
        bodies = stream.bodies
        if bodies and stream.metered + size > self._max_bytes:
            stream.seal()
            bodies = stream.bodies
            flags = FRAMES_READY
        if not bodies:
            lingering = self._lingering
            if not lingering:
                flags |= WAKE_TIMER
            lingering.append((time.monotonic() + self._linger, slot, stream.generation))
        bodies.append(encode_basestring(chunk))
        metered = stream.metered + size
        stream.metered = metered
        if len(bodies) >= self._max_records or metered >= self._max_bytes:
            stream.seal()
            flags |= FRAMES_READY
        return flags

    def take_frames(self, slot: int) -> list[tuple[bytes, int]]:
        """The sealed frames of one stream, oldest first, as ``(body, end_seq_num)``."""
        stream = self._streams.get(slot)
        if stream is None:
            raise KeyError(f"no open stream in slot {slot}")
        frames = stream.sealed
        stream.sealed = []
        return frames

    def seal_due(self) -> list[int]:
        """Seals every batch whose linger has passed; returns their slots."""
        now = time.monotonic()
        lingering = self._lingering
        streams = self._streams
        slots: list[int] = []
        while lingering and lingering[0][0] <= now:
            _, slot, generation = lingering.popleft()
            stream = streams.get(slot)
            if stream is not None and stream.generation == generation and stream.bodies:
                stream.seal()
                slots.append(slot)
        return slots

    def next_deadline_in(self) -> float | None:
        """Seconds until the next lingering batch may be due, or None when idle."""
        if not self._lingering:
            return None
        return max(0.0, self._lingering[0][0] - time.monotonic())

    def close(self, slot: int) -> list[tuple[bytes, int]]:
        """Seals what is left of a stream, closes it and returns its frames."""
        stream = self._streams.pop(slot, None)
        if stream is None:
            raise KeyError(f"no open stream in slot {slot}")
        if stream.bodies:
            stream.seal()
        return stream.sealed

    def discard(self, slot: int) -> None:
        """Drops a stream and whatever it had not handed out."""
        self._streams.pop(slot, None)

    @property
    def open_streams(self) -> int:
        return len(self._streams)
