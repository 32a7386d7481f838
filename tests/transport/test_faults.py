"""Faults between the library and a real s2-lite: injected 5xx/429 bursts,
connections cut at random, and s2-lite itself stopped mid-reply and
restarted. Every text, the producer's client's and each resumed reader's,
must come out exact."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from resumable_fast import (
    ResumableStreamContext,
    S2AuthError,
    create_resumable_stream_context,
)
from resumable_fast.s2 import S2Client

from conftest import S2Lite, start_s2lite, stop_s2lite
from faults import CuttingProxy, FaultInjectingProxy
from support import read_text


def context_via(endpoint: str, basin: str, **options: Any) -> ResumableStreamContext:
    options.setdefault("access_token", "test-token-not-checked")
    return create_resumable_stream_context(
        basin=basin,
        account_endpoint=endpoint,
        basin_endpoint=endpoint,
        linger_ms=5,
        **options,
    )


def reply(index: int, tokens: int) -> list[str]:
    rng = random.Random(index)
    words = ["alpha ", "béta ", "γάμμα ", "δ\n", '"q" ', "\\ ", "😀 ", "end. "]
    return [rng.choice(words) + f"{index}:{n} " for n in range(tokens)]


async def paced(chunks: list[str], delay: float) -> AsyncIterator[str]:
    for chunk in chunks:
        await asyncio.sleep(delay)
        yield chunk


async def produce_and_resume(
    ctx: ResumableStreamContext, stream_id: str, chunks: list[str], delay: float
) -> tuple[str, str, str]:
    """The producer's client text, a reader's that joined live, and one resumed
    after the end."""
    producer = await ctx.resumable_stream(stream_id, lambda: paced(chunks, delay))
    live = await ctx.resume_stream(stream_id)
    produced, followed = await asyncio.gather(
        read_text(producer, timeout=60), read_text(live, timeout=60)
    )
    replayed = await read_text(await ctx.resume_stream(stream_id), timeout=60)
    return produced, followed, replayed


async def many_through(
    endpoint: str, basin: str, label: str, streams: int, tokens: int, delay: float
) -> int:
    """``streams`` concurrent replies produced, followed live and replayed
    through ``endpoint``; every text must be exact. Returns the retries."""
    async with context_via(endpoint, basin) as ctx:
        ids = {f"faults-{label}-{i}-{random.getrandbits(32):08x}": i for i in range(streams)}
        results = await asyncio.gather(
            *(
                produce_and_resume(ctx, stream_id, reply(i, tokens), delay)
                for stream_id, i in ids.items()
            )
        )
        assert isinstance(ctx.backend, S2Client)
        retries = ctx.backend.retries
    for (produced, followed, replayed), index in zip(results, ids.values(), strict=True):
        expected = "".join(reply(index, tokens))
        assert produced == expected
        assert followed == expected
        assert replayed == expected
    return retries


async def test_bursts_of_500_503_429_are_retried_and_nothing_is_lost_or_doubled(
    s2lite: S2Lite,
) -> None:
    upstream_port = int(s2lite.endpoint.rsplit(":", 1)[1])
    proxy = FaultInjectingProxy(upstream_port, seed=6, share=0.12, burst=3)
    await proxy.start()
    try:
        retries = await many_through(proxy.endpoint, s2lite.basin, "5xx", 12, 60, 0.002)
    finally:
        await proxy.aclose()
    assert set(proxy.stats.injected_by_status) == {500, 503, 429}
    assert proxy.stats.injected >= 20
    # Every injected fault was answered by a retry; s2-lite's own transient
    # conflicts may add some.
    assert retries >= proxy.stats.injected


async def test_connections_cut_at_random_lose_and_double_nothing(s2lite: S2Lite) -> None:
    upstream_port = int(s2lite.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(upstream_port, seed=40, share=0.3)
    await proxy.start()
    try:
        await many_through(proxy.endpoint, s2lite.basin, "cut", 40, 40, 0.003)
    finally:
        await proxy.aclose()
    assert proxy.stats.cut >= 10


async def test_s2lite_stopped_mid_reply_and_restarted(tmp_path: Path) -> None:
    root = tmp_path / "s2-data"
    server = start_s2lite(tmp_path, local_root=root)
    port = int(server.endpoint.rsplit(":", 1)[1])
    chunks = reply(7, 150)
    try:
        async with context_via(server.endpoint, server.basin) as ctx:
            stream_id = f"restart-{random.getrandbits(32):08x}"
            producer = await ctx.resumable_stream(stream_id, lambda: paced(chunks, 0.01))
            assert producer is not None
            live = await ctx.resume_stream(stream_id)
            got: list[str] = []

            async def client() -> str:
                async for chunk in producer:
                    got.append(chunk)
                return "".join(got)

            produced = asyncio.ensure_future(asyncio.wait_for(client(), 90))
            followed = asyncio.ensure_future(read_text(live, timeout=90))
            await asyncio.sleep(0.5)  # mid-reply
            stop_s2lite(server)
            before = len(got)
            await asyncio.sleep(1.0)  # S2 is away ...
            assert len(got) >= before + 30  # ... and the producer's client keeps going
            server = start_s2lite(tmp_path, port=port, local_root=root)
            expected = "".join(chunks)
            assert await produced == expected
            assert await followed == expected
            assert await read_text(await ctx.resume_stream(stream_id), timeout=60) == expected
    finally:
        stop_s2lite(server)


async def test_s2_away_past_the_deadline_is_a_logged_typed_failure(
    s2lite: S2Lite, caplog: pytest.LogCaptureFixture
) -> None:
    """The producer's client keeps getting every chunk while S2 is away; past
    the retry deadline persisting stops with a logged error, and what is
    persisted up to then stays readable."""
    upstream_port = int(s2lite.endpoint.rsplit(":", 1)[1])
    proxy = CuttingProxy(upstream_port, seed=1, share=0.0)
    await proxy.start()
    chunks = reply(3, 60)
    gate = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        for index, chunk in enumerate(chunks):
            if index == 20:
                await gate.wait()
            yield chunk

    stream_id = f"away-{random.getrandbits(32):08x}"
    try:
        async with context_via(proxy.endpoint, s2lite.basin, retry_deadline=0.5) as ctx:
            producer = await ctx.resumable_stream(stream_id, source)
            assert producer is not None
            first = [await producer.__anext__() for _ in range(20)]
            await asyncio.sleep(0.1)  # the first 20 are persisted
            proxy.refuse_all = True
            proxy.cut_open_connections()
            gate.set()
            rest = await read_text(producer, timeout=30)
            assert "".join(first) + rest == "".join(chunks)
        assert "persisting failed" in caplog.text
        assert "S2 unreachable" in caplog.text
    finally:
        await proxy.aclose()
    async with context_via(s2lite.endpoint, s2lite.basin) as direct:
        assert await direct.has_existing_stream(stream_id) is True  # never finished
        reader = await direct.resume_stream(stream_id)
        assert await read_text(reader, 20, timeout=10) == "".join(first)


async def test_wrong_token_is_a_typed_auth_error_with_the_token_redacted(
    s2lite: S2Lite, caplog: pytest.LogCaptureFixture, stream_id: str
) -> None:
    """s2-lite takes any token, so a proxy in front of it checks one, answering
    403 like s2.dev for any other."""
    caplog.set_level(logging.DEBUG)
    upstream_port = int(s2lite.endpoint.rsplit(":", 1)[1])
    proxy = FaultInjectingProxy(upstream_port, seed=0, share=0.0, required_token="right-token")
    await proxy.start()
    wrong = "wrong-token-do-not-print"
    try:
        async with context_via(proxy.endpoint, s2lite.basin, access_token=wrong) as ctx:
            with pytest.raises(S2AuthError) as error:
                await ctx.resumable_stream(stream_id, lambda: paced(["x"], 0))
            assert error.value.status == 403
        async with context_via(proxy.endpoint, s2lite.basin, access_token="right-token") as ctx:
            stream = await ctx.resumable_stream(stream_id, lambda: paced(["ok"], 0))
            assert await read_text(stream) == "ok"
    finally:
        await proxy.aclose()
    assert wrong not in str(error.value)
    assert wrong not in repr(error.value)
    assert wrong not in caplog.text
