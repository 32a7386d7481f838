"""The embedded store in a ``data_dir``: one SQLite database (WAL mode) that
every process naming the directory shares, so the workers of one machine
share every stream, across restarts.

**Writes.** Every append is applied inside a ``BEGIN IMMEDIATE``
transaction: its fencing-token and ``match_seq_num`` checks, its batch and
the stream's new tail are written together or not at all, and SQLite's write
lock serialises them across processes, so S2's semantics hold among all
workers (one producer per stream, takeovers and stops fenced, nothing
doubled). They run on one writer thread per store, never on the event loop.
Appends that queue up while a transaction commits go into the next one
together (group commit), each checked and applied whole in turn: a refused
one writes nothing, and a storage failure fails the whole group with nothing
written. An append returns once its transaction committed. With
``synchronous=NORMAL`` a commit has reached the operating system when it
returns, so it survives the process being killed at any moment; a power cut
may lose the last commits, never tear one.

**Deletes.** :meth:`SqliteStore.delete` is queued for the writer thread like
an append and runs in the same kind of transaction (the stream's row and its
batches go together), so it is ordered with the appends around it. Waiting
readers of this process are woken on commit, those of other processes by the
watcher (a waited stream without a row wakes its readers); each finds its
position past the emptied tail.

**Memory.** The store holds no records: readers read the database, so what a
process knows is never ahead of what is committed.

**Live tail.** A commit of this process wakes its readers at once. While any
reader waits, a watcher thread checks ``PRAGMA data_version`` every
``poll_interval`` seconds (10 ms) and wakes the readers of what other
processes commit; while nobody waits it is gone and costs nothing
(:mod:`resumable_fast.sqlite_tail`).

**Retention.** A stream idle for ``retention_seconds`` (by the wall clock of
its last append, whichever process made it) is gone for every reader, and
its rows are deleted by the next sweep, which runs with appends at most every
:data:`SWEEP_INTERVAL` seconds, so the file stays bounded.

**Failures.** A full disk, a read-only directory, a corrupt database or a
lock held past ``busy_timeout`` raise :class:`~resumable_fast.errors.StorageError`
(:mod:`resumable_fast.sqlite_errors`) with nothing of the failed transaction
written; the next transaction tries
again, so writes go on once there is room.

Layout (format version 1): ``streams`` (one row per stream: its name, next
sequence number, fencing token, last record and when it was last appended
to) and ``batches`` (one row per appended batch: its records as JSON, keyed
by stream and end sequence number).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeAlias

import orjson

from resumable_fast.append_checks import CheckedAppend, check_append_input
from resumable_fast.backends import DEFAULT_RETENTION_SECONDS, READ_BATCH_RECORDS
from resumable_fast.errors import (
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    SeqNumMismatchError,
    StorageError,
    StoreUnavailableError,
)
from resumable_fast.records import SequencedRecord, StreamName
from resumable_fast.sqlite_errors import storage_error
from resumable_fast.sqlite_tail import EVERY_READER, TailWatch

__all__ = ["DATABASE_FILE_NAME", "SqliteStore"]

logger = logging.getLogger("resumable_fast")

DATABASE_FILE_NAME = "resumable_fast.sqlite3"
FORMAT_VERSION = 1
POLL_INTERVAL = 0.01
# How long a transaction waits for another process's (seconds).
BUSY_TIMEOUT = 10.0
# Seconds between sweeps of streams past their retention, at most.
SWEEP_INTERVAL = 60.0
# Streams deleted per sweep transaction, so the write lock is held briefly.
SWEEP_BATCH = 200
# Appends committed in one transaction at most (they queued up meanwhile).
MAX_GROUP_APPENDS = 64
# A read hands out about this much record text at most (a reader's batch).
READ_BATCH_BYTES = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS streams (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    next_seq_num INTEGER NOT NULL,
    fencing_token TEXT NOT NULL,
    last_record BLOB NOT NULL,
    active_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    stream INTEGER NOT NULL,
    end_seq_num INTEGER NOT NULL,
    records BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS batches_by_stream ON batches (stream, end_seq_num);
"""


@dataclass(slots=True)
class _PendingAppend:
    """An append queued for the writer thread, and the future its caller
    awaits; ``batch`` None is a delete of the stream."""

    name: StreamName
    batch: CheckedAppend | None
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]


# What became of a queued append: its stream's new tail, the error it gets,
# or None when its caller was gone before it ran.
Outcome: TypeAlias = int | BaseException | None


class SqliteStore:
    """The streams of a ``data_dir``, shared by every process that opens it.

    Opening checks the directory and the database at once, so a context
    made on a directory it cannot use fails when it is made. :meth:`shared`
    gives this process's store for a directory and retention; a store is
    closed when the last backend over it is.
    """

    shares_read_sessions = True
    process_local = False

    _shared: ClassVar[dict[tuple[int, str, float], SqliteStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        *,
        poll_interval: float = POLL_INTERVAL,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / DATABASE_FILE_NAME
        self.retention_seconds = retention_seconds
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self.description = f"SQLite in {self.data_dir}"
        self._users = 1
        self._closed = threading.Event()
        self._open_directory()
        self._writer = self._connect("opening the database")
        try:
            self._reader = self._connect("opening the database")
            try:
                self._init_schema()
            except BaseException:
                self._reader.close()
                raise
        except BaseException:
            # Closed now, not when the traceback is collected: a failed open
            # must leave no file open (a full or read-only disk stays
            # unmountable while one is).
            self._writer.close()
            raise
        self._last_sweep = 0.0
        self._start_threads()
        _open_stores.add(self)

    def _start_threads(self) -> None:
        """The locks, the queue and the writer thread of this process."""
        self._reader_lock = threading.Lock()
        # Appends waiting for the writer thread, oldest first.
        self._queue: deque[_PendingAppend] = deque()
        self._queue_changed = threading.Condition()
        self._closing = False
        self._tail = TailWatch(self._connect, self.data_dir, self._closed, self.poll_interval)
        # One thread, so this process's transactions run in the order asked.
        self._write_thread = threading.Thread(
            target=self._write, name="resumable_fast sqlite writer", daemon=True
        )
        self._write_thread.start()

    def _after_fork_in_child(self) -> None:
        """This store came through a fork (a server that imports its app, and
        so makes its context, before forking workers: gunicorn ``--preload``).
        Its threads stayed in the parent and its connections are the
        parent's (SQLite's must not be used across a fork): open this
        process's own."""
        # Kept, never closed here: closing them could act on the parent's.
        _inherited_connections.extend((self._writer, self._reader))
        try:
            self._writer = self._connect("opening the database after a fork")
            self._reader = self._connect("opening the database after a fork")
        except StorageError as exc:
            logger.error("%s", exc)
            self._closed.set()
        self._start_threads()

    @classmethod
    def shared(
        cls, data_dir: str | os.PathLike[str], retention_seconds: float = DEFAULT_RETENTION_SECONDS
    ) -> SqliteStore:
        """This process's store of ``data_dir`` with this retention; each
        call counts one user, released by the backend's ``aclose``. Keyed
        on the process too: a child forked with a parent's store opens its
        own (a SQLite connection must not cross a fork)."""
        key = (os.getpid(), str(Path(data_dir).resolve()), float(retention_seconds))
        with cls._shared_lock:
            store = cls._shared.get(key)
            if store is not None and not store._closed.is_set():
                store._users += 1
                return store
            store = cls._shared[key] = cls(data_dir, retention_seconds)
            return store

    # -- opening ----------------------------------------------------------------

    def _open_directory(self) -> None:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = "read_only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "io"
            raise StoreUnavailableError(
                reason, f"data_dir {self.data_dir} cannot be made: {exc.strerror or exc}"
            ) from None
        if not self.data_dir.is_dir():
            raise StoreUnavailableError("io", f"data_dir {self.data_dir} is not a directory")
        if next(self.data_dir.glob("*.stream"), None) is not None:
            raise StoreUnavailableError(
                "old_format",
                f"data_dir {self.data_dir} holds *.stream files of an earlier, unreleased "
                "format that this version does not read; move them away or name another "
                "directory",
            )

    def _connect(self, doing: str) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._unavailable(exc, doing) from None
        try:
            connection.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            connection.close()
            raise self._unavailable(exc, doing) from None
        return connection

    def _unavailable(self, exc: sqlite3.Error, doing: str) -> StoreUnavailableError:
        error = storage_error(exc, self.data_dir, doing)
        return StoreUnavailableError(error.reason, str(error))

    def _init_schema(self) -> None:
        connection = self._writer
        try:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreUnavailableError(
                    "io", f"data_dir {self.data_dir}: SQLite refused WAL mode ({mode})"
                )
            # A WAL file is cut back to this size after a checkpoint.
            connection.execute("PRAGMA journal_size_limit=4194304")
            with self._transaction(connection):
                # One statement at a time: executescript would commit first.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                row = connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
                if row is None:
                    connection.execute(
                        "INSERT INTO meta (key, value) VALUES ('format', ?)", (str(FORMAT_VERSION),)
                    )
                elif row[0] != str(FORMAT_VERSION):
                    raise StoreUnavailableError(
                        "old_format",
                        f"{self.path} is in format {row[0]}; this version reads {FORMAT_VERSION}",
                    )
        except sqlite3.Error as exc:
            raise self._unavailable(exc, "opening the database") from None

    @staticmethod
    @contextmanager
    def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` (the write lock first, so two processes never
        both read a tail and then write), committed or rolled back whole."""
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.rollback()
            raise

    # -- appends (on the writer thread) -------------------------------------------

    async def append(self, name: StreamName, append_input: bytes) -> None:
        """Apply one ``AppendInput`` whole or not at all; returns once committed."""
        await self._submit(name, check_append_input(append_input))

    async def delete(self, name: StreamName) -> None:
        """Delete the stream's row and batches; returns once committed."""
        await self._submit(name, None)

    async def _submit(self, name: StreamName, batch: CheckedAppend | None) -> None:
        """Queue one write (``batch``, or None to delete the stream) for the
        writer thread and wait until its transaction has committed."""
        loop = asyncio.get_running_loop()
        pending = _PendingAppend(name, batch, loop, loop.create_future())
        with self._queue_changed:
            if self._closing:
                raise StorageError("closed", f"the embedded store in {self.data_dir} is closed")
            self._queue.append(pending)
            self._queue_changed.notify()
        await pending.future

    def _write(self) -> None:
        """The writer thread: the queued appends, several to a transaction
        when they queued up while the last one committed."""
        queue = self._queue
        while True:
            with self._queue_changed:
                while not queue and not self._closing:
                    self._queue_changed.wait()
                if not queue:
                    return  # closing, and every append queued before is done
                group = [queue.popleft() for _ in range(min(len(queue), MAX_GROUP_APPENDS))]
            outcomes = self._commit(group)
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_PendingAppend, Outcome]]] = {}
            for pending, outcome in zip(group, outcomes, strict=True):
                by_loop.setdefault(pending.loop, []).append((pending, outcome))
            for loop, settled in by_loop.items():
                # One wake-up of the loop per group, not one per append.
                with suppress(RuntimeError):  # the loop closed: nobody waits
                    loop.call_soon_threadsafe(self._settle, settled)
            now = time.time()
            if now - self._last_sweep > min(SWEEP_INTERVAL, self.retention_seconds):
                self._sweep(now)

    def _settle(self, settled: list[tuple[_PendingAppend, Outcome]]) -> None:
        """On the appenders' loop: wake the readers of what committed, then
        the appenders."""
        for pending, outcome in settled:
            if isinstance(outcome, int):
                self._tail.wake(pending.name, outcome)
        for pending, outcome in settled:
            future = pending.future
            if future.done() or outcome is None:
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(None)

    def _commit(self, group: list[_PendingAppend]) -> list[Outcome]:
        """Apply a group of appends in one ``BEGIN IMMEDIATE`` transaction:
        each is checked and applied whole in turn (a refused one writes
        nothing), and all commit together; a storage failure fails them all
        with nothing written. An append whose caller was cancelled before it
        ran is left out (None)."""
        connection = self._writer
        outcomes: list[Outcome] = []
        try:
            with self._transaction(connection):
                now = time.time()  # the write lock is ours: commits are in time order
                for pending in group:
                    if pending.future.cancelled():
                        outcomes.append(None)
                        continue
                    if pending.batch is None:
                        outcomes.append(self._apply_delete(connection, pending.name))
                        continue
                    try:
                        outcomes.append(self._apply(connection, pending.name, pending.batch, now))
                    except (FencingTokenMismatchError, SeqNumMismatchError) as refused:
                        outcomes.append(refused)
        except sqlite3.Error as exc:
            return [
                storage_error(exc, self.data_dir, f"appending to stream {pending.name!r}")
                for pending in group
            ]
        except Exception as exc:
            # Not the database's doing, yet the writer thread must live on:
            # the group fails with nothing written (rolled back above).
            logger.exception("embedded store in %s: a transaction failed", self.data_dir)
            return [
                StorageError("io", f"appending to stream {pending.name!r} failed: {exc!r}")
                for pending in group
            ]
        return outcomes

    def _apply(
        self, connection: sqlite3.Connection, name: StreamName, batch: CheckedAppend, now: float
    ) -> int:
        """Check and apply one append in the open transaction; its stream's
        new tail."""
        row = connection.execute(
            "SELECT id, next_seq_num, fencing_token, active_at FROM streams WHERE name = ?",
            (name,),
        ).fetchone()
        if row is not None and row[3] < now - self.retention_seconds:
            # Past its retention: gone for every reader, so made anew.
            connection.execute("DELETE FROM batches WHERE stream = ?", (row[0],))
            connection.execute("DELETE FROM streams WHERE id = ?", (row[0],))
            row = None
        row_id, tail, token = (None, 0, "") if row is None else row[:3]
        if batch.fencing_token is not None and batch.fencing_token != token:
            raise FencingTokenMismatchError(token)
        if batch.match_seq_num is not None and batch.match_seq_num != tail:
            raise SeqNumMismatchError(tail)
        records = batch.sequenced(tail, int(now * 1000))
        end_seq_num = tail + len(records)
        new_token = token if batch.new_fencing_token is None else batch.new_fencing_token
        last = orjson.dumps(records[-1])
        if row_id is None:
            row_id = connection.execute(
                "INSERT INTO streams (name, next_seq_num, fencing_token, last_record,"
                " active_at) VALUES (?, ?, ?, ?, ?)",
                (name, end_seq_num, new_token, last, now),
            ).lastrowid
        else:
            connection.execute(
                "UPDATE streams SET next_seq_num = ?, fencing_token = ?, last_record = ?,"
                " active_at = ? WHERE id = ?",
                (end_seq_num, new_token, last, now, row_id),
            )
        connection.execute(
            "INSERT INTO batches (stream, end_seq_num, records) VALUES (?, ?, ?)",
            (row_id, end_seq_num, orjson.dumps(records)),
        )
        return end_seq_num

    @staticmethod
    def _apply_delete(connection: sqlite3.Connection, name: StreamName) -> int:
        """Delete one stream in the open transaction."""
        row = connection.execute("SELECT id FROM streams WHERE name = ?", (name,)).fetchone()
        if row is not None:
            connection.execute("DELETE FROM batches WHERE stream = ?", (row[0],))
            connection.execute("DELETE FROM streams WHERE id = ?", (row[0],))
        return EVERY_READER

    def _sweep(self, now: float) -> None:
        """Delete streams past their retention (whichever process wrote them).
        A failed sweep is logged, not raised: the append before it committed."""
        self._last_sweep = now
        connection = self._writer
        horizon = now - self.retention_seconds
        try:
            while True:
                with self._transaction(connection):
                    expired = connection.execute(
                        "SELECT id FROM streams WHERE active_at < ? LIMIT ?", (horizon, SWEEP_BATCH)
                    ).fetchall()
                    connection.executemany("DELETE FROM batches WHERE stream = ?", expired)
                    connection.executemany("DELETE FROM streams WHERE id = ?", expired)
                if len(expired) < SWEEP_BATCH:
                    return
        except sqlite3.Error as exc:
            logger.warning("%s", storage_error(exc, self.data_dir, "deleting expired streams"))

    # -- reads (in the caller's thread) ----------------------------------------------

    @contextmanager
    def _reading(self, doing: str) -> Iterator[sqlite3.Connection]:
        if self._closed.is_set():
            raise StorageError("closed", f"the embedded store in {self.data_dir} is closed")
        try:
            with self._reader_lock:
                yield self._reader
        except sqlite3.Error as exc:
            raise storage_error(exc, self.data_dir, doing) from None

    def _horizon(self) -> float:
        return time.time() - self.retention_seconds

    def last_record(self, name: StreamName) -> SequencedRecord | None:
        with self._reading(f"reading stream {name!r}") as connection:
            row = connection.execute(
                "SELECT last_record FROM streams WHERE name = ? AND active_at >= ?",
                (name, self._horizon()),
            ).fetchone()
        if row is None:
            return None
        record: SequencedRecord = orjson.loads(row[0])
        return record

    def records_from(self, name: StreamName, seq_num: int) -> list[SequencedRecord]:
        records: list[SequencedRecord] = []
        size = 0
        with self._reading(f"reading stream {name!r}") as connection:
            rows = connection.execute(
                "SELECT b.records FROM batches AS b JOIN streams AS s ON s.id = b.stream"
                " WHERE s.name = ? AND s.active_at >= ? AND b.end_seq_num > ?"
                " ORDER BY b.end_seq_num",
                (name, self._horizon(), seq_num),
            )
            try:
                for (payload,) in rows:
                    batch: list[SequencedRecord] = orjson.loads(payload)
                    if batch[0]["seq_num"] < seq_num:
                        batch = batch[seq_num - batch[0]["seq_num"] :]
                    records.extend(batch)
                    size += len(payload)
                    if len(records) >= READ_BATCH_RECORDS or size >= READ_BATCH_BYTES:
                        break
            finally:
                rows.close()
        return records[:READ_BATCH_RECORDS]

    def _next_seq_num(self, name: StreamName) -> int:
        with self._reading(f"reading stream {name!r}") as connection:
            row = connection.execute(
                "SELECT next_seq_num FROM streams WHERE name = ? AND active_at >= ?",
                (name, self._horizon()),
            ).fetchone()
        return 0 if row is None else int(row[0])

    # -- the live tail ------------------------------------------------------------------

    def wait_for_records(self, name: StreamName, seq_num: int) -> asyncio.Future[None] | None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tail.add(name, seq_num, waiter)
        # Registered first, then checked: a commit after this check wakes the
        # waiter (this process's at once, another's through the watcher).
        tail = self._next_seq_num(name)
        if tail != seq_num:
            self._tail.forget(name, waiter)
            if tail < seq_num:
                raise RangeNotSatisfiableError(tail)
            return None
        return waiter

    # -- closing -----------------------------------------------------------------------

    async def release(self) -> None:
        """One user fewer; the last closes the store: pending writes finish,
        then the watcher stops and the connections close."""
        with self._shared_lock:
            self._users -= 1
            if self._users > 0 or self._closed.is_set():
                return
            self._closed.set()
            for key, store in list(self._shared.items()):
                if store is self:
                    del self._shared[key]
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._queue_changed:
            self._closing = True
            self._queue_changed.notify()
        self._write_thread.join()
        self._tail.stop()
        with self._reader_lock:
            self._reader.close()
        self._writer.close()


# Open stores, so that a fork's child gives each its own connections and threads.
_open_stores: weakref.WeakSet[SqliteStore] = weakref.WeakSet()
# The parent's connections that came through a fork, kept from being closed.
_inherited_connections: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    for store in list(_open_stores):
        if not store._closed.is_set():
            store._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)
