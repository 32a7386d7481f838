"""The demo app over real HTTP: uvicorn on loopback, httpx as the client, s2-lite
behind the context."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from resumable_fast import ResumableStreamContext, StreamFailedError
from resumable_fast.cli import main
from resumable_fast.demo.app import (
    MAX_PROMPT_CHARS,
    DemoServer,
    create_app,
    start_server,
)
from resumable_fast.demo.llm import full_reply, reply_tokens, simulated_reply
from resumable_fast.demo.model import (
    PLACEHOLDER_API_KEY,
    OpenAICompatibleModel,
    SimulatedModel,
    model_from_env,
)

from conftest import ContextFactory, S2Lite, ServeDemo, free_port, make_context
from demo_client import Event, EventLog, read_events, start_chat
from fake_provider import fake_provider_server
from fake_provider import reply_tokens as provider_reply_tokens
from support import read_until_error

FAST = 2000.0  # tokens per second: a reply in well under a second
SLOW = 25.0  # a reply takes over ten seconds: time to stop it
TOKEN = "test-token-not-checked"
# Given to the demo as OPENAI_API_KEY and in the base URL's userinfo: neither
# may show up in a page, a response or a log line.
API_KEY = "sk-proj-SECRET-KEY-7f3a9c2e1b"
USERINFO = "demo-user:USERINFO-SECRET-51d0"
HTTP_TIMEOUT = httpx.Timeout(20.0)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
        yield http


# -- the simulated LLM --------------------------------------------------------------


async def test_simulated_reply_is_deterministic_and_long() -> None:
    prompt = "How do resumable streams work?"
    tokens = [token async for token in simulated_reply(prompt, tokens_per_second=1e6)]
    assert tokens == reply_tokens(prompt)
    assert "".join(tokens) == full_reply(prompt) == full_reply(prompt)
    assert len(tokens) >= 250
    text = full_reply(prompt)
    assert "\n\n" in text
    assert not text.isascii()
    assert full_reply("something else") != text


async def test_simulated_reply_keeps_its_pace() -> None:
    started = time.monotonic()
    count = 0
    async for _ in simulated_reply("pace", tokens_per_second=200.0):
        count += 1
        if count == 40:
            break
    elapsed = time.monotonic() - started
    assert 0.1 < elapsed < 2.0, elapsed
    with pytest.raises(ValueError, match="tokens_per_second"):
        await simulated_reply("x", tokens_per_second=0).__anext__()


# -- the app ----------------------------------------------------------------------


async def test_chat_events_carry_the_whole_reply(
    serve: ServeDemo, client: httpx.AsyncClient
) -> None:
    server = await serve(FAST)
    prompt = "Tell me about “resumable” streams — with Unicode ✓"
    stream_id = await start_chat(client, server, prompt)
    log = await read_events(client, f"{server.url}/api/chat/{stream_id}/events")
    expected = full_reply(prompt)
    assert log.text == expected
    assert log.last == "end"
    positions = [int(e.id) for e in log.events if e.id is not None]
    assert positions == sorted(positions)
    assert positions[-1] == len(expected)

    # A finished reply is replayed in full (a reload after the end) ...
    again = await read_events(client, f"{server.url}/api/chat/{stream_id}/events")
    assert again.text == expected
    assert again.last == "end"
    # ... or from a position (an EventSource reconnecting with Last-Event-ID).
    middle = positions[len(positions) // 2]
    rest = await read_events(
        client,
        f"{server.url}/api/chat/{stream_id}/events",
        headers={"Last-Event-ID": str(middle)},
    )
    assert rest.text == expected[middle:]


async def test_readers_joining_mid_reply_see_the_same_text(
    serve: ServeDemo, client: httpx.AsyncClient
) -> None:
    server = await serve(150.0)
    prompt = "two readers"
    stream_id = await start_chat(client, server, prompt)
    url = f"{server.url}/api/chat/{stream_id}/events"
    first_seen = asyncio.Event()

    async def note(event: Event) -> None:
        if event.name == "message":
            first_seen.set()

    first = asyncio.ensure_future(read_events(client, url, on_event=note))
    await asyncio.wait_for(first_seen.wait(), 10)
    second = await read_events(client, url)
    assert second.text == full_reply(prompt)
    assert (await asyncio.wait_for(first, 30)).text == full_reply(prompt)


async def test_producer_runs_without_readers(
    serve: ServeDemo, client: httpx.AsyncClient, ctx: ResumableStreamContext
) -> None:
    server = await serve(FAST)
    prompt = "nobody is listening"
    stream_id = await start_chat(client, server, prompt)
    deadline = time.monotonic() + 20
    while await ctx.has_existing_stream(stream_id) != "DONE":
        assert time.monotonic() < deadline, "the reply did not finish without a reader"
        await asyncio.sleep(0.05)
    log = await read_events(client, f"{server.url}/api/chat/{stream_id}/events")
    assert log.text == full_reply(prompt)


async def test_stop_ends_every_reader(serve: ServeDemo, client: httpx.AsyncClient) -> None:
    server = await serve(SLOW)
    prompt = "please stop me"
    stream_id = await start_chat(client, server, prompt)
    url = f"{server.url}/api/chat/{stream_id}/events"
    seen = asyncio.Event()
    count = 0

    async def note(event: Event) -> None:
        nonlocal count
        if event.name == "message":
            count += 1
            if count >= 5:
                seen.set()

    readers = [asyncio.ensure_future(read_events(client, url, on_event=note)) for _ in range(2)]
    await asyncio.wait_for(seen.wait(), 10)
    started = time.monotonic()
    response = await client.post(f"{url.removesuffix('/events')}/stop", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {"stream_id": stream_id, "stopped": True, "state": "done"}
    logs = await asyncio.wait_for(asyncio.gather(*readers), 10)
    assert time.monotonic() - started < 5
    expected = full_reply(prompt)
    for log in logs:
        assert log.last == "end"
        assert 0 < len(log.text) < len(expected)
        assert expected.startswith(log.text)
    assert logs[0].text == logs[1].text

    # Stopped is finished: a reload replays the same partial text and ends.
    again = await read_events(client, url)
    assert again.text == logs[0].text
    assert again.last == "end"
    second = await client.post(f"{url.removesuffix('/events')}/stop", json={})
    assert second.status_code == 200
    assert second.json()["stopped"] is False


async def test_heartbeats_while_the_model_is_silent(
    serve: ServeDemo, client: httpx.AsyncClient
) -> None:
    server = await serve(1.5)  # a token every ~0.7 s, heartbeats every 0.5 s
    stream_id = await start_chat(client, server, "slow")
    url = f"{server.url}/api/chat/{stream_id}/events"
    reader = asyncio.ensure_future(read_events(client, url))
    await asyncio.sleep(2.5)
    await client.post(f"{server.url}/api/chat/{stream_id}/stop", json={})
    log = await asyncio.wait_for(reader, 10)
    assert log.heartbeats >= 1
    assert log.last == "end"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "prompt must be a string"),
        ({"prompt": 3}, "prompt must be a string"),
        ({"prompt": None}, "prompt must be a string"),
        ({"prompt": ""}, "prompt must not be empty"),
        ({"prompt": " \n\t "}, "prompt must not be empty"),
        ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "at most 4000 characters"),
        ({"prompt": "hi", "chat_id": 5}, "chat_id"),
        ({"prompt": "hi", "chat_id": ""}, "chat_id"),
        ({"prompt": "hi", "chat_id": "a/b"}, "chat_id"),
        ([], "JSON object"),
        ("hello", "JSON object"),
    ],
)
async def test_invalid_chat_requests_are_400(
    serve: ServeDemo, client: httpx.AsyncClient, body: object, message: str
) -> None:
    server = await serve(FAST)
    response = await client.post(f"{server.url}/api/chat", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_malformed_chat_requests(serve: ServeDemo, client: httpx.AsyncClient) -> None:
    server = await serve(FAST)
    url = f"{server.url}/api/chat"
    json_headers = {"content-type": "application/json"}

    not_json = await client.post(url, content=b"{nope", headers=json_headers)
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["error"]

    # A lone surrogate cannot be stored as UTF-8: refused rather than altered.
    surrogate = await client.post(url, content=b'{"prompt": "a\\ud800b"}', headers=json_headers)
    assert surrogate.status_code == 400
    assert "lone surrogates" in surrogate.json()["error"]

    form = await client.post(url, data={"prompt": "hi"})
    assert form.status_code == 415

    huge = await client.post(url, content=b" " * (70 * 1024), headers=json_headers)
    assert huge.status_code == 413

    longest = await client.post(url, json={"prompt": "é" * MAX_PROMPT_CHARS, "chat_id": "c-1_x"})
    assert longest.status_code == 201
    assert longest.json()["chat_id"] == "c-1_x"
    await client.post(f"{url}/{longest.json()['stream_id']}/stop", json={})


async def test_unknown_and_foreign_streams_are_404(
    serve: ServeDemo, client: httpx.AsyncClient, ctx: ResumableStreamContext
) -> None:
    server = await serve(FAST)
    unknown = "demo-" + "A" * 22
    assert (await client.get(f"{server.url}/api/chat/{unknown}/events")).status_code == 404
    assert (await client.post(f"{server.url}/api/chat/{unknown}/stop", json={})).status_code == 404
    # Stopping an unknown stream must not create it.
    assert await ctx.has_existing_stream(unknown) is None
    # Streams the demo did not create are out of its reach.
    for foreign in ("other-stream", "demo-short", "demo-" + "A" * 23):
        assert (await client.get(f"{server.url}/api/chat/{foreign}/events")).status_code == 404
        stop = await client.post(f"{server.url}/api/chat/{foreign}/stop", json={})
        assert stop.status_code == 404
    stream_id = await start_chat(client, server, "x")
    bad_position = await client.get(
        f"{server.url}/api/chat/{stream_id}/events", headers={"Last-Event-ID": "-1"}
    )
    assert bad_position.status_code == 400
    wrong_type = await client.post(f"{server.url}/api/chat/{stream_id}/stop", content=b"")
    assert wrong_type.status_code == 415


async def test_info_names_the_backend_without_the_token(
    serve: ServeDemo, client: httpx.AsyncClient, s2lite: S2Lite, backend_name: str
) -> None:
    server = await serve(FAST)
    response = await client.get(f"{server.url}/api/info")
    assert response.status_code == 200
    info = response.json()
    if backend_name == "s2":
        assert info["backend"].startswith(f"s2 (basin {s2lite.basin} at {s2lite.endpoint}")
    else:
        assert info["backend"].startswith("embedded")
    assert TOKEN not in response.text
    assert info["tokens_per_second"] == FAST


async def test_page_and_static_files(serve: ServeDemo, client: httpx.AsyncClient) -> None:
    server = await serve(FAST)
    page = await client.get(f"{server.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for element in ('id="prompt"', 'id="send"', 'id="stop"', 'id="backend"', 'id="status"'):
        assert element in page.text
    # Nothing external: no CDN, no web fonts.
    assert "http://" not in page.text
    assert "https://" not in page.text
    for path, media_type in (
        ("/static/app.js", "javascript"),
        ("/static/style.css", "text/css"),
    ):
        response = await client.get(f"{server.url}{path}")
        assert response.status_code == 200, path
        assert media_type in response.headers["content-type"]
        assert "http://" not in response.text
        assert "https://" not in response.text
    assert (await client.get(f"{server.url}/static/%2e%2e/app.py")).status_code == 404
    assert (await client.get(f"{server.url}/api/chat")).status_code == 405


# -- the command line --------------------------------------------------------------


def test_cli_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--tokens-per-second", "0"])
    assert exit_info.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


def start_demo_process(
    env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[str], str, httpx.Response]:
    """``resumable-fast demo`` on a free port; returns it, its URL and its /api/info."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "resumable_fast", "demo", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"the demo exited: {output}")
        try:
            return process, url, httpx.get(f"{url}/api/info", timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                process.kill()
                raise AssertionError("the demo did not start within 20 s") from None
            time.sleep(0.1)


def stop_demo_process(process: subprocess.Popen[str], signum: int) -> str:
    """Signal the demo and wait for it; its output. Killed if it hangs."""
    try:
        process.send_signal(signum)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    return output


def demo_env(s2lite: S2Lite | None) -> dict[str, str]:
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("S2_", "OPENAI_"))
    }
    if s2lite is not None:
        env.update(s2lite.env())
    return env


@pytest.mark.parametrize("backend", ["s2", "embedded", "embedded-dir"])
def test_cli_serves_the_demo_and_stops_on_sigint(
    s2lite: S2Lite, backend: str, tmp_path: Path
) -> None:
    described = {
        "s2": f"s2 (basin {s2lite.basin}",
        "embedded": "embedded (in memory",
        "embedded-dir": f"embedded (SQLite in {tmp_path}",
    }[backend]
    env = demo_env(s2lite if backend == "s2" else None)
    if backend == "embedded-dir":
        env["RESUMABLE_FAST_DATA_DIR"] = str(tmp_path)
    process, url, info = start_demo_process(env)
    try:
        assert info.json()["backend"].startswith(described)
        assert info.json()["model"] == "simulated LLM"  # no OPENAI_BASE_URL: no network
        chat = httpx.post(f"{url}/api/chat", json={"prompt": "cli"}, timeout=10)
        assert chat.status_code == 201
        # The demo extra is installed here: the CLI serves the library's metrics.
        assert info.json()["metrics"] is True
        metrics = httpx.get(f"{url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "resumable_fast_streams_started_total{" in metrics.text
    finally:
        output = stop_demo_process(process, signal.SIGINT)
    assert f"serving at {url}/ (backend: {described}" in output
    assert TOKEN not in output


def test_sigterm_mid_reply_keeps_what_was_accepted(s2lite: S2Lite) -> None:
    """SIGTERM stops the demo; its context closes, flushing every token the
    reply had produced, and the stream ends (an error fence when the reply
    could not finish within the drain timeout), so no reader hangs."""
    prompt = "sigterm mid reply"
    seen = ""
    process, url, _ = start_demo_process(demo_env(s2lite))
    try:
        chat = httpx.post(f"{url}/api/chat", json={"prompt": prompt}, timeout=10)
        stream_id = chat.json()["stream_id"]
        with httpx.stream("GET", f"{url}/api/chat/{stream_id}/events", timeout=10) as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    seen += json.loads(line[len("data: ") :])
                if len(seen) >= 200:
                    break
    finally:
        stop_demo_process(process, signal.SIGTERM)

    async def persisted() -> tuple[str, object, object]:
        async with make_context(s2lite) as ctx:
            chunks, error = await read_until_error(await ctx.resume_stream(stream_id))
            return "".join(chunks), error, await ctx.has_existing_stream(stream_id)

    text, error, state = asyncio.run(persisted())
    assert state == "DONE"
    assert text.startswith(seen)
    assert full_reply(prompt).startswith(text)
    assert error is None or isinstance(error, StreamFailedError)


def test_cli_reports_bad_configuration() -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("S2_")}
    env["S2_BASIN"] = "Not A Basin"
    result = subprocess.run(
        [sys.executable, "-m", "resumable_fast", "demo", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "resumable-fast demo: basin must be" in result.stderr


async def test_two_replicas_share_replies(
    new_context: ContextFactory, client: httpx.AsyncClient
) -> None:
    """Two demo processes behind one S2 (here two apps, each with its own
    context): a reply started on one is followed live on the other."""
    contexts = [new_context(), new_context()]
    servers: list[DemoServer] = []
    try:
        for context in contexts:
            app = create_app(
                context, backend_name=context.backend_description, tokens_per_second=150.0
            )
            servers.append(await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1))
        prompt = "shared between replicas"
        stream_id = await start_chat(client, servers[0], prompt)
        log = await read_events(client, f"{servers[1].url}/api/chat/{stream_id}/events")
        assert log.text == full_reply(prompt)
        assert log.last == "end"
    finally:
        for server in servers:
            await server.stop()
        for context in contexts:
            await context.aclose()


# -- a real model: an OpenAI-compatible endpoint -------------------------------------


def test_model_source_from_the_environment() -> None:
    assert model_from_env({}, tokens_per_second=7.0) == SimulatedModel(7.0)
    assert model_from_env({"OPENAI_API_KEY": API_KEY, "OPENAI_MODEL": "m"}) == SimulatedModel()
    local = model_from_env({"OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert isinstance(local, OpenAICompatibleModel)
    assert (local.model, local.api_key) == ("llama3.2", PLACEHOLDER_API_KEY)
    assert local.description == "llama3.2 at http://127.0.0.1:11434/v1"
    named = model_from_env(
        {
            "OPENAI_BASE_URL": f"https://{USERINFO}@[::1]:8443/v1?api-key={API_KEY}#frag",
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_MODEL": "from-env",
        }
    )
    assert isinstance(named, OpenAICompatibleModel)
    assert named.api_key == API_KEY
    assert named.description == "from-env at https://[::1]:8443/v1"
    assert "SECRET" not in repr(named) + str(named)
    overridden = model_from_env({"OPENAI_BASE_URL": "http://h/v1"}, model="flag")
    assert overridden.description == "flag at http://h/v1"
    for bad in ("ftp://h/v1", "127.0.0.1:11434/v1", f"{USERINFO}@h/v1", "http:///v1"):
        with pytest.raises(ValueError, match="OPENAI_BASE_URL") as raised:
            model_from_env({"OPENAI_BASE_URL": bad})
        assert "SECRET" not in str(raised.value)


@pytest.mark.parametrize("backend", ["s2", "embedded"])
def test_cli_streams_replies_from_an_openai_compatible_endpoint(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """With OPENAI_BASE_URL set, ``resumable-fast demo`` asks that endpoint
    (through the openai SDK) instead of the simulated LLM: the reply is the
    model's, the page's info names the model and the address, and the key and
    the URL's userinfo appear in no response and no log line."""
    s2lite: S2Lite | None = request.getfixturevalue("s2lite") if backend == "s2" else None
    prompt = "Which model is answering?"
    with fake_provider_server(pace_s=0.002, tokens=40) as provider:
        shown_url = provider.openai_base_url
        env = demo_env(s2lite)
        env["OPENAI_BASE_URL"] = shown_url.replace("http://", f"http://{USERINFO}@", 1)
        env["OPENAI_API_KEY"] = API_KEY
        env["OPENAI_MODEL"] = "not-this-model"  # --model wins
        process, url, info = start_demo_process(env, "--model", "fake-model-1")
        responses = [info.text]
        try:
            assert info.status_code == 200
            assert info.json()["model"] == f"fake-model-1 at {shown_url}"
            assert info.json()["simulated"] is False
            assert info.json()["tokens_per_second"] is None
            page = httpx.get(f"{url}/", timeout=10)
            assert 'id="model"' in page.text
            chat = httpx.post(f"{url}/api/chat", json={"prompt": prompt}, timeout=10)
            assert chat.status_code == 201, chat.text
            stream_id = chat.json()["stream_id"]

            async def read_reply() -> EventLog:
                async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                    return await read_events(http, f"{url}/api/chat/{stream_id}/events")

            log = asyncio.run(read_reply())
            assert log.text == "".join(provider_reply_tokens(prompt, 40))
            assert log.last == "end"
            assert provider.requests_for(prompt) == 1
            replay = httpx.get(f"{url}/api/chat/{stream_id}/events", timeout=10)
            assert "event: end" in replay.text
            responses += [page.text, chat.text, replay.text]
        finally:
            output = stop_demo_process(process, signal.SIGINT)
    assert f"replies come from fake-model-1 at {shown_url}" in output
    assert "simulated LLM" not in output
    for text in (*responses, output):
        assert API_KEY not in text
        assert "SECRET" not in text
        assert USERINFO not in text


async def test_endpoint_errors_fail_the_reply_not_the_server(
    ctx: ResumableStreamContext, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An endpoint that cannot be reached: the reply fails for its readers (an
    ``event: failed``), and the demo goes on serving."""
    caplog.set_level(logging.INFO)  # as the command line logs
    closed = f"http://127.0.0.1:{free_port()}/v1"
    model = OpenAICompatibleModel(base_url=closed, model="absent", api_key=API_KEY)
    app = create_app(ctx, backend_name=ctx.backend_description, model=model)
    server = await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1)
    try:
        info = (await client.get(f"{server.url}/api/info")).json()
        assert info["model"] == f"absent at {closed}"
        assert "SECRET" not in repr(model)
        stream_id = await start_chat(client, server, "anyone there?")
        log = await read_events(client, f"{server.url}/api/chat/{stream_id}/events")
        assert log.last == "failed"
        assert log.text == ""
        assert API_KEY not in json.dumps([e.data for e in log.events])
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        # The server is fine: it answers and takes the next message.
        assert (await client.get(f"{server.url}/api/info")).status_code == 200
        await start_chat(client, server, "and now?")
    finally:
        await server.stop()
    assert f"replies come from absent at {closed}" in caplog.text
    assert API_KEY not in caplog.text


def test_cli_refuses_a_base_url_that_is_not_http(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", f"{USERINFO}@127.0.0.1:11434/v1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    assert main(["demo", "--port", str(free_port())]) == 2
    captured = capsys.readouterr()
    assert "OPENAI_BASE_URL must be an http(s) URL" in captured.err
    assert "SECRET" not in captured.out + captured.err
