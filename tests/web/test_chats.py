"""A chat's active reply (:mod:`resumable_fast.chats`), called directly: the
chat id's checks, the pointer every replica reads, what a finished, failed
or stopped reply leaves to resume, and a closed context. Every test runs on
each backend (S2, in memory, data_dir); ``tests/web/test_ai_sdk.py`` drives the
same functions through HTTP and the real AI SDK."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from resumable_fast import (
    NO_LANDING,
    InvalidChatIdError,
    Landing,
    ResumableStreamContext,
    ResumableStreamError,
    StreamDeletedError,
    StreamName,
    active_chat_stream,
    delete_chat_stream,
    resume_chat_stream,
    start_chat_stream,
    stop_chat_stream,
)
from resumable_fast.chats import CHAT_STREAM_PREFIX, MAX_CHAT_ID_BYTES, validate_chat_id

from conftest import ContextFactory
from support import read_text, read_until_error


@pytest.fixture
def chat_id() -> str:
    return f"chat-{uuid.uuid4().hex}"


class HeldReply:
    """A reply's source: its first text at once, the rest once released."""

    def __init__(self, first: str, rest: str = "") -> None:
        self.first = first
        self.rest = rest
        self.release = asyncio.Event()
        self.made = 0

    def make(self) -> AsyncIterator[str]:
        self.made += 1
        return self.tokens()

    async def tokens(self) -> AsyncIterator[str]:
        yield self.first
        await self.release.wait()
        if self.rest:
            yield self.rest


def never_made() -> AsyncIterator[str]:
    raise AssertionError("make_stream was called")


def pointer_name(context: ResumableStreamContext, chat_id: str) -> StreamName:
    """The chat's pointer stream, named as the module's docstring lays out."""
    return context.stream_name(f"{CHAT_STREAM_PREFIX}{chat_id}/active")


ChatCall = Callable[[ResumableStreamContext, Any], Awaitable[object]]
CHAT_CALLS: dict[str, ChatCall] = {
    "start": lambda context, chat_id: start_chat_stream(context, chat_id, never_made),
    "active": active_chat_stream,
    "resume": resume_chat_stream,
    "stop": stop_chat_stream,
    "delete": delete_chat_stream,
}


# -- chat ids --------------------------------------------------------------------


@pytest.mark.parametrize(
    "good",
    ["x" * MAX_CHAT_ID_BYTES, "🚀" * (MAX_CHAT_ID_BYTES // 4), "...", "a b:c?d#e", "ünï"],
)
def test_chat_ids_up_to_the_byte_limit_are_accepted(good: str) -> None:
    assert validate_chat_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "x" * (MAX_CHAT_ID_BYTES + 1),
        "🚀" * (MAX_CHAT_ID_BYTES // 4) + "x",  # 64 characters, 257 bytes
        "\ud800",  # a lone surrogate: not encodable text
        "nul\x00",
        "tab\there",
        "a/",
        b"bytes",
        ["list"],
    ],
)
def test_chat_ids_past_the_limits_are_typed_errors(bad: object) -> None:
    with pytest.raises(InvalidChatIdError) as caught:
        validate_chat_id(bad)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("call", list(CHAT_CALLS), ids=list(CHAT_CALLS))
@pytest.mark.parametrize("bad", ["", "x" * (MAX_CHAT_ID_BYTES + 1), 7, "a/b", "bell\x07"])
async def test_every_chat_function_refuses_a_bad_id_before_writing(
    ctx: ResumableStreamContext, monkeypatch: pytest.MonkeyPatch, call: str, bad: object
) -> None:
    appended: list[StreamName] = []

    async def no_append(
        name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        appended.append(name)

    monkeypatch.setattr(ctx.backend, "append", no_append)
    with pytest.raises(InvalidChatIdError):
        await CHAT_CALLS[call](ctx, bad)
    assert appended == []


# -- the active reply ------------------------------------------------------------


async def test_a_started_reply_is_named_and_resumed_on_another_replica(
    new_context: ContextFactory, chat_id: str
) -> None:
    reply = HeldReply("Hello", ", world")
    async with new_context() as replica_a, new_context() as replica_b:
        assert await active_chat_stream(replica_b, chat_id) is None
        produced = await start_chat_stream(replica_a, chat_id, reply.make)
        assert produced.stream_id.startswith(f"{CHAT_STREAM_PREFIX}{chat_id}/")
        assert await active_chat_stream(replica_b, chat_id) == produced.stream_id
        assert await replica_b.has_existing_stream(produced.stream_id) is True
        resumed = await resume_chat_stream(replica_b, chat_id)
        assert resumed is not None
        assert resumed.stream_id == produced.stream_id
        assert await read_text(resumed, 1) == "Hello"
        reply.release.set()
        assert await read_text(resumed) == ", world"
        assert await read_text(produced) == "Hello, world"
    assert reply.made == 1


async def test_a_finished_reply_stays_named_but_nothing_resumes(
    ctx: ResumableStreamContext, chat_id: str
) -> None:
    reply = HeldReply("done")
    reply.release.set()
    produced = await start_chat_stream(ctx, chat_id, reply.make)
    assert await read_text(produced) == "done"
    # The pointer names the latest reply, in progress or not.
    assert await active_chat_stream(ctx, chat_id) == produced.stream_id
    assert await ctx.has_existing_stream(produced.stream_id) == "DONE"
    assert await resume_chat_stream(ctx, chat_id) is None
    assert await stop_chat_stream(ctx, chat_id) is False


async def test_a_reply_whose_source_cannot_be_made_leaves_nothing_to_resume(
    ctx: ResumableStreamContext, chat_id: str
) -> None:
    class ProviderDown(Exception):
        pass

    def failing() -> AsyncIterator[str]:
        raise ProviderDown("the provider is down")

    with pytest.raises(ProviderDown):
        await start_chat_stream(ctx, chat_id, failing)
    reply_id = await active_chat_stream(ctx, chat_id)
    assert reply_id is not None  # the pointer went first
    assert await ctx.has_existing_stream(reply_id) == "DONE"  # ended by its error fence
    assert await resume_chat_stream(ctx, chat_id) is None
    assert await stop_chat_stream(ctx, chat_id) is False


async def test_a_second_reply_on_another_replica_replaces_the_pointer(
    new_context: ContextFactory, chat_id: str
) -> None:
    first, second = HeldReply("first"), HeldReply("second")
    async with new_context() as replica_a, new_context() as replica_b:
        first_stream = await start_chat_stream(replica_a, chat_id, first.make)
        second_stream = await start_chat_stream(replica_b, chat_id, second.make)
        assert second_stream.stream_id != first_stream.stream_id
        assert await active_chat_stream(replica_a, chat_id) == second_stream.stream_id
        # A stale stop, naming the replaced reply, leaves the newer one alone.
        assert not await stop_chat_stream(replica_a, chat_id, first_stream.stream_id)
        assert await replica_a.has_existing_stream(second_stream.stream_id) is True
        resumed = await resume_chat_stream(replica_a, chat_id)
        assert resumed is not None
        assert resumed.stream_id == second_stream.stream_id
        first.release.set()
        second.release.set()
        assert await read_text(resumed) == "second"
        assert await read_text(first_stream) == "first"
        assert await read_text(second_stream) == "second"


async def test_stop_ends_the_reply_for_its_readers(
    new_context: ContextFactory, chat_id: str
) -> None:
    """Stopped from another replica: its readers end at once, the producer at
    its next heartbeat (every third of the liveness timeout), refused."""
    reply = HeldReply("before the stop ", "never sent")
    async with new_context(liveness_timeout=1.5) as replica_a, new_context() as replica_b:
        produced = await start_chat_stream(replica_a, chat_id, reply.make)
        reader = await resume_chat_stream(replica_b, chat_id)
        assert await read_text(reader, 1) == "before the stop "
        assert await stop_chat_stream(replica_b, chat_id, produced.stream_id) is True
        rest, error = await read_until_error(reader)
        assert (rest, error) == ([], None)
        assert await read_text(produced) == "before the stop "
        assert await replica_a.has_existing_stream(produced.stream_id) == "DONE"
        assert await resume_chat_stream(replica_a, chat_id) is None
        assert await stop_chat_stream(replica_a, chat_id) is False
        reply.release.set()
        # The stream still holds what was said before the stop, and only that.
        replay = await replica_a.resume_stream(produced.stream_id)
        assert await read_text(replay) == "before the stop "


async def test_deleting_a_chat_deletes_every_reply_and_its_pointer(
    new_context: ContextFactory, chat_id: str
) -> None:
    """Two replies, the second in progress on another replica: both go (the
    running one stopped, its source closed), then the pointer; a chat of the
    same context is left alone."""
    finished, running, other = HeldReply("first"), HeldReply("second "), HeldReply("kept")
    finished.release.set()
    other_chat = f"{chat_id}-other"
    async with new_context() as replica_a, new_context() as replica_b:
        first = await start_chat_stream(replica_a, chat_id, finished.make)
        assert await read_text(first) == "first"
        second = await start_chat_stream(replica_a, chat_id, running.make)
        assert await read_text(second, 1) == "second "
        kept = await start_chat_stream(replica_a, other_chat, other.make)
        reader = await resume_chat_stream(replica_b, chat_id)
        assert await read_text(reader, 1) == "second "

        assert await delete_chat_stream(replica_a, chat_id) == 2

        rest, error = await read_until_error(reader)
        assert rest == []
        assert error is None or isinstance(error, StreamDeletedError)
        assert await read_text(second) == ""
        for reply in (first, second):
            assert await replica_b.has_existing_stream(reply.stream_id) is None
        assert await active_chat_stream(replica_b, chat_id) is None
        assert await replica_b.backend.last_record(pointer_name(replica_b, chat_id)) is None
        assert await resume_chat_stream(replica_b, chat_id) is None
        assert await delete_chat_stream(replica_b, chat_id) == 0
        assert await active_chat_stream(replica_b, other_chat) == kept.stream_id
        other.release.set()
        assert await read_text(kept) == "kept"


async def test_chats_under_other_key_prefixes_are_apart(
    new_context: ContextFactory, chat_id: str
) -> None:
    reply = HeldReply("tenant one's")
    async with (
        new_context(key_prefix="tenant-1") as tenant_one,
        new_context(key_prefix="tenant-12") as tenant_twelve,
    ):
        produced = await start_chat_stream(tenant_one, chat_id, reply.make)
        assert await active_chat_stream(tenant_twelve, chat_id) is None
        assert await resume_chat_stream(tenant_twelve, chat_id) is None
        assert await stop_chat_stream(tenant_twelve, chat_id) is False
        assert await active_chat_stream(tenant_one, chat_id) == produced.stream_id
        reply.release.set()
        assert await read_text(produced) == "tenant one's"


async def test_a_pointer_record_we_did_not_write_names_no_reply(
    ctx: ResumableStreamContext, chat_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    foreign = orjson.dumps({"records": [{"body": "ai-chat/another-chat/reply"}]})
    await ctx.backend.append(pointer_name(ctx, chat_id), foreign)
    with caplog.at_level(logging.WARNING, logger="resumable_fast"):
        assert await active_chat_stream(ctx, chat_id) is None
        assert await resume_chat_stream(ctx, chat_id) is None
    assert "did not write" in caplog.text


# -- a closed context ------------------------------------------------------------


# active_chat_stream's is in tests/web/test_ai_sdk.py.
@pytest.mark.parametrize("call", ["start", "resume", "stop"])
async def test_a_closed_context_is_a_typed_error(
    new_context: ContextFactory, chat_id: str, call: str
) -> None:
    context = new_context()
    await context.aclose()
    with pytest.raises(ResumableStreamError, match="closed"):
        await CHAT_CALLS[call](context, chat_id)
