"""Real small disks for the tests: a tmpfs mounted under a test's tmp_path
(root only: where mounting fails, the test fails, it never skips) and a
filler file that leaves it full."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TMPFS_SIZE = "512k"


def run_as_root(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` failed ({done.returncode}): {done.stderr.strip()}")


def unmount(mount_point: Path) -> None:
    done = subprocess.run(["umount", str(mount_point)], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        pytest.fail(f"umount {mount_point} failed (a file left open?): {done.stderr.strip()}")


@contextmanager
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs under ``tmp_path``, unmounted afterwards."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    run_as_root("mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount_point))
    try:
        yield mount_point
    finally:
        unmount(mount_point)


def fill_disk(mount_point: Path) -> Path:
    """Write a filler file until the file system refuses it (ENOSPC)."""
    filler = mount_point / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\xff" * 4096)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    assert os.statvfs(mount_point).f_bavail == 0
    return filler
