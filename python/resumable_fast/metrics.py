"""The library's metrics, through the OpenTelemetry API (meter ``resumable_fast``).

Only the API is a dependency: with no SDK configured its instruments do
nothing, and an application that configures one (a ``MeterProvider`` set
globally, or handed to the context as ``meter_provider=``) sees them. Every
measurement has the attribute ``backend`` (``s2`` or ``embedded``):

- ``resumable_fast.streams.started``, ``resumable_fast.streams.finished``
  (attribute ``outcome``: ``done``, ``failed``, ``stopped``, ``taken_over``)
  and ``resumable_fast.streams.active``: the producers of this process;
- ``resumable_fast.chunks.persisted`` and ``resumable_fast.bytes.persisted``
  (the framed ``AppendInput`` bodies of the data batches);
- ``resumable_fast.append.duration`` (seconds; attribute ``outcome``: ``ok``,
  ``fenced_out``, ``failed``), ``resumable_fast.append.records`` and
  ``resumable_fast.retries`` (requests to S2 sent again after a transient
  fault);
- ``resumable_fast.readers.active`` (resumed streams reading),
  ``resumable_fast.read_sessions.active`` (read sessions open on the
  backend) and ``resumable_fast.resume.first_chunk.duration`` (seconds from
  a resumed stream's first read to its first chunk).

Nothing is measured per chunk: a producer's chunks are counted once per
append, where their batch lands, so the per-token path costs the same with
or without an SDK. The instruments are made once per meter provider (an SDK
warns about an instrument made twice) and the attribute dicts once per
backend.
"""

from __future__ import annotations

import enum
import time
import weakref
from collections.abc import AsyncGenerator
from contextlib import aclosing
from importlib.metadata import PackageNotFoundError, version
from typing import Literal, TypeVar

from opentelemetry.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    UpDownCounter,
    get_meter_provider,
)

__all__ = [
    "AppendOutcome",
    "BackendKind",
    "Instruments",
    "Metrics",
    "StreamOutcome",
]

BackendKind = Literal["s2", "embedded"]

_Buckets = tuple[float, ...]

# Appends take milliseconds to seconds (S2 acknowledges once durable).
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Up to S2's 1000 records per append.
_RECORDS_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)

_Batch = TypeVar("_Batch")


class StreamOutcome(enum.Enum):
    """How a producer's stream finished (``resumable_fast.streams.finished``)."""

    DONE = "done"
    FAILED = "failed"
    STOPPED = "stopped"
    TAKEN_OVER = "taken_over"


class AppendOutcome(enum.Enum):
    """How an append ended (``resumable_fast.append.duration``)."""

    OK = "ok"
    FENCED_OUT = "fenced_out"
    FAILED = "failed"


def _library_version() -> str | None:
    try:
        return version("resumable_fast")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return None


class Instruments:
    """The library's instruments from one meter provider."""

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter("resumable_fast", _library_version())

        def counter(name: str, unit: str, description: str) -> Counter:
            return meter.create_counter(f"resumable_fast.{name}", unit, description)

        def up_down(name: str, unit: str, description: str) -> UpDownCounter:
            return meter.create_up_down_counter(f"resumable_fast.{name}", unit, description)

        def histogram(name: str, unit: str, description: str, buckets: _Buckets) -> Histogram:
            return meter.create_histogram(
                f"resumable_fast.{name}",
                unit,
                description,
                explicit_bucket_boundaries_advisory=buckets,
            )

        self.streams_started = counter("streams.started", "{stream}", "Streams producers started")
        self.streams_finished = counter("streams.finished", "{stream}", "Streams that finished")
        self.streams_active = up_down("streams.active", "{stream}", "Streams producing now")
        self.chunks_persisted = counter("chunks.persisted", "{chunk}", "Chunks that landed")
        self.bytes_persisted = counter("bytes.persisted", "By", "Bytes of data batches that landed")
        self.append_duration = histogram(
            "append.duration", "s", "How long an append took, retries included", _SECONDS_BUCKETS
        )
        self.append_records = histogram(
            "append.records", "{record}", "Records in one append that landed", _RECORDS_BUCKETS
        )
        self.retries = counter(
            "retries", "{request}", "Requests sent again after a transient fault"
        )
        self.readers_active = up_down("readers.active", "{reader}", "Resumed streams reading now")
        self.read_sessions_active = up_down(
            "read_sessions.active", "{session}", "Read sessions open"
        )
        self.first_chunk_duration = histogram(
            "resume.first_chunk.duration",
            "s",
            "From a resumed stream's first read to its first chunk",
            _SECONDS_BUCKETS,
        )


_instruments: weakref.WeakKeyDictionary[MeterProvider, Instruments] = weakref.WeakKeyDictionary()


def _instruments_of(meter_provider: MeterProvider) -> Instruments:
    made = _instruments.get(meter_provider)
    if made is None:
        made = _instruments[meter_provider] = Instruments(meter_provider)
    return made


class Metrics:
    """What the library records, with one backend's attributes: one per
    context (and per S2 client), handed to what it makes."""

    __slots__ = (
        "_append_landed",
        "_append_outcomes",
        "_attributes",
        "_instruments",
        "_stream_outcomes",
        "backend",
    )

    def __init__(self, backend: BackendKind, meter_provider: MeterProvider | None = None) -> None:
        """``meter_provider``: where the instruments come from (default: the
        global one, a no-op until an SDK is configured)."""
        self.backend = backend
        self._instruments = _instruments_of(
            meter_provider if meter_provider is not None else get_meter_provider()
        )
        self._attributes = {"backend": backend}
        self._stream_outcomes = {
            outcome: {"backend": backend, "outcome": outcome.value} for outcome in StreamOutcome
        }
        self._append_outcomes = {
            outcome: {"backend": backend, "outcome": outcome.value} for outcome in AppendOutcome
        }
        # Every landed append records with these: looked up once, not per
        # append (an enum's hash is a Python call).
        self._append_landed = self._append_outcomes[AppendOutcome.OK]

    # -- producers --------------------------------------------------------------

    def stream_started(self) -> None:
        instruments = self._instruments
        instruments.streams_started.add(1, self._attributes)
        instruments.streams_active.add(1, self._attributes)

    def stream_finished(self, outcome: StreamOutcome) -> None:
        instruments = self._instruments
        instruments.streams_finished.add(1, self._stream_outcomes[outcome])
        instruments.streams_active.add(-1, self._attributes)

    # -- appends ----------------------------------------------------------------

    def appended(self, started: float, records: int, chunks: int, size: int) -> None:
        """An append that began at ``started`` (:func:`time.perf_counter`)
        landed: ``records`` in all, ``chunks`` of them data, whose batches
        were ``size`` bytes."""
        instruments = self._instruments
        attributes = self._attributes
        instruments.append_duration.record(time.perf_counter() - started, self._append_landed)
        instruments.append_records.record(records, attributes)
        if chunks:
            instruments.chunks_persisted.add(chunks, attributes)
            instruments.bytes_persisted.add(size, attributes)

    def append_ended(self, started: float, outcome: AppendOutcome) -> None:
        """An append that began at ``started`` did not land."""
        self._instruments.append_duration.record(
            time.perf_counter() - started, self._append_outcomes[outcome]
        )

    def retried(self) -> None:
        self._instruments.retries.add(1, self._attributes)

    # -- readers ----------------------------------------------------------------

    def reader_opened(self) -> None:
        self._instruments.readers_active.add(1, self._attributes)

    def reader_closed(self) -> None:
        self._instruments.readers_active.add(-1, self._attributes)

    def first_chunk(self, started: float) -> None:
        """A resumed stream that began reading at ``started`` has its first chunk."""
        self._instruments.first_chunk_duration.record(
            time.perf_counter() - started, self._attributes
        )

    async def session(self, batches: AsyncGenerator[_Batch, None]) -> AsyncGenerator[_Batch, None]:
        """``batches``, a read session of the backend, counted as open from
        its first read until it is closed."""
        read_sessions = self._instruments.read_sessions_active
        read_sessions.add(1, self._attributes)
        try:
            async with aclosing(batches):
                async for batch in batches:
                    yield batch
        finally:
            read_sessions.add(-1, self._attributes)
