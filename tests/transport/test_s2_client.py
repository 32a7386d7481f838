"""The S2 client on its own, against s2-lite: append, read, tail, typed errors."""

from __future__ import annotations

import uuid

import pytest

from resumable_fast import (
    BasinMisconfiguredError,
    ConfigurationError,
    FencingTokenMismatchError,
    S2Config,
    SeqNumMismatchError,
    StreamNotFoundError,
)
from resumable_fast._core import fence_append_input
from resumable_fast.records import Landing, StreamName, is_fence
from resumable_fast.s2 import S2Client

from conftest import S2Lite


def client_for(server: S2Lite, basin: str | None = None) -> S2Client:
    return S2Client(
        S2Config(
            basin=basin or server.basin,
            access_token="test-token-not-checked",
            account_endpoint=server.endpoint,
            basin_endpoint=server.endpoint,
        )
    )


async def test_append_read_and_tail(s2lite: S2Lite, stream_id: str) -> None:
    client = client_for(s2lite)
    name = StreamName(stream_id)
    try:
        assert await client.last_record(name) is None
        await client.append(
            name, fence_append_input("session-a", "", 0), Landing(new_fence="session-a")
        )
        body = b'{"records":[{"body":"h\\u00e9"},{"body":"llo"}],"fencing_token":"session-a"}'
        await client.append(name, body)
        assert await client.check_tail(name) == 3
        records = await client.read(name, seq_num=0)
        assert [r["seq_num"] for r in records] == [0, 1, 2]
        assert is_fence(records[0])
        assert records[0]["body"] == "session-a"
        assert [r["body"] for r in records[1:]] == ["hé", "llo"]
        last = await client.last_record(name)
        assert last is not None
        assert last["body"] == "llo"
    finally:
        await client.aclose()


async def test_fencing_and_seq_num_conditions_are_typed(s2lite: S2Lite, stream_id: str) -> None:
    client = client_for(s2lite)
    name = StreamName(stream_id)
    try:
        await client.append(name, fence_append_input("session-a", "", 0))
        with pytest.raises(FencingTokenMismatchError) as fenced:
            await client.append(name, fence_append_input("session-b", "", None))
        assert fenced.value.current_token == "session-a"
        with pytest.raises(SeqNumMismatchError) as seq:
            await client.append(name, fence_append_input("session-c", "session-a", 5))
        assert seq.value.expected_seq_num == 1
    finally:
        await client.aclose()


async def test_basin_without_create_on_append_gives_typed_error(s2lite: S2Lite) -> None:
    basin = f"strict-{uuid.uuid4().hex[:12]}"
    admin = client_for(s2lite)
    try:
        await admin.create_basin(basin, create_stream_on_append=False, create_stream_on_read=False)
    finally:
        await admin.aclose()
    client = client_for(s2lite, basin)
    missing = StreamName("missing")
    try:
        with pytest.raises(BasinMisconfiguredError, match="create_stream_on_append") as error:
            await client.append(missing, fence_append_input("session-a", "", 0))
        assert isinstance(error.value, StreamNotFoundError)
        assert isinstance(error.value, ConfigurationError)
        with pytest.raises(BasinMisconfiguredError, match="create_stream_on_read"):
            await client.last_record(missing)
    finally:
        await client.aclose()
