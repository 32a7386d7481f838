"""One pull of a source that can change hands between tasks mid-flight.

The producer's client pulls the source itself while it is waiting for the next
chunk, so a chunk reaches it in the same event-loop step in which the source
yields it: no task switch, no wait behind other streams' work. But a client's
task gets cancelled (a web server cancels the request of a browser that went
away), and that cancellation must not reach the source, or the reply would
stop being persisted. So the client awaits a :class:`Pull`, which drives the
source's ``__anext__()`` awaitable step by step and shows the client's task a
stand-in (:class:`_Relay`) for each future the source waits on. Cancelling
the task cancels the stand-in only; the pull in flight, with the source's own
future untouched, is handed to a callback (:class:`InFlight`) that a
background task awaits to finish it.

This relies on asyncio's documented protocol between tasks and future-like
objects (``_asyncio_future_blocking``, ``add_done_callback``, ``cancel``,
``result``), which both the C and the Python ``Task`` implement.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

__all__ = ["InFlight", "Interrupted", "Pull"]

T = TypeVar("T")

_Callback = Callable[[Any], object]


class Interrupted(Exception):
    """A pull was taken away from the task awaiting it by :meth:`Pull.interrupt`."""


class _Relay:
    """Stands in for one future the source waits on.

    The task is woken by the source's future completing, through this
    object; cancelling it detaches it and wakes the task with
    ``CancelledError`` while the source's future carries on.
    """

    # The slot marks this class as future-like to asyncio (asyncio.isfuture
    # looks for the attribute on the class).
    __slots__ = ("_asyncio_future_blocking", "_callbacks", "_detached", "_inner", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, inner: asyncio.Future[Any]) -> None:
        self._loop = loop
        self._inner = inner
        # Almost always exactly one: the awaiting task's wake-up.
        self._callbacks: tuple[tuple[_Callback, contextvars.Context | None], ...] = ()
        self._detached = False
        self._asyncio_future_blocking = True

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def add_done_callback(
        self, callback: _Callback, *, context: contextvars.Context | None = None
    ) -> None:
        if not self._callbacks:
            self._inner.add_done_callback(self._forward)
        self._callbacks += ((callback, context),)

    def remove_done_callback(self, callback: _Callback) -> int:
        kept = tuple(entry for entry in self._callbacks if entry[0] != callback)
        removed = len(self._callbacks) - len(kept)
        self._callbacks = kept
        return removed

    def _forward(self, _inner: asyncio.Future[Any]) -> None:
        if self._detached:
            return
        for callback, context in self._callbacks:
            if context is None:
                callback(self)
            else:
                context.run(callback, self)

    def cancel(self, msg: object = None) -> bool:
        if self._detached or self._inner.done():
            return False
        self._detached = True
        self._inner.remove_done_callback(self._forward)
        for callback, context in self._callbacks:
            self._loop.call_soon(callback, self, context=context)
        return True

    def cancelled(self) -> bool:
        return self._detached

    def done(self) -> bool:
        return self._detached or self._inner.done()

    def result(self) -> None:
        # The source reads its own future's result when it resumes.
        if self._detached:
            raise asyncio.CancelledError
        return None

    def exception(self) -> BaseException | None:
        if self._detached:
            raise asyncio.CancelledError
        return None


class InFlight(Generic[T]):
    """A pull taken over mid-flight; awaiting it (once) finishes it."""

    def __init__(
        self,
        steps: Generator[Any, None, T],
        waiting_on: Any,
        throw: BaseException | None = None,
    ) -> None:
        self._steps = steps
        self._waiting_on = waiting_on
        self._throw = throw

    def cancel(self) -> None:
        """Make the pull end with ``CancelledError`` raised in the source where
        it waits, as if the task awaiting it had been cancelled."""
        waiting_on = self._waiting_on
        if isinstance(waiting_on, asyncio.Future) and waiting_on.cancel():
            return
        self._waiting_on = None
        self._throw = asyncio.CancelledError()

    def __await__(self) -> Generator[Any, None, T]:
        steps = self._steps
        to_throw = self._throw
        if self._waiting_on is not None and to_throw is None:
            # Still marked as blocking: no task has taken it yet.
            try:
                yield self._waiting_on
            except BaseException as exc:
                to_throw = exc
        while True:
            try:
                yielded = steps.send(None) if to_throw is None else steps.throw(to_throw)
            except StopIteration as stop:
                result: T = stop.value
                return result
            to_throw = None
            try:
                yield yielded
            except BaseException as exc:
                to_throw = exc


class Pull(Generic[T]):
    """Awaits ``awaitable`` on behalf of the awaiting task; if that task is
    cancelled, or :meth:`interrupt` is called, mid-flight, the rest of the
    pull goes to ``hand_over`` as an :class:`InFlight`."""

    __slots__ = ("_hand_over", "_interrupted", "_relay", "_steps")

    def __init__(self, awaitable: Awaitable[T], hand_over: Callable[[InFlight[T]], None]) -> None:
        self._steps: Generator[Any, None, T] = awaitable.__await__()
        self._hand_over = hand_over
        self._relay: _Relay | None = None
        self._interrupted = False

    def interrupt(self) -> None:
        """Take the pull away from its task at once: the task gets
        :class:`Interrupted` and the pull goes to ``hand_over``."""
        self._interrupted = True
        if self._relay is not None:
            self._relay.cancel()

    def __await__(self) -> Generator[Any, None, T]:
        steps = self._steps
        loop = asyncio.get_running_loop()
        while True:
            try:
                yielded = steps.send(None)
            except StopIteration as stop:
                result: T = stop.value
                return result
            waiting_on = yielded
            if getattr(yielded, "_asyncio_future_blocking", False):
                yielded = self._relay = _Relay(loop, yielded)
            try:
                yield yielded
            except asyncio.CancelledError:
                self._relay = None
                self._hand_over(InFlight(steps, waiting_on))
                if self._interrupted:
                    raise Interrupted from None
                raise
            self._relay = None
            if self._interrupted:
                self._hand_over(InFlight(steps, None))
                raise Interrupted
