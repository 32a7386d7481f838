"""Shared fixtures: a real s2-lite server on a free loopback port.

The server binary comes from ``S2LITE_BIN`` (set by the Makefile to the cached
build). If it is missing or does not start, the tests fail: they never fall
back to a fake.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme

from resumable_fast import ResumableStreamContext, create_resumable_stream_context
from resumable_fast.demo.app import DemoServer, create_app, start_server

TEST_BASIN = "resumable-fast-test"
DEFAULT_S2LITE_BIN = Path.home() / ".cache/resumable_fast/s2-lite-0.42.7/bin/server"


@dataclass(frozen=True)
class S2Lite:
    endpoint: str
    basin: str
    process: subprocess.Popen[bytes]
    ca_file: Path | None = None
    """With TLS: the PEM file of the CA that signed the server's certificate."""

    def env(self) -> dict[str, str]:
        """Environment for a child process that talks to this server."""
        return {
            "S2_ACCESS_TOKEN": "test-token-not-checked",
            "S2_ACCOUNT_ENDPOINT": self.endpoint,
            "S2_BASIN_ENDPOINT": self.endpoint,
            "S2_BASIN": self.basin,
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_s2lite(
    tmp_dir: Path,
    *,
    port: int | None = None,
    local_root: Path | None = None,
    tls: bool = False,
) -> S2Lite:
    """s2-lite on a free loopback port; with ``tls``, on https with a
    certificate for 127.0.0.1 and localhost from a CA made here (trustme)."""
    binary = Path(os.environ.get("S2LITE_BIN", str(DEFAULT_S2LITE_BIN)))
    if not binary.is_file():
        pytest.fail(f"s2-lite binary not found at {binary}: run `make test`, which builds it")
    port = port or free_port()
    init_file = tmp_dir / "s2lite-init.json"
    init_file.write_text(
        json.dumps(
            {
                "basins": [
                    {
                        "name": TEST_BASIN,
                        "config": {"create_stream_on_append": True, "create_stream_on_read": True},
                    }
                ]
            }
        )
    )
    args = [str(binary), "--port", str(port), "--init-file", str(init_file)]
    if local_root is not None:
        args += ["--local-root", str(local_root)]
    ca_file: Path | None = None
    if tls:
        ca = trustme.CA()
        certificate = ca.issue_cert("127.0.0.1", "localhost")
        cert_file, key_file, ca_file = (
            tmp_dir / "s2lite-cert.pem",
            tmp_dir / "s2lite-key.pem",
            tmp_dir / "ca.pem",
        )
        certificate.cert_chain_pems[0].write_to_path(str(cert_file))
        for extra in certificate.cert_chain_pems[1:]:
            extra.write_to_path(str(cert_file), append=True)
        certificate.private_key_pem.write_to_path(str(key_file))
        ca.cert_pem.write_to_path(str(ca_file))
        args += ["--tls-cert", str(cert_file), "--tls-key", str(key_file)]
    log = (tmp_dir / f"s2lite-{port}.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"s2-lite exited with {process.returncode}; see {log.name}")
        try:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
            )
            if httpx.get(f"{endpoint}/health", timeout=1, verify=verify).status_code == 200:
                return S2Lite(endpoint, TEST_BASIN, process, ca_file)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"s2-lite did not become healthy on {endpoint} within 30 s; see {log.name}")


def stop_s2lite(server: S2Lite) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def s2lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S2Lite]:
    server = start_s2lite(tmp_path_factory.mktemp("s2lite"))
    yield server
    stop_s2lite(server)


@pytest.fixture(scope="session")
def s2lite_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S2Lite]:
    """s2-lite behind TLS, its certificate from a private CA (``ca_file``)."""
    server = start_s2lite(tmp_path_factory.mktemp("s2lite-tls"), tls=True)
    yield server
    stop_s2lite(server)


def make_context(server: S2Lite, **options: object) -> ResumableStreamContext:
    settings: dict[str, object] = {
        "basin": server.basin,
        "access_token": "test-token-not-checked",
        "account_endpoint": server.endpoint,
        "basin_endpoint": server.endpoint,
        "linger_ms": 5,
    }
    settings.update(options)
    return create_resumable_stream_context(**settings)  # type: ignore[arg-type]


@pytest.fixture(params=["s2", "embedded", "embedded-dir"])
def backend_name(request: pytest.FixtureRequest) -> str:
    """Every test that uses a context runs on S2 and on the embedded backend,
    in memory and in a ``data_dir`` (SQLite): they cannot drift apart."""
    name: str = request.param
    return name


ContextFactory = Callable[..., ResumableStreamContext]


@pytest.fixture
def new_context(
    backend_name: str, s2lite: S2Lite, request: pytest.FixtureRequest, tmp_path: Path
) -> ContextFactory:
    """Makes contexts on this test's backend: another replica of the same
    service (on ``embedded-dir``, one more context on the test's
    ``data_dir``). ``s2-tls`` (for the modules that add it): s2-lite over
    TLS, its private CA given with ``verify=``."""
    tls_server = request.getfixturevalue("s2lite_tls") if backend_name == "s2-tls" else None

    def factory(**options: object) -> ResumableStreamContext:
        if backend_name == "s2":
            return make_context(s2lite, **options)
        if tls_server is not None:
            assert tls_server.ca_file is not None
            return make_context(tls_server, verify=str(tls_server.ca_file), **options)
        settings: dict[str, object] = {"backend": "embedded", "linger_ms": 5}
        if backend_name == "embedded-dir":
            settings["data_dir"] = tmp_path / "data"
        settings.update(options)
        return create_resumable_stream_context(**settings)  # type: ignore[arg-type]

    return factory


@pytest.fixture
async def ctx(new_context: ContextFactory) -> AsyncIterator[ResumableStreamContext]:
    context = new_context()
    yield context
    await context.aclose()


@pytest.fixture
def stream_id() -> str:
    """A fresh stream name per test, so tests never see each other's streams."""
    return f"test-{uuid.uuid4().hex}"


ServeDemo = Callable[..., Awaitable[DemoServer]]


@pytest.fixture
async def serve(ctx: ResumableStreamContext) -> AsyncIterator[ServeDemo]:
    """Starts the demo app on the test's context, on loopback (a free port by
    default): ``await serve(tokens_per_second, port=0)``."""
    servers: list[DemoServer] = []

    async def start(tokens_per_second: float, port: int = 0) -> DemoServer:
        app = create_app(
            ctx,
            backend_name=ctx.backend_description,
            tokens_per_second=tokens_per_second,
            heartbeat_interval=0.5,
        )
        server = await start_server(app, host="127.0.0.1", port=port, graceful_timeout=1)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()
