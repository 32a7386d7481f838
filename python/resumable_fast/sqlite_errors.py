"""What a failed SQLite call of the ``data_dir`` store becomes: a
:class:`~resumable_fast.errors.StorageError` naming the reason (a full disk, a
read-only directory, a corrupt database, a lock held too long, an I/O
failure) in words, from SQLite's result code or, without one, its message.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from resumable_fast.errors import StorageError

__all__ = ["is_read_only", "storage_error"]

# sqlite3's primary result codes (the low byte of an extended code).
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26
_REASONS = {
    _SQLITE_FULL: "disk_full",
    _SQLITE_READONLY: "read_only",
    _SQLITE_CORRUPT: "corrupt",
    _SQLITE_NOTADB: "corrupt",
    _SQLITE_BUSY: "locked",
    _SQLITE_LOCKED: "locked",
    _SQLITE_IOERR: "io",
    _SQLITE_CANTOPEN: "io",
}
_WORDS = {
    "disk_full": "the disk is full",
    "read_only": "the directory or database is read-only",
    "corrupt": "the database is corrupt or not a resumable_fast database",
    "locked": "the database stayed locked by another process",
    "io": "the operating system refused a read or write",
}


def storage_error(exc: sqlite3.Error, where: Path, doing: str) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    reason = _REASONS.get(code & 0xFF) if isinstance(code, int) else None
    if reason is None:
        text = str(exc).lower()
        reason = next(
            (
                name
                for name, needle in (
                    ("disk_full", "full"),
                    ("read_only", "readonly"),
                    ("corrupt", "malformed"),
                    ("corrupt", "not a database"),
                    ("locked", "locked"),
                    ("io", "disk i/o"),
                    ("io", "unable to open"),
                )
                if needle in text
            ),
            "io",
        )
    if reason == "io" and is_read_only(where):
        # SQLite says only that it cannot open the file (or its -wal, -shm).
        reason = "read_only"
    return StorageError(
        reason, f"embedded store in {where}: {doing} failed: {_WORDS[reason]} ({exc})"
    )


def is_read_only(directory: Path) -> bool:
    """Whether ``directory`` is on a read-only file system, or not writable
    by this process."""
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except (OSError, AttributeError):  # no statvfs on Windows
        pass
    return not os.access(directory, os.W_OK)
