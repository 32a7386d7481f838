"""Futures used as wake-ups: a task parks on one, another resolves it.

A waiter may have been cancelled (its task went away) or already resolved by
the time it is woken, and a reader may wait on another thread's event loop;
these helpers make each wake-up safe in every such case.
"""

from __future__ import annotations

import asyncio

__all__ = ["resolve", "wake_threadsafe"]


def resolve(waiter: asyncio.Future[None]) -> None:
    """Wake ``waiter`` unless it is done already (resolved, or cancelled)."""
    if not waiter.done():
        waiter.set_result(None)


def wake_threadsafe(waiter: asyncio.Future[None]) -> None:
    """Wake ``waiter`` from any thread: live readers may wait on another
    thread's event loop, and one that went away leaves a finished future or
    a closed loop."""
    loop = waiter.get_loop()
    if not waiter.done() and not loop.is_closed():
        loop.call_soon_threadsafe(resolve, waiter)
