"""Issue 21, item 1: an upstream that echoes the request in its error answer
(a gateway, a proxy, a hostile S2 endpoint) must not get the credentials we
sent into an exception, a traceback or a log line.

A fake S2 endpoint and a fake forward proxy (:class:`EchoingUpstream`, on
loopback) answer 401, 403, 500 and 502 with the whole request echoed as text
and as JSON; the library is driven through a claim, appends and reads
against them, and nothing it raises or logs (at DEBUG, every logger) may
hold the access token, the proxy's password, its ``user:password`` or base64
Basic credentials, nor any 8-character piece of one of them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from echo_upstream import FORMS, EchoingUpstream
from resumable_fast import (
    ResumableStreamContext,
    ResumableStreamError,
    S2AuthError,
    S2ConnectionError,
    S2Error,
    create_resumable_stream_context,
)
from resumable_fast.demo.app import create_app, new_chat_stream_id, start_server

from conftest import S2Lite
from support import TestingStream, read_text

STATUSES = (401, 403, 500, 502)
FRAGMENT = 8
PROXY_USER = "proxy-user"


class Secrets:
    """A long random token and proxy credentials, fresh per test."""

    def __init__(self) -> None:
        # Long enough that a 200-character excerpt of an echo ends inside it.
        self.token = secrets.token_urlsafe(96)
        self.password = secrets.token_urlsafe(24)
        credentials = f"{PROXY_USER}:{self.password}"
        self.basic = base64.b64encode(credentials.encode()).decode()
        self.all = (self.token, self.password, credentials, self.basic)

    def leaks(self, text: str) -> list[str]:
        """The 8-character pieces of a secret found in ``text``."""
        folded = text.lower()
        found = []
        for secret in self.all:
            lowered = secret.lower()
            for i in range(len(lowered) - FRAGMENT + 1):
                if lowered[i : i + FRAGMENT] in folded:
                    found.append(secret[i : i + FRAGMENT])
                    break
        return found


@pytest.fixture
def creds() -> Secrets:
    return Secrets()


@pytest.fixture(autouse=True)
def debug_everywhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="resumable_fast")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += (current.__cause__, current.__context__)


def assert_clean_error(error: BaseException, creds: Secrets) -> None:
    texts = ["".join(traceback.format_exception(error))]
    for link in _chain(error):
        texts += (str(link), repr(link), repr(link.args), repr(vars(link)))
    for text in texts:
        assert not creds.leaks(text), text


def assert_clean_logs(caplog: pytest.LogCaptureFixture, creds: Secrets) -> None:
    formatter = logging.Formatter()
    for record in caplog.records:
        texts = [record.getMessage(), record.exc_text or "", record.stack_info or ""]
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
        for text in texts:
            assert not creds.leaks(text), f"{record.name}: {text}"


def _context(
    creds: Secrets, endpoint: str, basin: str, proxy: str | None = None, **options: Any
) -> ResumableStreamContext:
    return create_resumable_stream_context(
        backend="s2",
        basin=basin,
        access_token=creds.token,
        account_endpoint=endpoint,
        basin_endpoint=endpoint,
        proxy=proxy,
        trust_env=False,
        linger_ms=5,
        retry_deadline=0.3,
        request_timeout=5,
        **options,
    )


async def _words(words: list[str]) -> AsyncIterator[str]:
    for word in words:
        yield word


# -- the rule itself --------------------------------------------------------------------


def test_the_redactor_removes_whole_secrets_and_every_long_piece() -> None:
    from resumable_fast.endpoints import REDACTED, Redactor

    token = "Tok3n-" + "a1B2c3D4e5F6g7H8i9J0" * 3
    redact = Redactor(token, "hunter2")
    assert redact(f"Authorization: Bearer {token}\r\n") == f"Authorization: Bearer {REDACTED}\r\n"
    assert token[10:18] not in redact(f"x {token[10:18]} y")
    assert redact(f"{token[3:10]} stays") == f"{token[3:10]} stays"  # 7 characters
    assert redact(token.upper()) == REDACTED
    assert redact("pw=hunter2;") == f"pw={REDACTED};"
    assert redact(f'"{token}"'.replace("-", "\\u002d")) != f'"{token}"'
    # A cut inside the token leaves nothing of it.
    cut = redact("x" * 190 + token, 200)
    assert cut == "x" * 190 + REDACTED
    assert redact("plain text", 5) == "plain"
    assert Redactor()("anything") == "anything"


# -- everything echoed from the first request -------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("via", ["s2", "proxy"])
async def test_an_echoed_request_leaks_no_credential_on_claim_or_read(
    via: str, status: int, form: str, creds: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = EchoingUpstream(status, form)
    await upstream.start()
    try:
        if via == "s2":
            ctx = _context(creds, upstream.url, "echo-basin")
        else:
            # The S2 endpoint is never reached: the proxy answers everything.
            proxy = upstream.proxy_url(PROXY_USER, creds.password)
            ctx = _context(creds, "http://127.0.0.1:9", "echo-basin", proxy=proxy)
        errors: list[BaseException] = []
        async with ctx:
            with pytest.raises(ResumableStreamError) as claim:
                await ctx.resumable_stream("echoed", lambda: _words(["never", "stored"]))
            errors.append(claim.value)
            try:
                reader = await ctx.resume_stream("echoed")
                await read_text(reader, timeout=10)
            except ResumableStreamError as exc:
                errors.append(exc)
            else:
                pytest.fail("resuming through an echoing upstream succeeded")
            with pytest.raises(ResumableStreamError) as exists:
                await ctx.has_existing_stream("echoed")
            errors.append(exists.value)
    finally:
        await upstream.aclose()
    assert upstream.echoed >= 3
    for error in errors:
        expected = S2AuthError if status in (401, 403) else S2Error
        assert isinstance(error, expected), repr(error)
        assert error.status == status
        assert_clean_error(error, creds)
    if status >= 500:
        assert any("retrying" in r.getMessage() for r in caplog.records)  # retried, logged
    assert_clean_logs(caplog, creds)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", STATUSES)
async def test_a_proxy_refusing_the_tunnel_with_an_echo_leaks_no_credential(
    status: int, form: str, creds: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS through the proxy: its CONNECT answer (with the echo) refuses
    the tunnel; retried until the deadline, then a connection error."""
    upstream = EchoingUpstream(status, form)
    await upstream.start()
    try:
        proxy = upstream.proxy_url(PROXY_USER, creds.password)
        ctx = _context(creds, "https://127.0.0.1:9", "echo-basin", proxy=proxy, verify=False)
        async with ctx:
            with pytest.raises(S2ConnectionError) as claim:
                await ctx.resumable_stream("echoed", lambda: _words(["never"]))
    finally:
        await upstream.aclose()
    assert upstream.echoed >= 1
    assert str(status) in str(claim.value)
    assert_clean_error(claim.value, creds)
    assert_clean_logs(caplog, creds)


# -- a producer whose appends start failing ---------------------------------------------


def _is_append(head: bytes) -> bool:
    return head.startswith(b"POST ")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", [401, 502])
@pytest.mark.parametrize("via", ["s2", "proxy"])
async def test_the_producers_persisting_failed_log_leaks_no_credential(
    via: str,
    status: int,
    form: str,
    creds: Secrets,
    s2lite: S2Lite,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = int(s2lite.endpoint.rsplit(":", 1)[1])
    failing = False
    upstream = EchoingUpstream(
        status, form, upstream_port=port, fails=lambda head: failing and _is_append(head)
    )
    await upstream.start()
    try:
        if via == "s2":
            ctx = _context(creds, upstream.url, s2lite.basin)
        else:
            proxy = upstream.proxy_url(PROXY_USER, creds.password)
            ctx = _context(creds, s2lite.endpoint, s2lite.basin, proxy=proxy)
        async with ctx:
            source = TestingStream()
            producer = await ctx.resumable_stream(stream_id, source.readable)
            assert producer is not None
            source.write("persisted ")
            await asyncio.sleep(0.1)
            failing = True
            source.write("then ")
            source.write("not")
            source.close()
            # The producer's own client gets every chunk regardless.
            assert await read_text(producer, timeout=10) == "persisted then not"
    finally:
        await upstream.aclose()
    assert upstream.forwarded >= 1
    assert upstream.echoed >= 1
    assert "persisting failed" in caplog.text
    assert_clean_logs(caplog, creds)


# -- a read session that fails ----------------------------------------------------------


def _is_session(head: bytes) -> bool:
    return b"accept: text/event-stream" in head.lower()


@pytest.mark.parametrize("form", [*FORMS, "sse"])
@pytest.mark.parametrize("via", ["s2", "proxy"])
async def test_a_failing_read_session_leaks_no_credential(
    via: str,
    form: str,
    creds: Secrets,
    s2lite: S2Lite,
    stream_id: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = int(s2lite.endpoint.rsplit(":", 1)[1])
    upstream = EchoingUpstream(502, form, upstream_port=port, fails=_is_session)
    await upstream.start()
    try:
        if via == "s2":
            ctx = _context(creds, upstream.url, s2lite.basin, share_read_sessions=False)
        else:
            proxy = upstream.proxy_url(PROXY_USER, creds.password)
            ctx = _context(
                creds, s2lite.endpoint, s2lite.basin, proxy=proxy, share_read_sessions=False
            )
        async with ctx:
            source = TestingStream()
            producer = await ctx.resumable_stream(stream_id, source.readable)
            assert producer is not None
            source.write("live ")
            await asyncio.sleep(0.1)
            reader = await ctx.resume_stream(stream_id)
            with pytest.raises(ResumableStreamError) as failed:
                await read_text(reader, timeout=10)
            source.close()
            await read_text(producer, timeout=10)
    finally:
        await upstream.aclose()
    assert upstream.echoed >= 1
    assert_clean_error(failed.value, creds)
    assert_clean_logs(caplog, creds)


# -- the demo app -----------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("status", [401, 502])
async def test_the_demos_error_logs_leak_no_credential(
    status: int, form: str, creds: Secrets, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = EchoingUpstream(status, form)
    await upstream.start()
    try:
        async with _context(creds, upstream.url, "echo-basin") as ctx:
            app = create_app(ctx, backend_name=ctx.backend_description, tokens_per_second=1000)
            server = await start_server(app, host="127.0.0.1", port=0, graceful_timeout=1)
            try:
                async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
                    started = await http.post(f"{server.url}/api/chat", json={"prompt": "hi"})
                    stream_id = new_chat_stream_id()
                    events = await http.get(f"{server.url}/api/chat/{stream_id}/events")
                    stopped = await http.post(f"{server.url}/api/chat/{stream_id}/stop", json={})
            finally:
                await server.stop()
    finally:
        await upstream.aclose()
    for response in (started, events, stopped):
        assert response.status_code >= 500
        assert not creds.leaks(response.text)
        assert not creds.leaks(str(response.headers))
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    failures = [r for r in failures if "stream" in r.getMessage()]
    assert len(failures) >= 3  # the demo logged each failure
    assert_clean_logs(caplog, creds)
