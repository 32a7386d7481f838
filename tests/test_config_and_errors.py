"""Configuration precedence, validation, redaction and typed errors."""

from __future__ import annotations

import logging

import pytest

from resumable_fast import (
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
    assert (from_env.basin, from_env.batch_size, from_env.linger_ms) == ("env-basin-name", 50, 250)
    assert from_env.access_token == "env-token"
    assert from_env.shared_basin_endpoint
    assert from_env.basin_url == "http://127.0.0.1:9/v1"
    explicit = S2Config.from_options(basin="other-basin", batch_size=3, linger_ms=1, env=env)
    assert (explicit.basin, explicit.batch_size, explicit.linger_ms) == ("other-basin", 3, 1)


def test_defaults_point_at_s2_cloud() -> None:
    config = S2Config.from_options(basin="my-basin-1", env={})
    assert config.account_url == "https://aws.s2.dev/v1"
    assert config.basin_url == "https://my-basin-1.b.aws.s2.dev/v1"
    assert not config.shared_basin_endpoint
    assert config.batch_size == 10


@pytest.mark.parametrize(
    "options",
    [
        {"basin": "Bad_Basin"},
        {"basin": "short"},
        {"basin": "-leading-hyphen"},
        {"basin": "good-basin", "batch_size": 0},
        {"basin": "good-basin", "batch_size": 1001},
        {"basin": "good-basin", "linger_ms": -1},
        {"basin": "good-basin", "basin_endpoint": "ftp://example"},
        {},
    ],
)
def test_invalid_configuration_is_a_typed_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        S2Config.from_options(env={}, **options)  # type: ignore[arg-type]


def test_env_garbage_is_a_typed_error() -> None:
    with pytest.raises(ConfigurationError, match="S2_BATCH_SIZE"):
        S2Config.from_options(env={"S2_BASIN": "good-basin", "S2_BATCH_SIZE": "ten"})


def test_token_never_in_repr() -> None:
    config = S2Config.from_options(basin="good-basin", access_token=SECRET, env={})
    ctx = create_resumable_stream_context(basin="good-basin", access_token=SECRET)
    for text in (repr(config), str(config), repr(ctx), repr(ctx._client)):
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
