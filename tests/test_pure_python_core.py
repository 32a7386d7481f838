"""The pure-Python benchmark baseline frames exactly like the native core."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from resumable_fast import _core

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benches"))

import pure_python_core

Frame = tuple[bytes, int]


class AccumulatorLike(Protocol):
    def open(self, fencing_token: str, next_seq_num: int) -> int: ...
    def push(self, slot: int, chunk: str) -> int: ...
    def take_frames(self, slot: int) -> list[Frame]: ...
    def seal_due(self) -> list[int]: ...
    def next_deadline_in(self) -> float | None: ...
    def close(self, slot: int) -> list[Frame]: ...
    def discard(self, slot: int) -> None: ...


Factory = Callable[[int, int, float], AccumulatorLike]
IMPLEMENTATIONS: tuple[Factory, Factory] = (_core.Accumulator, pure_python_core.Accumulator)

MIB = 1024 * 1024
TOKENS = ("session-0", 'quo"te\\tok', "é-tøken-😀", "x" * 36)
TRICKY = (
    "plain",
    "",
    'say "hi"',
    "back\\slash\\",
    "".join(map(chr, range(0x20))) + "\x7f",
    "\n\r\t\b\f",
    "é ü ß 日本語 한국어 Привет",
    "😀🚀👍 emoji \U0001f9ea",
    "\u2028\u2029 line separators",
    "\ud7ff\ue000\uffff",
    " tok",
)


def run(
    factory: Factory, chunks: Sequence[str], batch_size: int, max_bytes: int
) -> tuple[list[int], list[list[Frame]]]:
    """Pushes chunks round-robin over the streams; returns every flag and frame list."""
    accumulator = factory(batch_size, max_bytes, 60_000.0)
    slots = [accumulator.open(token, 3 * index) for index, token in enumerate(TOKENS)]
    flags: list[int] = []
    frames: list[list[Frame]] = []
    for index, chunk in enumerate(chunks):
        slot = slots[index % len(slots)]
        flag = accumulator.push(slot, chunk)
        flags.append(flag)
        if flag & _core.FRAMES_READY:
            frames.append(accumulator.take_frames(slot))
    frames.extend(accumulator.close(slot) for slot in slots)
    return flags, frames


def assert_same(chunks: Sequence[str], batch_size: int, max_bytes: int = MIB) -> None:
    native, python = (run(factory, chunks, batch_size, max_bytes) for factory in IMPLEMENTATIONS)
    assert python[0] == native[0]
    assert python[1] == native[1]


def test_constants_match() -> None:
    assert pure_python_core.FRAMES_READY == _core.FRAMES_READY
    assert pure_python_core.WAKE_TIMER == _core.WAKE_TIMER
    assert pure_python_core.MAX_METERED_BYTES == _core.MAX_METERED_BYTES
    assert pure_python_core.MAX_BATCH_RECORDS == _core.MAX_BATCH_RECORDS
    assert pure_python_core.MAX_FENCING_TOKEN_BYTES == _core.MAX_FENCING_TOKEN_BYTES


@pytest.mark.parametrize("batch_size", [1, 3, 1000])
def test_tricky_text_frames_identically(batch_size: int) -> None:
    assert_same(TRICKY * 5, batch_size)


def test_escaping_matches_byte_for_byte() -> None:
    accumulator = pure_python_core.Accumulator(1, MIB, 1.0)
    slot = accumulator.open("t", 0)
    accumulator.push(slot, '\x00\x1f\x7f"\\\n/é')
    ((frame, end_seq_num),) = accumulator.take_frames(slot)
    assert end_seq_num == 1
    expected = '{"records":[{"body":"\\u0000\\u001f\x7f\\"\\\\\\n/é"}],'
    assert frame == (expected + '"fencing_token":"t","match_seq_num":0}').encode()
    assert_same(['\x00\x1f\x7f"\\\n/é'], 1)


def test_batch_size_and_byte_cap_sealing() -> None:
    assert_same([f"chunk {index}" for index in range(97)], 7)
    # 8 + 10 metered bytes per record: the cap of 40 seals after two records,
    # and the cap below one record seals every record on its own.
    assert_same(["0123456789"] * 41, 1000, 40)
    assert_same(["0123456789", "ab", "é" * 9, "x"] * 7, 1000, 36)
    assert_same(["toolong" * 3] * 9, 10, 5)


def test_chunks_over_a_record_split_on_char_boundaries() -> None:
    limit = pure_python_core.MAX_DATA_BODY_BYTES
    chunks = [
        "a" * (MIB + 5),
        "é" * (MIB // 2 + 1),
        "a" + "😀" * (limit // 4 + 2),
        "b" * limit,
        "c" * (limit + 1),
        "tail",
    ]
    assert_same(chunks, 10)
    assert_same(chunks, 2, MIB // 2)
    assert pure_python_core.split_for_records("a" + "😀" * 3, 6) == ["a😀", "😀", "😀"]


def test_linger_and_deadlines_agree() -> None:
    for factory in IMPLEMENTATIONS:
        accumulator = factory(10, MIB, 0.0)
        first, second = accumulator.open("a", 1), accumulator.open("b", 5)
        assert accumulator.next_deadline_in() is None
        assert accumulator.push(first, "x") == _core.WAKE_TIMER
        assert accumulator.push(second, "y") == 0
        assert accumulator.push(first, "z") == 0
        deadline = accumulator.next_deadline_in()
        assert deadline is not None
        assert 0.0 <= deadline < 0.5
        assert accumulator.seal_due() == [first, second]
        assert accumulator.next_deadline_in() is None
        assert accumulator.take_frames(first) == [
            (b'{"records":[{"body":"x"},{"body":"z"}],"fencing_token":"a","match_seq_num":1}', 3)
        ]
        assert accumulator.close(second) == [
            (b'{"records":[{"body":"y"}],"fencing_token":"b","match_seq_num":5}', 6)
        ]


def test_errors_agree() -> None:
    for factory in IMPLEMENTATIONS:
        with pytest.raises(ValueError, match="batch_size"):
            factory(0, MIB, 1.0)
        with pytest.raises(ValueError, match="max_batch_bytes"):
            factory(10, MIB + 1, 1.0)
        with pytest.raises(ValueError, match="linger_ms"):
            factory(10, MIB, -1.0)
        accumulator = factory(10, MIB, 1.0)
        with pytest.raises(ValueError, match="fencing token"):
            accumulator.open("t" * 37, 1)
        slot = accumulator.open("t", 1)
        accumulator.push(slot, "kept until discard")
        accumulator.discard(slot)
        with pytest.raises(KeyError):
            accumulator.push(slot, "x")
        with pytest.raises(KeyError):
            accumulator.take_frames(slot)
        with pytest.raises(KeyError):
            accumulator.close(slot)
