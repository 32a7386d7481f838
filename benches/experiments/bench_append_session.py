"""CPU per persisted batch against one s2-lite on loopback, three ways to append
(issue 15, first lever):

* A: what we do now, ``S2Client.append`` (one unary HTTP/1.1 request per
  batch, JSON ``AppendInput`` framed by the native core, as the producer sends).
* B: one S2 append session per stream (``Content-Type: s2s/proto``) over
  HTTP/1.1: a request whose chunked body stays open and carries one
  length-prefixed protobuf ``AppendInput`` frame per batch, the acks read as
  frames from the chunked response meanwhile. A minimal client of this file,
  an :class:`asyncio.Protocol` whose response is parsed by httptools.
* C: ``S2Client.append`` with the same request path but a protobuf
  ``AppendInput`` (``Content-Type``/``Accept: application/protobuf``, set by
  the HTTP client it is given, :class:`ProtobufAppends`).

s2-lite serves both over HTTP/1.1: its append handler takes an ``s2s/proto``
body as a stream of frames whatever the HTTP version, answers 200 with its head
at once and streams an ack frame per batch while the request body stays open;
a session's connection can be reused once both bodies have ended.

Each stream starts with the producer's session fence (seq 0, fencing token
``""``, ``match_seq_num`` 0), then writes batches of 10 records of 5 bytes
each, one after another (the next once the previous is acked), every batch with
the session's fencing token and its ``match_seq_num``, as the producer writes.
Bodies are encoded before the timed phase (the cost of encoding is printed on
its own), so the figures are the transport's: client CPU is
``time.process_time`` of this process, s2-lite's is read from /proc (all its
threads' run time from ``task/*/schedstat``, ns; ``stat`` utime+stime, 10 ms
ticks, as a cross-check). Each run is verified afterwards: every stream is
read back from seq 0 and must hold the fence and every record, in order.
What a session costs per stream outside the batches (its connection, its
request head, its closing) is printed apart, with the number of batches per
stream from which it pays for itself.

Usage: python benches/experiments/bench_append_session.py [--rounds N] [--scale F]
(needs S2LITE_BIN, as ``make bench-sessions`` sets it)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, urlsplit

import httptools

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from resumable_fast import Landing, S2Config, StreamName
from resumable_fast._core import Accumulator, fence_append_input
from resumable_fast.endpoints import Origin
from resumable_fast.http11 import HttpClient, Request, Response
from resumable_fast.s2 import S2Client
from resumable_fast.s2_transport import DelegatingHttp, http_settings

from conftest import S2Lite, start_s2lite, stop_s2lite

RECORDS_PER_BATCH = 10
# Streams and the batches each writes in a run (times --scale): a run lasts
# about a second or two. One stream waits for s2-lite's flush (~6 ms) per ack.
CONCURRENCY: dict[int, int] = {1: 250, 100: 25, 1000: 5}
# Connections opened at once for sessions (outside the timed phase).
OPENING_AT_ONCE = 128
METHODS = ("A unary JSON", "B session s2s", "C unary protobuf")
UNARY_JSON, SESSION, UNARY_PROTO = METHODS


# -- protobuf, by hand (s2.v1 messages: api/src/v1/stream/proto in s2) ---------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def proto_append_input(
    bodies: list[bytes],
    *,
    fencing_token: str | None,
    match_seq_num: int | None,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """``AppendInput { repeated AppendRecord records = 1; optional uint64
    match_seq_num = 2; optional string fencing_token = 3; }`` where
    ``AppendRecord { optional uint64 timestamp = 1; repeated Header headers = 2;
    bytes body = 3; }`` and ``Header { bytes name = 1; bytes value = 2; }``."""
    header_fields = b"".join(
        _length_delimited(2, _length_delimited(1, name) + _length_delimited(2, value))
        for name, value in headers
    )
    parts = [_length_delimited(1, header_fields + _length_delimited(3, body)) for body in bodies]
    if match_seq_num is not None:
        parts.append(_varint(2 << 3) + _varint(match_seq_num))
    if fencing_token is not None:
        parts.append(_length_delimited(3, fencing_token.encode()))
    return b"".join(parts)


def proto_fence(new_token: str, fencing_token: str | None, match_seq_num: int | None) -> bytes:
    """A fence command record (header ``("", "fence")``, body the new token)."""
    return proto_append_input(
        [new_token.encode()],
        fencing_token=fencing_token,
        match_seq_num=match_seq_num,
        headers=((b"", b"fence"),),
    )


# -- the workload ------------------------------------------------------------------


def record_body(index: int) -> str:
    """The body of a stream's ``index``-th data record (seq ``index + 1``): 5 bytes."""
    return f"w{index % 10000:04d}"


def batch_bodies(batch: int) -> list[str]:
    first = batch * RECORDS_PER_BATCH
    return [record_body(first + i) for i in range(RECORDS_PER_BATCH)]


def json_batches(token: str, batches: int) -> list[tuple[bytes, int]]:
    """The producer's data ``AppendInput``s, framed by the native core:
    ``(body, tail once landed)``."""
    accumulator = Accumulator(RECORDS_PER_BATCH, 1024 * 1024, 1000.0)
    pending: list[str] = []
    slot = accumulator.open(token, 1, pending)
    frames: list[tuple[bytes, int]] = []
    for batch in range(batches):
        pending.extend(batch_bodies(batch))
        frames.extend(accumulator.drain(slot))
    accumulator.discard(slot)
    assert len(frames) == batches
    return frames


def proto_batches(token: str, batches: int) -> list[tuple[bytes, int]]:
    """The same batches as protobuf ``AppendInput``s."""
    return [
        (
            proto_append_input(
                [body.encode() for body in batch_bodies(batch)],
                fencing_token=token,
                match_seq_num=1 + batch * RECORDS_PER_BATCH,
            ),
            1 + (batch + 1) * RECORDS_PER_BATCH,
        )
        for batch in range(batches)
    ]


# -- an append session over HTTP/1.1 -------------------------------------------------


class SessionError(Exception):
    """The session failed: a terminal frame, an error status, or a broken connection."""


class AppendSession(asyncio.Protocol):
    """One S2 append session on its own connection.

    The request (``Content-Type: s2s/proto``, ``Transfer-Encoding: chunked``)
    never ends while the session is open: each batch is one chunk holding one
    frame. s2-lite answers 200 at once and streams one frame per ack, in the
    order of the batches, in its chunked response; httptools undoes the chunking
    and :meth:`on_body` cuts the frames. A frame is a 3-byte big-endian length
    (of what follows it), a flag byte (bit 7: terminal; bits 6-5: compression,
    none here as no ``Accept-Encoding`` asks for one) and the payload: an
    ``AppendAck`` message, or for a terminal frame a 2-byte HTTP status and a
    JSON error, after which s2-lite ends the response.
    """

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._acks: deque[asyncio.Future[bytes]] = deque()
        self._error: SessionError | None = None
        self.head: asyncio.Future[int] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()

    @classmethod
    async def connect(cls, host: str, port: int) -> AppendSession:
        loop = asyncio.get_running_loop()
        _, session = await loop.create_connection(cls, host, port)
        return session

    async def start(self, authority: bytes, target: bytes, headers: bytes) -> None:
        """Send the request's head and wait for the answer's."""
        assert self._transport is not None
        self._transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: s2s/proto\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % (target, authority, headers)
        )
        status = await self.head
        if status != 200:
            self.abort()
            raise SessionError(f"the session was refused: HTTP {status}")

    def append(self, message: bytes) -> asyncio.Future[bytes]:
        """Send one ``AppendInput``; the future gets its ``AppendAck``."""
        if self._error is not None:
            raise self._error
        assert self._transport is not None
        ack: asyncio.Future[bytes] = self._loop.create_future()
        self._acks.append(ack)
        size = len(message) + 1
        self._transport.write(b"%x\r\n%b\x00%b\r\n" % (size + 3, size.to_bytes(3, "big"), message))
        return ack

    async def close(self) -> None:
        """End the request body; s2-lite acks what it holds and ends the answer."""
        assert self._transport is not None
        self._transport.write(b"0\r\n\r\n")
        try:
            await self.ended
        finally:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(SessionError(f"malformed answer: {exc!r}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(SessionError(f"the connection closed: {exc!r}"))

    # httptools callbacks

    def on_headers_complete(self) -> None:
        if not self.head.done():
            self.head.set_result(self._parser.get_status_code())

    def on_body(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        size = len(buffer)
        offset = 0
        while size - offset >= 4:
            end = offset + 3 + int.from_bytes(buffer[offset : offset + 3], "big")
            if end > size:
                break
            flag = buffer[offset + 3]
            payload = buffer[offset + 4 : end]
            offset = end
            if flag & 0x80:
                status = int.from_bytes(payload[:2], "big")
                self._fail(SessionError(f"S2 {status}: {payload[2:].decode(errors='replace')}"))
            elif flag & 0x60:
                self._fail(SessionError("a compressed frame, which was not asked for"))
            elif self._acks:
                self._acks.popleft().set_result(payload)
            else:
                self._fail(SessionError("an ack for no batch"))
        self._buffer = buffer[offset:]

    def on_message_complete(self) -> None:
        if not self.ended.done() and self._error is None:
            self.ended.set_result(None)
        self._fail(SessionError("the session ended"))

    def _fail(self, error: SessionError) -> None:
        if self._error is None:
            self._error = error
        if not self.head.done():
            self.head.set_exception(error)
        while self._acks:
            ack = self._acks.popleft()
            if not ack.done():
                ack.set_exception(error)
        if not self.ended.done():
            self.ended.set_exception(error)


# -- CPU clocks ----------------------------------------------------------------------


class ServerClock:
    """CPU seconds used so far by a process: (sum of its threads' schedstat run
    time, utime + stime from its stat). The first is exact to the ns for the
    threads alive now (s2-lite keeps a fixed set); the second counts every
    thread, to 10 ms."""

    def __init__(self, pid: int) -> None:
        self._task_dir = Path(f"/proc/{pid}/task")
        self._stat = Path(f"/proc/{pid}/stat")
        self._tick = float(os.sysconf("SC_CLK_TCK"))

    def read(self) -> tuple[float, float]:
        run_ns = 0
        for task in self._task_dir.iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # a thread ended
                run_ns += int((task / "schedstat").read_text().split()[0])
        fields = self._stat.read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return run_ns / 1e9, ticks / self._tick


class Usage(NamedTuple):
    client: float
    server: float
    server_ticks: float
    wall: float


async def measured(clock: ServerClock, work: Awaitable[object]) -> Usage:
    gc.collect()
    server, ticks = clock.read()
    cpu, wall = time.process_time(), time.perf_counter()
    await work
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    server_after, ticks_after = clock.read()
    return Usage(cpu, server_after - server, ticks_after - ticks, wall)


# -- one run -------------------------------------------------------------------------


class Sample(NamedTuple):
    """Per batch (``client``, ``server``; CPU seconds) in the timed phase and
    its ``wall`` time; then per stream, outside it: the start (the session
    fence; for a session also its request head, the fence being its first
    frame), the connection a session opens and the closing of a session."""

    client: float
    server: float
    server_ticks: float
    wall: float
    start_client: float
    start_server: float
    connect_client: float
    connect_server: float
    close_client: float
    close_server: float


JSON_APPENDS = b"Content-Type: application/json\r\n"
PROTOBUF_APPENDS = b"Content-Type: application/protobuf\r\nAccept: application/protobuf\r\n"


class ProtobufAppends(DelegatingHttp):
    """(C)'s HTTP client: an S2Client's appends, whose bodies are protobuf
    here, sent as protobuf (S2Client labels them JSON; s2-lite refuses a body
    its label does not fit, so a label left unchanged fails the run). The
    extra call per request is counted against (C), not for it."""

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response:
        relabelled = request._replace(
            headers=request.headers.replace(JSON_APPENDS, PROTOBUF_APPENDS)
        )
        return await self.inner.request(origin, relabelled, idempotent=idempotent, timeout=timeout)


class Bench:
    def __init__(self, server: S2Lite) -> None:
        self.server = server
        self.clock = ServerClock(server.process.pid)
        config = S2Config(
            basin=server.basin, account_endpoint=server.endpoint, basin_endpoint=server.endpoint
        )
        # Long-lived clients, as in a serving process: their pools stay warm.
        self.json_client = S2Client(config)
        self.proto_client = S2Client(
            config, http=ProtobufAppends(HttpClient(http_settings(config)))
        )
        self.verifier = S2Client(config)
        endpoint = urlsplit(server.endpoint)
        assert endpoint.hostname is not None
        assert endpoint.port is not None
        self.host, self.port = endpoint.hostname, endpoint.port
        self.session_headers = (
            f"s2-basin: {server.basin}\r\nUser-Agent: resumable_fast\r\n"
            "Accept-Encoding: identity\r\n"
        ).encode()

    async def aclose(self) -> None:
        for client in (self.json_client, self.proto_client, self.verifier):
            await client.aclose()

    async def run(self, method: str, streams: int, batches: int) -> Sample:
        token = f"session-{uuid.uuid4().hex[:12]}"
        names = [StreamName(f"bench-{uuid.uuid4().hex}") for _ in range(streams)]
        if method == SESSION:
            sample = await self._run_sessions(names, token, batches)
        else:
            sample = await self._run_unary(method, names, token, batches)
        await self.verify(names, token, batches)
        return sample

    async def _run_unary(
        self, method: str, names: list[StreamName], token: str, batches: int
    ) -> Sample:
        if method == UNARY_JSON:
            client, fence = self.json_client, fence_append_input(token, "", 0)
            frames = json_batches(token, batches)
        else:
            client, fence = self.proto_client, proto_fence(token, "", 0)
            frames = proto_batches(token, batches)

        async def write(name: StreamName) -> None:
            for body, end_seq_num in frames:
                await client.append(name, body, Landing(end_seq_num))

        start = await measured(
            self.clock, asyncio.gather(*(client.append(name, fence) for name in names))
        )
        timed = await measured(self.clock, asyncio.gather(*(write(name) for name in names)))
        return _sample(timed, len(names) * batches, len(names), start)

    async def _run_sessions(self, names: list[StreamName], token: str, batches: int) -> Sample:
        fence = proto_fence(token, "", 0)
        messages = [body for body, _ in proto_batches(token, batches)]
        opening = asyncio.Semaphore(OPENING_AT_ONCE)
        authority = f"{self.host}:{self.port}".encode()
        sessions: list[AppendSession] = []

        async def connect() -> None:
            async with opening:
                sessions.append(await AppendSession.connect(self.host, self.port))

        async def start(session: AppendSession, name: str) -> None:
            target = f"/v1/streams/{quote(name, safe='')}/records".encode()
            await session.start(authority, target, self.session_headers)
            await session.append(fence)

        async def write(session: AppendSession) -> None:
            append = session.append
            for message in messages:
                await append(message)

        try:
            connected = await measured(self.clock, asyncio.gather(*(connect() for _ in names)))
            started = await measured(
                self.clock,
                asyncio.gather(*(start(*pair) for pair in zip(sessions, names, strict=True))),
            )
            timed = await measured(
                self.clock, asyncio.gather(*(write(session) for session in sessions))
            )
            closed = await measured(
                self.clock, asyncio.gather(*(session.close() for session in sessions))
            )
        finally:
            for session in sessions:
                session.abort()
        return _sample(timed, len(names) * batches, len(names), started, connected, closed)

    async def verify(self, names: list[StreamName], token: str, batches: int) -> None:
        """Every stream holds the fence, then every record in order, and nothing else."""
        records = 1 + batches * RECORDS_PER_BATCH
        reading = asyncio.Semaphore(64)

        async def check(name: StreamName) -> None:
            async with reading:
                got: list[dict[str, object]] = []
                while len(got) < records:
                    batch = await self.verifier.read(name, seq_num=len(got), count=1000)
                    if not batch:
                        break
                    got.extend(dict(record) for record in batch)
                tail = await self.verifier.check_tail(name)
            if tail != records or len(got) != records:
                raise AssertionError(f"{name}: {len(got)} records, tail {tail}; want {records}")
            fence = got[0]
            if fence.get("headers") != [["", "fence"]] or fence.get("body") != token:
                raise AssertionError(f"{name}: seq 0 is not the session fence: {fence!r}")
            for seq_num, record in enumerate(got):
                if record["seq_num"] != seq_num:
                    raise AssertionError(f"{name}: record {seq_num} has seq {record['seq_num']}")
                if seq_num and (
                    record.get("headers") or record.get("body") != record_body(seq_num - 1)
                ):
                    raise AssertionError(f"{name}: seq {seq_num} holds {record!r}")

        await asyncio.gather(*(check(name) for name in names))


_NOTHING = Usage(0.0, 0.0, 0.0, 0.0)


def _sample(
    timed: Usage,
    batches: int,
    streams: int,
    start: Usage,
    connect: Usage = _NOTHING,
    close: Usage = _NOTHING,
) -> Sample:
    return Sample(
        timed.client / batches,
        timed.server / batches,
        timed.server_ticks / batches,
        timed.wall,
        start.client / streams,
        start.server / streams,
        connect.client / streams,
        connect.server / streams,
        close.client / streams,
        close.server / streams,
    )


# -- encoding, apart from the transport ----------------------------------------------


def encoding_costs(batches: int = 20000) -> tuple[float, float]:
    """CPU seconds per batch to encode it: JSON by the native core (the
    producer's path: its pending list filled, then framed) and protobuf by the
    Python encoder above (which the native core would do in production)."""
    bodies = [batch_bodies(batch) for batch in range(batches)]
    accumulator = Accumulator(RECORDS_PER_BATCH, 1024 * 1024, 1000.0)
    pending: list[str] = []
    slot = accumulator.open("session-encoding", 1, pending)
    drain = accumulator.drain
    cpu = time.process_time()
    for records in bodies:
        pending.extend(records)
        drain(slot)
    json_cost = (time.process_time() - cpu) / batches
    accumulator.discard(slot)
    cpu = time.process_time()
    for batch, records in enumerate(bodies):
        proto_append_input(
            [record.encode() for record in records],
            fencing_token="session-encoding",
            match_seq_num=1 + batch * RECORDS_PER_BATCH,
        )
    proto_cost = (time.process_time() - cpu) / batches
    return json_cost, proto_cost


# -- main ----------------------------------------------------------------------------


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f}"


def machine_busy() -> float:
    """CPU seconds every process on the machine has used (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def idle_rate(clock: ServerClock, seconds: float = 1.0) -> float:
    """s2-lite's CPU seconds per second while nothing is asked of it."""
    before, _ = clock.read()
    await asyncio.sleep(seconds)
    after, _ = clock.read()
    return (after - before) / seconds


async def main(rounds: int, scale: float) -> None:
    server = start_s2lite(Path(tempfile.mkdtemp()))
    bench = Bench(server)
    plan = {streams: max(2, round(batches * scale)) for streams, batches in CONCURRENCY.items()}
    results: dict[tuple[int, str], list[Sample]] = {
        (streams, method): [] for streams in plan for method in METHODS
    }
    try:
        # Warm-up: every path once (and the unary clients' pools).
        for method in METHODS:
            await bench.run(method, 100, 2)
        idle = await idle_rate(bench.clock)
        busy, own, server_cpu = machine_busy(), time.process_time(), bench.clock.read()[1]
        started = time.perf_counter()
        for round_number in range(rounds):
            order = METHODS[round_number % 3 :] + METHODS[: round_number % 3]
            for streams, batches in plan.items():
                for method in order:
                    results[streams, method].append(await bench.run(method, streams, batches))
            print(f"round {round_number + 1}/{rounds} done", file=sys.stderr)
        elapsed = time.perf_counter() - started
        others = machine_busy() - busy - (time.process_time() - own)
        others -= bench.clock.read()[1] - server_cpu
    finally:
        await bench.aclose()
        stop_s2lite(server)
    json_cost, proto_cost = encoding_costs()
    print(
        f"median of {rounds} interleaved runs; batches of {RECORDS_PER_BATCH} records of 5 bytes "
        "with fencing_token and match_seq_num, each stream's next batch once the last is acked;"
        " every record read back in order"
    )
    print(
        f"s2-lite idle: {idle * 1e3:.1f} ms CPU per second (in its figures below, "
        "most of the per-batch cost at 1 stream, where an ack waits for its ~6 ms flush)"
    )
    print(
        f"encoding per batch (not in the figures below): JSON by the native core "
        f"{json_cost * 1e6:.1f} µs, protobuf by this file's Python {proto_cost * 1e6:.1f} µs"
    )
    print(
        f"other processes on the machine meanwhile: {others / elapsed:.0%} of a core on average "
        f"({others:.1f} CPU s in {elapsed:.0f} s)"
    )
    print()
    print("per batch, in the timed phase (µs of CPU; s2-lite's also from /proc/<pid>/stat):")
    print(
        f"{'streams':>7} {'method':17} {'batches':>7} {'client':>8} {'s2-lite':>8} {'(stat)':>8} "
        f"{'total':>8} {'wall s':>7}"
    )
    medians: dict[tuple[int, str], Sample] = {}
    for (streams, method), samples in results.items():
        med = Sample(
            *(statistics.median(s[i] for s in samples) for i in range(len(Sample._fields)))
        )
        medians[streams, method] = med
        print(
            f"{streams:>7} {method:17} {plan[streams] * streams:>7} {_us(med.client)} "
            f"{_us(med.server)} {_us(med.server_ticks)} {_us(med.client + med.server)} "
            f"{med.wall:7.2f}"
        )
    print()
    print("per stream, outside it (µs of CPU, client / s2-lite; a session's start is its")
    print("request head and the fence as its first frame, a unary start the fence append):")
    print(f"{'streams':>7} {'method':17} {'connect':>15} {'start':>15} {'close':>15}")
    for (streams, method), med in medians.items():
        print(
            f"{streams:>7} {method:17} "
            f"{med.connect_client * 1e6:7.0f} /{med.connect_server * 1e6:6.0f} "
            f"{med.start_client * 1e6:7.0f} /{med.start_server * 1e6:6.0f} "
            f"{med.close_client * 1e6:7.0f} /{med.close_server * 1e6:6.0f}"
        )
    print()
    print("ratios of CPU per batch; break-even: batches per stream from which a session's")
    print("extra per-stream CPU (connect + start + close, less A's fence) is paid back:")
    print(
        f"{'streams':>7} {'ratio':6} {'client':>7} {'s2-lite':>8} {'total':>7} "
        f"{'break-even: client':>19} {'total':>6}"
    )
    for streams in plan:
        base = medians[streams, UNARY_JSON]
        for label, method in (("B/A", SESSION), ("C/A", UNARY_PROTO)):
            med = medians[streams, method]
            line = (
                f"{streams:>7} {label:6} {med.client / base.client:7.2f} "
                f"{med.server / base.server:8.2f} "
                f"{(med.client + med.server) / (base.client + base.server):7.2f}"
            )
            if method == SESSION:
                extra_client = med.connect_client + med.start_client + med.close_client
                extra_server = med.connect_server + med.start_server + med.close_server
                extra_client -= base.start_client
                extra_server -= base.start_server
                saved_client = base.client - med.client
                saved = saved_client + base.server - med.server
                line += (
                    f" {_break_even(extra_client, saved_client):>19}"
                    f" {_break_even(extra_client + extra_server, saved):>6}"
                )
            print(line)


def _break_even(extra: float, saved_per_batch: float) -> str:
    return f"{extra / saved_per_batch:.1f}" if saved_per_batch > 0 else "never"


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="batches per stream, times this")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.rounds, arguments.scale))
