"""The live tail of the ``data_dir`` store: this process's readers waiting
for a record, and the watcher thread that wakes them for what other processes
commit.

A commit of this process wakes its readers at once (:meth:`TailWatch.wake`).
While any reader waits, the watcher checks ``PRAGMA data_version`` every
``poll_interval`` seconds; when it moved (a commit by another connection), it
reads the tails of the streams waited on (one query per
:data:`WATCH_QUERY_NAMES` of them) and wakes the readers those passed. While
nobody waits the watcher is gone and costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from resumable_fast.errors import StorageError
from resumable_fast.records import StreamName
from resumable_fast.sqlite_errors import storage_error
from resumable_fast.waiters import wake_threadsafe

__all__ = ["EVERY_READER", "TailWatch"]

logger = logging.getLogger("resumable_fast")

# Waited streams whose tails one query of the watcher reads.
WATCH_QUERY_NAMES = 500

# A delete's outcome in place of a tail: past every position, so each waiting
# reader of the stream reads again (and finds it emptied).
EVERY_READER = sys.maxsize


class TailWatch:
    """The readers of one store waiting for records, in this process.

    ``connect`` opens a connection to the database (the watcher's own),
    raising a :class:`StorageError`; ``closed`` is set when the store closes,
    which stops the watcher."""

    def __init__(
        self,
        connect: Callable[[str], sqlite3.Connection],
        data_dir: Path,
        closed: threading.Event,
        poll_interval: float,
    ) -> None:
        self._connect = connect
        self._data_dir = data_dir
        self._closed = closed
        self._poll_interval = poll_interval
        # Readers waiting for a record: stream name -> (seq_num, future).
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def add(self, name: StreamName, seq_num: int, waiter: asyncio.Future[None]) -> None:
        """Wake ``waiter`` once ``name`` has a record at ``seq_num``."""
        with self._lock:
            self._waiters.setdefault(name, []).append((seq_num, waiter))
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="resumable_fast sqlite watcher", daemon=True
                )
                self._watcher.start()

    def forget(self, name: StreamName, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            entries = self._waiters.get(name)
            if entries is not None:
                entries[:] = [entry for entry in entries if entry[1] is not waiter]
                if not entries:
                    del self._waiters[name]

    def wake(self, name: StreamName, end_seq_num: int) -> None:
        """Wake the readers of ``name`` waiting for a record before
        ``end_seq_num`` (the stream now has it)."""
        with self._lock:
            entries = self._waiters.get(name)
            if not entries:
                return
            kept = []
            for seq_num, waiter in entries:
                if seq_num < end_seq_num:
                    wake_threadsafe(waiter)
                elif not waiter.done():
                    kept.append((seq_num, waiter))
            if kept:
                self._waiters[name] = kept
            else:
                del self._waiters[name]

    def stop(self) -> None:
        """The store closed (``closed`` is set): wait for the watcher to end,
        then wake every reader, each of which reads again."""
        watcher = self._watcher
        if watcher is not None and watcher.is_alive():
            watcher.join()
        self._wake_all()

    def _watch(self) -> None:
        """Wake readers for what other processes commit, while any waits."""
        try:
            connection = self._connect("watching the database")
        except StorageError as exc:
            logger.error("%s", exc)
            self._wake_all()
            return
        try:
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            # A commit just before the version read above may have come
            # after a waiter's own check: look once; later commits change
            # the version, which the loop reads.
            self._wake_waited(connection)
            while not self._closed.wait(self._poll_interval):
                with self._lock:
                    gone = [
                        name
                        for name, entries in self._waiters.items()
                        if all(waiter.done() for _, waiter in entries)
                    ]
                    for name in gone:
                        del self._waiters[name]
                    if not self._waiters:
                        self._watcher = None
                        return
                current = connection.execute("PRAGMA data_version").fetchone()[0]
                if current != version:
                    version = current
                    self._wake_waited(connection)
        except sqlite3.Error as exc:
            logger.error("%s", storage_error(exc, self._data_dir, "watching the database"))
            self._wake_all()
        finally:
            connection.close()

    def _wake_waited(self, connection: sqlite3.Connection) -> None:
        """Wake the readers of every waited stream that has grown past them:
        one query per :data:`WATCH_QUERY_NAMES` streams waited on."""
        with self._lock:
            names = list(self._waiters)
        for start in range(0, len(names), WATCH_QUERY_NAMES):
            chunk = names[start : start + WATCH_QUERY_NAMES]
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(
                # Only "?" placeholders go into the text; the names are bound.
                f"SELECT name, next_seq_num FROM streams WHERE name IN ({marks})",
                chunk,
            ).fetchall()
            for name, next_seq_num in rows:
                self.wake(name, int(next_seq_num))
            # Deleted (or expired) by another process: their readers read again.
            present = {row[0] for row in rows}
            for waited in chunk:
                if waited not in present:
                    self.wake(StreamName(waited), EVERY_READER)

    def _wake_all(self) -> None:
        """Wake every reader (the watcher failed, or the store closed): each
        reads again, and gets the storage error if the database still fails."""
        with self._lock:
            for entries in self._waiters.values():
                for _, waiter in entries:
                    wake_threadsafe(waiter)
            self._waiters.clear()
            self._watcher = None
