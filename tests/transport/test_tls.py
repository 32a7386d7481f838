"""S2 behind TLS with a certificate from a private CA: trusted through
``verify=`` (a path or an ``ssl.SSLContext``) or ``SSL_CERT_FILE``; a
certificate that does not verify is a typed error at once, not retried.

(``tests/api/test_behaviour.py`` also runs its whole suite over TLS.)
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from resumable_fast import TLSVerificationError

from conftest import S2Lite, make_context
from support import TestingStream, read_text

SECRET_TOKEN = "secret-token-do-not-print"


@pytest.fixture(params=["verify-path", "ssl-cert-file", "ssl-context"])
def trust(
    request: pytest.FixtureRequest, s2lite_tls: S2Lite, monkeypatch: pytest.MonkeyPatch
) -> dict[str, object]:
    """The options (and environment) that make the context trust the CA."""
    assert s2lite_tls.ca_file is not None
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    if request.param == "verify-path":
        return {"verify": str(s2lite_tls.ca_file)}
    if request.param == "ssl-cert-file":
        monkeypatch.setenv("SSL_CERT_FILE", str(s2lite_tls.ca_file))
        return {}
    return {"verify": ssl.create_default_context(cafile=str(s2lite_tls.ca_file))}


async def test_streams_produce_follow_and_resume_over_tls(
    s2lite_tls: S2Lite, trust: dict[str, object], stream_id: str
) -> None:
    async with make_context(s2lite_tls, **trust) as ctx:
        source = TestingStream()
        producer = await ctx.resumable_stream(stream_id, source.readable)
        source.write("over ")
        assert await read_text(producer, 1) == "over "
        # A live reader follows the tail through a read session over TLS.
        follower = asyncio.ensure_future(read_text(await ctx.resume_stream(stream_id)))
        for word in ("TLS ", "with ", "a private CA"):
            source.write(word)
        source.close()
        assert await read_text(producer) == "TLS with a private CA"
        assert await follower == "over TLS with a private CA"
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        assert await read_text(await ctx.resume_stream(stream_id)) == "over TLS with a private CA"


async def test_a_certificate_that_does_not_verify_fails_at_once_with_a_typed_error(
    s2lite_tls: S2Lite, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    async with make_context(s2lite_tls, access_token=SECRET_TOKEN, retry_deadline=60) as ctx:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TLSVerificationError) as failure:
            await ctx.has_existing_stream(stream_id)
        assert loop.time() - began < 1.0  # not retried for the 60 s deadline
    message = str(failure.value)
    assert s2lite_tls.endpoint in message
    assert "verify=" in message
    assert "SSL_CERT_FILE" in message
    assert SECRET_TOKEN not in message
    assert SECRET_TOKEN not in repr(failure.value)


async def test_verify_false_reaches_a_server_it_cannot_verify(
    s2lite_tls: S2Lite, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    async with make_context(s2lite_tls, verify=False) as ctx:
        assert await ctx.has_existing_stream(stream_id) is None
