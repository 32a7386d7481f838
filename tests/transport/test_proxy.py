"""S2 reached through a real forward proxy on loopback (Debian's tinyproxy,
installed by ``make test``): plain HTTP through it, HTTPS through a CONNECT
tunnel, from ``proxy=`` or the environment, and ``NO_PROXY`` going around it."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import S2Lite, free_port, make_context
from support import TestingStream, read_text


@dataclass(frozen=True)
class Tinyproxy:
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="session")
def tinyproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tinyproxy]:
    binary = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    if not Path(binary).is_file():
        pytest.fail("tinyproxy not found: run `make test`, which installs Debian's tinyproxy")
    directory = tmp_path_factory.mktemp("tinyproxy")
    port = free_port()
    log = directory / "tinyproxy.log"
    config = directory / "tinyproxy.conf"
    # No ConnectPort line: CONNECT is allowed to any port (s2-lite's is random).
    config.write_text(
        f'Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nLogFile "{log}"\n'
        "LogLevel Info\nMaxClients 200\n"
    )
    process = subprocess.Popen(
        [binary, "-d", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"tinyproxy exited with {process.returncode}; see {log}")
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    else:
        process.kill()
        pytest.fail("tinyproxy did not start within 10 s")
    yield Tinyproxy(url, log)
    process.terminate()
    process.wait(timeout=10)


def port_of(server: S2Lite) -> int:
    return int(server.endpoint.rsplit(":", 1)[1])


async def produce_and_resume(server: S2Lite, stream_id: str, **options: object) -> None:
    """A reply through the context, a live reader and a replay: unary calls
    and read sessions both."""
    async with make_context(server, **options) as ctx:
        source = TestingStream()
        producer = await ctx.resumable_stream(stream_id, source.readable)
        resumed = await ctx.resume_stream(stream_id)
        for word in ("through ", "the ", "proxy"):
            source.write(word)
        source.close()
        assert await read_text(producer) == "through the proxy"
        assert await read_text(resumed) == "through the proxy"
        assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_plain_http_through_the_proxy_option(
    s2lite: S2Lite, tinyproxy: Tinyproxy, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    await produce_and_resume(s2lite, stream_id, proxy=tinyproxy.url)
    log = tinyproxy.log_text()
    # Requests in absolute form, for the stream's records and for sessions.
    assert f"http://127.0.0.1:{port_of(s2lite)}/v1/streams/{stream_id}/records" in log


async def test_https_through_a_connect_tunnel_from_the_environment(
    s2lite_tls: S2Lite, tinyproxy: Tinyproxy, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert s2lite_tls.ca_file is not None
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)
    await produce_and_resume(s2lite_tls, stream_id, verify=str(s2lite_tls.ca_file))
    assert f"CONNECT 127.0.0.1:{port_of(s2lite_tls)}" in tinyproxy.log_text()


async def test_no_proxy_goes_around_the_proxy(
    s2lite: S2Lite, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy nobody listens on: only going around it can work.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    await produce_and_resume(s2lite, stream_id)


async def test_trust_env_false_ignores_the_environment(
    s2lite: S2Lite, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    await produce_and_resume(s2lite, stream_id, trust_env=False)
