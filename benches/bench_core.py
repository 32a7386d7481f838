"""Microbenchmark of the core: accumulate chunks into S2 batches and frame them.

Runs the native core (``resumable_fast._core.Accumulator``) and its pure-Python
twin (``benches/pure_python_core.py``) side by side on the same synthetic LLM
workloads, interleaved repetition by repetition, after checking that both
produce byte-identical frames. Each timed run does what the context does per
stream: push every chunk, take the frames when a push flags them, and close
every stream at the end. No ``seal_due`` is called, so the frames do not depend
on timing. Every run gets fresh ``str`` objects (as chunks decoded from a model
stream would be), so no run profits from UTF-8 caches filled by an earlier one,
and the cyclic GC is paused while a run is timed.

The ``floor`` row runs the same harness with an empty C function as ``push``:
what any API with one Python-level call per chunk costs before doing any work.
Pure Python's time over that floor bounds the ratio such an API can reach.

Usage: ``.venv/bin/python benches/bench_core.py [--quick] [--repeat N]``
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from resumable_fast import _core

import pure_python_core

TARGET_RATIO = 20.0
SEED = 20240611

WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if so "
    "no will can more out up into do any your what some them other than then now only its "
    "time like model token stream batch data python rust value return async await import "
    "class def self print list dict string number error result function request response "
    "server client"
)
ASCII_WORDS = tuple(WORD_TEXT.split())
# "|"-separated: U+2028 is whitespace to str.split().
NON_ASCII_TEXT = (
    "é|ü|ñ|ç|ß|ø|å|日本|語|中文|한국|Привет|мир|Ω|π|—|…|€|«|»|😀|🚀|👍|🎉|✨|🔥|💡|\u2028"
)
NON_ASCII = tuple(NON_ASCII_TEXT.split("|"))
SPECIAL = ('"', '\\"', "\n", "\n\n", "\t", "\\", '":', "\r\n", "`", "\x1b[")
PUNCTUATION = (",", ".", ":", ";", "!", "?", "(", ")", "-", "'s")


# A sealed frame: (AppendInput body, end seq num of the stream once it has landed).
Frame = tuple[bytes, int]


class AccumulatorLike(Protocol):
    def open(self, fencing_token: str, next_seq_num: int) -> int: ...
    def push(self, slot: int, chunk: str) -> int: ...
    def take_frames(self, slot: int) -> list[Frame]: ...
    def close(self, slot: int) -> list[Frame]: ...


Factory = Callable[[int, int, float], AccumulatorLike]


class EmptyCallAccumulator:
    """The harness with an empty C call as ``push``: the floor of any one-call-per-chunk API."""

    push = staticmethod(operator.is_)

    def __init__(self, batch_size: int, max_batch_bytes: int, linger_ms: float) -> None:
        self._next_slot = 0

    def open(self, fencing_token: str, next_seq_num: int) -> int:
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def take_frames(self, slot: int) -> list[Frame]:
        return []

    def close(self, slot: int) -> list[Frame]:
        return []


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    chunks: tuple[str, ...]
    slots: tuple[int, ...]
    tokens: tuple[str, ...]
    streams: int
    batch_size: int
    linger_ms: float

    @property
    def utf8_bytes(self) -> int:
        return sum(len(chunk.encode()) for chunk in self.chunks)

    def fresh_chunks(self) -> list[str]:
        """New ``str`` objects with the same text, without cached UTF-8."""
        return [chunk.encode().decode() for chunk in self.chunks]


def fit(text: str, low: int, high: int, rng: random.Random) -> str:
    """Pads or trims ``text`` to a length in ``[low, high]`` characters."""
    while len(text) < low:
        text += rng.choice("aeiourstln")
    return text[: rng.randint(max(low, 1), high)] if len(text) > high else text


def make_token(rng: random.Random) -> str:
    """One LLM-like token of 3-6 characters: ~10% non-ASCII, ~5% with quotes/newlines."""
    roll = rng.random()
    lead = " " if rng.random() < 0.6 else ""
    if roll < 0.10:
        text = lead + rng.choice(NON_ASCII) + rng.choice(NON_ASCII)
    elif roll < 0.15:
        text = rng.choice(SPECIAL) + rng.choice(ASCII_WORDS)
    elif roll < 0.22:
        text = rng.choice(ASCII_WORDS) + rng.choice(PUNCTUATION)
    else:
        text = lead + rng.choice(ASCII_WORDS)
    return fit(text, 3, 6, rng)


def fencing_token(rng: random.Random) -> str:
    """A 36-byte fencing token shaped like a UUID, the most S2 allows."""
    digits = f"{rng.getrandbits(128):032x}"
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


def token_workload(count: int, streams: int, rng: random.Random) -> Workload:
    chunks = tuple(make_token(rng) for _ in range(count))
    return Workload(
        name="tokens",
        description=f"{count:,} tokens of 3-6 chars round-robin over {streams} streams",
        chunks=chunks,
        slots=tuple(index % streams for index in range(count)),
        tokens=tuple(fencing_token(rng) for _ in range(streams)),
        streams=streams,
        batch_size=10,
        linger_ms=100.0,
    )


def large_chunk_workload(count: int, streams: int, rng: random.Random) -> Workload:
    chunks: list[str] = []
    for _ in range(count):
        size = rng.randint(200, 2000)
        parts: list[str] = []
        length = 0
        while length < size:
            token = make_token(rng)
            parts.append(token)
            length += len(token)
        chunks.append("".join(parts)[:size])
    return Workload(
        name="chunks",
        description=f"{count:,} chunks of 200-2000 chars round-robin over {streams} streams",
        chunks=tuple(chunks),
        slots=tuple(index % streams for index in range(count)),
        tokens=tuple(fencing_token(rng) for _ in range(streams)),
        streams=streams,
        batch_size=10,
        linger_ms=100.0,
    )


def run(factory: Factory, workload: Workload, chunks: Sequence[str]) -> list[Frame]:
    """Pushes every chunk, takes frames when flagged, closes every stream; returns all frames."""
    accumulator = factory(workload.batch_size, _core.MAX_METERED_BYTES, workload.linger_ms)
    slots = [accumulator.open(token, 1) for token in workload.tokens]
    if slots != list(range(workload.streams)):
        raise AssertionError(f"unexpected slots {slots[:5]}...")
    frames: list[Frame] = []
    push = accumulator.push
    take_frames = accumulator.take_frames
    keep = frames.extend
    for slot, chunk in zip(workload.slots, chunks, strict=True):
        if push(slot, chunk) & 1:
            keep(take_frames(slot))
    for slot in slots:
        keep(accumulator.close(slot))
    return frames


def timed_run(factory: Factory, workload: Workload) -> float:
    """Seconds one run takes, on fresh chunk objects, with the cyclic GC paused."""
    chunks = workload.fresh_chunks()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        run(factory, workload, chunks)
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / 1e9


def check_frames(workload: Workload) -> list[Frame]:
    """Asserts both implementations frame the workload byte-identically and correctly."""
    native = run(_core.Accumulator, workload, workload.fresh_chunks())
    python = run(pure_python_core.Accumulator, workload, workload.fresh_chunks())
    if native != python:
        mismatch = next(
            (index for index, (a, b) in enumerate(zip(native, python, strict=False)) if a != b),
            min(len(native), len(python)),
        )
        raise AssertionError(
            f"{workload.name}: frames differ at frame {mismatch} "
            f"({len(native)} native vs {len(python)} pure-Python frames)"
        )
    # The frames are valid AppendInput bodies that carry every chunk in order.
    texts: dict[str, list[str]] = {token: [] for token in workload.tokens}
    next_seq: dict[str, int] = dict.fromkeys(workload.tokens, 1)
    for frame, end_seq_num in native:
        body = json.loads(frame)
        token = body["fencing_token"]
        if body["match_seq_num"] != next_seq[token]:
            raise AssertionError(f"{workload.name}: seq num gap in stream {token}")
        next_seq[token] += len(body["records"])
        if end_seq_num != next_seq[token]:
            raise AssertionError(f"{workload.name}: wrong end seq num in stream {token}")
        texts[token].extend(record["body"] for record in body["records"])
    for index, token in enumerate(workload.tokens):
        sent = "".join(workload.chunks[index :: workload.streams])
        if "".join(texts[token]) != sent:
            raise AssertionError(f"{workload.name}: stream {token} text does not round-trip")
    return native


@dataclass(frozen=True)
class Result:
    workload: Workload
    label: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, seconds: float) -> float:
        return len(self.workload.chunks) / seconds

    def row(self) -> str:
        count = len(self.workload.chunks)
        fastest, median, slowest = min(self.seconds), self.median, max(self.seconds)
        return (
            f"{self.workload.name:<7} {self.label:<22} "
            f"{self.rate(median):>12,.0f} {self.rate(slowest):>12,.0f} "
            f"{self.rate(fastest):>12,.0f} "
            f"{median / count * 1e9:>8,.0f} {fastest / count * 1e9:>8,.0f} "
            f"{slowest / count * 1e9:>8,.0f} {self.workload.utf8_bytes / median / 1e6:>9,.1f}"
        )


HEADER = (
    f"{'load':<7} {'implementation':<22} {'median/s':>12} {'min/s':>12} {'max/s':>12} "
    f"{'ns med':>8} {'ns min':>8} {'ns max':>8} {'MB/s med':>9}"
)


def measure(
    workload: Workload, contenders: Sequence[tuple[str, Factory]], repeat: int
) -> list[Result]:
    """Times every contender ``repeat`` times, interleaved, alternating the order."""
    for _, factory in contenders:  # warm-up, not counted
        timed_run(factory, workload)
    seconds: list[list[float]] = [[] for _ in contenders]
    for repetition in range(repeat):
        order = list(range(len(contenders)))
        if repetition % 2:
            order.reverse()
        for index in order:
            seconds[index].append(timed_run(contenders[index][1], workload))
    return [
        Result(workload, label, times)
        for (label, _), times in zip(contenders, seconds, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (~15 s)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (at least 7)")
    args = parser.parse_args(argv)
    repeat = max(7, args.repeat or (7 if args.quick else 11))
    token_count, chunk_count = (50_000, 4_000) if args.quick else (200_000, 16_000)

    rng = random.Random(SEED)
    workloads = [
        token_workload(token_count, 100, rng),
        large_chunk_workload(chunk_count, 100, rng),
    ]
    native: tuple[str, Factory] = ("rust core (_core)", _core.Accumulator)
    python: tuple[str, Factory] = ("pure python", pure_python_core.Accumulator)
    floor: tuple[str, Factory] = ("floor: empty C call", EmptyCallAccumulator)

    print("resumable_fast core microbenchmark: push every chunk, take flagged frames, close")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{repeat} interleaved runs per implementation; GC paused while timing"
    )
    for workload in workloads:
        frames = check_frames(workload)
        framed = sum(len(body) for body, _ in frames)
        print(
            f"[{workload.name}] {workload.description}, batch_size={workload.batch_size}, "
            f"linger={workload.linger_ms:g} ms, {workload.utf8_bytes / 1e6:.2f} MB UTF-8 in; "
            f"identical frames: {len(frames):,} frames, {framed / 1e6:.2f} MB"
        )
    print()
    print(HEADER)
    ratios: dict[str, float] = {}
    ceiling = 0.0
    for workload in workloads:
        contenders = [native, python] + ([floor] if workload.name == "tokens" else [])
        results = measure(workload, contenders, repeat)
        for result in results:
            print(result.row())
        ratios[workload.name] = results[1].median / results[0].median
        if workload.name == "tokens":
            ceiling = results[1].median / results[2].median
    print()
    for name, ratio in ratios.items():
        print(f"ratio rust/pure-python of median throughput [{name}]: {ratio:.1f}x")
    print(
        f"ceiling for one Python-level call per token "
        f"(pure python / empty C call floor) [tokens]: {ceiling:.1f}x"
    )
    met = ratios["tokens"] >= TARGET_RATIO
    print(
        f"target ratio >= {TARGET_RATIO:g}x on tokens: "
        f"{'MET' if met else 'NOT MET'} ({ratios['tokens']:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
