"""``asyncio.timeout`` on every Python the package supports."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

__all__ = ["timeout_after"]


def timeout_after(seconds: float | None) -> AbstractAsyncContextManager[Any]:
    """A context that raises :class:`TimeoutError` after ``seconds`` (None: never)."""
    if seconds is None:
        return nullcontext()
    if sys.version_info >= (3, 11):
        return asyncio.timeout(seconds)
    return _LegacyTimeout(seconds)  # pragma: no cover - Python 3.10 only


class _LegacyTimeout:  # pragma: no cover - Python 3.10 only
    """``asyncio.timeout`` for Python 3.10: cancels the task when time is up."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def expire() -> None:
            self._expired = True
            task.cancel()

        self._handle = loop.call_later(self._seconds, expire)

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> bool:
        assert self._handle is not None
        self._handle.cancel()
        if self._expired and exc_type is asyncio.CancelledError:
            raise TimeoutError
        return False
