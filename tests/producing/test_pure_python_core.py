"""The pure-Python benchmark baseline frames exactly like the native core."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import pytest

from resumable_fast import EmbeddedBackend, EmbeddedStore, ResumableStreamContext, _core
from resumable_fast.config import BatchSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benches"))

import pure_python_core
from support import from_list

Frame = tuple[bytes, int]


class AccumulatorLike(Protocol):
    def open(self, fencing_token: str, next_seq_num: int, pending: list[str]) -> int: ...
    def arm(self, slot: int) -> bool: ...
    def drain(self, slot: int) -> list[Frame]: ...
    def seal_due(self) -> list[tuple[int, list[Frame]]]: ...
    def next_deadline_in(self) -> float | None: ...
    def close(self, slot: int) -> list[Frame]: ...
    def discard(self, slot: int) -> None: ...
    @property
    def open_streams(self) -> int: ...


Factory = Callable[[int, int, float], AccumulatorLike]
IMPLEMENTATIONS: tuple[Factory, Factory] = (_core.Accumulator, pure_python_core.Accumulator)
IDS = ("rust", "python")

MIB = 1024 * 1024
LIMIT = pure_python_core.MAX_DATA_BODY_BYTES
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
    factory: Factory, rounds: Sequence[Sequence[str]], batch_size: int, max_bytes: int
) -> list[list[Frame]]:
    """Fills the streams' pending lists round-robin, one round of chunks per
    drain; returns every drain's frames, then every close's."""
    accumulator = factory(batch_size, max_bytes, 60_000.0)
    pending: list[list[str]] = [[] for _ in TOKENS]
    slots = [
        accumulator.open(token, 3 * index, pending[index]) for index, token in enumerate(TOKENS)
    ]
    frames: list[list[Frame]] = []
    for index, chunks in enumerate(rounds):
        stream = index % len(slots)
        pending[stream].extend(chunks)
        frames.append(accumulator.drain(slots[stream]))
        assert pending[stream] == []
    # Left pending, framed by close.
    for stream, slot in enumerate(slots):
        pending[stream].extend(rounds[stream % len(rounds)] if rounds else ())
        frames.append(accumulator.close(slot))
    assert accumulator.open_streams == 0
    return frames


def assert_same(
    rounds: Sequence[Sequence[str]], batch_size: int, max_bytes: int = MIB
) -> list[list[Frame]]:
    native, python = (run(factory, rounds, batch_size, max_bytes) for factory in IMPLEMENTATIONS)
    assert python == native
    return native


def plain_frame(token: str, seq_num: int, *bodies: str) -> Frame:
    """The expected frame of bodies and a token that need no JSON escaping."""
    records = ",".join(f'{{"body":"{body}"}}' for body in bodies)
    text = f'{{"records":[{records}],"fencing_token":"{token}","match_seq_num":{seq_num}}}'
    return text.encode(), seq_num + len(bodies)


def test_constants_match() -> None:
    assert pure_python_core.MAX_METERED_BYTES == _core.MAX_METERED_BYTES
    assert pure_python_core.MAX_BATCH_RECORDS == _core.MAX_BATCH_RECORDS
    assert pure_python_core.MAX_FENCING_TOKEN_BYTES == _core.MAX_FENCING_TOKEN_BYTES


@pytest.mark.parametrize("batch_size", [1, 3, 10, 1000])
def test_tricky_text_frames_identically(batch_size: int) -> None:
    chunks = list(TRICKY)
    rounds = [chunks[start : start + size] for size in (1, 2, 5, 14) for start in range(14)]
    rounds += [[], [""], ["", ""]] + [[chunk] for chunk in TRICKY]
    frames = assert_same(rounds, batch_size)
    assert any(frames)


def test_all_code_point_classes_frame_identically() -> None:
    controls = [chr(code) for code in range(0x20)] + ["\x7f", "\x80", "\x9f", "\xa0"]
    wide = ["\u07ff", "\u0800", "\uffff", "\U00010000", "\U0010ffff", "\u2028", "\u2029"]
    assert_same([controls, wide, controls + wide, ['"', "\\", "/", "\\u0000"]], 1000)


def test_escaping_matches_byte_for_byte() -> None:
    for factory in IMPLEMENTATIONS:
        accumulator = factory(1, MIB, 1.0)
        pending = ['\x00\x1f\x7f"\\\n/é']
        slot = accumulator.open("t", 0, pending)
        (first,) = accumulator.drain(slot)
        assert pending == []
        expected = '{"records":[{"body":"\\u0000\\u001f\x7f\\"\\\\\\n/é"}],'
        assert first == ((expected + '"fencing_token":"t","match_seq_num":0}').encode(), 1)


SURROGATE_ROUNDS = (
    ("bad \ud800 half",),
    ("\udfff", "ok", "\udc80\udbff"),
    # Two surrogates that would pair in UTF-16 are still two lone code points.
    ("\ud83d\ude00",),
    ("x" * (LIMIT - 1) + "\ud800" + "y" * 10,),
)


@pytest.mark.parametrize("factory", IMPLEMENTATIONS, ids=IDS)
def test_lone_surrogates_become_one_replacement_character_each(factory: Factory) -> None:
    """rust/framing.rs ``replace_lone_surrogates`` and docs/design.md: a chunk
    that cannot be UTF-8 is stored with one U+FFFD per lone surrogate. (An
    extension built before that change stored one per byte, three each.)"""
    accumulator = factory(1000, MIB, 1.0)
    pending: list[str] = []
    slot = accumulator.open("t", 1, pending)
    expected = (
        plain_frame("t", 1, "bad \ufffd half"),
        plain_frame("t", 2, "\ufffd", "ok", "\ufffd\ufffd"),
        plain_frame("t", 5, "\ufffd\ufffd"),
    )
    for chunks, frame in zip(SURROGATE_ROUNDS, expected, strict=False):
        pending.extend(chunks)
        assert accumulator.drain(slot) == [frame]
    # Cut before the replacement character, which does not fit the first record.
    pending.extend(SURROGATE_ROUNDS[3])
    first, second = accumulator.drain(slot)
    assert first[0].endswith(b'x"}],"fencing_token":"t","match_seq_num":6}')
    assert second == plain_frame("t", 7, "\ufffd" + "y" * 10)


def test_lone_surrogates_frame_identically() -> None:
    assert_same(SURROGATE_ROUNDS, 3)
    assert_same(SURROGATE_ROUNDS, 1000, 20)


def test_batch_size_and_byte_cap_sealing() -> None:
    chunks = [f"chunk {index}" for index in range(97)]
    frames = assert_same([chunks, chunks[:7], chunks[:6]], 7)
    assert [end for _, end in frames[0]] == [*range(7, 98, 7), 97]
    # 8 + 10 metered bytes per record: the cap of 40 seals after two records,
    # and a cap below one record seals every record on its own.
    frames = assert_same([["0123456789"] * 41], 1000, 40)
    assert len(frames[0]) == 21
    assert_same([["0123456789", "ab", "é" * 9, "x"] * 7], 1000, 36)
    assert_same([["toolong" * 3] * 9], 10, 5)
    assert_same([["é" * 6, "😀" * 3, "é" * 5]] * 3, 1000, 8 * 3 + 12 * 3 - 1)


def test_chunks_over_a_record_split_on_char_boundaries() -> None:
    rounds = [
        ["a" * (MIB + 5)],
        ["é" * (MIB // 2 + 1), "tail"],
        ["a" + "😀" * (LIMIT // 4 + 2)],
        ["ab" + "😀" * (LIMIT // 4 + 2)],
        ["b" * LIMIT, "c" * (LIMIT + 1), "d"],
        ["x" * (LIMIT - 1) + "😀" + "y"],
    ]
    frames = assert_same(rounds, 10)
    assert sum(len(batch) for batch in frames[:6]) > len(rounds)
    assert_same(rounds, 2, MIB // 2)
    assert pure_python_core.split_for_records("a😀😀😀".encode(), 6) == [
        ("a😀", 5),
        ("😀", 4),
        ("😀", 4),
    ]


def test_linger_arm_and_seal_due_agree() -> None:
    for factory in IMPLEMENTATIONS:
        accumulator = factory(10, MIB, 0.0)
        first_pending: list[str] = []
        second_pending: list[str] = []
        first = accumulator.open("a", 1, first_pending)
        second = accumulator.open("b", 5, second_pending)
        assert accumulator.next_deadline_in() is None
        assert accumulator.seal_due() == []
        first_pending.append("x")
        assert accumulator.arm(first) is True, "the first armed clock wakes the timer"
        assert accumulator.arm(first) is False, "already armed"
        second_pending.append("y")
        assert accumulator.arm(second) is False, "the timer is awake already"
        first_pending.append("z")
        deadline = accumulator.next_deadline_in()
        assert deadline is not None
        assert 0.0 <= deadline < 0.5
        assert accumulator.seal_due() == [
            (first, [plain_frame("a", 1, "x", "z")]),
            (second, [plain_frame("b", 5, "y")]),
        ]
        assert first_pending == second_pending == []
        assert accumulator.next_deadline_in() is None
        assert accumulator.seal_due() == []
        # Armed with nothing pending: due, but nothing to seal.
        assert accumulator.arm(first) is True
        assert accumulator.seal_due() == []
        # Drained early: the armed deadline is stale and seals nothing later.
        first_pending.append("w")
        assert accumulator.arm(first) is True
        assert accumulator.drain(first) == [plain_frame("a", 3, "w")]
        first_pending.append("v")
        assert accumulator.seal_due() == []
        # Re-armed after the drain: a fresh deadline counts.
        assert accumulator.arm(first) is True
        assert accumulator.seal_due() == [(first, [plain_frame("a", 4, "v")])]
        assert accumulator.close(second) == []
        accumulator.arm(first)
        accumulator.discard(first)
        assert accumulator.seal_due() == []
        assert accumulator.open_streams == 0


def test_linger_waits_for_its_deadline() -> None:
    for factory in IMPLEMENTATIONS:
        accumulator = factory(10, MIB, 40.0)
        pending = ["x"]
        slot = accumulator.open("t", 1, pending)
        assert accumulator.arm(slot)
        assert accumulator.seal_due() == []
        deadline = accumulator.next_deadline_in()
        assert deadline is not None
        assert 0.0 < deadline <= 0.04
        time.sleep(deadline + 0.002)
        assert accumulator.next_deadline_in() == 0.0
        ((sealed_slot, frames),) = accumulator.seal_due()
        assert (sealed_slot, len(frames)) == (slot, 1)


@pytest.mark.parametrize("factory", IMPLEMENTATIONS, ids=IDS)
def test_errors_agree(factory: Factory) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        factory(0, MIB, 1.0)
    with pytest.raises(ValueError, match="batch_size"):
        factory(1001, MIB, 1.0)
    with pytest.raises(ValueError, match="max_batch_bytes"):
        factory(10, MIB + 1, 1.0)
    with pytest.raises(ValueError, match="linger_ms"):
        factory(10, MIB, -1.0)
    with pytest.raises(ValueError, match="linger_ms"):
        factory(10, MIB, float("nan"))
    with pytest.raises(OverflowError):
        factory(-1, MIB, 1.0)
    accumulator = factory(10, MIB, 1.0)
    with pytest.raises(ValueError, match="fencing token"):
        accumulator.open("t" * 37, 1, [])
    with pytest.raises(ValueError, match="fencing token"):
        accumulator.open("é" * 19, 1, [])
    with pytest.raises(OverflowError):
        accumulator.open("t", -1, [])
    not_a_list: Any = ("x",)
    with pytest.raises(TypeError):
        accumulator.open("t", 1, not_a_list)
    pending: list[Any] = ["kept", b"bytes"]
    slot = accumulator.open("t", 1, pending)
    with pytest.raises(TypeError, match="chunks must be str"):
        accumulator.drain(slot)
    assert pending == ["kept", b"bytes"], "a failed drain leaves the pending list alone"
    del pending[1]
    accumulator.discard(slot)
    accumulator.discard(slot)
    accumulator.discard(12345)
    assert pending == ["kept"]
    for call in (accumulator.arm, accumulator.drain, accumulator.close):
        with pytest.raises(KeyError, match=f"no open stream in slot {slot}"):
            call(slot)
    assert accumulator.open_streams == 0
    assert accumulator.open("t", 2**64 - 1, []) == slot, "a closed slot is reused"


async def test_a_context_frames_through_the_twin_given_as_its_accumulator() -> None:
    """The context's ``accumulator`` seam, as the ``pure_python`` bench peer
    uses it: the twin frames the context's streams, which read back whole."""
    batching = BatchSettings(batch_size=3, linger_ms=1)
    twin = pure_python_core.Accumulator(
        batching.batch_size, batching.max_batch_bytes, float(batching.linger_ms)
    )
    chunks = list(TRICKY)
    backend = EmbeddedBackend(EmbeddedStore())
    async with ResumableStreamContext(backend, batching, accumulator=twin) as ctx:
        stream = await ctx.resumable_stream("twin", lambda: from_list(chunks))
        assert stream is not None
        assert twin.open_streams == 1
        produced = "".join([chunk async for chunk in stream])
        resumed = "".join([chunk async for chunk in await ctx.resume_stream("twin")])
    assert produced == resumed == "".join(chunks)
    assert twin.open_streams == 0
