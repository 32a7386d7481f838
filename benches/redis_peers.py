"""Peers on Redis of the side-by-side benchmark (issue 15), run by ``benches/peers.py``.

Each reads ``REDIS_URL`` (``benches/harness.py`` starts a redis-server on
loopback and sets it) and uses its package through its public API, as its
README shows users, with redis-py as the Redis client:

* ``redis_streams``: Redis Streams by hand, the pattern Python users write.
* ``py_resumable_stream``: ``resumable-stream``, a Python port of Vercel's
  package (pub/sub, the text kept in the producer's memory).
* ``fastapi_resumable_stream``, ``fastapi_resumable_stream_tuned``:
  ``fastapi-resumable-stream`` (a Redis list plus pub/sub), with the
  package's and redis-py's defaults, then with settings that let it finish.
* ``assistant_stream``: ``assistant-stream``'s ``assistant_stream.resumable``
  context on its Redis store (a Redis stream per stream, readers polling).

``requests`` counts round trips to Redis in the produce phase (a pipeline is
one; so is each command a new connection sends as it connects). ``appends``
is counted by redis_streams only (its entries); the packages' writes are in
``requests``.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from peer_base import Counters, Options, Peer


def _redis_url(peer: str) -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        raise SystemExit(f"{peer} needs REDIS_URL (benches/harness.py sets it)")
    return url


async def _redis_versions(url: str, package: str) -> dict[str, str]:
    """The package's version, redis-py's and the server's."""
    import redis.asyncio

    client: Any = redis.asyncio.Redis.from_url(url)
    try:
        info = await client.info("server")
    finally:
        await client.aclose()
    return {
        package: importlib.metadata.version(package),
        "redis-py": redis.__version__,
        "redis-server": str(info.get("redis_version", "unknown")),
    }


def _count_round_trips(pool: Any, counters: Counters) -> None:
    """Counts every command or pipeline that ``pool``'s connections send
    (each is one write and one round trip), pub/sub commands included: each
    new connection's ``send_packed_command`` is wrapped, so the packages use
    the client unchanged."""
    make_connection = pool.make_connection

    def counted_make_connection() -> Any:
        connection = make_connection()
        send = connection.send_packed_command

        async def counted_send(*args: Any, **kwargs: Any) -> None:
            counters.requests += 1
            await send(*args, **kwargs)

        connection.send_packed_command = counted_send
        return connection

    pool.make_connection = counted_make_connection


# -- Redis Streams by hand (redis-py) --------------------------------------------


REDIS_STREAM_MAXLEN = 100_000
REDIS_STREAM_TTL_S = 3600
REDIS_READ_BLOCK_MS = 5000
REDIS_MAX_CONNECTIONS = 256


class RedisStreamsPeer(Peer):
    """The pattern Python users write by hand with redis-py: the producer
    ``XADD``s each chunk (``MAXLEN``, and an ``EXPIRE`` in the same round
    trip) before its client gets it, then an end entry; readers ``XREAD
    BLOCK`` from the last id they saw until the end entry."""

    def __init__(self, url: str, versions: dict[str, str]) -> None:
        import redis.asyncio

        super().__init__(versions)
        # redis-py's default pool refuses connections past its cap; a
        # blocking pool makes the rest wait, as ours does past 256 in flight.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_MAX_CONNECTIONS, timeout=None
        )
        self.redis = redis.asyncio.Redis(connection_pool=pool)

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        return self._produce(f"chat:{stream_id}", source)

    async def _append(self, key: str, fields: dict[Any, Any]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, maxlen=REDIS_STREAM_MAXLEN, approximate=True)
            pipe.expire(key, REDIS_STREAM_TTL_S)
            await pipe.execute()
        self.counters.requests += 1
        self.counters.appends += 1

    async def _produce(self, key: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        async for chunk in source:
            await self._append(key, {"d": chunk})
            yield chunk
        await self._append(key, {"end": "1"})

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        return self._read(f"chat:{stream_id}")

    async def _read(self, key: str) -> AsyncIterator[str]:
        last = "0-0"
        while True:
            answer: Any = await self.redis.xread({key: last}, count=1000, block=REDIS_READ_BLOCK_MS)
            for _, entries in answer:
                for entry_id, fields in entries:
                    if b"end" in fields:
                        return
                    last = entry_id
                    yield fields[b"d"].decode()

    async def aclose(self) -> None:
        await self.redis.aclose()


async def redis_streams(options: Options) -> Peer:
    import redis

    url = _redis_url("redis_streams")
    peer = RedisStreamsPeer(url, {"redis-py": redis.__version__})
    info = await peer.redis.info("server")
    peer.versions["redis-server"] = str(info.get("redis_version", "unknown"))
    return peer


# -- resumable-stream (the Python port of Vercel's package) ----------------------


class PyResumableStreamPeer(Peer):
    """``resumable-stream`` as its README shows: one context from
    ``create_resumable_stream_context`` with the package's own
    ``RedisPublisher`` and ``RedisSubscriber`` (each a redis-py client it
    makes from the URL; connected before use, since the context's
    ``redis_url=`` form connects them in tasks that a first call can
    outrun); ``resumable_stream(id, make_stream)`` produces,
    ``resume_existing_stream(id)`` resumes. The publisher's client has
    redis-py's default pool, which refuses a connection past 100 open ones:
    1,000 streams starting at once fail (``MaxConnectionsError: Too many
    connections`` from the ``INCR``s).

    Like Vercel's package it keeps a stream's text only in the producer's
    memory: per stream, ``INCR`` and ``SET`` of a sentinel key, ``SUBSCRIBE``
    and ``UNSUBSCRIBE`` of a request channel; per chunk, a ``PUBLISH`` to each
    reader listening and nothing else. A reader ``INCR``s the sentinel,
    ``SUBSCRIBE``s a channel of its own and ``PUBLISH``es a request; the
    producer answers with the text so far in one message, then each further
    chunk, then a done message. Every call is one command: ``requests`` counts
    them (wrappers around the publisher's and subscriber's methods).

    A finished stream cannot be resumed (``resume_existing_stream`` answers
    None), so, as in the vercel_redis peer, every stream is held open after
    its last chunk: its source waits on a gate before it ends, and the
    producer's client ends after the ``--tokens`` chunks it expects (two
    async generators of this peer per chunk). A resume reads the first
    message, which is then the whole text, and stops listening; ``release``
    opens the gates and waits for the producers to end (``SET`` DONE,
    ``PUBLISH`` done to each reader that listened, ``UNSUBSCRIBE``), which
    counts in the produce phase, as in vercel_redis."""

    def __init__(self, tokens: int, publisher: Any, subscriber: Any, versions: dict[str, str]):
        from resumable_stream import create_resumable_stream_context

        super().__init__(versions)
        self.tokens = tokens
        self.publisher = publisher
        self.subscriber = subscriber
        self.gates: dict[str, asyncio.Event] = {}
        # The package hands wait_until a future per stream that settles when
        # its producer is done: release waits for them.
        self.producing: list[Awaitable[None]] = []
        self.context: Any = create_resumable_stream_context(
            publisher=publisher, subscriber=subscriber, wait_until=self.producing.append
        )
        for client, names in (
            (publisher, ("publish", "set", "get", "incr")),
            (subscriber, ("subscribe", "unsubscribe")),
        ):
            for name in names:
                setattr(client, name, self._counted(getattr(client, name)))

    def _counted(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        counters = self.counters

        async def counted(*args: Any, **kwargs: Any) -> Any:
            counters.requests += 1
            return await call(*args, **kwargs)

        return counted

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        gate = self.gates[stream_id] = asyncio.Event()
        stream = await self.context.resumable_stream(stream_id, lambda: _held(source, gate))
        if stream is None:
            raise RuntimeError(f"stream {stream_id!r} is already finished")
        return _first(stream, self.tokens)

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        stream = await self.context.resume_existing_stream(stream_id)
        if stream is None or stream == "NOT_FOUND":
            raise RuntimeError(f"stream {stream_id!r} cannot be resumed: {stream!r}")
        return _first(stream, 1)

    async def release(self) -> None:
        for gate in self.gates.values():
            gate.set()
        await asyncio.gather(*self.producing)

    async def aclose(self) -> None:
        await self.release()
        await self.subscriber.close()
        await self.publisher.close()


async def _held(source: AsyncIterator[str], gate: asyncio.Event) -> AsyncIterator[str]:
    async for chunk in source:
        yield chunk
    await gate.wait()


async def _first(stream: AsyncGenerator[str, None], count: int) -> AsyncIterator[str]:
    """The first ``count`` chunks of ``stream``, which is closed then (a
    reader stops listening)."""
    try:
        received = 0
        async for chunk in stream:
            yield chunk
            received += 1
            if received == count:
                return
    finally:
        await stream.aclose()


async def py_resumable_stream(options: Options) -> Peer:
    from resumable_stream import RedisPublisher, RedisSubscriber

    url = _redis_url("py_resumable_stream")
    publisher, subscriber = RedisPublisher(url), RedisSubscriber(url)
    await publisher.connect()
    await subscriber.connect()
    versions = await _redis_versions(url, "resumable-stream")
    return PyResumableStreamPeer(options.tokens, publisher, subscriber, versions)


# -- fastapi-resumable-stream ------------------------------------------------------


class FastapiResumableStreamPeer(Peer):
    """``fastapi-resumable-stream`` as its README shows: one
    ``ResumableStream(redis)`` over a ``redis.asyncio.Redis``;
    ``start(id, producer=...)`` produces (the producer runs as a task of the
    package's and the returned iterator reads the stream back from Redis),
    ``resume(id)`` resumes.

    Per chunk the producer task sends 5 commands, each its own round trip:
    ``GET`` of the stream's stop key, ``RPUSH`` to its list, ``EXPIRE`` of the
    list and of its state key, ``PUBLISH`` of a wake-up. Every reader, the
    producer's client included, holds a pub/sub connection of its own for its
    whole life and loops: ``LRANGE`` from its index; when that is empty,
    ``GET`` of the state key (done ends it), then waits up to
    ``poll_interval`` for a wake-up and, without one, sleeps ``poll_interval``
    more. A resume reads the whole list the same way."""

    def __init__(self, client: Any, stream: Any, versions: dict[str, str]) -> None:
        super().__init__(versions)
        self.client = client
        self.stream = stream

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        stream: AsyncIterator[str] = await self.stream.start(stream_id, producer=lambda: source)
        return stream

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        stream: AsyncIterator[str] | None = await self.stream.resume(stream_id)
        if stream is None:
            raise RuntimeError(f"stream {stream_id!r} is missing")
        return stream

    async def aclose(self) -> None:
        await self.stream.close()
        await self.client.aclose()


async def _fastapi_peer(name: str, client_options: dict[str, Any]) -> FastapiResumableStreamPeer:
    import redis.asyncio
    from fastapi_resumable_stream import ResumableStream

    url = _redis_url(name)
    client: Any = redis.asyncio.Redis.from_url(url, **client_options)
    peer = FastapiResumableStreamPeer(
        client, ResumableStream(client), await _redis_versions(url, "fastapi-resumable-stream")
    )
    _count_round_trips(client.connection_pool, peer.counters)
    return peer


async def fastapi_resumable_stream(options: Options) -> Peer:
    """The package's defaults (TTL 3,600 s, ``poll_interval`` 0.05 s) on the
    client its README makes, ``Redis.from_url(url)``: redis-py's default pool,
    which refuses a connection past 100 open ones, so 100 streams at once
    fail (``MaxConnectionsError: Too many connections``)."""
    return await _fastapi_peer("fastapi_resumable_stream", {})


async def fastapi_resumable_stream_tuned(options: Options) -> Peer:
    """The package's defaults on a client whose pool may open 10,000
    connections (redis-server's default ``maxclients``) instead of 100: every
    reader holds a pub/sub connection until its stream ends and the
    producers' commands need more beside them, so with the default pool 100
    streams already use every connection. A blocking pool would not do: once
    the readers hold every connection, the producers that would end their
    streams wait for one forever (1,000 streams on a blocking pool of 256 did
    not end). At 10,000 streams it fails all the same: redis-py times out
    connecting (``Timeout connecting to server``)."""
    return await _fastapi_peer("fastapi_resumable_stream_tuned", {"max_connections": 10_000})


# -- assistant-stream --------------------------------------------------------------


class AssistantStreamPeer(Peer):
    """``assistant-stream``'s ``assistant_stream.resumable`` context (its
    README has no usage; this is its public API): one
    ``create_resumable_stream_context(store=create_redis_resumable_stream_store(client))``
    over a ``redis.asyncio.Redis`` (without ``decode_responses``, as the store
    requires); ``run(id, make_stream)`` produces (the producer runs as a
    task of the package's and the returned iterator reads the stream back
    from Redis), ``resume(id)`` resumes. Chunks are bytes: each token goes in
    as UTF-8 and comes out decoded.

    Per chunk the producer task sends 2 round trips: ``GET`` of the stream's
    meta key (to check it is still streaming), then ``MULTI``, ``XADD`` to
    the stream's Redis stream, ``EXPIRE`` of it and of the meta key,
    ``EXEC``; at the end a ``GET``, then ``SET`` meta done and ``XADD`` of a
    fin entry. Every reader, the producer's client included, loops:
    ``XRANGE`` after its last id; when that is empty, ``EXISTS`` of the meta
    key, then sleeps the store's poll interval (100 ms). A resume reads the
    whole stream that way, to the fin entry.

    The client's pool is a blocking one of 256 connections, as the
    redis_streams peer's: redis-py's default pool refuses a connection past
    100 open ones, and no connection is held between commands here, so
    waiting for one is safe."""

    def __init__(self, client: Any, versions: dict[str, str]) -> None:
        from assistant_stream.resumable import create_resumable_stream_context
        from assistant_stream.resumable.stores import create_redis_resumable_stream_store

        super().__init__(versions)
        self.client = client
        self.producing: list[asyncio.Task[None]] = []
        self.context: Any = create_resumable_stream_context(
            store=create_redis_resumable_stream_store(client),
            wait_until=self.producing.append,
        )

    async def produce(self, stream_id: str, source: AsyncIterator[str]) -> AsyncIterator[str]:
        return _decoded(await self.context.run(stream_id, lambda: _encoded(source)))

    async def resume(self, stream_id: str) -> AsyncIterator[str]:
        body = await self.context.resume(stream_id)
        if body is None:
            raise RuntimeError(f"stream {stream_id!r} is missing")
        return _decoded(body)

    async def aclose(self) -> None:
        await asyncio.gather(*self.producing)
        await self.client.aclose()


async def _encoded(source: AsyncIterator[str]) -> AsyncIterator[bytes]:
    async for chunk in source:
        yield chunk.encode()


async def _decoded(body: AsyncIterator[bytes]) -> AsyncIterator[str]:
    async for chunk in body:
        yield chunk.decode()


async def assistant_stream(options: Options) -> Peer:
    import redis.asyncio

    url = _redis_url("assistant_stream")
    pool: Any = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_MAX_CONNECTIONS, timeout=None
    )
    peer = AssistantStreamPeer(
        redis.asyncio.Redis(connection_pool=pool), await _redis_versions(url, "assistant-stream")
    )
    _count_round_trips(pool, peer.counters)
    return peer


REDIS_PEERS: dict[str, Callable[[Options], Awaitable[Peer]]] = {
    "redis_streams": redis_streams,
    "py_resumable_stream": py_resumable_stream,
    "fastapi_resumable_stream": fastapi_resumable_stream,
    "fastapi_resumable_stream_tuned": fastapi_resumable_stream_tuned,
    "assistant_stream": assistant_stream,
}
