"""Interop with S2's official TypeScript SDK (@s2-dev/streamstore 0.16), on s2-lite.

Node scripts in ``tests/interop`` write and read streams in the seed package's
layout with the SDK, the way the seed does; these tests check that our library
reads what they write and writes what they read, chunk for chunk.

They need ``tests/interop/node_modules`` (``make interop-deps`` runs ``npm ci``
there). Without it they fail: interop is part of the suite, never skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from resumable_fast import ResumableStreamContext, StreamFailedError, StreamState

from conftest import S2Lite
from support import from_list, read_chunks

pytestmark = pytest.mark.timeout(120)

INTEROP_DIR = Path(__file__).parent.parent / "interop"
SDK_DIR = INTEROP_DIR / "node_modules" / "@s2-dev" / "streamstore"
NODE_TIMEOUT = 60.0
READ_TIMEOUT = 30.0

BIG_CHUNK = "".join(f"line {i}: lorem ipsum ☃ «ünïcödé» 🚀\n" for i in range(4_500))
assert 190_000 < len(BIG_CHUNK.encode()) < 260_000

# Text that is easy to get wrong between JSON, SSE and two languages' strings.
TRICKY_CHUNKS = [
    "Hello, ",
    "wörld — ünïcödé ",
    "emoji 🚀🔥 family 👩‍👩‍👧 flag 🇺🇦 ",
    "quotes \"double\" 'single' `back` ",
    "back\\slash \\n \\u0041 \\\\ ",
    "line1\nline2\r\nline3\rline4\n",
    "\ttab, bell \x07, escape \x1b[0m, del \x7f ",
    "line separators \u2028 \u2029 ",
    "中文 日本語 한국어 العربية עברית ",
    "data: not an SSE field\n\nevent: batch\n\n",
    '{"json": [1, 2, {"a": null}]} ',
    '</script><script>alert("x")</script> ',
    BIG_CHUNK,
    "combining e\u0301 and ZWJ\u200d ",
    "last chunk",
]


@dataclass(frozen=True)
class NodeResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def node_env(s2lite: S2Lite) -> dict[str, str]:
    """Environment for the Node scripts; fails (never skips) without Node or the SDK."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: the interop tests need Node.js 18 or later")
    if not SDK_DIR.is_dir():
        pytest.fail(
            f"{SDK_DIR} is missing: run `make interop-deps` "
            f"(npm ci in {INTEROP_DIR}) before the tests"
        )
    return {**os.environ, **s2lite.env()}


@pytest.fixture
def processes() -> Iterator[list[asyncio.subprocess.Process]]:
    """Node processes a test started; any still running at the end is killed."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()


async def start_node(
    processes: list[asyncio.subprocess.Process],
    env: dict[str, str],
    script: str,
    *args: str,
    stdin: str | None = None,
) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(INTEROP_DIR / script),
        *args,
        cwd=INTEROP_DIR,
        env=env,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    processes.append(process)
    if stdin is not None:
        assert process.stdin is not None
        process.stdin.write(stdin.encode())
        await process.stdin.drain()
        process.stdin.close()
    return process


async def finish_node(
    process: asyncio.subprocess.Process, timeout: float = NODE_TIMEOUT
) -> NodeResult:
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"node did not finish within {timeout} s")
    assert process.returncode is not None
    return NodeResult(process.returncode, stdout.decode(), stderr.decode())


async def run_node(
    processes: list[asyncio.subprocess.Process],
    env: dict[str, str],
    script: str,
    *args: str,
    stdin: str | None = None,
) -> NodeResult:
    return await finish_node(await start_node(processes, env, script, *args, stdin=stdin))


def expect_success(result: NodeResult, what: str) -> None:
    assert result.returncode == 0, (
        f"{what} exited with {result.returncode}\n"
        f"stdout: {result.stdout[:2000]}\nstderr: {result.stderr[:4000]}"
    )


async def node_write(
    processes: list[asyncio.subprocess.Process],
    env: dict[str, str],
    stream_id: str,
    chunks: list[str],
    *options: str,
) -> dict[str, object]:
    result = await run_node(
        processes, env, "seed_writer.mjs", stream_id, "-", *options, stdin=json.dumps(chunks)
    )
    expect_success(result, "seed_writer.mjs")
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def parse_chunks(result: NodeResult) -> list[str]:
    expect_success(result, "seed_reader.mjs")
    chunks: object = json.loads(result.stdout)
    assert isinstance(chunks, list)
    assert all(isinstance(chunk, str) for chunk in chunks)
    return [str(chunk) for chunk in chunks]


@pytest.fixture
def backend_name() -> str:
    """Interop is about S2 itself: these tests run on s2-lite only."""
    return "s2"


async def wait_for_state(
    ctx: ResumableStreamContext, stream_id: str, wanted: StreamState, timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    state = await ctx.has_existing_stream(stream_id)
    while state != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"stream {stream_id!r} is {state!r}, not {wanted!r}, after {timeout} s")
        await asyncio.sleep(0.02)
        state = await ctx.has_existing_stream(stream_id)


def assert_same_chunks(got: list[str], expected: list[str]) -> None:
    assert len(got) == len(expected), f"{len(got)} chunks, expected {len(expected)}"
    for index, (chunk, wanted) in enumerate(zip(got, expected, strict=True)):
        assert chunk == wanted, f"chunk {index} differs"
    assert "".join(got) == "".join(expected)


# -- the SDK writes, we read ------------------------------------------------------------


async def test_node_writes_python_reads(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    summary = await node_write(processes, node_env, stream_id, TRICKY_CHUNKS)
    assert summary["chunks"] == len(TRICKY_CHUNKS)
    assert str(summary["fence"]).startswith("end-")

    assert await ctx.has_existing_stream(stream_id) == "DONE"
    # A finished stream is not resumed "existing", but the seed's resume replays it.
    assert await ctx.resume_existing_stream(stream_id) is None
    replayed = await read_chunks(await ctx.resume_stream(stream_id), timeout=READ_TIMEOUT)
    assert_same_chunks(replayed, TRICKY_CHUNKS)

    made = False

    async def never() -> AsyncIterator[str]:
        yield "must not be called"

    def make() -> AsyncIterator[str]:
        nonlocal made
        made = True
        return never()

    assert await ctx.resumable_stream(stream_id, make) is None
    assert not made


async def test_node_writes_in_progress_python_resumes_existing(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    chunks = [f'token {i} ✓ "q" \\ \n' for i in range(40)] + [BIG_CHUNK, "done"]
    writer = await start_node(
        processes,
        node_env,
        "seed_writer.mjs",
        stream_id,
        "-",
        "--delay-ms",
        "50",
        "--batch-size",
        "4",
        "--linger-ms",
        "20",
        stdin=json.dumps(chunks),
    )
    await wait_for_state(ctx, stream_id, True)
    await asyncio.sleep(0.4)  # some data records have landed, most have not
    assert writer.returncode is None, "the writer finished before the reader joined"
    assert await ctx.has_existing_stream(stream_id) is True

    existing = await ctx.resume_existing_stream(stream_id)
    resumed = await ctx.resume_stream(stream_id)
    got_existing, got_resumed = await asyncio.gather(
        read_chunks(existing, timeout=READ_TIMEOUT), read_chunks(resumed, timeout=READ_TIMEOUT)
    )
    expect_success(await finish_node(writer), "seed_writer.mjs")
    assert_same_chunks(got_existing, chunks)
    assert_same_chunks(got_resumed, chunks)
    assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_python_waits_before_node_starts(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    """The seed's resume follows a stream whose producer has not started yet."""
    chunks = ["a", "β", "🚀", "\n"] * 5
    resumed = await ctx.resume_stream(stream_id)
    reading = asyncio.ensure_future(read_chunks(resumed, timeout=READ_TIMEOUT))
    await asyncio.sleep(0.3)
    await node_write(processes, node_env, stream_id, chunks, "--delay-ms", "10")
    assert_same_chunks(await reading, chunks)


async def test_node_producer_fails_python_sees_error(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    chunks = ["one ", "two ", "three ", "never written"]
    summary = await node_write(processes, node_env, stream_id, chunks, "--fail-after", "3")
    assert str(summary["fence"]).startswith("error-")
    assert await ctx.has_existing_stream(stream_id) == "DONE"

    resumed = await ctx.resume_stream(stream_id)
    got: list[str] = []

    async def read() -> None:
        async for chunk in resumed:
            got.append(chunk)

    with pytest.raises(StreamFailedError):
        await asyncio.wait_for(read(), READ_TIMEOUT)
    assert got == chunks[:3]


# -- we write, the SDK reads ------------------------------------------------------------


async def test_python_writes_node_reads(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    stream = await ctx.resumable_stream(stream_id, lambda: from_list(TRICKY_CHUNKS))
    assert_same_chunks(await read_chunks(stream, timeout=READ_TIMEOUT), TRICKY_CHUNKS)
    await wait_for_state(ctx, stream_id, "DONE")

    got = parse_chunks(await run_node(processes, node_env, "seed_reader.mjs", stream_id))
    assert_same_chunks(got, TRICKY_CHUNKS)


async def test_python_writes_node_joins_mid_stream(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    chunks = [f"delta {i}: «{i * '·'}» 🚀\n" for i in range(60)]
    stream = await ctx.resumable_stream(stream_id, lambda: from_list(chunks, delay=0.04))
    assert stream is not None
    first = await read_chunks(stream, max_reads=10, timeout=READ_TIMEOUT)
    reader = await start_node(processes, node_env, "seed_reader.mjs", stream_id)
    assert await ctx.has_existing_stream(stream_id) is True
    rest = await read_chunks(stream, timeout=READ_TIMEOUT)
    assert_same_chunks(first + rest, chunks)
    assert_same_chunks(parse_chunks(await finish_node(reader)), chunks)
    assert await ctx.has_existing_stream(stream_id) == "DONE"


async def test_python_producer_fails_node_sees_error(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    async def failing() -> AsyncIterator[str]:
        yield "partial "
        yield "output"
        raise RuntimeError("the model went away")

    stream = await ctx.resumable_stream(stream_id, failing)
    assert stream is not None
    with pytest.raises(RuntimeError):
        await read_chunks(stream, timeout=READ_TIMEOUT)
    await wait_for_state(ctx, stream_id, "DONE")

    result = await run_node(processes, node_env, "seed_reader.mjs", stream_id)
    assert result.returncode == 4, f"expected the error-fence exit 4, got {result}"
    assert "error-" in result.stderr


async def test_node_reader_times_out_on_unfinished_stream(
    ctx: ResumableStreamContext,
    stream_id: str,
    node_env: dict[str, str],
    processes: list[asyncio.subprocess.Process],
) -> None:
    """The reader is bounded: on a stream that never ends it exits 3, not hangs."""
    started = time.monotonic()
    result = await run_node(
        processes, node_env, "seed_reader.mjs", stream_id, "--timeout-ms", "1000"
    )
    assert result.returncode == 3, result
    assert time.monotonic() - started < 15
