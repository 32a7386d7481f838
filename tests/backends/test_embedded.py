"""The embedded backend's own guarantees, in memory and in a data_dir
(SQLite): S2's append semantics, bounded memory, and durable streams in a
data_dir that survive a killed process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producer_process import token_text
from resumable_fast import (
    EmbeddedBackend,
    EmbeddedStore,
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    ResumableStreamContext,
    S2Error,
    SeqNumMismatchError,
    SqliteStore,
    StreamName,
    create_resumable_stream_context,
)
from resumable_fast._core import fence_append_input
from resumable_fast.records import SequencedRecord

from support import from_list, read_chunks, read_text

HERE = Path(__file__).parent.parent
# The stream most of these tests append to directly.
S = StreamName("s")


def fresh_backend(data_dir: Path | None = None, retention: float = 3600.0) -> EmbeddedBackend:
    """A backend on a store of its own: in memory, or a fresh opening of
    ``data_dir`` (as another process would open it)."""
    if data_dir is None:
        return EmbeddedBackend(EmbeddedStore(retention))
    return EmbeddedBackend(SqliteStore(data_dir, retention))


@pytest.fixture(params=["memory", "data_dir"])
def new_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., EmbeddedBackend]:
    """Makes backends on one store kind: S2's semantics hold on both."""

    def factory(retention: float = 3600.0) -> EmbeddedBackend:
        return fresh_backend(tmp_path if request.param == "data_dir" else None, retention)

    return factory


def data_batch(bodies: list[str], token: str, match: int | None = None) -> bytes:
    request: dict[str, object] = {
        "records": [{"body": body} for body in bodies],
        "fencing_token": token,
    }
    if match is not None:
        request["match_seq_num"] = match
    return orjson.dumps(request)


async def test_fencing_and_seq_num_checks_match_s2(
    new_backend: Callable[..., EmbeddedBackend],
) -> None:
    backend = new_backend()
    await backend.append(S, fence_append_input("session-a", "", 0))
    with pytest.raises(FencingTokenMismatchError) as fenced:
        await backend.append(S, fence_append_input("session-b", "", 0))
    assert fenced.value.current_token == "session-a"
    with pytest.raises(SeqNumMismatchError) as seq:
        await backend.append(S, data_batch(["x"], "session-a", match=5))
    assert seq.value.expected_seq_num == 1
    await backend.append(S, data_batch(["x", "y"], "session-a", match=1))
    last = await backend.last_record(S)
    assert last is not None
    assert (last["seq_num"], last["body"]) == (2, "y")
    # A stop: a fence without a token check replaces the token.
    await backend.append(S, fence_append_input("end-z", None))
    with pytest.raises(FencingTokenMismatchError):
        await backend.append(S, data_batch(["late"], "session-a"))


@pytest.mark.parametrize(
    "append_input",
    [
        b"not json",
        orjson.dumps({"records": []}),
        orjson.dumps({"records": [{"body": "x"}] * 1001}),
        orjson.dumps({"records": [{"body": "x" * (1024 * 1024)}]}),
        orjson.dumps({"records": [{"body": "x" * 600_000}, {"body": "y" * 600_000}]}),
        orjson.dumps({"records": [{"headers": [["", "fence"]], "body": "t" * 37}]}),
        # Metered in UTF-8 bytes, not characters: 2 bytes each, 2 over the limit.
        orjson.dumps({"records": [{"body": "é" * (512 * 1024 - 3)}]}),
        orjson.dumps({"records": [{"body": "x"}, "not a record"]}),
        orjson.dumps({"records": [{"body": 7}]}),
        orjson.dumps({"records": [{"headers": "fence", "body": "x"}]}),
        orjson.dumps({"records": [{"headers": [["", "fence", "extra"]], "body": "x"}]}),
        orjson.dumps({"records": [{"headers": [[1, "fence"]], "body": "x"}]}),
    ],
)
async def test_limits_and_bad_input_are_refused_atomically(
    append_input: bytes, new_backend: Callable[..., EmbeddedBackend]
) -> None:
    backend = new_backend()
    with pytest.raises(S2Error):
        await backend.append(S, append_input)
    assert await backend.last_record(S) is None


async def test_records_up_to_the_limit_are_accepted(
    new_backend: Callable[..., EmbeddedBackend],
) -> None:
    backend = new_backend()
    largest_ascii = "x" * (1024 * 1024 - 8)
    largest_two_byte = "é" * (512 * 1024 - 4)
    await backend.append(S, orjson.dumps({"records": [{"body": largest_ascii}]}))
    await backend.append(S, orjson.dumps({"records": [{"body": largest_two_byte}]}))
    last = await backend.last_record(S)
    assert last is not None
    assert last["seq_num"] == 1
    assert last["body"] == largest_two_byte


async def test_a_fence_amid_data_records_keeps_its_place_and_headers(
    new_backend: Callable[..., EmbeddedBackend],
) -> None:
    backend = new_backend()
    batch = orjson.dumps(
        {
            "records": [
                {"body": "a"},
                {"headers": [["", "fence"]], "body": "session-b"},
                {"body": "é"},
            ]
        }
    )
    await backend.append(S, batch)
    session = backend.read_session(S, 0)
    records = await asyncio.wait_for(session.__anext__(), 5)
    await session.aclose()
    assert [(r["seq_num"], r["body"], r.get("headers")) for r in records] == [
        (0, "a", None),
        (1, "session-b", [["", "fence"]]),
        (2, "é", None),
    ]
    # The fence in the middle set the token.
    with pytest.raises(FencingTokenMismatchError):
        await backend.append(S, data_batch(["x"], "session-a"))
    await backend.append(S, data_batch(["x"], "session-b", match=3))


async def test_read_session_follows_the_live_tail(
    new_backend: Callable[..., EmbeddedBackend],
) -> None:
    backend = new_backend()
    session = backend.read_session(S, 0)
    first = asyncio.ensure_future(session.__anext__())
    await asyncio.sleep(0.01)
    assert not first.done()
    await backend.append(S, fence_append_input("session-a", "", 0))
    records = await asyncio.wait_for(first, 5)
    assert records[0]["body"] == "session-a"
    await session.aclose()


async def test_a_read_from_any_position_gets_the_records_from_there(
    new_backend: Callable[..., EmbeddedBackend],
) -> None:
    """Appends of every size, a fence amid them: a read starting at each
    position gets the records from there in order, at most 1,000 of them, and
    the last record is the last appended."""
    backend = new_backend()
    await backend.append(S, fence_append_input("session-a", "", 0))
    bodies = ["session-a"]
    for size in (1, 3, 700, 2, 600, 1):
        batch = [f"r{len(bodies) + index}" for index in range(size)]
        await backend.append(S, data_batch(batch, "session-a", match=len(bodies)))
        bodies += batch
    await backend.append(S, fence_append_input("session-b", "session-a", len(bodies)))
    bodies.append("session-b")
    await backend.append(S, data_batch(["after", "last"], "session-b", match=len(bodies)))
    bodies += ["after", "last"]
    for seq_num in [*range(12), 706, 707, 708, 1000, 1306, 1307, 1308, 1309, 1310]:
        session = backend.read_session(S, seq_num)
        records = await asyncio.wait_for(session.__anext__(), 5)
        await session.aclose()
        expected = bodies[seq_num : seq_num + 1000]
        assert [r["body"] for r in records] == expected, seq_num
        assert [r["seq_num"] for r in records] == list(range(seq_num, seq_num + len(expected)))
        fences = [r["seq_num"] for r in records if r.get("headers") == [["", "fence"]]]
        assert fences == [n for n in (0, 1308) if seq_num <= n < seq_num + len(expected)]
    last = await backend.last_record(S)
    assert last is not None
    assert (last["seq_num"], last["body"], last.get("headers")) == (1310, "last", None)
    session = backend.read_session(S, 1312)
    with pytest.raises(RangeNotSatisfiableError):
        await asyncio.wait_for(session.__anext__(), 5)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
# Named headers: a fence command (an empty name) is checked apart.
_HEADERS = st.lists(st.tuples(_TEXT.filter(bool), _TEXT).map(list), max_size=3)
_RECORD = st.fixed_dictionaries({"body": _TEXT}, optional={"headers": _HEADERS, "extra": _TEXT})


@settings(max_examples=200, deadline=None)
@given(
    records=st.lists(_RECORD, min_size=1, max_size=30),
    fenced=st.booleans(),
    indent=st.booleans(),
)
def test_what_is_appended_is_read_back_exactly(
    records: list[dict[str, object]], fenced: bool, indent: bool
) -> None:
    """Any bodies and headers (escapes, every plane, empty ones), any extra
    keys, the JSON indented or not: the records read back are those appended."""
    request: dict[str, object] = {"records": records, "match_seq_num": 0, "other": [{}]}
    if fenced:
        request["fencing_token"] = ""  # a new stream's token
    option = orjson.OPT_INDENT_2 if indent else 0

    async def appended_then_read() -> list[SequencedRecord]:
        backend = fresh_backend()
        await backend.append(S, orjson.dumps(request, option=option))
        session = backend.read_session(S, 0)
        got = await asyncio.wait_for(session.__anext__(), 5)
        await session.aclose()
        return got

    got = asyncio.run(appended_then_read())
    assert [r["seq_num"] for r in got] == list(range(len(records)))
    assert [r["body"] for r in got] == [r["body"] for r in records]
    assert [r.get("headers") or None for r in got] == [r.get("headers") or None for r in records]


async def test_finished_streams_are_dropped_after_retention(
    stream_id: str, new_backend: Callable[..., EmbeddedBackend]
) -> None:
    async with ResumableStreamContext(new_backend(retention=0.2)) as ctx:
        stream = await ctx.resumable_stream(stream_id, lambda: from_list(["a", "b"]))
        assert await read_chunks(stream) == ["a", "b"]
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        await asyncio.sleep(0.3)
        assert await ctx.has_existing_stream(stream_id) is None


async def test_durable_stream_survives_a_killed_process(tmp_path: Path) -> None:
    stream_id = f"durable-{uuid.uuid4().hex}"
    count = 60
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2_")}
    env["RESUMABLE_FAST_DATA_DIR"] = str(tmp_path)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "producer_process.py"),
        stream_id,
        str(count),
        "0.001",
        "hold",
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), 30) == b"done\n"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    async with create_resumable_stream_context(backend="embedded", data_dir=tmp_path) as ctx:
        assert await ctx.has_existing_stream(stream_id) == "DONE"
        text = await read_text(await ctx.resume_stream(stream_id))
    assert text == "".join(token_text(i) for i in range(count))


async def test_stream_killed_mid_reply_keeps_what_was_written(tmp_path: Path) -> None:
    stream_id = f"durable-{uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2_")}
    env["RESUMABLE_FAST_DATA_DIR"] = str(tmp_path)
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "producer_process.py"), stream_id, "100000", "0.002", env=env
    )
    try:
        for _ in range(500):
            await asyncio.sleep(0.02)
            backend = fresh_backend(tmp_path)
            last = await backend.last_record(StreamName(stream_id))
            if last is not None and last["seq_num"] >= 20:
                break
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    session = fresh_backend(tmp_path).read_session(StreamName(stream_id), 0)
    records = await asyncio.wait_for(session.__anext__(), 5)
    await session.aclose()
    bodies = [r["body"] for r in records[1:]]
    assert len(bodies) >= 20
    assert bodies == [token_text(i) for i in range(len(bodies))]


WARNING_PROBE = """
import asyncio, logging, sys
from resumable_fast import create_resumable_stream_context
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
async def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else None
    async with create_resumable_stream_context(backend="embedded", data_dir=data_dir) as ctx:
        for stream_id in ("missing-1", "missing-2", "missing-3"):
            assert await ctx.resume_existing_stream(stream_id) is None
            assert await ctx.has_existing_stream(stream_id) is None
asyncio.run(main())
"""


@pytest.mark.parametrize("where", ["memory", "data_dir"])
async def test_an_in_memory_resume_that_finds_nothing_warns_once_per_process(
    where: str, tmp_path: Path
) -> None:
    """Several workers on the in-memory default never share a reply: the
    first resume that finds nothing says so, naming data_dir and S2, once."""
    args = [str(tmp_path)] if where == "data_dir" else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2_")}
    env.pop("RESUMABLE_FAST_DATA_DIR", None)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WARNING_PROBE, *args, env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await child.communicate()
    assert child.returncode == 0, stderr.decode()
    warnings = [line for line in stderr.decode().splitlines() if line.startswith("WARNING")]
    if where == "memory":
        assert len(warnings) == 1, warnings
        assert "data_dir" in warnings[0]
        assert "S2" in warnings[0]
    else:
        assert warnings == []


FORK_PROBE = """
import asyncio, os, sys
from resumable_fast import create_resumable_stream_context

async def words(prefix):
    for index in range(20):
        await asyncio.sleep(0.001)
        yield f"{prefix}{index} "

async def produce(ctx, stream_id):
    stream = await ctx.resumable_stream(stream_id, lambda: words(stream_id))
    return await stream.read_all()

# Made before the fork, as gunicorn --preload imports the app (and makes its
# context) in the master process.
ctx = create_resumable_stream_context(backend="embedded", data_dir=sys.argv[1], linger_ms=1)
asyncio.run(produce(ctx, "parent-before"))
children = []
for worker in range(2):
    pid = os.fork()
    if pid == 0:
        async def child():
            text = await produce(ctx, f"child-{worker}")
            other = await ctx.resume_stream("parent-before")
            ok = text == "".join(f"child-{worker}{i} " for i in range(20))
            ok = ok and await other.read_all() == "".join(f"parent-before{i} " for i in range(20))
            os._exit(0 if ok else 3)
        asyncio.run(child())
    children.append(pid)
codes = [os.waitpid(pid, 0)[1] for pid in children]
asyncio.run(produce(ctx, "parent-after"))
print(codes)
sys.exit(0 if codes == [0, 0] else 1)
"""


async def test_a_store_made_before_a_fork_works_in_every_child(tmp_path: Path) -> None:
    """A server that makes the context before forking its workers (gunicorn
    --preload): each child opens its own connections and writer thread, and
    all of them share the directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2_")}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FORK_PROBE, str(tmp_path), env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, stderr.decode()
    async with ResumableStreamContext(fresh_backend(tmp_path)) as ctx:
        for stream_id in ("parent-before", "child-0", "child-1", "parent-after"):
            text = await read_text(await ctx.resume_stream(stream_id))
            assert text == "".join(f"{stream_id}{index} " for index in range(20))
