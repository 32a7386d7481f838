"""Microbenchmark of the core: frame pending chunks into S2 append batches.

Runs the native core (``resumable_fast._core.Accumulator``) and its pure-Python
twin (``benches/pure_python_core.py``) side by side on the same deterministic
LLM-like workloads, interleaved repetition by repetition (alternating which goes
first), after checking that both produce byte-identical, valid frames. Two things
are measured per workload:

(A) core: accumulate+frame -- only the core's work. Each stream's pending list
    is filled with its next ``batch_size`` chunks outside the timed region, then
    one ``drain`` per stream is timed: empty the list and frame what it held.
(B) producer path per token -- what ``Producer._drive`` does per chunk in
    python/resumable_fast/producer.py: ``pending.append``, ``len``, then ``drain``
    when the batch is full or ``arm`` when it was empty. The floor runs the same
    loop with a no-op core (``drain`` only empties the list): what the Python
    loop itself costs, which no core can take away.

Every run gets fresh ``str`` objects (as chunks decoded from a model stream
would be), so no run profits from UTF-8 caches filled by an earlier one, and the
cyclic GC is paused while a run is timed. No ``seal_due`` is called (the linger
is far longer than a run), so the frames do not depend on timing.

Usage: ``.venv/bin/python benches/bench_core.py [--quick] [--repeat N]``
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
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
from workload import make_token

TARGET_RATIO = 20.0
SEED = 20240611
STREAMS = 100
BATCH_SIZE = 10
LINGER_MS = 60_000.0

Frame = tuple[bytes, int]
"""An ``AppendInput`` body and the stream's tail once it has landed."""


class AccumulatorLike(Protocol):
    def open(self, fencing_token: str, next_seq_num: int, pending: list[str]) -> int: ...
    def arm(self, slot: int) -> bool: ...
    def drain(self, slot: int) -> list[Frame]: ...
    def close(self, slot: int) -> list[Frame]: ...


Factory = Callable[[int, int, float], AccumulatorLike]


class NoOpAccumulator:
    """A core that does nothing but empty the pending list: the floor of (B)."""

    def __init__(self, batch_size: int, max_batch_bytes: int, linger_ms: float) -> None:
        self._pending: list[list[str]] = []

    def open(self, fencing_token: str, next_seq_num: int, pending: list[str]) -> int:
        self._pending.append(pending)
        return len(self._pending) - 1

    def arm(self, slot: int) -> bool:
        return False

    def drain(self, slot: int) -> list[Frame]:
        self._pending[slot].clear()
        return []

    def close(self, slot: int) -> list[Frame]:
        return self.drain(slot)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    chunks: tuple[str, ...]
    tokens: tuple[str, ...]

    @property
    def streams(self) -> int:
        return len(self.tokens)

    @property
    def utf8_bytes(self) -> int:
        return sum(len(chunk.encode()) for chunk in self.chunks)

    def fresh_chunks(self) -> list[str]:
        """New ``str`` objects with the same text, without cached UTF-8."""
        return [chunk.encode().decode() for chunk in self.chunks]


def fencing_token(rng: random.Random) -> str:
    """A 36-byte fencing token shaped like a UUID, the most S2 allows."""
    digits = f"{rng.getrandbits(128):032x}"
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


def token_workload(count: int, rng: random.Random) -> Workload:
    return Workload(
        name="tokens",
        description=f"{count:,} tokens of 3-6 chars round-robin over {STREAMS} streams",
        chunks=tuple(make_token(rng) for _ in range(count)),
        tokens=tuple(fencing_token(rng) for _ in range(STREAMS)),
    )


def large_chunk_workload(count: int, rng: random.Random) -> Workload:
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
        description=f"{count:,} chunks of 200-2000 chars round-robin over {STREAMS} streams",
        chunks=tuple(chunks),
        tokens=tuple(fencing_token(rng) for _ in range(STREAMS)),
    )


def open_streams(
    factory: Factory, workload: Workload
) -> tuple[AccumulatorLike, list[list[str]], list[int]]:
    accumulator = factory(BATCH_SIZE, _core.MAX_METERED_BYTES, LINGER_MS)
    pending: list[list[str]] = [[] for _ in workload.tokens]
    slots = [
        accumulator.open(token, 1, pending[index]) for index, token in enumerate(workload.tokens)
    ]
    return accumulator, pending, slots


def core_frame(
    factory: Factory, workload: Workload, chunks: Sequence[str]
) -> tuple[int, list[Frame]]:
    """(A): per round, fills every stream's pending list with its next batch
    (untimed), then drains every stream (timed). Returns nanoseconds and frames."""
    accumulator, pending, slots = open_streams(factory, workload)
    streams = workload.streams
    per_stream = [chunks[index::streams] for index in range(streams)]
    rounds = -(-max(map(len, per_stream)) // BATCH_SIZE)
    frames: list[Frame] = []
    keep = frames.extend
    drain = accumulator.drain
    clock = time.perf_counter_ns
    elapsed = 0
    for start in range(0, rounds * BATCH_SIZE, BATCH_SIZE):
        for stream_pending, stream_chunks in zip(pending, per_stream, strict=True):
            stream_pending.extend(stream_chunks[start : start + BATCH_SIZE])
        begin = clock()
        for slot in slots:
            keep(drain(slot))
        elapsed += clock() - begin
    for slot in slots:
        keep(accumulator.close(slot))
    return elapsed, frames


def producer_path(
    factory: Factory, workload: Workload, chunks: Sequence[str]
) -> tuple[int, list[Frame]]:
    """(B): the source task's per-chunk work over every chunk, round-robin over the
    streams, then closing every stream. Returns nanoseconds and frames."""
    accumulator, pending, slots = open_streams(factory, workload)
    # What each source task holds, looked up here rather than in the loop.
    steps = list(
        zip(
            itertools.cycle([stream_pending.append for stream_pending in pending]),
            itertools.cycle(pending),
            itertools.cycle(slots),
            chunks,
        )
    )
    frames: list[Frame] = []
    keep = frames.extend
    drain = accumulator.drain
    arm = accumulator.arm
    wake = itertools.count().__next__
    batch_size = BATCH_SIZE
    begin = time.perf_counter_ns()
    for add_pending, stream_pending, slot, chunk in steps:
        add_pending(chunk)
        count = len(stream_pending)
        if count >= batch_size:
            keep(drain(slot))
        elif count == 1 and arm(slot):
            wake()
    for slot in slots:
        keep(accumulator.close(slot))
    return time.perf_counter_ns() - begin, frames


Scenario = Callable[[Factory, Workload, Sequence[str]], tuple[int, list[Frame]]]


def empty_chunks(
    factory: Factory, workload: Workload, chunks: Sequence[str]
) -> tuple[int, list[Frame]]:
    """Call floor: (A) with every chunk an empty ``str``. Each drain still
    takes the call, the pending list and reading each chunk, but has nothing
    to frame or return."""
    return core_frame(factory, workload, [""] * len(chunks))


def utf8_encoding(
    factory: Factory, workload: Workload, chunks: Sequence[str]
) -> tuple[int, list[Frame]]:
    """Encoding floor: CPython's UTF-8 encoding of every non-ASCII chunk, which
    is what reading its text through the stable ABI costs (an ASCII ``str``
    hands out its bytes as they are)."""
    encode = str.encode
    non_ascii = [chunk for chunk in chunks if not chunk.isascii()]
    begin = time.perf_counter_ns()
    for chunk in non_ascii:
        encode(chunk)
    return time.perf_counter_ns() - begin, []


def timed(scenario: Scenario, factory: Factory, workload: Workload) -> float:
    """Seconds one run takes, on fresh chunk objects, with the cyclic GC paused."""
    chunks = workload.fresh_chunks()
    gc.collect()
    gc.disable()
    try:
        elapsed, _ = scenario(factory, workload, chunks)
    finally:
        gc.enable()
    return elapsed / 1e9


def check_frames(workload: Workload) -> list[Frame]:
    """Asserts both implementations frame the workload byte-identically and
    validly, in both scenarios; returns the frames."""
    runs = {
        (scenario.__name__, label): scenario(factory, workload, workload.fresh_chunks())[1]
        for scenario in (core_frame, producer_path)
        for label, factory in (
            ("rust", _core.Accumulator),
            ("python", pure_python_core.Accumulator),
        )
    }
    native = runs["core_frame", "rust"]
    for key, frames in runs.items():
        if frames != native:
            mismatch = next(
                (index for index, (a, b) in enumerate(zip(native, frames, strict=False)) if a != b),
                min(len(native), len(frames)),
            )
            raise AssertionError(
                f"{workload.name}: {key} frames differ from rust core_frame at frame {mismatch} "
                f"({len(frames)} vs {len(native)} frames)"
            )
    # The frames are valid AppendInput bodies that carry every chunk in order.
    texts: dict[str, list[str]] = {token: [] for token in workload.tokens}
    next_seq: dict[str, int] = dict.fromkeys(workload.tokens, 1)
    for frame, end_seq_num in native:
        body = json.loads(frame)
        token = body["fencing_token"]
        if body["match_seq_num"] != next_seq[token]:
            raise AssertionError(f"{workload.name}: seq num gap in stream {token}")
        if len(body["records"]) > BATCH_SIZE:
            raise AssertionError(f"{workload.name}: batch over {BATCH_SIZE} records")
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

    def ns_per_token(self, seconds: float) -> float:
        return seconds / len(self.workload.chunks) * 1e9

    def row(self) -> str:
        fastest, median, slowest = min(self.seconds), self.median, max(self.seconds)
        return (
            f"{self.workload.name:<7} {self.label:<28} "
            f"{self.ns_per_token(median):>8,.1f} {self.ns_per_token(fastest):>8,.1f} "
            f"{self.ns_per_token(slowest):>8,.1f} "
            f"{len(self.workload.chunks) / median:>13,.0f} "
            f"{self.workload.utf8_bytes / median / 1e6:>9,.1f}"
        )


HEADER = (
    f"{'load':<7} {'implementation':<28} {'ns/tok':>8} {'ns min':>8} {'ns max':>8} "
    f"{'tokens/s med':>13} {'MB/s med':>9}"
)


Contender = tuple[str, Factory, Scenario]


def measure(workload: Workload, contenders: Sequence[Contender], repeat: int) -> list[Result]:
    """Times every contender ``repeat`` times, interleaved, alternating the order."""
    for _, factory, scenario in contenders:  # warm-up, not counted
        timed(scenario, factory, workload)
    seconds: list[list[float]] = [[] for _ in contenders]
    for repetition in range(repeat):
        order = list(range(len(contenders)))
        if repetition % 2:
            order.reverse()
        for index in order:
            _, factory, scenario = contenders[index]
            seconds[index].append(timed(scenario, factory, workload))
    return [
        Result(workload, label, times)
        for (label, _, _), times in zip(contenders, seconds, strict=True)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (~15 s)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (at least 7)")
    args = parser.parse_args(argv)
    repeat = max(7, args.repeat or (7 if args.quick else 11))
    token_count, chunk_count = (50_000, 4_000) if args.quick else (200_000, 16_000)

    rng = random.Random(SEED)
    workloads = [token_workload(token_count, rng), large_chunk_workload(chunk_count, rng)]
    native: tuple[str, Factory] = ("rust core (_core)", _core.Accumulator)
    python: tuple[str, Factory] = ("pure python", pure_python_core.Accumulator)
    floor: tuple[str, Factory] = ("floor: no-op drain", NoOpAccumulator)
    call_floor: Contender = ("floor: drain of empty str", _core.Accumulator, empty_chunks)
    encoding_floor: Contender = ("floor: UTF-8 of non-ASCII", _core.Accumulator, utf8_encoding)

    print("resumable_fast core microbenchmark (batch-at-a-time Accumulator)")
    print(
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"batch_size={BATCH_SIZE}; {repeat} interleaved runs per implementation, "
        "alternating order; GC paused while timing; ns/tok = nanoseconds per chunk"
    )
    for workload in workloads:
        frames = check_frames(workload)
        framed = sum(len(body) for body, _ in frames)
        print(
            f"[{workload.name}] {workload.description}, {workload.utf8_bytes / 1e6:.2f} MB UTF-8 "
            f"in; identical frames (rust = python, (A) = (B)): {len(frames):,} frames, "
            f"{framed / 1e6:.2f} MB"
        )

    print()
    print("(A) core: accumulate+frame")
    print(HEADER)
    speedups: dict[str, float] = {}
    ceilings: dict[str, float] = {}
    for workload in workloads:
        rust, pure, calls, encoding = measure(
            workload,
            [(*native, core_frame), (*python, core_frame), call_floor, encoding_floor],
            repeat,
        )
        for result in (rust, pure, calls, encoding):
            print(result.row())
        speedups[workload.name] = pure.median / rust.median
        ceilings[workload.name] = pure.median / (calls.median + encoding.median)
    print(
        f"    measures: drain() of pre-filled pending lists ({BATCH_SIZE} chunks each, filled "
        "outside the timer): empty the list, frame one AppendInput, return (bytes, seq)"
    )
    print(
        "    floors: the same drains of empty str (the call, the list and reading each chunk, "
        "nothing to frame), and CPython's UTF-8 encoding of the non-ASCII chunks (what "
        "reading their text through the stable ABI costs): framing code behind this binding "
        "cannot take less than their sum"
    )
    for name, ratio in speedups.items():
        verdict = "MET" if ratio >= TARGET_RATIO else "NOT MET"
        print(
            f"    ratio rust/pure-python [{name}]: {ratio:.1f}x (pure-python median time / rust "
            f"median time) -> {TARGET_RATIO:g}x target {verdict}; ceiling pure-python / "
            f"(floors) = {ceilings[name]:.1f}x"
        )

    print()
    print("(B) producer path per token")
    print(HEADER)
    path_ratios: dict[str, tuple[float, float, float, float]] = {}
    for workload in workloads:
        rust, pure, noop = measure(
            workload,
            [(*contender, producer_path) for contender in (native, python, floor)],
            repeat,
        )
        for result in (rust, pure, noop):
            print(result.row())
        rust_ns, pure_ns, floor_ns = (r.ns_per_token(r.median) for r in (rust, pure, noop))
        path_ratios[workload.name] = (pure.median / rust.median, rust_ns, pure_ns, floor_ns)
    print(
        "    measures: the source task's per-chunk work (pending.append, len, drain when full / "
        "arm when first) plus the closes; the floor runs it with a core that only empties the list"
    )
    for name, (ratio, rust_ns, pure_ns, floor_ns) in path_ratios.items():
        above_rust, above_pure = rust_ns - floor_ns, pure_ns - floor_ns
        above = f"{above_pure / above_rust:.1f}x" if above_rust > 0 else "n/a"
        print(
            f"    ratio rust/pure-python [{name}]: {ratio:.1f}x (of median times); "
            f"above the {floor_ns:.1f} ns/tok floor: rust {above_rust:.1f}, python "
            f"{above_pure:.1f} ns/tok ({above})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
