"""The embedded store in a ``data_dir`` (one SQLite database) against the
in-memory one, side by side: what persisting every token to disk costs the
serving process, and how fast another process sees it.

Each store serves the same workload, built through the public seams only
(``EmbeddedBackend(EmbeddedStore())``, ``EmbeddedBackend(SqliteStore(dir))``,
``ResumableStreamContext(backend, BatchSettings(...))``): ``--streams``
streams of ``benches/workload.py``'s tokens, each read to its end by its
producer client, paced at ``--rate`` tokens/s per stream and unpaced (the
source yields to the loop once per token). Rounds interleave the stores (the
order alternating), every run in a fresh event loop and, for ``data_dir``, a
fresh directory; each figure is the median over the rounds.

* **CPU per token**: ``time.process_time`` over the produce phase divided by
  the tokens, so the store's writer thread (in this process) counts; split
  into the loop thread's (``time.thread_time``) and the other threads'.
  Printed with the ratio data_dir / in-memory (the project's target: at most
  1.5x at 100 streams). Measured in runs without the ticker below, whose own
  wake-ups would dilute the ratio.
* **Event-loop lateness**: in runs of their own, a ticker asks to wake every
  millisecond; how late it wakes (p50, p99, max) is how long the loop was busy
  elsewhere, as every other request on it would feel it. A write made on the
  loop would show here as milliseconds.
* **Writes off the loop**: one short run of each store under
  ``sys.setprofile`` (no private attribute touched): every ``sqlite3``
  statement is counted by the thread that runs it, and whether it ran inside
  a write transaction (``Connection.in_transaction``). The loop thread must
  run none inside one (its reads are autocommit ``SELECT``s).
* **Cross-process live tail**: a reader in a second OS process (this script
  with ``--follow``) follows ``--follow-streams`` of the paced streams on the
  same ``data_dir``; for each token, the delay from this process's append
  acknowledgement (the backend's ``append`` returning) to the reader having
  the chunk, and from the source yielding it (which adds the linger), on the
  shared ``CLOCK_MONOTONIC`` (target: p99 under 50 ms from the acknowledgement).

Usage: python benches/bench_embedded_disk.py [--streams 100] [--tokens 150]
[--unpaced-tokens 500] [--rate 50] [--rounds 5] [--batch-size 10] [--linger-ms 100]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from resumable_fast import (
    Backend,
    EmbeddedBackend,
    EmbeddedStore,
    ResumableStreamContext,
    SqliteStore,
)
from resumable_fast.config import BatchSettings
from resumable_fast.records import NO_LANDING, Landing, SequencedRecord, StreamName

from workload import stream_offset, stream_tokens

MEMORY, DATA_DIR = "in-memory", "data_dir"
CPU_TARGET = 1.5  # data_dir / in-memory CPU per token, at 100 streams
LIVE_TAIL_TARGET_MS = 50.0  # p99, acknowledgement to the other process's reader
WARM_UP = "~"  # the followed streams' first chunk: the reader is following
clock = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process on Linux


@dataclass(frozen=True)
class Load:
    name: str
    streams: int
    tokens: int
    rate: float  # tokens/s per stream; 0: unpaced


@dataclass
class Run:
    tokens: int
    cpu_s: float
    loop_cpu_s: float
    wall_s: float
    lateness_s: list[float] = field(default_factory=list)

    @property
    def cpu_us_per_token(self) -> float:
        return self.cpu_s / self.tokens * 1e6

    @property
    def loop_us_per_token(self) -> float:
        return self.loop_cpu_s / self.tokens * 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class TimedBackend:
    """A :class:`Backend` that reports each append's acknowledgement: when
    the inner backend's ``append`` returned, and the data text it carried."""

    def __init__(self, inner: Backend, on_ack: Callable[[str, int, int], None]) -> None:
        self.inner = inner
        self.on_ack = on_ack
        self.description = inner.description
        self.kind = inner.kind

    async def append(
        self, name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        await self.inner.append(name, append_input, landing)
        acked = clock()
        # S2's AppendInput JSON: data records are the header-less ones.
        records = orjson.loads(append_input)["records"]
        text = sum(len(record.get("body", "")) for record in records if "headers" not in record)
        self.on_ack(name, acked, text)

    async def last_record(self, name: StreamName) -> SequencedRecord | None:
        return await self.inner.last_record(name)

    def read_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        return self.inner.read_session(name, seq_num)

    async def delete(self, name: StreamName) -> None:
        await self.inner.delete(name)

    async def trim(self, name: StreamName, trim_point: int, match_seq_num: int) -> None:
        await self.inner.trim(name, trim_point, match_seq_num)

    async def aclose(self) -> None:
        await self.inner.aclose()


def new_backend(mode: str) -> tuple[EmbeddedBackend, Path | None]:
    """A fresh store: the in-memory one, or SQLite in a new directory."""
    if mode == MEMORY:
        return EmbeddedBackend(EmbeddedStore()), None
    directory = Path(tempfile.mkdtemp(prefix="bench-disk-"))
    return EmbeddedBackend(SqliteStore(directory)), directory


async def source(
    tokens: Sequence[str],
    rate: float,
    offset: float,
    sent_ns: list[int] | None = None,
    gate: asyncio.Event | None = None,
) -> AsyncIterator[str]:
    """Token ``i`` at ``offset + i / rate`` s after the first is asked for
    (or after ``gate`` opens), always through the loop. With ``gate``, a
    warm-up chunk comes first."""
    loop = asyncio.get_running_loop()
    if gate is not None:
        yield WARM_UP
        await gate.wait()
    interval = 1 / rate if rate > 0 else 0.0
    start = loop.time() + offset
    for index, token in enumerate(tokens):
        delay = start + index * interval - loop.time() if interval else 0.0
        await asyncio.sleep(max(delay, 0.0))
        if sent_ns is not None:
            sent_ns.append(clock())
        yield token


async def produce(
    load: Load,
    mode: str,
    batching: BatchSettings,
    *,
    ticker: bool,
    opened: Callable[[], None] | None = None,
) -> Run:
    """One run; ``opened`` is called once the store is open, before the streams."""
    backend, directory = new_backend(mode)
    context = ResumableStreamContext(backend, batching)
    if opened is not None:
        opened()
    tokens = [stream_tokens(index, load.tokens) for index in range(load.streams)]
    lateness: list[float] = []
    done = asyncio.Event()

    async def tick() -> None:
        while not done.is_set():
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            lateness.append(max(0.0, time.perf_counter() - due))

    async def one(index: int) -> None:
        offset = stream_offset(index, load.streams, load.rate)
        stream = await context.create_new_resumable_stream(
            f"disk-{index}", lambda: source(tokens[index], load.rate, offset)
        )
        text = "".join([chunk async for chunk in stream])
        if text != "".join(tokens[index]):
            raise RuntimeError(f"stream disk-{index}: the client's text differs")

    try:
        gc.collect()
        ticking = asyncio.ensure_future(tick()) if ticker else None
        cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(load.streams)))
        run = Run(
            load.streams * load.tokens,
            time.process_time() - cpu,
            time.thread_time() - loop_cpu,
            time.perf_counter() - wall,
            lateness,
        )
        done.set()
        if ticking is not None:
            await ticking
    finally:
        await context.aclose()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    return run


# -- writes off the loop ---------------------------------------------------------


@dataclass
class Statements:
    total: int = 0
    in_transaction: int = 0


def count_statements(load: Load, mode: str, batching: BatchSettings) -> dict[str, Statements]:
    """Every sqlite3 call of one run (statements run, rows fetched), by thread
    name: how many, and how many inside a write transaction (at the call, or
    at its return for the ``BEGIN`` that opens one)."""
    counts: dict[str, Statements] = {}
    names = {
        "execute",
        "executemany",
        "executescript",
        "fetchone",
        "fetchmany",
        "fetchall",
        "commit",
        "rollback",
    }
    counted_at_call: dict[int, bool] = {}

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event not in ("c_call", "c_return") or getattr(arg, "__name__", None) not in names:
            return
        owner = getattr(arg, "__self__", None)
        if isinstance(owner, sqlite3.Cursor):
            owner = owner.connection
        if not isinstance(owner, sqlite3.Connection):
            return
        entry = counts.setdefault(threading.current_thread().name, Statements())
        thread = threading.get_ident()
        if event == "c_call":
            entry.total += 1
            counted_at_call[thread] = owner.in_transaction
            if owner.in_transaction:
                entry.in_transaction += 1
        elif owner.in_transaction and not counted_at_call.get(thread, False):
            entry.in_transaction += 1

    async def profiled() -> None:
        # The loop's thread, once the store is open (opening runs its schema
        # transaction in the thread that constructs it, once).
        try:
            await produce(
                load, mode, batching, ticker=False, opened=lambda: sys.setprofile(profile)
            )
        finally:
            sys.setprofile(None)

    threading.setprofile(profile)  # threads started from now on: the store's
    try:
        asyncio.run(profiled())
    finally:
        threading.setprofile(None)
    return counts


# -- the cross-process live tail ------------------------------------------------------


@dataclass
class LiveTail:
    from_ack_ms: list[float]
    from_yield_ms: list[float]
    tokens: int


def delivered_at(events: Sequence[tuple[int, int]], ends: Sequence[int]) -> list[int]:
    """For each token ending at text offset ``ends[i]``, the time of the first
    event ``(time, text so far)`` that covers it."""
    times: list[int] = []
    position = 0
    for end in ends:
        while events[position][1] < end:
            position += 1
        times.append(events[position][0])
    return times


async def live_tail(load: Load, followed: int, batching: BatchSettings) -> LiveTail:
    directory = Path(tempfile.mkdtemp(prefix="bench-disk-tail-"))
    every = max(1, load.streams // followed)
    watched = [index for index in range(0, load.streams, every)][:followed]
    ids = {index: f"tail-{index}" for index in range(load.streams)}
    acks: dict[str, list[tuple[int, int]]] = {ids[index]: [] for index in watched}
    acked_text: dict[str, int] = dict.fromkeys(acks, 0)

    def on_ack(stream: str, at: int, text: int) -> None:
        if stream in acks and text:
            acked_text[stream] += text
            acks[stream].append((at, acked_text[stream]))

    store = SqliteStore(directory)
    context = ResumableStreamContext(
        TimedBackend(EmbeddedBackend(store), on_ack),
        batching,
        share_read_sessions=store.shares_read_sessions,
    )
    tokens = [stream_tokens(index, load.tokens) for index in range(load.streams)]
    sent: dict[int, list[int]] = {index: [] for index in watched}
    gate = asyncio.Event()
    reader = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--follow",
        str(directory),
        *(ids[index] for index in watched),
        stdout=asyncio.subprocess.PIPE,
    )
    assert reader.stdout is not None

    async def one(index: int) -> None:
        offset = stream_offset(index, load.streams, load.rate)
        stream = await context.create_new_resumable_stream(
            ids[index], lambda: source(tokens[index], load.rate, offset, sent.get(index), gate)
        )
        async for _ in stream:
            pass

    try:
        producing = asyncio.gather(*(one(index) for index in range(load.streams)))
        line = await asyncio.wait_for(reader.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"the reader process did not start: {line!r}")
        gate.set()
        await producing
        output = await asyncio.wait_for(reader.stdout.read(), 60)
        if await reader.wait() != 0:
            raise RuntimeError(f"the reader process failed ({reader.returncode})")
    finally:
        if reader.returncode is None:
            reader.kill()
            await reader.wait()
        await context.aclose()
        shutil.rmtree(directory, ignore_errors=True)
    received: dict[str, list[tuple[int, int]]] = {
        stream: [(at, text) for at, text in events] for stream, events in json.loads(output).items()
    }
    from_ack: list[float] = []
    from_yield: list[float] = []
    for index in watched:
        stream = ids[index]
        # Text offsets past the warm-up chunk, where each token ends.
        ends, total = [], len(WARM_UP)
        for token in tokens[index]:
            total += len(token)
            ends.append(total)
        if received[stream][-1][1] != total:
            raise RuntimeError(f"stream {stream}: the reader got {received[stream][-1][1]} chars")
        got = delivered_at(received[stream], ends)
        acked = delivered_at(acks[stream], ends)
        from_ack += [(r - a) / 1e6 for r, a in zip(got, acked, strict=True)]
        from_yield += [(r - s) / 1e6 for r, s in zip(got, sent[index], strict=True)]
    return LiveTail(from_ack, from_yield, len(from_ack))


async def follow(directory: str, stream_ids: Sequence[str]) -> None:
    """The reader process: follow each stream live from its start; say
    ``ready`` once every one has its warm-up chunk; then print, per stream,
    ``(time, text so far)`` at each chunk received."""
    context = ResumableStreamContext(EmbeddedBackend(SqliteStore(directory)), BatchSettings())
    received: dict[str, list[tuple[int, int]]] = {}
    warmed = 0
    all_warm = asyncio.Event()

    async def one(stream_id: str) -> None:
        nonlocal warmed
        events = received[stream_id] = []
        text = 0
        async for chunk in await context.resume_stream(stream_id):
            text += len(chunk)
            events.append((clock(), text))
            if len(events) == 1:
                warmed += 1
                if warmed == len(stream_ids):
                    all_warm.set()

    try:
        following = asyncio.gather(*(one(stream_id) for stream_id in stream_ids))
        warm = asyncio.ensure_future(all_warm.wait())
        either: list[asyncio.Future[Any]] = [warm, following]
        await asyncio.wait(either, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        warm.cancel()
        print("ready", flush=True)
        await following
    finally:
        await context.aclose()
    print(json.dumps(received), flush=True)


# -- the report ----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=150, help="per paced stream")
    parser.add_argument("--unpaced-tokens", type=int, default=500, help="per unpaced stream")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s per paced stream")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=BatchSettings().batch_size)
    parser.add_argument("--linger-ms", type=float, default=BatchSettings().linger_ms)
    parser.add_argument("--follow-streams", type=int, default=10, help="followed live (0: none)")
    parser.add_argument("--follow", nargs="+", metavar=("DIR", "STREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.follow:
        asyncio.run(follow(args.follow[0], args.follow[1:]))
        return 0
    batching = BatchSettings(batch_size=args.batch_size, linger_ms=args.linger_ms)
    loads = [
        Load(f"paced {args.rate:g} tok/s", args.streams, args.tokens, args.rate),
        Load("unpaced", args.streams, args.unpaced_tokens, 0.0),
    ]
    began = time.perf_counter()
    cpu_runs: dict[tuple[str, str], list[Run]] = {}
    tick_runs: dict[tuple[str, str], list[Run]] = {}
    for round_index in range(args.rounds):
        modes = (MEMORY, DATA_DIR) if round_index % 2 == 0 else (DATA_DIR, MEMORY)
        for load in loads:
            for mode in modes:
                print(f"round {round_index + 1}: {load.name}: {mode}", file=sys.stderr, flush=True)
                key = (load.name, mode)
                cpu_runs.setdefault(key, []).append(
                    asyncio.run(produce(load, mode, batching, ticker=False))
                )
                tick_runs.setdefault(key, []).append(
                    asyncio.run(produce(load, mode, batching, ticker=True))
                )
    print("writes off the loop: profiled runs", file=sys.stderr, flush=True)
    check = Load("unpaced, profiled", args.streams, 20, 0.0)
    statements = {mode: count_statements(check, mode, batching) for mode in (MEMORY, DATA_DIR)}
    tail: LiveTail | None = None
    if args.follow_streams > 0:
        print("cross-process live tail", file=sys.stderr, flush=True)
        tail = asyncio.run(live_tail(loads[0], args.follow_streams, batching))
    report(args, loads, cpu_runs, tick_runs, statements, tail, time.perf_counter() - began)
    return 0


def report(
    args: argparse.Namespace,
    loads: Sequence[Load],
    cpu_runs: dict[tuple[str, str], list[Run]],
    tick_runs: dict[tuple[str, str], list[Run]],
    statements: dict[str, dict[str, Statements]],
    tail: LiveTail | None,
    elapsed: float,
) -> None:
    med = statistics.median
    print(
        f"embedded store: in memory vs data_dir (SQLite), {args.streams} streams each read by "
        f"its producer client, batch size {args.batch_size}, linger {args.linger_ms:g} ms; "
        f"{args.rounds} interleaved rounds, medians"
    )
    print()
    header = (
        f"{'load':24} {'store':10} {'CPU µs/token':>12} {'loop thread':>11} {'other':>7} "
        f"{'lateness p50':>12} {'p99':>8} {'max':>8}  (ms)"
    )
    print(header)
    print("-" * len(header))
    verdicts: list[str] = []
    for load in loads:
        label = f"{load.name}, {load.tokens} tok"
        for mode in (MEMORY, DATA_DIR):
            runs, ticks = cpu_runs[(load.name, mode)], tick_runs[(load.name, mode)]
            cpu = med(run.cpu_us_per_token for run in runs)
            loop = med(run.loop_us_per_token for run in runs)
            late = [run.lateness_s for run in ticks]
            print(
                f"{label:24} {mode:10} {cpu:12.1f} {loop:11.1f} {cpu - loop:7.1f} "
                f"{med(percentile(v, 0.5) for v in late) * 1e3:12.3f} "
                f"{med(percentile(v, 0.99) for v in late) * 1e3:8.3f} "
                f"{med(max(v) for v in late) * 1e3:8.3f}"
            )
            label = ""
        memory = [run.cpu_us_per_token for run in cpu_runs[(load.name, MEMORY)]]
        disk = [run.cpu_us_per_token for run in cpu_runs[(load.name, DATA_DIR)]]
        ratio = med(disk) / med(memory)
        per_round = [d / m for d, m in zip(disk, memory, strict=True)]
        met = "met" if ratio <= CPU_TARGET else "MISSED"
        print(
            f"{'':24} ratio data_dir / in-memory CPU per token: {ratio:.2f}x "
            f"(rounds {min(per_round):.2f}x to {max(per_round):.2f}x); "
            f"target <= {CPU_TARGET}x: {met}"
        )
        verdicts.append(f"CPU per token, {load.name}: {ratio:.2f}x ({met})")
    print()
    print(
        f"writes off the event loop ({args.streams} streams x 20 tokens unpaced, under "
        "sys.setprofile): sqlite3 calls by thread, inside a write transaction / all"
    )
    off_loop = True
    loop_name = threading.main_thread().name  # asyncio.run's loop runs there
    for mode, by_thread in statements.items():
        loop_thread = by_thread.get(loop_name, Statements())
        cells = [f"{loop_name} (the loop): {loop_thread.in_transaction} / {loop_thread.total}"]
        cells += [
            f"{name}: {entry.in_transaction} / {entry.total}"
            for name, entry in sorted(by_thread.items())
            if name != loop_name
        ]
        print(f"  {mode:10} " + "; ".join(cells))
        if loop_thread.in_transaction:
            off_loop = False
    worst_late = max(
        med(percentile(run.lateness_s, 0.99) for run in tick_runs[(load.name, DATA_DIR)])
        for load in loads
    )
    print(
        f"  -> writes ran off the event loop: {'yes' if off_loop else 'NO'} "
        f"(data_dir's worst lateness p99: {worst_late * 1e3:.3f} ms)"
    )
    verdicts.append(f"writes off the loop: {'yes' if off_loop else 'NO'}")
    if tail is not None:
        print()
        ack = tail.from_ack_ms
        sent = tail.from_yield_ms
        met = "met" if percentile(ack, 0.99) < LIVE_TAIL_TARGET_MS else "MISSED"
        print(
            f"cross-process live tail: a reader in a second process follows "
            f"{args.follow_streams} of the {loads[0].streams} streams ({loads[0].name}) on the "
            f"same data_dir; {tail.tokens} tokens"
        )
        for name, values in (
            ("append acknowledged -> reader has it", ack),
            ("source yielded -> reader has it", sent),
        ):
            print(
                f"  {name:38} p50 {percentile(values, 0.5):7.2f} ms   "
                f"p99 {percentile(values, 0.99):7.2f} ms   max {max(values):7.2f} ms"
            )
        print(f"  target p99 < {LIVE_TAIL_TARGET_MS:g} ms from the acknowledgement: {met}")
        verdicts.append(f"live tail p99 {percentile(ack, 0.99):.2f} ms ({met})")
    print()
    print("summary: " + "; ".join(verdicts) + f" (run took {elapsed:.0f} s)")


if __name__ == "__main__":
    sys.exit(main())
