"""Durability of the embedded store in a ``data_dir`` under real failures:
writers SIGKILLed mid-stream, a full disk, a read-only file system, a corrupt
database, and retention across processes.

No mocks: real OS processes (``writer_process.py``) and real tmpfs mounts.
The tmpfs tests need root (``mount``); where mounting fails they fail, they
never skip.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
import resource
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from disks import fill_disk, run_as_root, small_tmpfs, unmount
from resumable_fast import (
    EmbeddedBackend,
    ResumableStreamContext,
    S2Error,
    SqliteStore,
    StorageError,
    StoreUnavailableError,
    create_resumable_stream_context,
)
from resumable_fast._core import fence_append_input
from resumable_fast.records import (
    END_FENCE_PREFIX,
    SESSION_FENCE_PREFIX,
    SequencedRecord,
    StreamName,
    is_fence,
)
from resumable_fast.sqlite_store import DATABASE_FILE_NAME
from writer_process import stream_token, tokens

from support import TestingStream, from_list, read_text

HERE = Path(__file__).parent.parent
LIVENESS = 0.5


# -- helpers -------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of a writer process: no S2, no data_dir but its own."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("S2_") and key != "RESUMABLE_FAST_DATA_DIR"
    }


def store_of(ctx: ResumableStreamContext) -> SqliteStore:
    backend = ctx.backend
    assert isinstance(backend, EmbeddedBackend)
    store = backend.store
    assert isinstance(store, SqliteStore)
    return store


def stored_records(store: SqliteStore, name: str) -> list[SequencedRecord]:
    """Every record of a stream, from the database (nobody writes it now)."""
    records: list[SequencedRecord] = []
    while batch := store.records_from(StreamName(name), len(records)):
        assert batch[0]["seq_num"] == len(records), f"{name}: a gap before {batch[0]}"
        records.extend(batch)
    return records


def data_bodies(records: list[SequencedRecord]) -> list[str]:
    return [record.get("body", "") for record in records if not is_fence(record)]


def expected_text(stream_id: str, generation: int, count: int) -> str:
    return "".join(stream_token(stream_id, generation, index) for index in range(count))


def query(database: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """A read-only query on the database file, beside the library."""
    connection = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(sql, params).fetchall()
    finally:
        connection.close()


@dataclass
class Segment:
    """What one producer (one session fence) wrote: tokens 0..count-1 of one
    generation (None while it wrote no token)."""

    generation: int | None = None
    count: int = 0


@dataclass
class StoredStream:
    segments: list[Segment] = field(default_factory=list)
    done: bool = False
    text: str = ""


def parse_stream(stream_id: str, records: list[SequencedRecord]) -> StoredStream:
    """Check a stored stream token by token: a session fence first; after
    each session fence the tokens 0, 1, 2, ... of one generation, each an
    exact ``stream_token``; heartbeats (the session's own token again)
    anywhere; each generation in one segment only, in order; an end fence
    only last; no error fence."""
    assert records, f"{stream_id}: no records"
    assert is_fence(records[0]), f"{stream_id}: the first record is not a fence: {records[0]}"
    parsed = StoredStream()
    token: str | None = None
    bodies: list[str] = []
    for record in records:
        body = record.get("body", "")
        assert not parsed.done, f"{stream_id}: {record} after the end fence"
        if is_fence(record):
            if body == token:
                continue  # a heartbeat
            if body.startswith(SESSION_FENCE_PREFIX):
                token = body
                parsed.segments.append(Segment())
            elif body.startswith(END_FENCE_PREFIX):
                parsed.done = True
            else:
                raise AssertionError(f"{stream_id}: unexpected fence {record}")
            continue
        assert parsed.segments, f"{stream_id}: data before a session fence"
        segment = parsed.segments[-1]
        if segment.generation is None:
            head = f"{stream_id}|g"
            assert body.startswith(head), f"{stream_id}: foreign token {body!r}"
            segment.generation = int(body[len(head) :].split("|", 1)[0])
        expected = stream_token(stream_id, segment.generation, segment.count)
        assert body == expected, f"{stream_id}: {body!r} where {expected!r} belongs"
        segment.count += 1
        bodies.append(body)
    generations = [s.generation for s in parsed.segments if s.generation is not None]
    assert generations == sorted(set(generations)), f"{stream_id}: generations {generations}"
    parsed.text = "".join(bodies)
    return parsed


class WriterProcess:
    """``writer_process.py`` in a child process, and what it reported."""

    def __init__(self, process: asyncio.subprocess.Process, stderr_file: Path) -> None:
        self.process = process
        self.stderr_file = stderr_file
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._eof = False
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, data_dir: Path, plan: dict[str, Any], work_dir: Path) -> WriterProcess:
        name = f"writer-{plan['generation']}"
        plan_file = work_dir / f"{name}.json"
        plan_file.write_text(json.dumps(plan))
        stderr_file = work_dir / f"{name}.stderr"
        with stderr_file.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "writer_process.py"),
                str(data_dir),
                str(plan_file),
                env=child_env(),
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        return cls(process, stderr_file)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.events.append(json.loads(line))
            self._changed.set()
        self._eof = True
        self._changed.set()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == kind]

    async def wait_for(self, kind: str, timeout: float = 30.0) -> None:
        async def seen() -> None:
            while not self.of_kind(kind):
                if self._eof:
                    raise AssertionError(
                        f"the writer ended before {kind!r}: {self.events[-5:]}\n{self.stderr()}"
                    )
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(seen(), timeout)

    def stderr(self) -> str:
        return self.stderr_file.read_text(errors="replace")

    async def kill(self) -> None:
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        await self._reader


# -- 1. repeated SIGKILLs ------------------------------------------------------------

ROUNDS = 5
NEW_STREAMS_PER_ROUND = 40  # 200 streams in all
TOKEN_DELAY = 0.02


def token_count(rng: random.Random) -> int:
    """Some streams finish within 0.2 s, the others run for seconds."""
    return rng.randint(2, 8) if rng.random() < 0.35 else rng.randint(60, 160)


async def check_stored_streams(
    data_dir: Path,
    counts: dict[tuple[str, int], int],
    produced: dict[str, list[int]],
) -> dict[str, StoredStream]:
    """Read every stream with a fresh store: each an exact prefix, token by
    token, of what its producers were to write, one segment per producer,
    the finished ones whole."""
    names = {name for (name,) in query(data_dir / DATABASE_FILE_NAME, "SELECT name FROM streams")}
    assert names == set(produced)
    streams: dict[str, StoredStream] = {}
    async with create_resumable_stream_context(data_dir=data_dir, liveness_timeout=LIVENESS) as ctx:
        store = store_of(ctx)
        for stream_id, generations in produced.items():
            stored = parse_stream(stream_id, stored_records(store, stream_id))
            assert len(stored.segments) == len(generations), (
                f"{stream_id}: {len(stored.segments)} session fences, producers {generations}"
            )
            for segment, generation in zip(stored.segments, generations, strict=True):
                assert segment.generation in (None, generation), (stream_id, generations)
                assert segment.count <= counts[stream_id, generation]
            if stored.done:
                last = stored.segments[-1]
                assert last.generation == generations[-1], (stream_id, generations)
                assert last.count == counts[stream_id, generations[-1]], stream_id
            state = await ctx.has_existing_stream(stream_id)
            assert state == ("DONE" if stored.done else True), (stream_id, state)
            streams[stream_id] = stored
    return streams


async def test_repeated_sigkills_keep_every_committed_token_and_takeovers_continue(
    tmp_path: Path,
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    print(f"seed {seed}")
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    counts: dict[tuple[str, int], int] = {}
    # Per stream, the generations whose make_stream was called, in order.
    produced: dict[str, list[int]] = {}
    unfinished: list[str] = []
    killed_at = -1e9
    for generation in range(ROUNDS):
        new_ids = [f"r{generation}-s{index}" for index in range(NEW_STREAMS_PER_ROUND)]
        old_ids = list(unfinished)
        planned = old_ids + new_ids
        rng.shuffle(planned)
        for stream_id in planned:
            counts[stream_id, generation] = token_count(rng)
        plan = {
            "generation": generation,
            "streams": [[stream_id, counts[stream_id, generation]] for stream_id in planned],
            "delay": TOKEN_DELAY,
            "liveness_timeout": LIVENESS,
            "retention_seconds": 3600,
            "hold": True,
        }
        # The killed writer's streams are abandoned once silent past the timeout.
        await asyncio.sleep(max(0.0, killed_at + LIVENESS + 0.2 - time.monotonic()))
        writer = await WriterProcess.start(data_dir, plan, tmp_path)
        try:
            await writer.wait_for("ready")
            await writer.wait_for("finished")
            await asyncio.sleep(rng.uniform(0.0, 0.6))
        finally:
            await writer.kill()
        killed_at = time.monotonic()
        stderr = writer.stderr()
        assert not writer.of_kind("error"), writer.of_kind("error")
        assert "persisting failed" not in stderr, stderr
        assert "Traceback" not in stderr, stderr
        claimed = {event["id"]: event for event in writer.of_kind("claimed")}
        assert set(claimed) == set(planned)
        for stream_id in planned:
            # New streams are claimed; the killed ones are taken over.
            assert claimed[stream_id]["produced"], claimed[stream_id]
            produced.setdefault(stream_id, []).append(generation)
        stored = await check_stored_streams(data_dir, counts, produced)
        for event in writer.of_kind("finished"):
            assert stored[event["id"]].done, event
        assert any(stored[stream_id].done for stream_id in planned)
        unfinished = [stream_id for stream_id, s in stored.items() if not s.done]
        assert unfinished, "the kill left no stream unfinished"
        print(
            f"round {generation}: {len(planned)} streams ({len(old_ids)} taken over), "
            f"{len(stored) - len(unfinished)} of {len(stored)} done, "
            f"{sum(sum(g.count for g in s.segments) for s in stored.values())} tokens stored"
        )

    # Every stream left unfinished is taken over here and finished.
    await asyncio.sleep(max(0.0, killed_at + LIVENESS + 0.2 - time.monotonic()))
    final = ROUNDS
    called: set[str] = set()

    async def take_over(ctx: ResumableStreamContext, stream_id: str) -> str:
        count = counts[stream_id, final] = rng.randint(1, 40)

        def make_stream() -> AsyncIterator[str]:
            called.add(stream_id)
            return tokens(stream_id, final, count, 0.0)

        return await read_text(await ctx.resumable_stream(stream_id, make_stream))

    async with create_resumable_stream_context(
        data_dir=data_dir, linger_ms=5, liveness_timeout=LIVENESS
    ) as ctx:
        texts = await asyncio.gather(*(take_over(ctx, stream_id) for stream_id in unfinished))
        assert called == set(unfinished)
        for stream_id, text in zip(unfinished, texts, strict=True):
            tail = expected_text(stream_id, final, counts[stream_id, final])
            assert text == stored[stream_id].text + tail, stream_id
            assert await ctx.has_existing_stream(stream_id) == "DONE"
    for stream_id in unfinished:
        produced[stream_id].append(final)
    after = await check_stored_streams(data_dir, counts, produced)
    assert all(s.done for s in after.values())
    for stream_id, text in zip(unfinished, texts, strict=True):
        assert after[stream_id].text == text


# -- 2. a full disk ----------------------------------------------------------------
#
# A 512 KiB tmpfs holds about 20 appends: each commit adds some 5 pages to the
# WAL, which SQLite checkpoints only past 1,000 pages. So these tests write
# few batches, and keep the default liveness timeout (no heartbeats) except
# where a takeover needs a short one.


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs under tmp_path, unmounted afterwards."""
    with small_tmpfs(tmp_path) as mount_point:
        yield mount_point


def disk_context(data_dir: Path, **options: Any) -> ResumableStreamContext:
    options.setdefault("linger_ms", 5)
    return create_resumable_stream_context(data_dir=data_dir, drain_timeout=2, **options)


async def produce(ctx: ResumableStreamContext, stream_id: str, count: int) -> str:
    stream = await ctx.resumable_stream(
        stream_id, lambda: from_list([stream_token(stream_id, 0, i) for i in range(count)])
    )
    return await read_text(stream)


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def persisting_failed(caplog: pytest.LogCaptureFixture, stream_id: str) -> bool:
    return any(
        "persisting failed" in record.getMessage() and repr(stream_id) in record.getMessage()
        for record in caplog.records
    )


def open_files_under(directory: Path) -> list[str]:
    """The files under ``directory`` this process has open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(f"{directory}/"):
                found.append(target)
    return found


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_append_that_does_not_fit_raises_disk_full_and_writes_go_on_with_room(
    tmpfs: Path,
) -> None:
    data_dir = tmpfs / "data"
    big = orjson.dumps({"records": [{"body": "x" * 100_000}]})
    async with disk_context(data_dir) as ctx:
        store = store_of(ctx)
        assert await produce(ctx, "before", 5) == expected_text("before", 0, 5)
        filler = fill_disk(tmpfs)
        # (a) A typed StorageError naming the cause, not an S2 error.
        with pytest.raises(StorageError) as failed:
            await ctx.backend.append(StreamName("big"), big)
        assert failed.value.reason == "disk_full"
        assert not isinstance(failed.value, S2Error)
        assert "disk is full" in str(failed.value)
        assert await ctx.has_existing_stream("big") is None
        # (e) With room again the same store writes, without reopening.
        filler.unlink()
        await ctx.backend.append(StreamName("big"), big)
        last = await ctx.backend.last_record(StreamName("big"))
        assert last is not None
        assert last["body"] == "x" * 100_000
        assert await produce(ctx, "after", 5) == expected_text("after", 0, 5)
        assert store_of(ctx) is store
    store = SqliteStore(data_dir)
    try:
        for stream_id in ("before", "after"):
            stored = parse_stream(stream_id, stored_records(store, stream_id))
            assert stored.done
            assert stored.text == expected_text(stream_id, 0, 5)
        assert data_bodies(stored_records(store, "big")) == ["x" * 100_000]
    finally:
        await store.release()


async def test_disk_full_mid_stream_serves_clients_loses_nothing_committed_and_does_not_spin(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resumable_fast")
    data_dir = tmpfs / "data"
    live_count, racing_count = 10, 30
    async with disk_context(data_dir, linger_ms=50) as ctx:
        for stream_id in ("done-1", "done-2"):
            assert await produce(ctx, stream_id, 4) == expected_text(stream_id, 0, 4)
        # Two streams mid-reply: three tokens each, committed before the disk fills.
        sources = {stream_id: TestingStream() for stream_id in ("live-1", "live-2")}
        clients = {
            stream_id: await ctx.resumable_stream(stream_id, source.readable)
            for stream_id, source in sources.items()
        }
        for stream_id, source in sources.items():
            for index in range(3):
                source.write(stream_token(stream_id, 0, index))
        store = store_of(ctx)
        await wait_until(
            lambda: all(
                len(data_bodies(stored_records(store, stream_id))) == 3 for stream_id in sources
            ),
            "the first tokens to be committed",
        )
        # A reader following live-1's tail, waiting through the full disk.
        follower = asyncio.ensure_future(read_text(await ctx.resume_stream("live-1"), timeout=60))
        # One stream producing while the filler takes the rest of the disk.
        racing = asyncio.ensure_future(
            read_text(
                await ctx.resumable_stream(
                    "racing",
                    lambda: from_list(
                        [stream_token("racing", 0, i) for i in range(racing_count)], delay=0.01
                    ),
                )
            )
        )
        filler = await asyncio.to_thread(fill_disk, tmpfs)
        # (b) The producers' clients get every token; the failures are logged.
        assert await racing == expected_text("racing", 0, racing_count)
        for stream_id, source in sources.items():
            for index in range(3, live_count):
                source.write(stream_token(stream_id, 0, index))
        await wait_until(
            lambda: all(persisting_failed(caplog, stream_id) for stream_id in sources),
            "the producers to log that persisting failed",
        )
        assert persisting_failed(caplog, "racing")
        assert "disk is full" in caplog.text
        # (g) Nothing spins while the disk is full: the producers' sources
        # are open, a reader waits on the tail.
        wall, cpu = time.monotonic(), cpu_seconds()
        await asyncio.sleep(1.0)
        wall, cpu = time.monotonic() - wall, cpu_seconds() - cpu
        assert cpu < 0.2, f"{cpu:.3f} s of CPU in {wall:.3f} s while the disk is full"
        for stream_id, source in sources.items():
            source.close()
            text = await read_text(clients[stream_id])
            assert text == expected_text(stream_id, 0, live_count)
        assert not follower.done()
        follower.cancel()
        with suppress(asyncio.CancelledError):
            await follower
        filler.unlink()
    # (c) What was committed is there, each stream an exact prefix of its text.
    store = SqliteStore(data_dir)
    try:
        for stream_id in ("done-1", "done-2"):
            stored = parse_stream(stream_id, stored_records(store, stream_id))
            assert stored.done
            assert stored.text == expected_text(stream_id, 0, 4)
        for stream_id, count in (("live-1", live_count), ("live-2", live_count)):
            stored = parse_stream(stream_id, stored_records(store, stream_id))
            assert not stored.done
            assert 3 <= stored.segments[0].count < count
        stored = parse_stream("racing", stored_records(store, "racing"))
        assert not stored.done
        assert stored.segments[0].count < racing_count
    finally:
        await store.release()


async def test_claim_on_a_full_disk_fails_typed_and_leaves_no_stream(tmpfs: Path) -> None:
    data_dir = tmpfs / "data"
    called: list[str] = []

    def make_stream(stream_id: str) -> Callable[[], AsyncIterator[str]]:
        def make() -> AsyncIterator[str]:
            called.append(stream_id)
            return from_list([stream_token(stream_id, 0, i) for i in range(6)])

        return make

    async with disk_context(data_dir) as ctx:
        assert await produce(ctx, "before", 3) == expected_text("before", 0, 3)
        filler = fill_disk(tmpfs)
        with pytest.raises(StorageError) as failed:
            await ctx.resumable_stream("claim-1", make_stream("claim-1"))
        assert failed.value.reason == "disk_full"
        with pytest.raises(StorageError) as failed:
            await ctx.create_new_resumable_stream("claim-2", make_stream("claim-2"))
        assert failed.value.reason == "disk_full"
        assert called == []
        for stream_id in ("claim-1", "claim-2"):
            assert await ctx.has_existing_stream(stream_id) is None
        names = query(data_dir / DATABASE_FILE_NAME, "SELECT name FROM streams ORDER BY name")
        assert names == [("before",)]
        # With room again, a retry produces each stream whole.
        filler.unlink()
        text = await read_text(await ctx.resumable_stream("claim-1", make_stream("claim-1")))
        assert text == expected_text("claim-1", 0, 6)
        stream = await ctx.create_new_resumable_stream("claim-2", make_stream("claim-2"))
        assert await read_text(stream) == expected_text("claim-2", 0, 6)
        assert called == ["claim-1", "claim-2"]
        for stream_id in ("claim-1", "claim-2"):
            assert await ctx.has_existing_stream(stream_id) == "DONE"
    store = SqliteStore(data_dir)
    try:
        for stream_id in ("claim-1", "claim-2"):
            stored = parse_stream(stream_id, stored_records(store, stream_id))
            assert stored.done
            assert stored.text == expected_text(stream_id, 0, 6)
            assert len(stored.segments) == 1
    finally:
        await store.release()


async def test_takeover_after_a_disk_full_failure_is_all_there_after_a_reopen(
    tmpfs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="resumable_fast")
    data_dir = tmpfs / "data"
    called: list[str] = []

    def make_takeover() -> AsyncIterator[str]:
        called.append("a")
        return tokens("a", 1, 6, 0.0)

    async with disk_context(data_dir, liveness_timeout=LIVENESS) as ctx:
        store = store_of(ctx)
        source = TestingStream()
        client = await ctx.resumable_stream("a", source.readable)
        for index in range(3):
            source.write(stream_token("a", 0, index))
        await wait_until(
            lambda: len(data_bodies(stored_records(store, "a"))) == 3, "the first tokens"
        )
        filler = fill_disk(tmpfs)
        for index in range(3, 8):
            source.write(stream_token("a", 0, index))
        await wait_until(lambda: persisting_failed(caplog, "a"), "persisting to fail")
        source.close()
        assert await read_text(client) == expected_text("a", 0, 8)
        prefix = "".join(data_bodies(stored_records(store, "a")))
        filler.unlink()
        await asyncio.sleep(LIVENESS + 0.2)
        text = await read_text(await ctx.resumable_stream("a", make_takeover))
        assert called == ["a"]
        assert text == prefix + expected_text("a", 1, 6)
        assert await ctx.has_existing_stream("a") == "DONE"
    store = SqliteStore(data_dir)
    try:
        stored = parse_stream("a", stored_records(store, "a"))
    finally:
        await store.release()
    assert stored.done
    assert [(s.generation, s.count) for s in stored.segments][1:] == [(1, 6)]
    assert 3 <= stored.segments[0].count < 8
    assert stored.text == text


# -- 3. a read-only file system -----------------------------------------------------


async def make_database(data_dir: Path) -> None:
    async with disk_context(data_dir) as ctx:
        assert await produce(ctx, "kept", 4) == expected_text("kept", 0, 4)


async def test_read_only_directory_raises_typed_errors(tmpfs: Path, tmp_path: Path) -> None:
    data_dir = tmpfs / "data"
    await make_database(data_dir)
    # A read-only view of the directory (a read-only bind mount) while a
    # writer holds the database open: it reads, but every write is refused.
    # (The file system itself cannot be remounted read-only while a file on
    # it is open for writing.)
    writer = SqliteStore(data_dir)
    view = tmp_path / "read-only-view"
    view.mkdir()
    run_as_root("mount", "--bind", str(data_dir), str(view))
    try:
        run_as_root("mount", "-o", "remount,ro,bind", str(view))
        async with disk_context(view) as ctx:
            assert await ctx.has_existing_stream("kept") == "DONE"
            assert await read_text(await ctx.resume_stream("kept")) == expected_text("kept", 0, 4)
            with pytest.raises(StorageError) as failed:
                await ctx.resumable_stream("new", lambda: from_list(["x"]))
            assert failed.value.reason == "read_only"
            assert "read-only" in str(failed.value)
            with pytest.raises(StorageError) as failed:
                await ctx.backend.append(StreamName("raw"), fence_append_input("session-x", "", 0))
            assert failed.value.reason == "read_only"
            assert not isinstance(failed.value, sqlite3.Error)
    finally:
        # SQLite defers closing the view's files while this process holds
        # locks on the same file through the writer: the writer goes first.
        await writer.release()
        unmount(view)
    # The whole file system read-only, nothing open: opening fails, typed.
    run_as_root("mount", "-o", "remount,ro", str(tmpfs))
    with pytest.raises(StoreUnavailableError) as unavailable:
        create_resumable_stream_context(data_dir=data_dir)
    assert str(data_dir) in str(unavailable.value)
    with pytest.raises(StoreUnavailableError):
        SqliteStore(data_dir)
    with pytest.raises(StoreUnavailableError) as unavailable:
        create_resumable_stream_context(data_dir=tmpfs / "not-made")
    assert "Read-only file system" in str(unavailable.value)
    # A failed open may leave its files open until collected (see
    # test_failed_open_leaves_no_file_open); they must not keep the mount busy.
    del unavailable
    gc.collect()


async def test_read_only_file_system_is_named_read_only(tmpfs: Path) -> None:
    """StorageError's reason names the cause: a read-only file system is
    ``read_only`` ("the directory or database is read-only"), not ``io``."""
    data_dir = tmpfs / "data"
    await make_database(data_dir)
    run_as_root("mount", "-o", "remount,ro", str(tmpfs))
    with pytest.raises(StoreUnavailableError) as unavailable:
        create_resumable_stream_context(data_dir=data_dir)
    reason, message = unavailable.value.reason, str(unavailable.value)
    del unavailable
    gc.collect()
    assert reason == "read_only", message
    assert "read-only" in message


@pytest.mark.parametrize("failure", ["read_only_file_system", "corrupt_database"])
async def test_failed_open_leaves_no_file_open(tmpfs: Path, failure: str) -> None:
    """A store that fails to open has closed what it opened: nothing of the
    directory stays open (an open file keeps a mount busy) while the caller
    holds the error."""
    data_dir = tmpfs / "data"
    if failure == "read_only_file_system":
        await make_database(data_dir)
        run_as_root("mount", "-o", "remount,ro", str(tmpfs))
    else:
        data_dir.mkdir()
        random_bytes(data_dir / DATABASE_FILE_NAME)
    with pytest.raises(StoreUnavailableError) as unavailable:
        create_resumable_stream_context(data_dir=data_dir)
    left_open = open_files_under(tmpfs)
    del unavailable
    gc.collect()
    assert left_open == [], f"after a failed open ({failure}), still open: {left_open}"


# -- 4. a corrupt database, an old format ---------------------------------------------


def random_bytes(database: Path) -> None:
    database.write_bytes(random.Random(7).randbytes(64 * 1024))


def trashed_schema_page(database: Path) -> None:
    """A real resumable_fast database whose first page past the header is garbage."""

    async def make() -> None:
        store = SqliteStore(database.parent)
        for index in range(20):
            await store.append(StreamName(f"s{index}"), fence_append_input("session-a", "", 0))
        await store.release()

    asyncio.run(make())
    content = bytearray(database.read_bytes())
    content[100:4096] = random.Random(7).randbytes(3996)
    database.write_bytes(bytes(content))


@pytest.mark.parametrize("corrupt", [random_bytes, trashed_schema_page])
def test_corrupt_database_raises_store_unavailable_corrupt(
    tmp_path: Path, corrupt: Callable[[Path], None]
) -> None:
    database = tmp_path / DATABASE_FILE_NAME
    corrupt(database)
    content = database.read_bytes()
    with pytest.raises(StoreUnavailableError) as unavailable:
        create_resumable_stream_context(data_dir=tmp_path)
    assert unavailable.value.reason == "corrupt"
    assert "corrupt" in str(unavailable.value)
    assert str(tmp_path) in str(unavailable.value)
    assert database.read_bytes() == content  # left as it was


def test_old_format_stream_files_raise_store_unavailable_naming_it(tmp_path: Path) -> None:
    (tmp_path / "0123abcd.stream").write_bytes(b"\x00\x00\x00\x10" + b"\xab" * 16)
    with pytest.raises(StoreUnavailableError) as unavailable:
        create_resumable_stream_context(data_dir=tmp_path)
    assert unavailable.value.reason == "old_format"
    assert "*.stream" in str(unavailable.value)
    assert "format" in str(unavailable.value)
    assert not (tmp_path / DATABASE_FILE_NAME).exists()


# -- 5. retention across processes ------------------------------------------------------


async def test_retention_deletes_idle_streams_whichever_process_wrote_them(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    database = data_dir / DATABASE_FILE_NAME
    old_ids = ["old-0", "old-1", "old-2"]
    plan = {
        "generation": 0,
        "streams": [[stream_id, 3] for stream_id in old_ids],
        "delay": 0.0,
        "liveness_timeout": 30,
        "retention_seconds": 0.5,
        "hold": False,
    }
    writer = await WriterProcess.start(data_dir, plan, tmp_path)
    try:
        assert await asyncio.wait_for(writer.process.wait(), 30) == 0, writer.stderr()
    finally:
        await writer.kill()
    assert sorted(event["id"] for event in writer.of_kind("finished")) == old_ids
    rows = query(database, "SELECT id, name, active_at FROM streams ORDER BY name")
    assert [name for _, name, _ in rows] == old_ids
    old_rows = [row_id for row_id, _, _ in rows]
    marks = ",".join("?" * len(old_rows))
    old_batches = f"SELECT count(*) FROM batches WHERE stream IN ({marks})"
    assert query(database, old_batches, tuple(old_rows))[0][0] >= 2 * len(old_ids)
    await asyncio.sleep(max(0.0, max(at for _, _, at in rows) + 0.5 + 0.1 - time.time()))
    async with disk_context(data_dir, retention_seconds=0.5) as ctx:
        for stream_id in old_ids:
            assert await ctx.has_existing_stream(stream_id) is None
        # Reads hide them; their rows go with the next sweep, run by an append.
        assert len(query(database, "SELECT id FROM streams")) == len(old_ids)
        assert await produce(ctx, "new", 2) == expected_text("new", 0, 2)
        assert query(database, "SELECT name FROM streams") == [("new",)]
        assert query(database, old_batches, tuple(old_rows)) == [(0,)]
        orphans = "SELECT count(*) FROM batches WHERE stream NOT IN (SELECT id FROM streams)"
        assert query(database, orphans) == [(0,)]
        for stream_id in old_ids:
            assert await ctx.has_existing_stream(stream_id) is None
