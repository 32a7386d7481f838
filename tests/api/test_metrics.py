"""The metrics (resumable_fast.metrics), read through the OpenTelemetry SDK's
in-memory reader from a meter provider the context is given: every
instrument, with its ``backend`` and ``outcome`` attributes, on each backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from resumable_fast import _core
from resumable_fast.records import SESSION_FENCE_PREFIX, new_fence_token

from conftest import ContextFactory, S2Lite
from support import TestingStream, from_list, read_text, recorded_context


@dataclass(frozen=True)
class Point:
    """One data point: a counter's value, or a histogram's count and sum."""

    attributes: dict[str, str]
    value: float
    count: int = 0


class Meters:
    """A meter provider for a context, and what its instruments recorded."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def points(self, name: str) -> list[Point]:
        data = self.reader.get_metrics_data()
        found: list[Point] = []
        for resource in data.resource_metrics if data is not None else []:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "resumable_fast"
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attributes = {k: str(v) for k, v in (point.attributes or {}).items()}
                        if isinstance(point, HistogramDataPoint):
                            found.append(Point(attributes, point.sum, point.count))
                        else:
                            assert isinstance(point, NumberDataPoint)
                            found.append(Point(attributes, point.value))
        return found

    def value(self, name: str, **attributes: str) -> float:
        """The sum over the points with these attributes (and maybe more)."""
        return sum(p.value for p in self._matching(name, attributes))

    def count(self, name: str, **attributes: str) -> int:
        """A histogram's measurements over the points with these attributes."""
        return sum(p.count for p in self._matching(name, attributes))

    def _matching(self, name: str, attributes: dict[str, str]) -> Iterator[Point]:
        for point in self.points(name):
            if attributes.items() <= point.attributes.items():
                yield point

    async def until(self, name: str, expected: float, **attributes: str) -> None:
        """Wait (a few seconds at most) until the instrument reads ``expected``."""
        give_up_at = time.monotonic() + 5
        while self.value(name, **attributes) != expected:
            assert time.monotonic() < give_up_at, (name, self.points(name))
            await asyncio.sleep(0.01)


@pytest.fixture
def meters() -> Iterator[Meters]:
    made = Meters()
    yield made
    made.provider.shutdown()


@pytest.fixture
def kind(backend_name: str) -> str:
    """The ``backend`` attribute this test's backend is recorded with."""
    return "s2" if backend_name.startswith("s2") else "embedded"


async def test_a_finished_stream_is_counted_from_start_to_landing(
    new_context: ContextFactory, meters: Meters, kind: str, stream_id: str
) -> None:
    async with new_context(meter_provider=meters.provider) as ctx:
        stream = await ctx.resumable_stream(stream_id, lambda: from_list(["a", "bb", "ccc"]))
        assert await read_text(stream) == "abbccc"
        await meters.until("resumable_fast.streams.finished", 1, backend=kind, outcome="done")
    assert meters.points("resumable_fast.streams.started") == [Point({"backend": kind}, 1)]
    assert meters.points("resumable_fast.streams.active") == [Point({"backend": kind}, 0)]
    assert meters.points("resumable_fast.chunks.persisted") == [Point({"backend": kind}, 3)]
    [size] = meters.points("resumable_fast.bytes.persisted")
    # The framed batches: at least the chunks' text, no more than a request.
    assert size.attributes == {"backend": kind}
    assert 6 <= size.value < 1024
    # The three chunks and the closing fence, in one append or a few.
    [records] = meters.points("resumable_fast.append.records")
    assert records.attributes == {"backend": kind}
    assert records.value == 4
    [duration] = meters.points("resumable_fast.append.duration")
    assert duration.attributes == {"backend": kind, "outcome": "ok"}
    assert duration.count == records.count
    assert 0 < duration.value < 10
    assert meters.value("resumable_fast.retries") == 0


async def test_resumed_readers_their_sessions_and_first_chunk(
    new_context: ContextFactory, meters: Meters, kind: str, stream_id: str
) -> None:
    source = TestingStream()
    async with new_context(meter_provider=meters.provider) as ctx:
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        source.write("first ")
        resumed = await ctx.resume_existing_stream(stream_id)
        assert resumed is not None
        assert await anext(resumed) == "first "
        readers = meters.points("resumable_fast.readers.active")
        assert readers == [Point({"backend": kind}, 1)]
        # One session on the backend: the reader's own, or the one it shares.
        assert meters.points("resumable_fast.read_sessions.active") == [Point({"backend": kind}, 1)]
        [first] = meters.points("resumable_fast.resume.first_chunk.duration")
        assert first.attributes == {"backend": kind}
        assert first.count == 1
        assert 0 < first.value < 10
        source.write("second")
        source.close()
        assert await read_text(resumed) == "second"
        assert await read_text(producer) == "first second"
        await meters.until("resumable_fast.readers.active", 0)
        await meters.until("resumable_fast.read_sessions.active", 0)
        # A reader of a finished stream too: its first chunk, once.
        assert await read_text(await ctx.resume_stream(stream_id)) == "first second"
        assert meters.count("resumable_fast.resume.first_chunk.duration") == 2
        await meters.until("resumable_fast.readers.active", 0)
        await meters.until("resumable_fast.read_sessions.active", 0)


async def test_a_failed_source_finishes_failed(
    new_context: ContextFactory, meters: Meters, kind: str, stream_id: str
) -> None:
    source = TestingStream()
    async with new_context(meter_provider=meters.provider) as ctx:
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        source.write("half")
        source.fail(RuntimeError("the model went away"))
        with pytest.raises(RuntimeError):
            await read_text(producer)
        await meters.until("resumable_fast.streams.finished", 1, backend=kind, outcome="failed")
    assert meters.value("resumable_fast.streams.finished", outcome="done") == 0
    assert meters.value("resumable_fast.streams.active") == 0


async def test_a_stopped_stream_finishes_stopped(
    new_context: ContextFactory, meters: Meters, kind: str, stream_id: str
) -> None:
    source = TestingStream()
    async with new_context(meter_provider=meters.provider) as ctx:
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        source.write("half")
        assert await anext(producer) == "half"
        assert meters.value("resumable_fast.streams.active", backend=kind) == 1
        await ctx.stop_stream(stream_id)
        assert await read_text(producer) == ""
        await meters.until("resumable_fast.streams.finished", 1, backend=kind, outcome="stopped")
    assert meters.value("resumable_fast.streams.active") == 0


async def test_a_stream_taken_over_finishes_taken_over(
    new_context: ContextFactory, meters: Meters, kind: str, stream_id: str
) -> None:
    source = TestingStream()
    async with new_context(meter_provider=meters.provider) as ctx:
        producer = await ctx.resumable_stream(stream_id, source.readable)
        assert producer is not None
        source.write("half")
        await meters.until("resumable_fast.chunks.persisted", 1)
        # What another process taking the stream over appends: a session
        # fence of its own, so this producer's next append is refused.
        await ctx.backend.append(
            ctx.stream_name(stream_id),
            _core.fence_append_input(new_fence_token(SESSION_FENCE_PREFIX), None),
        )
        source.write(" more")
        await meters.until("resumable_fast.streams.finished", 1, backend=kind, outcome="taken_over")
        assert meters.count("resumable_fast.append.duration", outcome="fenced_out") == 1
    assert meters.value("resumable_fast.streams.finished", outcome="stopped") == 0
    assert meters.value("resumable_fast.streams.active") == 0


async def test_retries_are_counted_on_s2(s2lite: S2Lite, meters: Meters, stream_id: str) -> None:
    """The closing fence lands but its answer is lost: the client retries it."""
    ctx, http = recorded_context(s2lite, retry_deadline=10, meter_provider=meters.provider)
    async with ctx:
        lost = http.lose_first_answer(b'"end-')
        stream = await ctx.resumable_stream(stream_id, lambda: from_list(["one", "two"]))
        assert await read_text(stream) == "onetwo"
        assert lost
    assert meters.points("resumable_fast.retries") == [Point({"backend": "s2"}, 1)]
    assert meters.value("resumable_fast.streams.finished", backend="s2", outcome="done") == 1


async def test_contexts_on_one_provider_share_its_instruments(
    new_context: ContextFactory, meters: Meters, stream_id: str
) -> None:
    """Two contexts (or an S2 client and its context) on one provider record
    into the same instruments, which are made once per provider."""
    async with (
        new_context(meter_provider=meters.provider) as first,
        new_context(meter_provider=meters.provider) as second,
    ):
        for context, suffix in ((first, "-1"), (second, "-2")):
            stream = await context.resumable_stream(stream_id + suffix, lambda: from_list(["x"]))
            assert await read_text(stream) == "x"
        await meters.until("resumable_fast.streams.finished", 2)
    assert meters.value("resumable_fast.streams.started") == 2
