"""The interface of the benchmark's Python peers (``benches/peers.py`` runs
them): a module of its own so that ``benches/redis_peers.py`` can subclass
``Peer`` while ``peers.py`` imports those peers to register them."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import AsyncIterator
from dataclasses import dataclass

from resumable_fast.streams import ChunkChannel, ProducerStream

from lag import LagProbe


@dataclass(frozen=True)
class Options:
    peer: str
    streams: int
    tokens: int
    rate: float
    batch_size: int
    linger_ms: float
    reader: bool
    seed: int
    timeout: float
    hold: bool = False
    # Readers of each stream resumed while it is live (from the start).
    live_readers: int = 0
    # Measure persistence and live-reader lag (benches/lag.py).
    lag: bool = False


@dataclass
class Counters:
    """What a peer sent to its backend: requests (HTTP requests to S2, round
    trips to Redis), and append batches (``AppendInput`` bodies, fences
    included; appended entries for Redis)."""

    requests: int = 0
    appends: int = 0


class Peer:
    """Produces a stream from a source and resumes it; ``persists`` is False
    for a peer that keeps nothing to resume."""

    persists = True

    def __init__(self, versions: dict[str, str]) -> None:
        self.versions = {"python": platform.python_version(), **versions}
        self.counters = Counters()
        self.lag: LagProbe | None = None

    def watch(self, probe: LagProbe) -> None:
        """Report to ``probe`` how many of each stream's tokens the store has
        acknowledged, as acknowledgements arrive (``--lag`` only)."""
        self.lag = probe

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        """The producer client's stream: each chunk as the source yields it."""
        raise NotImplementedError

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        """The stream's text from the start to its end fence."""
        raise NotImplementedError

    async def release(self) -> None:
        """Ends the streams kept open after their last chunk so that they
        could be resumed, by a peer that cannot resume a finished stream.
        Called after the resumes; its CPU counts in the produce phase."""

    async def aclose(self) -> None:
        """Release connections and background tasks."""


class ChannelPeer(Peer):
    """A peer that drives each source in a task of its own (:meth:`drive`),
    which hands every chunk to the producer's client through a channel; the
    tasks are awaited on close."""

    def __init__(self, versions: dict[str, str]) -> None:
        super().__init__(versions)
        self._tasks: set[asyncio.Task[None]] = set()

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        channel = ChunkChannel()
        task = asyncio.get_running_loop().create_task(self.drive(stream_id, source, channel))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ProducerStream(stream_id, channel)

    async def drive(
        self, stream_id: str, source: AsyncIterator[str], channel: ChunkChannel
    ) -> None:
        """Pull ``source`` to its end, putting each chunk in ``channel``, and close it."""
        raise NotImplementedError

    async def aclose(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
