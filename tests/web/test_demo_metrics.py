"""The demo's ``/metrics``: the library's instruments through the OpenTelemetry
SDK and its Prometheus exporter, over real HTTP (uvicorn on loopback), on
every backend."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from resumable_fast.demo.app import create_app, start_server
from resumable_fast.demo.llm import full_reply
from resumable_fast.demo.metrics import PrometheusMetrics

from conftest import ContextFactory
from demo_client import read_events, start_chat

SAMPLE = re.compile(r"^([a-z_]+)\{([^}]*)\} (\S+)$")


def samples(text: str) -> dict[tuple[str, str], float]:
    """The exposition's samples by (name, the labels besides the scope's)."""
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        labels = ",".join(
            label for label in match[2].split(",") if not label.startswith("otel_scope_")
        )
        found[(match[1], labels)] = float(match[3])
    return found


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(20.0)) as http:
        yield http


async def test_metrics_count_a_reply_and_its_reader(
    new_context: ContextFactory, backend_name: str, client: httpx.AsyncClient
) -> None:
    metrics = PrometheusMetrics()
    context = new_context(meter_provider=metrics.meter_provider)
    app = create_app(
        context, backend_name=context.backend_description, tokens_per_second=500.0, metrics=metrics
    )
    server = await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1)
    try:
        info = (await client.get(f"{server.url}/api/info")).json()
        assert info["metrics"] is True
        prompt = "count me"
        stream_id = await start_chat(client, server, prompt)
        log = await read_events(client, f"{server.url}/api/chat/{stream_id}/events")
        assert log.text == full_reply(prompt)

        response = await client.get(f"{server.url}/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.headers["cache-control"] == "no-store"
        found = samples(response.text)
        kind = "s2" if backend_name == "s2" else "embedded"
        backend = f'backend="{kind}"'
        assert found[("resumable_fast_streams_started_total", backend)] == 1.0
        assert found[("resumable_fast_streams_finished_total", f'{backend},outcome="done"')] == 1.0
        assert found[("resumable_fast_streams_active", backend)] == 0.0
        # Every token of the reply is a chunk that landed (the end fence is not one).
        chunks = found[("resumable_fast_chunks_persisted_total", backend)]
        assert chunks > 10
        assert found[("resumable_fast_bytes_persisted_bytes_total", backend)] > len(log.text)
        appends = found[("resumable_fast_append_duration_seconds_count", f'{backend},outcome="ok"')]
        assert 1 <= appends <= chunks + 1
        assert found[("resumable_fast_resume_first_chunk_duration_seconds_count", backend)] == 1.0
        # The reader has gone: nothing reads now.
        assert found[("resumable_fast_readers_active", backend)] == 0.0
    finally:
        await server.stop()
        await context.aclose()
        metrics.shutdown()


async def test_two_apps_keep_their_own_figures(
    new_context: ContextFactory, client: httpx.AsyncClient
) -> None:
    """Each PrometheusMetrics has a registry of its own: a second demo app in
    the process starts from nothing."""
    first, second = PrometheusMetrics(), PrometheusMetrics()
    contexts = [new_context(meter_provider=m.meter_provider) for m in (first, second)]
    servers = []
    try:
        for context, metrics in zip(contexts, (first, second), strict=True):
            app = create_app(
                context,
                backend_name=context.backend_description,
                tokens_per_second=500.0,
                metrics=metrics,
            )
            servers.append(await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1))
        stream_id = await start_chat(client, servers[0], "only on the first")
        await read_events(client, f"{servers[0].url}/api/chat/{stream_id}/events")
        started = [
            sum(
                value
                for (name, _), value in samples(
                    (await client.get(f"{server.url}/metrics")).text
                ).items()
                if name == "resumable_fast_streams_started_total"
            )
            for server in servers
        ]
        assert started == [1.0, 0.0]
    finally:
        for server in servers:
            await server.stop()
        for context in contexts:
            await context.aclose()
        first.shutdown()
        second.shutdown()


async def test_without_a_metrics_source_the_route_says_what_to_install(
    new_context: ContextFactory, client: httpx.AsyncClient
) -> None:
    context = new_context()
    app = create_app(context, backend_name=context.backend_description)
    server = await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1)
    try:
        assert (await client.get(f"{server.url}/api/info")).json()["metrics"] is False
        response = await client.get(f"{server.url}/metrics")
        assert response.status_code == 404
        assert "resumable_fast[demo]" in response.json()["error"]
    finally:
        await server.stop()
        await context.aclose()
