"""The fences that decide who writes a stream (:mod:`resumable_fast.fencing`)
and the stream layout they make (:mod:`resumable_fast.records`): a claim at
seq 0, a takeover at the tail, a stop, an error end, and when a stream counts
as abandoned. Every test runs on each backend (S2, in memory, data_dir)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import orjson
import pytest

from resumable_fast import (
    FencingTokenMismatchError,
    ResumableStreamContext,
    S2Error,
    StreamFailedError,
    StreamName,
    _core,
)
from resumable_fast.backends import Backend
from resumable_fast.fencing import (
    STOP_ATTEMPTS,
    append_error_fence,
    claim,
    claim_tail,
    is_abandoned,
    stop,
)
from resumable_fast.records import (
    END_FENCE_PREFIX,
    ERROR_FENCE_PREFIX,
    FENCE_HEADER,
    NO_LANDING,
    SESSION_FENCE_PREFIX,
    Landing,
    SequencedRecord,
    StreamStatus,
    is_closing_fence,
    is_fence,
    status_of,
)

from support import from_list, read_text, read_until_error

Append = Callable[..., Awaitable[None]]


async def append_data(
    backend: Backend, name: StreamName, token: str, bodies: list[str], match_seq_num: int
) -> None:
    """Data records under ``token`` at ``match_seq_num``, as a producer's batch."""
    append_input = orjson.dumps(
        {
            "records": [{"body": body} for body in bodies],
            "fencing_token": token,
            "match_seq_num": match_seq_num,
        }
    )
    await backend.append(name, append_input, Landing(end_seq_num=match_seq_num + len(bodies)))


async def all_records(backend: Backend, name: StreamName) -> list[SequencedRecord]:
    """Every record the stream holds now, fences included."""
    last = await backend.last_record(name)
    if last is None:
        return []
    records: list[SequencedRecord] = []
    session = backend.read_session(name, 0)
    try:
        async for batch in session:
            records += batch
            if records[-1]["seq_num"] >= last["seq_num"]:
                return records
    finally:
        await session.aclose()
    return records


def bodies_of_fences(records: list[SequencedRecord], prefix: str) -> list[str]:
    return [
        record.get("body", "")
        for record in records
        if is_fence(record) and record.get("body", "").startswith(prefix)
    ]


def count_appends(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies of the appends made through ``backend`` from now on."""
    append: Append = backend.append
    sent: list[bytes] = []

    async def counting_append(
        name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        sent.append(append_input)
        await append(name, append_input, landing)

    monkeypatch.setattr(backend, "append", counting_append)
    return sent


def lose_answers_of_fences(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, prefix: bytes, *, lands: bool
) -> list[bytes]:
    """Appends of a fence whose token starts with ``prefix`` behave as a
    client's retry after a lost answer: the first attempt lands (when
    ``lands``), the retry is refused and the error tells it was not the only
    attempt. The bodies of those appends are returned."""
    append: Append = backend.append
    retried: list[bytes] = []

    async def retried_append(
        name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        if b'"' + prefix not in append_input:
            await append(name, append_input, landing)
            return
        retried.append(append_input)
        if lands:
            await append(name, append_input, landing)  # landed; its answer is lost
        try:
            await append(name, append_input, landing)  # the retry
        except S2Error as exc:
            exc.attempts = 2
            raise

    monkeypatch.setattr(backend, "append", retried_append)
    return retried


# -- claim -----------------------------------------------------------------------


async def test_a_claim_wins_once_with_a_session_fence_at_seq_0(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    assert token.startswith(SESSION_FENCE_PREFIX)
    assert await claim(backend, name) is None
    records = await all_records(backend, name)
    assert len(records) == 1
    assert records[0]["seq_num"] == 0
    assert records[0].get("headers") == [FENCE_HEADER]
    assert records[0].get("body") == token
    assert status_of(records[-1]) is StreamStatus.LIVE


async def test_of_ten_concurrent_claims_exactly_one_wins(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    tokens = await asyncio.gather(*(claim(backend, name) for _ in range(10)))
    winners = [token for token in tokens if token is not None]
    assert len(winners) == 1
    records = await all_records(backend, name)
    assert [record.get("body") for record in records] == winners


async def test_the_winners_token_writes_and_a_made_up_one_is_refused(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_data(backend, name, token, ["hello ", "world"], 1)
    with pytest.raises(FencingTokenMismatchError):
        await append_data(backend, name, SESSION_FENCE_PREFIX + "0" * 24, ["intruder"], 3)
    assert await read_text(await ctx.resume_stream(stream_id), 2) == "hello world"


async def test_a_claim_whose_answer_was_lost_is_recognised_as_ours(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    retried = lose_answers_of_fences(backend, monkeypatch, b"session-", lands=True)
    token = await claim(backend, name)
    assert len(retried) == 1
    assert token is not None
    records = await all_records(backend, name)
    assert [record.get("body") for record in records] == [token]


async def test_a_retried_claim_refused_because_another_won_is_not_ours(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    winner = await claim(backend, name)
    assert winner is not None
    retried = lose_answers_of_fences(backend, monkeypatch, b"session-", lands=False)
    assert await claim(backend, name) is None
    assert len(retried) == 1
    records = await all_records(backend, name)
    assert [record.get("body") for record in records] == [winner]


# -- claim_tail ------------------------------------------------------------------


async def test_claim_tail_at_the_tail_wins_and_fences_the_old_token_out(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    old = await claim(backend, name)
    assert old is not None
    await append_data(backend, name, old, ["half ", "a reply"], 1)
    new = await claim_tail(backend, name, 3)
    assert new is not None
    assert new != old
    assert new.startswith(SESSION_FENCE_PREFIX)
    with pytest.raises(FencingTokenMismatchError):
        await append_data(backend, name, old, ["late"], 4)
    await append_data(backend, name, new, [", continued"], 4)
    records = await all_records(backend, name)
    assert records[3].get("headers") == [FENCE_HEADER]
    assert records[3].get("body") == new
    assert [record.get("body") for record in records if not is_fence(record)] == [
        "half ",
        "a reply",
        ", continued",
    ]


@pytest.mark.parametrize("seq_num", [0, 2, 4, 100])
async def test_claim_tail_away_from_the_tail_loses_and_appends_nothing(
    ctx: ResumableStreamContext, stream_id: str, seq_num: int
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_data(backend, name, token, ["a", "b"], 1)  # the tail is at 3
    before = await all_records(backend, name)
    assert await claim_tail(backend, name, seq_num) is None
    assert await all_records(backend, name) == before
    await append_data(backend, name, token, ["c"], 3)  # the old token still writes


async def test_of_two_concurrent_takeovers_exactly_one_wins(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_data(backend, name, token, ["abandoned"], 1)
    taken = await asyncio.gather(claim_tail(backend, name, 2), claim_tail(backend, name, 2))
    winners = [new for new in taken if new is not None]
    assert len(winners) == 1
    assert (await all_records(backend, name))[-1].get("body") == winners[0]


# -- stop ------------------------------------------------------------------------


async def test_stop_appends_an_end_fence_that_fences_a_live_producer_out(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_data(backend, name, token, ["said ", "so far"], 1)
    await stop(backend, name)
    last = await backend.last_record(name)
    assert last is not None
    assert last["seq_num"] == 3
    assert is_closing_fence(last)
    assert last.get("body", "").startswith(END_FENCE_PREFIX)
    assert status_of(last) is StreamStatus.DONE
    with pytest.raises(FencingTokenMismatchError):
        await append_data(backend, name, token, ["more"], 4)
    chunks, error = await read_until_error(await ctx.resume_stream(stream_id))
    assert (chunks, error) == (["said ", "so far"], None)


async def test_stopping_twice_appends_one_fence(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    sent = count_appends(backend, monkeypatch)
    await stop(backend, name)
    assert len(sent) == 1
    await stop(backend, name)
    assert len(sent) == 1
    records = await all_records(backend, name)
    assert len(bodies_of_fences(records, END_FENCE_PREFIX)) == 1


async def test_stop_leaves_a_stream_that_ended_with_an_error_as_it_is(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_error_fence(backend, name, token)
    sent = count_appends(backend, monkeypatch)
    await stop(backend, name)
    assert sent == []
    last = await backend.last_record(name)
    assert last is not None
    assert last.get("body", "").startswith(ERROR_FENCE_PREFIX)


async def test_a_stop_before_the_claim_ends_the_stream_and_the_claim_loses(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    await stop(backend, name)
    records = await all_records(backend, name)
    assert len(records) == 1
    assert is_closing_fence(records[0])
    assert await claim(backend, name) is None


async def test_a_stop_whose_answer_was_lost_appends_one_fence(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    retried = lose_answers_of_fences(backend, monkeypatch, b"end-", lands=True)
    await stop(backend, name)
    assert len(retried) == 1
    records = await all_records(backend, name)
    assert len(bodies_of_fences(records, END_FENCE_PREFIX)) == 1
    assert is_closing_fence(records[-1])


async def test_a_stop_racing_a_busy_producer_goes_in_unconditionally_at_last(
    ctx: ResumableStreamContext, stream_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer appends between each look at the tail and the fence put
    there: after its tries at the tail, stop appends the fence anyway."""
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    last_record = backend.last_record
    looks = 0

    async def busy_producer_behind(looked_at: StreamName) -> SequencedRecord | None:
        nonlocal looks
        looks += 1
        last = await last_record(looked_at)
        assert last is not None
        await append_data(backend, name, token, [f"chunk {looks}"], last["seq_num"] + 1)
        return last

    monkeypatch.setattr(backend, "last_record", busy_producer_behind)
    await stop(backend, name)
    monkeypatch.undo()
    assert looks == STOP_ATTEMPTS
    records = await all_records(backend, name)
    assert len(bodies_of_fences(records, END_FENCE_PREFIX)) == 1
    assert is_closing_fence(records[-1])
    assert len([record for record in records if not is_fence(record)]) == STOP_ATTEMPTS
    with pytest.raises(FencingTokenMismatchError):
        await append_data(backend, name, token, ["after the stop"], len(records))


# -- append_error_fence ----------------------------------------------------------


async def test_an_error_fence_ends_the_stream_and_readers_see_it_failed(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_data(backend, name, token, ["partial"], 1)
    await append_error_fence(backend, name, token)
    last = await backend.last_record(name)
    assert last is not None
    assert last["seq_num"] == 2
    assert is_closing_fence(last)
    assert last.get("body", "").startswith(ERROR_FENCE_PREFIX)
    assert await ctx.has_existing_stream(stream_id) == "DONE"
    chunks, error = await read_until_error(await ctx.resume_stream(stream_id))
    assert chunks == ["partial"]
    assert isinstance(error, StreamFailedError)
    assert error.stream_id == stream_id
    assert error.fence == last.get("body")


async def test_an_error_fence_of_a_fenced_out_producer_is_logged_not_raised(
    ctx: ResumableStreamContext, stream_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await stop(backend, name)
    before = await all_records(backend, name)
    with caplog.at_level(logging.ERROR, logger="resumable_fast"):
        await append_error_fence(backend, name, token)
    assert "could not append error fence" in caplog.text
    assert await all_records(backend, name) == before


# -- the layout ------------------------------------------------------------------


async def test_a_produced_stream_is_a_session_fence_data_and_an_end_fence(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    chunks = ["one ", "two ", "three"]
    producer = await ctx.resumable_stream(stream_id, lambda: from_list(chunks))
    assert await read_text(producer) == "one two three"
    records = await all_records(ctx.backend, ctx.stream_name(stream_id))
    assert [record["seq_num"] for record in records] == list(range(len(records)))
    first, last = records[0], records[-1]
    assert is_fence(first)
    assert first.get("body", "").startswith(SESSION_FENCE_PREFIX)
    assert is_closing_fence(last)
    assert last.get("body", "").startswith(END_FENCE_PREFIX)
    middle = records[1:-1]
    data = [record for record in middle if not is_fence(record)]
    assert all("headers" not in record for record in data)
    assert "".join(record.get("body", "") for record in data) == "one two three"
    # Any other fence in between is a heartbeat: the session token set again.
    assert all(record.get("body") == first.get("body") for record in middle if is_fence(record))


async def test_a_heartbeat_keeps_the_token_and_readers_skip_it(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    token = await claim(backend, name)
    assert token is not None
    await append_data(backend, name, token, ["before "], 1)
    await backend.append(name, _core.fence_append_input(token, token), Landing(new_fence=token))
    heartbeat = await backend.last_record(name)
    assert heartbeat is not None
    assert is_fence(heartbeat)
    assert not is_closing_fence(heartbeat)
    assert status_of(heartbeat) is StreamStatus.LIVE
    await append_data(backend, name, token, ["after"], 3)  # the token still writes
    await stop(backend, name)
    assert await read_text(await ctx.resume_stream(stream_id)) == "before after"


# -- is_abandoned ----------------------------------------------------------------


async def test_a_fresh_record_is_not_abandoned_an_old_one_is(
    ctx: ResumableStreamContext, stream_id: str
) -> None:
    backend, name = ctx.backend, ctx.stream_name(stream_id)
    assert await claim(backend, name) is not None
    fresh = await backend.last_record(name)
    assert fresh is not None
    assert "timestamp" in fresh
    # Stamped by the backend's clock, which is within a few seconds of ours.
    assert abs(fresh["timestamp"] - time.time() * 1000) < 5_000
    assert not is_abandoned(fresh, 60.0)
    old: SequencedRecord = {**fresh, "timestamp": fresh["timestamp"] - 120_000}
    assert is_abandoned(old, 60.0)
    assert not is_abandoned(old, 600.0)


def test_without_a_liveness_timeout_or_a_timestamp_nothing_is_abandoned() -> None:
    ancient: SequencedRecord = {"seq_num": 7, "timestamp": 0, "body": "x"}
    assert is_abandoned(ancient, 1.0)
    assert not is_abandoned(ancient, None)
    assert not is_abandoned({"seq_num": 7, "body": "x"}, 1.0)
