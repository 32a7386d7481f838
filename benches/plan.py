"""What a harness run measures: the peers, side by side, and the scenarios
each runs in.

Peers speak one protocol: ``<driver> --streams N --tokens T --rate R
--batch-size B --linger-ms L [--reader]`` prints one JSON line (see
``benches/peers.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OURS = "resumable_fast_s2"
# What the others are measured against, not ranked: peers that persist
# nothing, and s2_floor, the least work persisting on S2 can be (s2_floor.py).
BASELINES = ("raw", "raw_task", "s2_floor")
EMBEDDED, EMBEDDED_DIR = "resumable_fast_embedded", "resumable_fast_embedded_dir"
# This library's other rows (on the embedded backend, in memory or in a
# data_dir, with its pure-Python core): not peers a user would pick instead of it.
OUR_VARIANTS = (EMBEDDED, EMBEDDED_DIR, "pure_python")


@dataclass(frozen=True)
class Peer:
    name: str
    command: tuple[str, ...]
    needs: str  # "s2", "redis" or "none"
    # Takes --live-readers (the Python peers that can resume a live stream).
    live_readers: bool = False
    # Runs in the live-readers scenario only.
    live_readers_only: bool = False
    # Takes --lag: reports its acknowledgements, and a second one of it can
    # follow its streams live (the lag scenario's peers: the Python S2 peers
    # and this library's embedded rows).
    lag: bool = False
    # Runs in the throughput and paced scenarios only (a floor of their CPU).
    throughput_only: bool = False
    # For peers 30-100x slower than ours per token: fewer runs, and a phase
    # that takes longer than this many seconds is reported as failed.
    max_runs: int | None = None
    timeout_s: float | None = None

    def runs_in(self, scenario: Scenario) -> bool:
        if self.throughput_only:
            return scenario.plain
        if scenario.lag:
            return self.lag
        if scenario.live_readers:
            return self.live_readers
        return not self.live_readers_only


# The Python packages that poll Redis (0.4-1 ms of CPU per token): one run
# per scenario ranks them, and a run that hangs (fastapi-resumable-stream's
# defaults at 100 streams) fails in two minutes rather than in ten.
SLOW_PEER: dict[str, Any] = {"max_runs": 1, "timeout_s": 120.0}


def python_peer(name: str, needs: str, **flags: Any) -> Peer:
    """A peer of ``benches/peers.py`` (the Python peers), by its name there."""
    return Peer(name, (sys.executable, str(HERE / "peers.py"), name), needs, **flags)


PEERS = (
    python_peer("raw", "none"),
    # The floor of a task-to-task handoff: a source in a task of its own, as
    # the library keeps it, nothing persisted.
    python_peer("raw_task", "none"),
    # raw_task plus one bare append per batch (benches/s2_floor.py).
    python_peer("s2_floor", "s2", throughput_only=True),
    python_peer(OURS, "s2", live_readers=True, lag=True),
    # Ours with a read session per reader: what sharing one saves.
    python_peer("resumable_fast_s2_unshared", "s2", live_readers=True, live_readers_only=True),
    python_peer(EMBEDDED, "none", live_readers=True, lag=True),
    # The same in a data_dir (SQLite; a fresh directory each run, made and
    # removed by the peer process, whose CPU includes the store's writer thread).
    python_peer(EMBEDDED_DIR, "none", live_readers=True, lag=True),
    python_peer("pure_python", "s2", lag=True),
    python_peer("s2sdk_naive", "s2", lag=True),
    python_peer("s2sdk_producer", "s2", lag=True),
    Peer("node_s2", ("node", str(HERE / "node/s2_peer.mjs")), "s2", lag=True),
    Peer("vercel_redis", ("node", str(HERE / "node/redis_peer.mjs")), "redis"),
    python_peer("redis_streams", "redis", live_readers=True),
    python_peer("py_resumable_stream", "redis", live_readers=True),
    python_peer("fastapi_resumable_stream", "redis", live_readers=True, **SLOW_PEER),
    # The same with settings that let it finish where its defaults fail.
    python_peer("fastapi_resumable_stream_tuned", "redis", live_readers=True, **SLOW_PEER),
    python_peer("assistant_stream", "redis", live_readers=True, **SLOW_PEER),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int
    tokens: int
    rate: float
    reader: bool = False
    hold: bool = False  # every stream held mid-reply while RSS is sampled
    live_readers: int = 0  # readers of each stream following it live
    # Persistence and live-reader lag, with a reader of each stream in
    # another context (benches/lag.py); its CPU is not a target.
    lag: bool = False

    @property
    def plain(self) -> bool:
        """Streams produced and read by their producer's client alone (the
        throughput and paced scenarios): no timed resumes, no hold, no other
        readers, no lag probe."""
        return not (self.reader or self.hold or self.live_readers or self.lag)


MEMORY = "memory"
PACED = "paced"
THROUGHPUT_MANY = "throughput, many streams"
RESUME = "resume"
LIVE_READERS = "live readers"
LAG = "lag"


def scenarios(quick: bool) -> list[Scenario]:
    """Each scenario's name starts with its kind (the targets look them up)."""
    if quick:
        return [
            Scenario("throughput, 1 stream", 1, 500, 0),
            Scenario("throughput, many streams: 100", 100, 50, 0),
            Scenario("paced 50 tok/s, 20 streams", 20, 50, 50),
            Scenario("resume, 2,000-token stream", 2, 2000, 0, reader=True),
            Scenario("memory, 1,000 streams in flight", 1000, 8, 0, hold=True),
            Scenario("live readers, 100 of one stream", 1, 200, 100, live_readers=100),
            Scenario("lag, paced 50 tok/s, 20 streams", 20, 50, 50, lag=True),
        ]
    return [
        Scenario("throughput, 1 stream", 1, 10_000, 0),
        Scenario("throughput, 100 streams", 100, 500, 0),
        Scenario("throughput, many streams: 1,000", 1000, 100, 0),
        Scenario("paced 50 tok/s, 100 streams", 100, 200, 50),
        Scenario("resume, 10,000-token stream", 10, 10_000, 0, reader=True),
        Scenario("memory, 10,000 streams in flight", 10_000, 8, 0, hold=True),
        Scenario("live readers, 1,000 of one stream", 1, 500, 100, live_readers=1000),
        Scenario("lag, paced 50 tok/s, 100 streams", 100, 200, 50, lag=True),
    ]


def scenario_of(plan: Sequence[Scenario], kind: str) -> Scenario | None:
    return next((scenario for scenario in plan if scenario.name.startswith(kind)), None)
