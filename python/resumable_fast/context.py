"""The resumable stream context: the public API to create, resume, inspect
and stop streams (the stream layout is in :mod:`resumable_fast.records`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from types import TracebackType

from opentelemetry.metrics import MeterProvider

from resumable_fast import fencing
from resumable_fast.backends import Backend, EmbeddedBackend
from resumable_fast.config import BatchSettings
from resumable_fast.errors import (
    ConfigurationError,
    InvalidArgumentError,
    InvalidChunkError,
    InvalidStreamIdError,
    ResumableStreamError,
    StreamExistsError,
)
from resumable_fast.fanout import SharedReads
from resumable_fast.metrics import Metrics
from resumable_fast.producer import Producer, ProducerState
from resumable_fast.records import (
    MAX_STREAM_ID_BYTES,
    SequencedRecord,
    StreamName,
    StreamState,
    StreamStatus,
    is_closing_fence,
    prefixed_stream_name,
    status_of,
    validate_stream_id,
)
from resumable_fast.scheduling import (
    HEARTBEATS_PER_TIMEOUT,
    BatchAccumulator,
    Scheduler,
    native_accumulator,
)
from resumable_fast.streams import (
    GeneratorStream,
    ProducerStream,
    ResumableStream,
    ResumedStream,
    skip_text,
    stored_then_new,
)
from resumable_fast.writing import StreamWriter

__all__ = [
    "MakeStream",
    "ResumableStreamContext",
    "StreamState",
    "new_stream_id",
]

logger = logging.getLogger("resumable_fast")

# Readers give up on an unfinished stream after this much silence; producers
# idle for a third of it append a heartbeat.
DEFAULT_LIVENESS_TIMEOUT = 30.0
DEFAULT_DRAIN_TIMEOUT = 30.0

MakeStream = Callable[[], AsyncIterable[str] | Awaitable[AsyncIterable[str]]]


def new_stream_id() -> str:
    """A fresh stream id: 128 random bits, URL-safe (22 characters)."""
    return secrets.token_urlsafe(16)


def _encoded_bytes(text: str) -> int:
    """UTF-8 bytes of ``text``, or more than S2 allows if it cannot be encoded."""
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return MAX_STREAM_ID_BYTES + 1


def _validate_skip(skip_characters: int | None) -> int:
    if skip_characters is None:
        return 0
    if isinstance(skip_characters, bool) or not isinstance(skip_characters, int):
        raise InvalidArgumentError(
            f"skip_characters must be an int or None, got {type(skip_characters).__name__}"
        )
    if skip_characters < 0:
        raise InvalidArgumentError(f"skip_characters must be >= 0, got {skip_characters}")
    return skip_characters


class ResumableStreamContext:
    """Creates and resumes streams in one S2 basin.

    Use it as an async context manager, or call :meth:`aclose` at shutdown: it
    waits for producers to finish and drains their pending batches.

    ``accumulator`` is a seam: what frames every producing stream's chunks
    into S2 batches (:class:`~resumable_fast.scheduling.BatchAccumulator`).
    By default the native core's, built from ``batching``; a stand-in must
    frame the same bytes, sealing batches as ``batching`` says (the
    benchmarks pass their pure-Python twin of the core).

    ``meter_provider``: where the metrics go (:mod:`resumable_fast.metrics`;
    default: the global one, a no-op until an SDK is configured).
    """

    def __init__(
        self,
        backend: Backend,
        batching: BatchSettings | None = None,
        *,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        key_prefix: str = "",
        liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
        share_read_sessions: bool | None = None,
        accumulator: BatchAccumulator | None = None,
        trim_finished: bool = False,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if trim_finished and isinstance(backend, EmbeddedBackend):
            # S2 trims; the embedded stores index records by position and
            # drop a finished stream whole at its retention, so a trim there
            # would buy nothing but a second layout (docs/design.md, issue 23).
            raise ConfigurationError(
                "trim_finished needs S2: the embedded backend does not trim streams"
            )
        self.trim_finished = trim_finished
        # Trims of finished streams still being appended (awaited at close).
        self._trims: set[asyncio.Task[None]] = set()
        if liveness_timeout is not None and (
            isinstance(liveness_timeout, bool)
            or not isinstance(liveness_timeout, (int, float))
            or not liveness_timeout > 0
        ):
            raise ConfigurationError(
                f"liveness_timeout must be seconds > 0 or None, got {liveness_timeout!r}"
            )
        self.liveness_timeout = liveness_timeout
        if not isinstance(key_prefix, str) or _encoded_bytes(
            prefixed_stream_name(key_prefix, "")
        ) >= (MAX_STREAM_ID_BYTES):
            raise ConfigurationError(
                f"key_prefix must be a str shorter than {MAX_STREAM_ID_BYTES} bytes, "
                "escaped and with its separator"
            )
        self.key_prefix = key_prefix
        self.batching = batching or BatchSettings()
        self.drain_timeout = drain_timeout
        self._backend = backend
        self._metrics = Metrics(backend.kind, meter_provider)
        heartbeat_interval = (
            None if liveness_timeout is None else liveness_timeout / HEARTBEATS_PER_TIMEOUT
        )
        self._scheduler = Scheduler(
            accumulator if accumulator is not None else native_accumulator(self.batching),
            heartbeat_interval,
        )
        # Readers of one stream share one read session where a session costs
        # requests (S2); the embedded backend's sessions are already local.
        if share_read_sessions is None:
            share_read_sessions = (
                backend.store.shares_read_sessions if isinstance(backend, EmbeddedBackend) else True
            )
        self._shared_reads = (
            SharedReads(backend, self._scheduler.spawn, self._metrics)
            if share_read_sessions
            else None
        )
        self._read_session: Callable[
            [StreamName, int], AsyncGenerator[list[SequencedRecord], None]
        ] = (
            self._shared_reads.read_session
            if self._shared_reads is not None
            else self._own_read_session
        )
        # Producers by stream name, until released.
        self._producers: dict[StreamName, Producer] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"ResumableStreamContext({self._backend.description})"

    @property
    def backend_description(self) -> str:
        """Where the streams live, e.g. ``embedded (in memory)`` or
        ``s2 (basin b at https://...)``; never the access token."""
        return self._backend.description

    @property
    def backend(self) -> Backend:
        """The backend the streams live in, for modules built on the context
        (:mod:`resumable_fast.chats` keeps its chat pointers there)."""
        self._check_open()
        return self._backend

    @property
    def shared_reads(self) -> SharedReads | None:
        """The read sessions this context's readers share (one per stream),
        or None when each reader reads on its own (``share_read_sessions``)."""
        return self._shared_reads

    def producer(self, stream_id: str) -> Producer | None:
        """The producer this context runs for ``stream_id``, until it is
        released (its stream finished, failed or stopped), else None."""
        return self._producers.get(self._name(stream_id))

    def stream_name(self, stream_id: str) -> StreamName:
        """The backend's name for ``stream_id``: the id itself, or with a key
        prefix the escaped prefix, ``:`` and the id (an
        :class:`InvalidStreamIdError` for an id S2 would refuse)."""
        return self._name(stream_id)

    async def __aenter__(self) -> ResumableStreamContext:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise ResumableStreamError("the context is closed")

    # -- public API -----------------------------------------------------------

    async def resumable_stream(
        self,
        stream_id: str,
        make_stream: MakeStream,
        skip_characters: int | None = None,
    ) -> ResumableStream | None:
        """Produce the stream if nobody does yet, else resume it.

        Returns None, without calling ``make_stream``, when the stream is
        finished. Of concurrent callers exactly one calls ``make_stream``.
        """
        self._check_open()
        name = self._name(stream_id)
        skip = _validate_skip(skip_characters)
        # A new stream is the common case: claim it at once (one request),
        # and look at what is there only if the claim is refused.
        token = await fencing.claim(self._backend, name)
        if token is not None:
            return await self._start_producer(stream_id, name, token, make_stream, skip)
        last = await self._backend.last_record(name)
        if status_of(last) is StreamStatus.DONE:
            return None
        if last is not None and fencing.is_abandoned(last, self.liveness_timeout):
            taken = await self._take_over(stream_id, name, last, make_stream, skip)
            if taken is not None:
                return taken
        return self._resumed(stream_id, name, skip)

    async def create_new_resumable_stream(
        self,
        stream_id: str,
        make_stream: MakeStream,
        skip_characters: int | None = None,
    ) -> ResumableStream:
        """Always produce: claim the stream and return the producer's stream.

        S2 streams are append-only, so a stream that already has a producer or
        has finished cannot be produced again: that raises
        :class:`StreamExistsError`.
        """
        self._check_open()
        name = self._name(stream_id)
        skip = _validate_skip(skip_characters)
        token = await fencing.claim(self._backend, name)
        if token is None:
            raise StreamExistsError(stream_id)
        return await self._start_producer(stream_id, name, token, make_stream, skip)

    async def resume_existing_stream(
        self, stream_id: str, skip_characters: int | None = None
    ) -> ResumableStream | None:
        """A resumed stream, or None when the stream does not exist or is finished."""
        self._check_open()
        name = self._name(stream_id)
        skip = _validate_skip(skip_characters)
        status = status_of(await self._backend.last_record(name))
        if status is not StreamStatus.LIVE:
            if status is StreamStatus.ABSENT:
                self._note_nothing_to_resume()
            return None
        return self._resumed(stream_id, name, skip)

    async def resume_stream(
        self, stream_id: str, skip_characters: int | None = None
    ) -> ResumableStream:
        """The seed's resume: replay from the start and follow the live tail to
        the end fence, also for a stream whose producer has not started yet
        or that has finished."""
        self._check_open()
        name = self._name(stream_id)
        return self._resumed(stream_id, name, _validate_skip(skip_characters))

    async def has_existing_stream(self, stream_id: str) -> StreamState:
        """None if never created, True while in progress, ``"DONE"`` when finished."""
        self._check_open()
        status = status_of(await self._backend.last_record(self._name(stream_id)))
        if status is StreamStatus.ABSENT:
            self._note_nothing_to_resume()
        return status.public

    async def stop_stream(self, stream_id: str) -> None:
        """End a stream now: an ``end-`` fence appended without a token check
        fences the producer out; readers end."""
        self._check_open()
        name = self._name(stream_id)
        await fencing.stop(self._backend, name)
        producer = self._producers.get(name)
        if producer is not None:
            producer.stop()

    async def delete_stream(self, stream_id: str) -> None:
        """Remove a stream for good (a chat deleted, an erasure request).

        An unfinished stream is stopped first (:meth:`stop_stream`: producers
        anywhere are fenced out, readers that reach the fence end normally),
        and this context's producer is waited for until its source is closed
        and none of its appends is in flight, so nothing it sends lands after
        the delete. Then the backend deletes the stream; a reader still on it
        ends with :class:`StreamDeletedError`, and :meth:`has_existing_stream`
        answers None. Deleting a stream that does not exist does nothing."""
        self._check_open()
        name = self._name(stream_id)
        if status_of(await self._backend.last_record(name)) is StreamStatus.LIVE:
            await fencing.stop(self._backend, name)
        producer = self._producers.get(name)
        if producer is not None:
            producer.stop()
            await producer.drained()
        await self._backend.delete(name)

    async def aclose(self) -> None:
        """Wait for producers to finish (up to ``drain_timeout``), flush what they
        accepted, and release connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        producers = list(self._producers.values())
        if producers:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.drained()) for p in producers],
                timeout=self.drain_timeout,
            )
            for future in pending:
                future.cancel()
            unfinished = [p for p in producers if p.source_running]
            for producer in unfinished:
                producer.abort()
            if unfinished:
                logger.warning(
                    "closing with %d unfinished producer(s); their streams end with an error",
                    len(unfinished),
                )
                await asyncio.gather(*(p.drained() for p in unfinished), return_exceptions=True)
        if self._trims:
            await asyncio.wait(set(self._trims), timeout=self.drain_timeout)
        await self._scheduler.aclose()
        await self._backend.aclose()

    # -- internals --------------------------------------------------------------

    def _note_nothing_to_resume(self) -> None:
        """A stream looked for is not there: with streams in this process's
        memory, say once per process that other workers cannot see them."""
        global _warned_process_local
        if (
            not _warned_process_local
            and isinstance(self._backend, EmbeddedBackend)
            and self._backend.process_local
        ):
            _warned_process_local = True
            logger.warning(
                "a stream to resume was not found; streams are kept in this process's memory, "
                "so a service with several worker processes or replicas must share them: "
                "set data_dir (RESUMABLE_FAST_DATA_DIR) for the workers of one machine, "
                "or use S2 (S2_BASIN) for several machines"
            )

    def _name(self, stream_id: str) -> StreamName:
        """The backend's name for a stream (:func:`prefixed_stream_name`)."""
        validate_stream_id(stream_id)
        name = prefixed_stream_name(self.key_prefix, stream_id)
        if len(name.encode("utf-8")) > MAX_STREAM_ID_BYTES:
            raise InvalidStreamIdError(
                f"key prefix and stream id are {len(name.encode('utf-8'))} bytes together, "
                f"S2 allows at most {MAX_STREAM_ID_BYTES}"
            )
        return name

    async def _take_over(
        self,
        stream_id: str,
        name: StreamName,
        last: SequencedRecord,
        make_stream: MakeStream,
        skip_characters: int,
    ) -> ResumableStream | None:
        """Continue an abandoned stream with a new producer: a new session
        fence at the tail (only if nothing was appended since ``last``)
        fences the old producer out should it still be alive; the new
        source's text follows what is there. The caller's stream replays the
        stored text, then follows the new producer. None when another writer
        got there first."""
        takeover_seq_num = last["seq_num"] + 1
        token = await fencing.claim_tail(self._backend, name, takeover_seq_num)
        if token is None:
            return None
        logger.warning(
            "stream %r: its producer went silent; a new producer takes it over", stream_id
        )
        producer = await self._start_producer(
            stream_id, name, token, make_stream, 0, first_seq_num=takeover_seq_num + 1
        )
        chunks = stored_then_new(
            stream_id, self._own_read_session(name, 0), takeover_seq_num, producer
        )
        return GeneratorStream(stream_id, skip_text(chunks, skip_characters))

    async def _start_producer(
        self,
        stream_id: str,
        name: StreamName,
        token: str,
        make_stream: MakeStream,
        skip_characters: int,
        first_seq_num: int = 1,
    ) -> ResumableStream:
        try:
            source = make_stream()
            if inspect.isawaitable(source):
                source = await source
            if not isinstance(source, AsyncIterable):
                raise InvalidChunkError(
                    f"make_stream must return an async iterable of str, got {type(source).__name__}"
                )
        except BaseException:
            await fencing.append_error_fence(self._backend, name, token)
            raise
        metrics = self._metrics
        writer = StreamWriter(
            self._scheduler, self._backend, name, token, first_seq_num, metrics=metrics
        )
        producer = Producer(
            self._scheduler, writer, source, self.batching.batch_size, self._forget, metrics
        )
        self._producers[name] = producer
        read_session, liveness_timeout = self._read_session, self.liveness_timeout

        def from_backend(skip: int) -> ResumableStream:
            # The producer's own records start at first_seq_num.
            return ResumedStream(
                stream_id,
                read_session(name, first_seq_num),
                skip,
                liveness_timeout,
                metrics=metrics,
            )

        return ProducerStream(stream_id, producer.channel, skip_characters, from_backend)

    def _forget(self, producer: Producer) -> None:
        if self._producers.get(producer.name) is producer:
            del self._producers[producer.name]
        if self.trim_finished and producer.state is ProducerState.DONE:
            task = self._scheduler.spawn(self._trim(producer.name), f"trim {producer.name}")
            self._trims.add(task)
            task.add_done_callback(self._trims.discard)

    async def _trim(self, name: StreamName) -> None:
        """Trim a finished stream to its end fence (``trim_finished``): the
        data goes, the fence stays, so the stream still answers ``"DONE"``
        and is never produced again. Only if the fence is still the last
        record (``match_seq_num``); a failure is logged: the stream stays
        finished, just untrimmed."""
        try:
            last = await self._backend.last_record(name)
            if last is not None and is_closing_fence(last):
                fence_seq_num = last["seq_num"]
                await self._backend.trim(name, fence_seq_num, fence_seq_num + 1)
        except ResumableStreamError as exc:
            logger.warning("stream %r: trimming it after its end failed: %s", name, exc)

    def _own_read_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        """A read session of the backend's for one reader, counted."""
        return self._metrics.session(self._backend.read_session(name, seq_num))

    def _resumed(self, stream_id: str, name: StreamName, skip_characters: int) -> ResumedStream:
        return ResumedStream(
            stream_id,
            self._read_session(name, 0),
            skip_characters,
            self.liveness_timeout,
            metrics=self._metrics,
        )


_warned_process_local = False
