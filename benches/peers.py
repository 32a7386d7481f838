"""Python peers of the side-by-side benchmark (issue 5): one process, one peer.

Usage::

    python benches/peers.py PEER --streams N --tokens T --rate R
        [--batch-size B] [--linger-ms L] [--reader] [--hold] [--live-readers K]
        [--lag] [--seed S] [--timeout SECONDS]

``N`` concurrent streams in one asyncio process each produce ``T`` synthetic
LLM tokens (``benches/workload.py``), paced at ``R`` tokens/s per stream
(``R`` = 0: unpaced, the source still yields to the event loop once per token,
as a source reading a socket would). Each stream's producer client reads its
stream to the end; the latency of a token is the time from the source
yielding it to that client receiving it (``time.perf_counter_ns``). Afterwards
every stream (or 20 sampled when N > 100) is resumed from the start and its
text compared with what was produced; with ``--reader`` those resumes of
finished streams, run one at a time, are timed to the first chunk and to the
full text. With ``--live-readers K``, each stream also gets ``K`` readers
resumed from its start as soon as it exists, which follow it live to its
end; their texts are checked too, and their work counts in the produce phase.
With ``--lag`` (``benches/lag.py``), the peer reports as they arrive how many
of each stream's tokens the store has acknowledged, and a second peer of the
same kind, with a client of its own (another context), follows every stream
live; each token's persistence lag (yield to acknowledged) and live-reader lag
(yield to that reader having it) are taken, p50 and p99.

Peers (``PEERS``):

* ``raw``: the source handed straight to the client, nothing persisted (the floor).
* ``raw_task``: the source in a task of its own, each chunk handed to the
  client through a channel, nothing persisted; ``s2_floor``: that plus one
  bare append per batch to S2 (``benches/s2_floor.py``), the least
  persisting on S2 costs.
* ``resumable_fast_s2``, ``resumable_fast_embedded`` (in memory),
  ``resumable_fast_embedded_dir`` (in a fresh ``data_dir``: SQLite, its
  writer thread's CPU counted with the process's): this library;
  ``resumable_fast_s2_unshared``: on S2 with a read session per reader
  (``share_read_sessions=False``). Each context is made on a backend that
  counts its appends (``ResumableStreamContext(backend, ...)``).
* ``pure_python``: this library with its native accumulator swapped for the
  pure-Python twin (``benches/pure_python_core.py``), given through the
  context's ``accumulator`` seam; same layout, same S2 client, so the only
  difference from ``resumable_fast_s2`` is the core.
* ``s2sdk_naive``, ``s2sdk_producer``: S2's official Python SDK (``s2-sdk``)
  doing the same tee and fence layout, with one unary append per token, or
  with the SDK's ``Producer`` (batching over an append session) at the same
  batch size and linger.
* the peers on Redis (``benches/redis_peers.py``): the Python packages on PyPI
  that make streams resumable on Redis, and Redis Streams by hand; they read
  ``REDIS_URL``.

Every S2 peer reads ``S2_ACCESS_TOKEN``, ``S2_BASIN``, ``S2_ACCOUNT_ENDPOINT`` and
``S2_BASIN_ENDPOINT``. One process runs one peer (the SDK peers wrap SDK
methods to count requests).

Output: one JSON line on stdout with ``peer``, ``versions``, ``config``,
``tokens``, ``wall_s`` and ``cpu_s`` (``time.process_time``) of the produce
phase (and of ``Peer.release``: ending streams held open to be resumed),
``latency_us`` (p50/p99), ``resume_first_chunk_ms`` and ``resume_full_ms``
(p50/p99 with ``--reader``, else null), ``requests`` (HTTP requests, or Redis
round trips, sent in the produce phase), ``appends`` (append batches in it,
fences included), ``rss_kib`` (growth of the peak RSS over it), ``rss_in_flight_kib``
(with ``--hold``: every source pauses halfway until all streams got there;
then, after the linger plus 2 s, the growth of the current RSS over its value
before the run; that pause is left out of ``wall_s``), ``persistence_lag_ms``
and ``reader_lag_ms`` (p50/p99 with ``--lag``, else null) and ``verified``.
Progress goes to stderr. The exit status is 1 when the run fails or a
stream's text does not match.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import json
import logging
import math
import os
import random
import resource
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from resumable_fast import (
    EmbeddedBackend,
    EmbeddedStore,
    ResumableStreamContext,
    SqliteStore,
)
from resumable_fast.backends import Backend
from resumable_fast.config import BatchSettings, S2Config
from resumable_fast.endpoints import Origin
from resumable_fast.http11 import HttpClient, Request, Response, StreamingResponse
from resumable_fast.records import NO_LANDING, Landing, SequencedRecord, StreamName
from resumable_fast.s2 import S2Client
from resumable_fast.s2_transport import DelegatingHttp, http_settings
from resumable_fast.scheduling import BatchAccumulator, native_accumulator
from resumable_fast.streams import ChunkChannel, ProducerStream

import pure_python_core
from lag import LagProbe
from peer_base import ChannelPeer, Counters, Options, Peer
from redis_peers import REDIS_PEERS
from s2_floor import s2_floor
from workload import SEED, stream_offset, stream_tokens

if TYPE_CHECKING:
    from s2_sdk import S2, AppendInput, Batching, S2Basin, S2Stream

logger = logging.getLogger("peers")

VERIFY_ALL_UP_TO = 100  # streams; above that, VERIFY_SAMPLE sampled ones
VERIFY_SAMPLE = 20
DEFAULT_BATCH_SIZE = 100  # the library's defaults (README, Configuration)
DEFAULT_LINGER_MS = 200.0
# With --hold: how long after every stream is held (beyond the linger) before
# RSS is sampled, so batches flushed by the linger have landed. Same in common.mjs.
HOLD_SETTLE_MS = 2000


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"  # e.g. resumable_fast run from the source tree


def _new_token(prefix: str) -> str:
    # As the library does: 24 hex digits, so a fence fits S2's 36 bytes.
    return prefix + secrets.token_hex(12)


# -- raw ------------------------------------------------------------------------


class RawPeer(Peer):
    persists = False

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        return source


async def raw(options: Options) -> Peer:
    return RawPeer({})


class RawTaskPeer(ChannelPeer):
    """The source driven by a task of its own, each chunk handed to the client
    through a channel: the floor of the one task-to-task handoff that keeping
    a source in its own task costs (what the library does, minus persisting)."""

    persists = False

    async def drive(
        self, stream_id: str, source: AsyncIterator[str], channel: ChunkChannel
    ) -> None:
        try:
            async for chunk in source:
                channel.put(chunk)
        finally:
            channel.close()


async def raw_task(options: Options) -> Peer:
    return RawTaskPeer({})


# -- resumable_fast -------------------------------------------------------------


class CountingBackend:
    """A :class:`Backend` that counts the appends passed to another one."""

    def __init__(self, inner: Backend, counters: Counters) -> None:
        self.inner = inner
        self.counters = counters
        self.description = inner.description
        self.kind = inner.kind
        # With --lag: told each stream's tail as its appends land.
        self.lag: LagProbe | None = None

    async def append(
        self, name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        self.counters.appends += 1
        await self.inner.append(name, append_input, landing)
        lag = self.lag
        if lag is not None and landing.end_seq_num is not None:
            # The tail once this landed: the session fence is at 0 and the
            # tokens from 1 (no heartbeat at these rates), so the tail less
            # one is how many tokens are acknowledged.
            lag.acked(name, landing.end_seq_num - 1)

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


class CountingHttp(DelegatingHttp):
    """An :class:`HttpClient` for an S2Client's ``http=`` that counts the
    requests sent through it: one per attempt of a unary call, one per read
    session opened."""

    def __init__(self, inner: HttpClient, counters: Counters) -> None:
        super().__init__(inner)
        self.counters = counters

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response:
        self.counters.requests += 1
        return await self.inner.request(origin, request, idempotent=idempotent, timeout=timeout)

    def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        self.counters.requests += 1
        return self.inner.stream(origin, request, timeout=timeout)


class LibraryPeer(Peer):
    """This library on ``backend``: the context is made on a
    :class:`CountingBackend` over it, so every append is counted;
    ``counters``, when given, are those the backend also counts its
    requests in (see :func:`_s2_peer`)."""

    def __init__(
        self,
        backend: Backend,
        options: Options,
        versions: dict[str, str],
        *,
        counters: Counters | None = None,
        share_read_sessions: bool | None = None,
        data_dir: Path | None = None,
        accumulator: Callable[[BatchSettings], BatchAccumulator] = native_accumulator,
    ) -> None:
        super().__init__(versions)
        if counters is not None:
            self.counters = counters
        if share_read_sessions is None and isinstance(backend, EmbeddedBackend):
            # The context's default, which it can no longer see through the
            # counting wrapper: shared sessions where a read is a query.
            share_read_sessions = backend.store.shares_read_sessions
        batching = BatchSettings.from_options(
            batch_size=options.batch_size, linger_ms=options.linger_ms
        )
        self.backend = CountingBackend(backend, self.counters)
        self.context = ResumableStreamContext(
            self.backend,
            batching,
            share_read_sessions=share_read_sessions,
            accumulator=accumulator(batching),
        )
        # A directory of this run's alone, removed when the peer closes.
        self.data_dir = data_dir

    def watch(self, probe: LagProbe) -> None:
        super().watch(probe)
        self.backend.lag = probe

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        stream = await self.context.resumable_stream(stream_id, lambda: source)
        if stream is None:
            raise RuntimeError(f"stream {stream_id!r} is already finished")
        return stream

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        return await self.context.resume_stream(stream_id)

    async def aclose(self) -> None:
        try:
            await self.context.aclose()
        finally:
            if self.data_dir is not None:
                shutil.rmtree(self.data_dir, ignore_errors=True)


def _library_versions() -> dict[str, str]:
    return {
        "resumable_fast": _version("resumable_fast"),
        # What the library runs on (httpx is only the benchmark's).
        "httptools": _version("httptools"),
        "orjson": orjson.__version__,
    }


def _s2_peer(
    options: Options,
    versions: dict[str, str],
    *,
    share_read_sessions: bool | None = None,
    accumulator: Callable[[BatchSettings], BatchAccumulator] = native_accumulator,
) -> LibraryPeer:
    """This library on what ``create_resumable_stream_context(backend="s2")``
    makes (S2 as the environment names it), its HTTP requests counted."""
    config = S2Config.from_options()
    counters = Counters()
    http = CountingHttp(HttpClient(http_settings(config)), counters)
    return LibraryPeer(
        S2Client(config, http=http),
        options,
        versions,
        counters=counters,
        share_read_sessions=share_read_sessions,
        accumulator=accumulator,
    )


async def resumable_fast_s2(options: Options) -> Peer:
    return _s2_peer(options, _library_versions())


async def resumable_fast_s2_unshared(options: Options) -> Peer:
    """Every reader with a read session of its own (the comparison for the
    live-readers scenario)."""
    return _s2_peer(options, _library_versions(), share_read_sessions=False)


async def resumable_fast_embedded(options: Options) -> Peer:
    """In this process's memory, as ``create_resumable_stream_context(backend="embedded")``."""
    return LibraryPeer(EmbeddedBackend(EmbeddedStore.shared()), options, _library_versions())


async def resumable_fast_embedded_dir(options: Options) -> Peer:
    """In a ``data_dir`` (SQLite), as ``create_resumable_stream_context(
    backend="embedded", data_dir=...)``: a fresh directory for each run,
    removed afterwards. The store's writer thread is in this process, so its
    CPU counts in ``cpu_s``."""
    directory = Path(tempfile.mkdtemp(prefix="bench-data-dir-"))
    return LibraryPeer(
        EmbeddedBackend(SqliteStore.shared(directory)),
        options,
        {**_library_versions(), "sqlite": sqlite3.sqlite_version},
        data_dir=directory,
    )


def _pure_python_accumulator(batching: BatchSettings) -> pure_python_core.Accumulator:
    return pure_python_core.Accumulator(
        batching.batch_size, batching.max_batch_bytes, float(batching.linger_ms)
    )


async def pure_python(options: Options) -> Peer:
    """This library on S2 with the pure-Python twin of its native accumulator,
    which has the same API and frames byte-identically, given to the context
    through its ``accumulator`` seam. The fences, and the merging of batches
    queued behind an append, are still the native core's
    (``_core.fence_append_input``, ``_core.merge_append_inputs``)."""
    return _s2_peer(
        options,
        {**_library_versions(), "core": "benches/pure_python_core.py"},
        accumulator=_pure_python_accumulator,
    )


# -- S2's Python SDK ------------------------------------------------------------


def _sdk_endpoint(variable: str) -> str | None:
    value = os.environ.get(variable, "").strip().rstrip("/")
    # The SDK takes an origin and adds /v1 itself; ours accepts either.
    return value.removesuffix("/v1") or None


def _count_sdk_calls(counters: Counters) -> None:
    """Counts every HTTP/2 request the SDK sends (each opens one HTTP/2 stream
    with a HEADERS frame, unary or streaming, retries included) and every batch
    its append sessions submit, by wrapping the SDK's own methods."""
    from s2_sdk._append_session import AppendSession
    from s2_sdk._client import Connection

    send_headers = Connection.send_headers
    submit = AppendSession.submit

    async def counted_send_headers(self: Connection, *args: Any, **kwargs: Any) -> int:
        counters.requests += 1
        stream_id: int = await send_headers(self, *args, **kwargs)
        return stream_id

    async def counted_submit(self: AppendSession, inp: AppendInput) -> Any:
        counters.appends += 1
        return await submit(self, inp)

    # Patched through setattr so this type-checks with and without the SDK
    # installed (`make lint` runs without the benchmark-only packages).
    for owner, name, replacement in (
        (Connection, "send_headers", counted_send_headers),
        (AppendSession, "submit", counted_submit),
    ):
        setattr(owner, name, replacement)


class SdkPeer(Peer):
    """The layout on S2's SDK: tail check, session fence at seq 0 (token ``""``,
    ``match_seq_num`` 0), data records under the session token from seq 1 with
    ``match_seq_num``, then an ``end-`` fence. The client gets each chunk at
    once; its stream ends once the end fence has landed, as with the library."""

    def __init__(self, options: Options, *, batched: bool) -> None:
        from s2_sdk import S2, Batching, Endpoints, Timeout

        super().__init__(
            {name: _version(name) for name in ("s2-sdk", "h2", "protobuf", "zstandard")}
        )
        account, basin_endpoint = (
            _sdk_endpoint("S2_ACCOUNT_ENDPOINT"),
            _sdk_endpoint("S2_BASIN_ENDPOINT"),
        )
        endpoints = (
            Endpoints(account=account, basin=basin_endpoint)
            if account and basin_endpoint
            else Endpoints.default()
        )
        basin = os.environ.get("S2_BASIN")
        if not basin:
            raise RuntimeError("S2_BASIN is not set")
        # The library's request timeout (30 s) rather than the SDK's 5 s: with
        # thousands of streams on two cores an ack can take longer, and the
        # SDK's retry of an append that landed then fails its match_seq_num.
        self.s2: S2 = S2(
            os.environ.get("S2_ACCESS_TOKEN", ""),
            endpoints=endpoints,
            timeout=Timeout(request=timedelta(seconds=30), connection=timedelta(seconds=10)),
        )
        self.basin: S2Basin = self.s2.basin(basin)
        self.batched = batched
        self.batching: Batching = Batching(
            max_records=options.batch_size, linger=timedelta(milliseconds=options.linger_ms)
        )
        self.tasks: set[asyncio.Task[None]] = set()
        _count_sdk_calls(self.counters)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("producer task failed: %r", task.exception())

    async def _append(self, stream: S2Stream, inp: AppendInput) -> None:
        self.counters.appends += 1
        await stream.append(inp)

    async def _end(self, stream: S2Stream, token: str) -> None:
        from s2_sdk import AppendInput, CommandRecord

        fence = CommandRecord.fence(_new_token("end-"))
        await self._append(stream, AppendInput(records=[fence], fencing_token=token))

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        from s2_sdk import AppendInput, CommandRecord, ReadLimit, ReadUnwrittenError, TailOffset

        stream = self.basin.stream(stream_id)
        try:
            await stream.read(start=TailOffset(1), limit=ReadLimit(count=1))
        except ReadUnwrittenError:
            pass  # empty: nobody produces it yet
        else:
            raise RuntimeError(f"stream {stream_id!r} already has records")
        token = _new_token("session-")
        session_fence = AppendInput(
            records=[CommandRecord.fence(token)], fencing_token="", match_seq_num=0
        )
        await self._append(stream, session_fence)
        channel = ChunkChannel()
        if self.batched:
            self._spawn(self._produce_batched(stream_id, stream, token, source, channel))
        else:
            queue: asyncio.Queue[str | None] = asyncio.Queue()
            self._spawn(self._pump(source, channel, queue))
            self._spawn(self._write_each(stream_id, stream, token, queue, channel))
        return ProducerStream(stream_id, channel)

    async def _pump(
        self, source: AsyncIterator[str], channel: ChunkChannel, queue: asyncio.Queue[str | None]
    ) -> None:
        try:
            async for chunk in source:
                channel.put(chunk)
                queue.put_nowait(chunk)
        finally:
            queue.put_nowait(None)

    async def _write_each(
        self,
        stream_id: str,
        stream: S2Stream,
        token: str,
        queue: asyncio.Queue[str | None],
        channel: ChunkChannel,
    ) -> None:
        """Naive: one unary append per token, one in flight, in order."""
        from s2_sdk import AppendInput, Record

        seq_num = 1
        try:
            while (chunk := await queue.get()) is not None:
                record = Record(body=chunk.encode())
                inp = AppendInput(records=[record], fencing_token=token, match_seq_num=seq_num)
                await self._append(stream, inp)
                if self.lag is not None:
                    self.lag.acked(stream_id, seq_num)
                seq_num += 1
            await self._end(stream, token)
        except BaseException as exc:
            channel.close(exc)
            raise
        channel.close()

    async def _produce_batched(
        self,
        stream_id: str,
        stream: S2Stream,
        token: str,
        source: AsyncIterator[str],
        channel: ChunkChannel,
    ) -> None:
        """The SDK's Producer: per-record submit, batched by count, bytes and linger."""
        from s2_sdk import Record

        producer = stream.producer(fencing_token=token, match_seq_num=1, batching=self.batching)
        lag = self.lag
        try:
            submit = producer.submit
            submitted = 0
            async for chunk in source:
                channel.put(chunk)
                ticket = await submit(Record(body=chunk.encode()))
                submitted += 1
                if lag is not None:
                    # A task per record, only with --lag: its ticket resolves
                    # once the SDK's batch holding it is acknowledged.
                    self._spawn(_acked_when(ticket, lag, stream_id, submitted))
            await producer.close()
            await self._end(stream, token)
        except BaseException as exc:
            channel.close(exc)
            raise
        channel.close()

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        return self._read(stream_id)

    async def _read(self, stream_id: str) -> AsyncGenerator[str, None]:
        from s2_sdk import SeqNum

        session = self.basin.stream(stream_id).read_session(start=SeqNum(0))
        try:
            async for batch in session:
                for record in batch.records:
                    if record.is_command_record():
                        if record.body.startswith(b"end-"):
                            return
                        if record.body.startswith(b"error-"):
                            raise RuntimeError(f"stream {stream_id!r} ended with an error fence")
                    elif record.body:
                        yield record.body.decode()
        finally:
            await session.close()

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.s2.close()


async def _acked_when(
    ticket: Awaitable[object], lag: LagProbe, stream_id: str, tokens: int
) -> None:
    await ticket
    lag.acked(stream_id, tokens)


async def s2sdk_naive(options: Options) -> Peer:
    return SdkPeer(options, batched=False)


async def s2sdk_producer(options: Options) -> Peer:
    return SdkPeer(options, batched=True)


PEERS: dict[str, Callable[[Options], Awaitable[Peer]]] = {
    "raw": raw,
    "resumable_fast_s2": resumable_fast_s2,
    "resumable_fast_embedded": resumable_fast_embedded,
    "resumable_fast_embedded_dir": resumable_fast_embedded_dir,
    "resumable_fast_s2_unshared": resumable_fast_s2_unshared,
    "pure_python": pure_python,
    "s2sdk_naive": s2sdk_naive,
    "s2sdk_producer": s2sdk_producer,
    "raw_task": raw_task,
    "s2_floor": s2_floor,
    **REDIS_PEERS,
}


# -- the run --------------------------------------------------------------------


@dataclass
class HoldPoint:
    """With ``--hold``: every source stops halfway until all of them got there,
    so that every stream is in flight at once while memory is sampled."""

    streams: int
    held: int = 0

    def __post_init__(self) -> None:
        self.all_held = asyncio.Event()
        self.release = asyncio.Event()

    async def wait(self) -> None:
        self.held += 1
        if self.held == self.streams:
            self.all_held.set()
        await self.release.wait()


async def paced_source(
    tokens: Sequence[str],
    sent_ns: list[int],
    rate: float,
    offset: float,
    hold: HoldPoint | None = None,
) -> AsyncIterator[str]:
    """Yields the tokens, token ``i`` at ``offset + i / rate`` seconds after the
    first is asked for (at once when ``rate`` is 0), always through the event
    loop. Records when each one is yielded. With ``hold``, waits at it before
    the second half of the tokens."""
    loop = asyncio.get_running_loop()
    clock = time.perf_counter_ns
    interval = 1 / rate if rate > 0 else 0.0
    start = loop.time() + offset
    hold_at = len(tokens) // 2 if hold is not None else -1
    for index, token in enumerate(tokens):
        if index == hold_at and hold is not None:
            await hold.wait()
            start = loop.time() - index * interval
        delay = start + index * interval - loop.time() if interval else 0.0
        await asyncio.sleep(max(delay, 0.0))
        sent_ns.append(clock())
        yield token


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p99 by nearest rank."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.50), "p99": rank(0.99)}


def max_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def current_rss_kib() -> int:
    """The resident set size now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


async def run(options: Options) -> tuple[dict[str, Any], bool]:
    peer = await PEERS[options.peer](options)
    # With --lag, a second peer of the same kind, with its own client: the
    # reader in another context.
    follower = await _follower_of(peer, options) if options.lag else None
    try:
        return await measure(peer, options, follower)
    finally:
        await peer.aclose()
        if follower is not None:
            await follower.aclose()


async def _follower_of(peer: Peer, options: Options) -> Peer:
    """Another peer of ``peer``'s kind, on the same store: with a client of
    its own (S2), or another context on the same ``data_dir``, as a second
    worker of the machine has (the directory stays ``peer``'s to remove)."""
    if isinstance(peer, LibraryPeer) and peer.data_dir is not None:
        return LibraryPeer(
            EmbeddedBackend(SqliteStore.shared(peer.data_dir)), options, _library_versions()
        )
    return await PEERS[options.peer](options)


async def measure(
    peer: Peer, options: Options, follower: Peer | None = None
) -> tuple[dict[str, Any], bool]:
    """Run the scenario on ``peer``; with ``follower`` (``--lag``), that peer
    follows every stream live and the lag of each token is measured."""
    count = options.streams
    tokens = [stream_tokens(index, options.tokens, options.seed) for index in range(count)]
    texts = ["".join(stream) for stream in tokens]
    run_id = secrets.token_hex(4)
    stream_ids = [f"bench-{options.peer}-{run_id}-{index}" for index in range(count)]
    latencies_ns: list[int] = []
    received: list[str] = [""] * count
    followed: list[list[str]] = [[] for _ in range(count)]
    hold = HoldPoint(count) if options.hold else None
    probe = LagProbe() if follower is not None else None
    if probe is not None:
        peer.watch(probe)

    async def follow(index: int) -> None:
        parts = [chunk async for chunk in await peer.resume(stream_ids[index])]
        followed[index].append("".join(parts))

    async def follow_elsewhere(index: int, probe: LagProbe, follower: Peer) -> None:
        """The reader in another context: how much of the text it has, when."""
        parts: list[str] = []
        size = 0
        async for chunk in await follower.resume(stream_ids[index]):
            parts.append(chunk)
            size += len(chunk)
            probe.received(stream_ids[index], size)
        followed[index].append("".join(parts))

    async def produce_one(index: int) -> None:
        sent_ns: list[int] = []
        offset = stream_offset(index, count, options.rate)
        source = paced_source(tokens[index], sent_ns, options.rate, offset, hold)
        if probe is not None:
            probe.track(stream_ids[index], tokens[index], sent_ns)
        client = await peer.produce(stream_ids[index], source)
        # Live readers, resumed from the start as soon as the stream exists;
        # their work counts with the produce phase.
        readers = [follow(index) for _ in range(options.live_readers)]
        if probe is not None and follower is not None:
            readers.append(follow_elsewhere(index, probe, follower))
        reading = asyncio.gather(*readers) if readers else None
        clock = time.perf_counter_ns
        keep = latencies_ns.append
        parts: list[str] = []
        async for chunk in client:
            keep(clock() - sent_ns[len(parts)])
            parts.append(chunk)
        received[index] = "".join(parts)
        if reading is not None:
            await reading

    print(
        f"{options.peer}: producing {count} streams x {options.tokens} tokens "
        f"at {options.rate or 'unpaced'} tokens/s",
        file=sys.stderr,
    )
    gc.collect()
    rss_before = max_rss_kib()
    rss_baseline = current_rss_kib()
    rss_in_flight: int | None = None
    settle_s = 0.0
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    everything = asyncio.gather(*(produce_one(index) for index in range(count)))
    if hold is not None:
        # A producer that fails before its hold point fails the run at once,
        # not after the timeout that the others would wait at it.
        held = asyncio.ensure_future(hold.all_held.wait())
        await asyncio.wait(
            (held, everything), timeout=options.timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not held.done():
            # Let the sources go on, so that the peer can end its producers and close.
            hold.release.set()
            held.cancel()
            if everything.done():
                everything.result()
            raise TimeoutError(f"streams not all held within {options.timeout} s")
        # Every stream is mid-reply; let lingering batches go out, then sample.
        settle_s = (options.linger_ms + HOLD_SETTLE_MS) / 1000
        await asyncio.sleep(settle_s)
        rss_in_flight = current_rss_kib() - rss_baseline
        hold.release.set()
    try:
        await asyncio.wait_for(everything, options.timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"produce phase not done within {options.timeout} s") from None
    wall_s = time.perf_counter() - wall_before - settle_s
    cpu_s = time.process_time() - cpu_before
    rss_kib = max_rss_kib() - rss_before
    requests, appends = peer.counters.requests, peer.counters.appends
    print(f"{options.peer}: produced in {wall_s:.3f} s (CPU {cpu_s:.3f} s)", file=sys.stderr)

    mismatched = [stream_ids[i] for i in range(count) if received[i] != texts[i]]
    mismatched += [
        f"{stream_ids[i]} (live reader)"
        for i in range(count)
        for text in followed[i]
        if text != texts[i]
    ]
    first_ms: list[float] = []
    full_ms: list[float] = []
    if peer.persists:
        sample = list(range(count))
        if count > VERIFY_ALL_UP_TO:
            sample = sorted(random.Random(options.seed).sample(sample, VERIFY_SAMPLE))
        for index in sample:
            first, full, text = await asyncio.wait_for(
                timed_resume(peer, stream_ids[index]), options.timeout
            )
            if text != texts[index]:
                mismatched.append(f"{stream_ids[index]} (resumed)")
            first_ms.append(first)
            full_ms.append(full)
        print(f"{options.peer}: resumed {len(sample)} streams", file=sys.stderr)
        # Ending the streams that a peer kept open to be resumed is producing
        # work: counted with the produce phase.
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        requests_before = peer.counters.requests
        await asyncio.wait_for(peer.release(), options.timeout)
        wall_s += time.perf_counter() - wall_before
        cpu_s += time.process_time() - cpu_before
        requests += peer.counters.requests - requests_before
    for stream_id in mismatched:
        print(f"{options.peer}: text mismatch in {stream_id}", file=sys.stderr)
    verified = not mismatched
    if probe is not None and not probe.complete():
        print(f"{options.peer}: some tokens were never acknowledged or read", file=sys.stderr)
        verified = False

    timed = options.reader and peer.persists
    result: dict[str, Any] = {
        "peer": options.peer,
        "versions": peer.versions,
        "config": {
            "streams": options.streams,
            "tokens": options.tokens,
            "rate": options.rate,
            "batch_size": options.batch_size,
            "linger_ms": options.linger_ms,
            "reader": options.reader,
            "seed": options.seed,
            "hold": options.hold,
            "live_readers": options.live_readers,
        },
        "tokens": count * options.tokens,
        "wall_s": round(wall_s, 4),
        "cpu_s": round(cpu_s, 4),
        "latency_us": {
            key: round(value / 1000, 1)
            for key, value in percentiles([float(ns) for ns in latencies_ns]).items()
        },
        "resume_first_chunk_ms": _rounded(percentiles(first_ms)) if timed else None,
        "resume_full_ms": _rounded(percentiles(full_ms)) if timed else None,
        "requests": requests,
        "appends": appends,
        "rss_kib": rss_kib,
        "rss_in_flight_kib": rss_in_flight,
        "persistence_lag_ms": _lag_ms(probe.persistence_ns) if probe else None,
        "reader_lag_ms": _lag_ms(probe.reader_ns) if probe else None,
        "verified": verified,
    }
    return result, verified


def _lag_ms(lags_ns: list[int]) -> dict[str, float] | None:
    return _rounded(percentiles([ns / 1e6 for ns in lags_ns])) if lags_ns else None


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 3) for key, value in values.items()}


async def timed_resume(peer: Peer, stream_id: str) -> tuple[float, float, str]:
    """Milliseconds to the first chunk and to the end of a resumed stream, and its text."""
    clock = time.perf_counter_ns
    begin = clock()
    first: int | None = None
    parts: list[str] = []
    async for chunk in await peer.resume(stream_id):
        if first is None:
            first = clock()
        parts.append(chunk)
    end = clock()
    return ((first or end) - begin) / 1e6, (end - begin) / 1e6, "".join(parts)


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="tokens/s per stream, 0: unpaced")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--linger-ms", type=float, default=DEFAULT_LINGER_MS)
    parser.add_argument("--reader", action="store_true", help="time resumes of finished streams")
    parser.add_argument(
        "--hold", action="store_true", help="hold every stream halfway; sample RSS then"
    )
    parser.add_argument(
        "--live-readers", type=int, default=0, help="readers of each stream resumed while live"
    )
    parser.add_argument(
        "--lag",
        action="store_true",
        help="measure persistence and live-reader lag (a reader per stream in another context)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per phase")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.tokens < 1 or args.rate < 0 or args.live_readers < 0:
        parser.error("--streams and --tokens must be >= 1, --rate and --live-readers >= 0")
    return Options(
        peer=args.peer,
        streams=args.streams,
        tokens=args.tokens,
        rate=args.rate,
        batch_size=args.batch_size,
        linger_ms=args.linger_ms,
        reader=args.reader,
        seed=args.seed,
        timeout=args.timeout,
        hold=args.hold,
        live_readers=args.live_readers,
        lag=args.lag,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        result, verified = asyncio.run(run(options))
    except Exception as exc:
        logger.exception("%s failed: %r", options.peer, exc)
        return 1
    print(json.dumps(result, separators=(",", ":")))
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
