"""Configuration precedence, validation, redaction and typed errors."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid

import pytest

from resumable_fast import (
    BackendError,
    BasinMisconfiguredError,
    BatchSettings,
    ConfigurationError,
    FencingTokenMismatchError,
    InvalidResumePosition,
    InvalidStreamIdError,
    ResponseTooLargeError,
    ResumableStreamError,
    S2Config,
    S2ConnectionError,
    S2Error,
    StorageError,
    StoreUnavailableError,
    StreamIncompleteError,
    StreamName,
    StreamNotFoundError,
    create_resumable_stream_context,
    errors,
    new_stream_id,
)
from resumable_fast.records import StreamStatus, prefixed_stream_name
from resumable_fast.s2 import S2Client

from conftest import ContextFactory, S2Lite, free_port, make_context
from support import TestingStream, from_list, read_text

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
    defaults = BatchSettings.from_options(env={})
    assert (defaults.batch_size, defaults.linger_ms) == (100, 200.0)


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
    for text in (repr(config), str(config), repr(ctx), repr(ctx.backend)):
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
        with pytest.raises(BasinMisconfiguredError, match="does not exist") as error:
            await ctx.has_existing_stream("anything")
    assert isinstance(error.value, StreamNotFoundError)


@pytest.mark.parametrize(
    ("on_append", "on_read", "setting"),
    [(False, True, "create_stream_on_append"), (True, False, "create_stream_on_read")],
)
async def test_misconfigured_basin_is_one_error_naming_the_setting(
    s2lite: S2Lite, on_append: bool, on_read: bool, setting: str, stream_id: str
) -> None:
    basin = f"strict-{uuid.uuid4().hex[:12]}"
    async with make_context(s2lite) as admin:
        assert isinstance(admin.backend, S2Client)
        await admin.backend.create_basin(
            basin, create_stream_on_append=on_append, create_stream_on_read=on_read
        )
    async with make_context(s2lite, basin=basin) as ctx:
        # Producing appends first (a basin that makes streams on reads only
        # refuses it); resuming reads first (one making them on appends only).
        call = (
            ctx.resumable_stream(stream_id, lambda: from_list(["x"]))
            if on_read
            else ctx.resume_existing_stream(stream_id)
        )
        with pytest.raises(BasinMisconfiguredError, match=setting):
            await call


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
        retry_deadline=1.0,
    ) as ctx:
        started = asyncio.get_running_loop().time()
        with pytest.raises(S2ConnectionError) as error:
            await ctx.has_existing_stream("anything")
        elapsed = asyncio.get_running_loop().time() - started
    assert SECRET not in str(error.value)
    assert SECRET not in caplog.text
    assert "attempts" in str(error.value)
    assert elapsed < 5  # the retry deadline bounds the wait


@pytest.mark.parametrize(
    ("endpoint", "warns"),
    [
        ("http://s2.example.internal:8080", True),
        ("http://10.1.2.3", True),
        ("https://s2.example.internal", False),
        ("http://127.0.0.1:9", False),
        ("http://localhost:9", False),
        ("http://[::1]:9", False),
    ],
)
async def test_token_over_plain_http_to_another_host_warns(
    caplog: pytest.LogCaptureFixture, endpoint: str, warns: bool
) -> None:
    caplog.set_level(logging.WARNING, logger="resumable_fast")
    ctx = create_resumable_stream_context(
        basin="good-basin", access_token=SECRET, account_endpoint=endpoint, basin_endpoint=endpoint
    )
    await ctx.aclose()
    assert ("plain HTTP" in caplog.text) is warns
    assert SECRET not in caplog.text


def test_new_stream_ids_carry_128_random_bits() -> None:
    ids = {new_stream_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for stream_id in ids:
        # token_urlsafe(16): 16 random bytes, base64url without padding.
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", stream_id)


@pytest.mark.parametrize("prefix", [42, "p" * 512])
def test_bad_key_prefix_is_a_typed_error(prefix: object) -> None:
    with pytest.raises(ConfigurationError, match="key_prefix"):
        create_resumable_stream_context(backend="embedded", key_prefix=prefix)  # type: ignore[arg-type]


async def test_key_prefix_keeps_tenants_apart(new_context: ContextFactory, stream_id: str) -> None:
    tenant_a = new_context(key_prefix="tenant-a/")
    tenant_b = new_context(key_prefix="tenant-b/")
    unprefixed = new_context()
    try:
        a = await tenant_a.resumable_stream(stream_id, lambda: from_list(["for a"]))
        b = await tenant_b.resumable_stream(stream_id, lambda: from_list(["for b"]))
        assert await read_text(a) == "for a"
        assert await read_text(b) == "for b"
        assert await unprefixed.has_existing_stream(stream_id) is None
        assert await unprefixed.has_existing_stream("tenant-a/:" + stream_id) == "DONE"
        assert tenant_a.stream_name(stream_id) == "tenant-a/:" + stream_id
        assert await read_text(await tenant_b.resume_stream(stream_id)) == "for b"
        with pytest.raises(InvalidStreamIdError, match="key prefix"):
            await tenant_a.has_existing_stream("x" * 510)
    finally:
        for ctx in (tenant_a, tenant_b, unprefixed):
            await ctx.aclose()


PREFIX_PAIRS = [("tenant-1", "tenant-12"), ("org/", "org/team/"), ("a:", "a"), ("a%3A", "a:")]


@pytest.mark.parametrize(("short", "long"), PREFIX_PAIRS)
async def test_prefixes_that_extend_each_other_never_reach_each_other(
    new_context: ContextFactory, short: str, long: str
) -> None:
    """``tenant-1`` must not read ``tenant-12``'s streams through an id that
    starts with ``2``, nor stop them; nor the other way round."""
    contexts = {prefix: new_context(key_prefix=prefix) for prefix in (short, long)}
    secret = f"secret-{uuid.uuid4().hex}"
    try:
        for owner, other in ((long, short), (short, long)):
            source = TestingStream()
            owned = await contexts[owner].resumable_stream(secret, source.readable)
            source.write("private ")
            assert await read_text(owned, 1) == "private "
            # Every id by which the other tenant could spell the owner's name.
            owner_name = contexts[owner].stream_name(secret)
            tries = {secret, owner_name, "2" + secret, "team/" + secret, ":" + secret}
            tries |= {owner_name[cut:] for cut in range(1, len(owner_name) - len(secret) + 1)}
            for attempt in sorted(tries):
                if not attempt:
                    continue
                assert contexts[other].stream_name(attempt) != owner_name
                assert await contexts[other].has_existing_stream(attempt) is None
                await contexts[other].stop_stream(attempt)  # must not cut the owner's reply
            source.write("reply")
            source.close()
            assert await read_text(owned) == "reply"
            assert await read_text(await contexts[owner].resume_stream(secret)) == "private reply"
            assert await contexts[owner].has_existing_stream(secret) == "DONE"
            secret = f"secret-{uuid.uuid4().hex}"
    finally:
        for ctx in contexts.values():
            await ctx.aclose()


@pytest.mark.parametrize("stream_id", [".", ".."])
async def test_dot_segments_are_refused_on_every_backend(
    new_context: ContextFactory, stream_id: str
) -> None:
    """S2 refuses ``.`` and ``..`` (the URL resolves them as path steps):
    the same typed error before any request, on both backends."""
    async with new_context() as ctx:
        with pytest.raises(InvalidStreamIdError, match="must not be"):
            await ctx.resumable_stream(stream_id, lambda: from_list(["x"]))
        with pytest.raises(InvalidStreamIdError):
            await ctx.has_existing_stream(stream_id)
        with pytest.raises(InvalidStreamIdError):
            await ctx.resume_stream(stream_id)
    async with new_context(key_prefix="tenant") as prefixed:
        # Under a prefix the name is no longer a dot segment, but the id
        # rule is one for every context.
        with pytest.raises(InvalidStreamIdError):
            await prefixed.has_existing_stream(stream_id)


def test_every_backend_failure_shares_one_base() -> None:
    """One ``except BackendError`` catches S2's answers, S2 being away and the
    data_dir store failing; nothing else of the library is one."""
    backend_errors: list[ResumableStreamError] = [
        S2Error(500, "internal", "boom"),
        S2ConnectionError("refused"),
        ResponseTooLargeError("too large"),
        StorageError("disk_full", "the disk is full"),
        StoreUnavailableError("old_format", "old streams"),
        FencingTokenMismatchError("session-a"),
    ]
    for error in backend_errors:
        assert isinstance(error, BackendError), error
        assert isinstance(error, ResumableStreamError)
    assert isinstance(S2ConnectionError("refused"), ConnectionError)
    others: list[ResumableStreamError] = [
        InvalidResumePosition("x"),
        StreamIncompleteError("s", 1.0),
    ]
    for error in others:
        assert not isinstance(error, BackendError)
        assert isinstance(error, ResumableStreamError)
    assert isinstance(InvalidResumePosition("x"), ValueError)


def test_the_error_tree_in_the_docstring_is_the_real_one() -> None:
    """errors.py draws its class tree; each drawn parent is the class's real base."""
    drawn: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = re.match(r"^( *)(?:[│ ]*[├└]── )?([A-Z]\w+)", line)
        if match and hasattr(errors, match.group(2)):
            depth = len(line) - len(line.lstrip(" │├└─"))
            drawn.append((depth, match.group(2)))
    assert len(drawn) == len(errors.__all__), "every public error is drawn once"
    parents: list[tuple[int, str]] = []
    for depth, name in drawn:
        while parents and parents[-1][0] >= depth:
            parents.pop()
        if parents:
            cls, parent = getattr(errors, name), getattr(errors, parents[-1][1])
            assert parent in cls.__bases__, f"{name} is drawn under {parent.__name__}"
        parents.append((depth, name))


async def test_has_existing_stream_speaks_vercels_values(
    new_context: ContextFactory, stream_id: str
) -> None:
    """Inside, a stream's status is an enum; the public answer stays None,
    True or "DONE", as in Vercel's package."""
    assert [status.public for status in StreamStatus] == [None, True, "DONE"]
    async with new_context() as ctx:
        assert await ctx.has_existing_stream(stream_id) is None
        source = TestingStream()
        stream = await ctx.resumable_stream(stream_id, source.readable)
        assert stream is not None
        assert await ctx.has_existing_stream(stream_id) is True
        assert ctx.producer(stream_id) is not None
        source.write("x")
        source.close()
        assert await read_text(stream) == "x"
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        assert ctx.producer(stream_id) is None


def test_stream_names_are_typed_and_prefixed() -> None:
    assert prefixed_stream_name("", "a") == StreamName("a")
    assert prefixed_stream_name("t:1", "a") == "t%3A1:a"
