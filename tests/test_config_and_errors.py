"""Configuration precedence, validation, redaction and typed errors."""

from __future__ import annotations

import logging

import pytest

from resumable_fast import (
    BatchSettings,
    ConfigurationError,
    InvalidStreamIdError,
    S2Config,
    S2ConnectionError,
    StreamNotFoundError,
    create_resumable_stream_context,
)

from conftest import S2Lite, free_port, make_context
from support import from_list

SECRET = "s2-secret-token-value"


def test_explicit_options_override_env() -> None:
    env = {
        "S2_BASIN": "env-basin-name",
        "S2_ACCESS_TOKEN": "env-token",
        "S2_BATCH_SIZE": "50",
        "S2_LINGER_DURATION": "250",
        "S2_BASIN_ENDPOINT": "http://127.0.0.1:9",
    }
    from_env = S2Config.from_options(env=env)
    assert from_env.basin == "env-basin-name"
    assert from_env.access_token == "env-token"
    assert from_env.shared_basin_endpoint
    assert from_env.basin_url == "http://127.0.0.1:9/v1"
    assert S2Config.from_options(basin="other-basin", env=env).basin == "other-basin"
    batching = BatchSettings.from_options(env=env)
    assert (batching.batch_size, batching.linger_ms) == (50, 250)
    explicit = BatchSettings.from_options(batch_size=3, linger_ms=1, env=env)
    assert (explicit.batch_size, explicit.linger_ms) == (3, 1)


def test_defaults_point_at_s2_cloud() -> None:
    config = S2Config.from_options(basin="my-basin-1", env={})
    assert config.account_url == "https://aws.s2.dev/v1"
    assert config.basin_url == "https://my-basin-1.b.aws.s2.dev/v1"
    assert not config.shared_basin_endpoint
    assert BatchSettings.from_options(env={}).batch_size == 10


@pytest.mark.parametrize(
    "options",
    [
        {"basin": "Bad_Basin"},
        {"basin": "short"},
        {"basin": "-leading-hyphen"},
        {"basin": "good-basin", "basin_endpoint": "ftp://example"},
        {},
    ],
)
def test_invalid_s2_configuration_is_a_typed_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        S2Config.from_options(env={}, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 0},
        {"batch_size": 1001},
        {"batch_size": 2.5},
        {"linger_ms": -1},
        {"max_batch_bytes": 2 * 1024 * 1024},
        {"backend": "redis"},
        {"backend": "embedded", "retention_seconds": 0},
    ],
)
def test_invalid_context_options_are_typed_errors(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        create_resumable_stream_context(**options)  # type: ignore[arg-type]


def test_env_garbage_is_a_typed_error() -> None:
    with pytest.raises(ConfigurationError, match="S2_BATCH_SIZE"):
        BatchSettings.from_options(env={"S2_BATCH_SIZE": "ten"})


def test_backend_is_chosen_by_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("S2_BASIN", raising=False)
    assert "embedded" in repr(create_resumable_stream_context())
    assert "s2 (basin good-basin" in repr(create_resumable_stream_context(basin="good-basin"))
    monkeypatch.setenv("S2_BASIN", "env-basin-name")
    assert "env-basin-name" in repr(create_resumable_stream_context())
    assert "embedded" in repr(create_resumable_stream_context(backend="embedded"))


def test_token_never_in_repr() -> None:
    config = S2Config.from_options(basin="good-basin", access_token=SECRET, env={})
    ctx = create_resumable_stream_context(basin="good-basin", access_token=SECRET)
    for text in (repr(config), str(config), repr(ctx), repr(ctx._backend)):
        assert SECRET not in text
    assert "***" in repr(config)


@pytest.mark.parametrize("bad_id", ["", "x" * 513, "é" * 257, 42, None, b"bytes"])
async def test_invalid_stream_ids_are_rejected(s2lite: S2Lite, bad_id: object) -> None:
    async with make_context(s2lite) as ctx:
        with pytest.raises(InvalidStreamIdError):
            await ctx.resumable_stream(bad_id, lambda: from_list(["x"]))  # type: ignore[arg-type]
        with pytest.raises(InvalidStreamIdError):
            await ctx.resume_existing_stream(bad_id)  # type: ignore[arg-type]
        with pytest.raises(InvalidStreamIdError):
            await ctx.has_existing_stream(bad_id)  # type: ignore[arg-type]


async def test_longest_valid_stream_id_works(s2lite: S2Lite) -> None:
    stream_id = "é" * 256  # 512 bytes
    async with make_context(s2lite) as ctx:
        stream = await ctx.resumable_stream(stream_id, lambda: from_list(["ok"]))
        assert stream is not None
        assert await stream.read_all() == "ok"


async def test_unknown_basin_is_a_typed_error(s2lite: S2Lite) -> None:
    async with make_context(s2lite, basin="no-such-basin-here") as ctx:
        with pytest.raises(StreamNotFoundError):
            await ctx.has_existing_stream("anything")


async def test_unreachable_endpoint_is_a_typed_error_without_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG)
    async with create_resumable_stream_context(
        basin="good-basin",
        access_token=SECRET,
        account_endpoint=endpoint,
        basin_endpoint=endpoint,
    ) as ctx:
        with pytest.raises(S2ConnectionError) as error:
            await ctx.has_existing_stream("anything")
    assert SECRET not in str(error.value)
    assert SECRET not in caplog.text
