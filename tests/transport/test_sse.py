"""The ``text/event-stream`` parser against the HTML standard's "Server-sent
events" section (its own examples first), its line ends, BOM, fields, UTF-8
errors and caps, and a property test: any stream, cut anywhere, parses to the
events it was written from."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resumable_fast.errors import EventStreamError, ResumableStreamError
from resumable_fast.sse import DEFAULT_MAX_EVENT_BYTES, Event, EventStreamParser


def parse(*chunks: bytes, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> list[Event]:
    """Feed the chunks in order, then close: every event dispatched."""
    parser = EventStreamParser(max_event_bytes=max_event_bytes)
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return events


def bytewise(stream: bytes) -> list[Event]:
    """The same stream fed one byte at a time."""
    return parse(*(stream[i : i + 1] for i in range(len(stream))))


def msg(data: str, id: str = "", type: str = "message") -> Event:
    return Event(type, data, id)


# --- The standard's examples -------------------------------------------------------------------

# Each stream, with the exact events it fires.
SPEC_EXAMPLES = {
    # 9.2.6: "would cause an event message ... data ... "YHOO\n+2\n10"" (once followed by a
    # blank line).
    "stock": (b"data: YHOO\ndata: +2\ndata: 10\n\n", [msg("YHOO\n+2\n10")]),
    # 9.2.6: four blocks; a comment only, "first event" with id 1, "second event" with the id
    # reset, " third event" (one leading space kept).
    "comments and ids": (
        b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n"
        b"data:  third event\n\n",
        [msg("first event", id="1"), msg("second event"), msg(" third event")],
    ),
    # 9.2.6: "fires two events": "" and "\n"; the last block is not followed by a blank line.
    "data without a value": (b"data\n\ndata\ndata\n\ndata:", [msg(""), msg("\n")]),
    # 9.2.6: "fires two identical events".
    "data:test and data: test": (b"data:test\n\ndata: test\n\n", [msg("test"), msg("test")]),
    # 9.2.1 (introduction): named events for addEventListener('add'/'remove').
    "event types": (
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        [
            msg("73857293", type="add"),
            msg("2153", type="remove"),
            msg("113411", type="add"),
        ],
    ),
    # 9.2.1 (introduction): three messages, the second on two lines.
    "messages": (
        b"data: This is the first message.\n\n"
        b"data: This is the second message, it\ndata: has two lines.\n\n"
        b"data: This is the third message.\n\n",
        [
            msg("This is the first message."),
            msg("This is the second message, it\nhas two lines."),
            msg("This is the third message."),
        ],
    ),
}


@pytest.mark.parametrize("name", SPEC_EXAMPLES)
def test_spec_examples(name: str) -> None:
    stream, expected = SPEC_EXAMPLES[name]
    assert parse(stream) == expected
    assert bytewise(stream) == expected
    for line_end in (b"\r\n", b"\r"):
        assert parse(stream.replace(b"\n", line_end)) == expected


def test_spec_example_sets_last_event_id() -> None:
    parser = EventStreamParser()
    assert parser.feed(b": test stream\n\ndata: first event\nid: 1\n") == []
    assert parser.last_event_id == ""  # committed by the blank line only
    assert parser.feed(b"\n") == [msg("first event", id="1")]
    assert parser.last_event_id == "1"
    parser.feed(b"data:second event\nid\n\n")
    assert parser.last_event_id == ""


# --- Line ends ---------------------------------------------------------------------------------


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_line_ends(line_end: bytes) -> None:
    stream = line_end.join([b"event: e", b"data: one", b"data: two", b"", b"data: 3", b"", b""])
    assert parse(stream) == [msg("one\ntwo", type="e"), msg("3")]


def test_mixed_line_ends() -> None:
    stream = b"event: e\r\nid: 1\rdata: one\ndata: two\r\n\r\n: c\rdata: three\n\r"
    assert parse(stream) == [msg("one\ntwo", id="1", type="e"), msg("three", id="1")]


def test_crlf_split_across_feeds_is_one_line_end() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n\r") == [msg("a\nb")]  # the CR alone is the blank line
    assert parser.feed(b"\ndata: c\n\n") == [msg("c")]  # its LF is not a second one


def test_cr_then_empty_feed_then_lf() -> None:
    assert parse(b"data: a\r", b"", b"\n", b"data: b\n\n") == [msg("a\nb")]


def test_cr_dispatches_without_waiting_for_the_next_chunk() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\r\r") == [msg("a")]
    assert parser.feed(b"data: b\r") == []
    assert parser.feed(b"\r") == [msg("b")]
    assert parser.feed(b"data: c\r\n\r\n") == [msg("c")]


def test_lone_cr_then_other_text_is_a_line_end() -> None:
    assert parse(b"data: a\r", b"data: b\r", b"\r") == [msg("a\nb")]


# --- BOM ---------------------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def test_leading_bom_is_stripped() -> None:
    assert parse(BOM + b"data: a\n\n") == [msg("a")]
    assert parse(BOM + b":comment\n\ndata: a\n\n") == [msg("a")]
    assert parse(b"\xef", b"\xbb", b"\xbfdata: a\n\n") == [msg("a")]


def test_only_one_bom_is_stripped() -> None:
    # The second BOM starts the first line: its field is "\ufeffdata", which is ignored.
    assert parse(BOM + BOM + b"data: a\n\ndata: b\n\n") == [msg("b")]


def test_bom_after_the_start_is_text() -> None:
    assert parse(b"data: " + BOM + b"a\n\n") == [msg("\ufeffa")]
    assert parse(b"data: a\n\n", BOM + b"data: b\n\n") == [msg("a")]


# --- Fields ------------------------------------------------------------------------------------


def test_retry() -> None:
    parser = EventStreamParser()
    assert parser.retry_ms is None
    parser.feed(b"retry: 5000\n")
    assert parser.retry_ms == 5000
    for ignored in [b"1a", b"-1", b"", b" 7", b"7 ", b"1.5", "\uff15".encode(), b"\xd9\xa3"]:
        parser.feed(b"retry: " + ignored + b"\n")
        assert parser.retry_ms == 5000, ignored
    parser.feed(b"retry:250\n")
    assert parser.retry_ms == 250
    parser.feed(b"retry: 007\n")
    assert parser.retry_ms == 7
    parser.feed(b"retry\n")  # no colon: an empty value, ignored
    assert parser.retry_ms == 7
    parser.feed(b"retry: " + b"9" * 10_000 + b"\n")  # past int()'s digit limit (if any): ignored
    assert parser.retry_ms in (7, 10**10_000 - 1)
    assert parser.feed(b"\n") == []  # retry alone dispatches nothing


def test_id_persists_and_id_with_nul_is_ignored() -> None:
    stream = b"id: 5\ndata: a\n\ndata: b\n\nid: 6\x00\ndata: c\n\nid:\ndata: d\n\nid: 7\n\n"
    parser = EventStreamParser()
    assert parser.feed(stream) == [msg("a", "5"), msg("b", "5"), msg("c", "5"), msg("d", "")]
    assert parser.last_event_id == "7"  # set by a blank line even without data


def test_id_of_an_unfinished_event_is_not_committed() -> None:
    parser = EventStreamParser()
    parser.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n")
    parser.close()
    assert parser.last_event_id == "1"


def test_field_without_colon() -> None:
    assert parse(b"data\ndata\n\n") == [msg("\n")]
    assert parse(b"event: x\nevent\ndata: a\n\n") == [msg("a")]  # "event" resets the type
    assert parse(b"id: 3\nid\ndata: a\n\n") == [msg("a", "")]
    assert parse(b"foo\ndata: a\n\n") == [msg("a")]


def test_empty_data_line_dispatches_empty_data() -> None:
    assert parse(b"data:\n\n") == [msg("")]
    assert parse(b"data: \n\n") == [msg("")]
    assert parse(b"data:  \n\n") == [msg(" ")]


def test_event_without_data_is_not_dispatched_and_resets_its_type() -> None:
    assert parse(b"event: ignored\n\ndata: x\n\n") == [msg("x")]
    assert parse(b"event: a\nid: 1\n\n") == []
    assert parse(b"event:\ndata: x\n\n") == [msg("x")]  # an empty type is "message"


def test_comments_unknown_fields_and_field_names_are_literal() -> None:
    stream = (
        b": ping\n:\nfoo: bar\nData: no\ndata : no\n data: no\nevent : no\nid : no\ndata: x\n\n"
    )
    assert parse(stream) == [msg("x")]


def test_value_keeps_everything_after_one_space() -> None:
    stream = b"event:  spaced \ndata: a: b :c\ndata:\t tab\ndata::\nid:  1 \n\n"
    assert parse(stream) == [msg("a: b :c\n\t tab\n:", id=" 1 ", type=" spaced ")]


def test_non_ascii_and_nul_in_values() -> None:
    stream = "event: énement\ndata: 語 😀 \u2028 \x00\nid: ид\n\n".encode()
    assert parse(stream) == [msg("語 😀 \u2028 \x00", id="ид", type="énement")]
    assert bytewise(stream) == parse(stream)


def test_trailing_incomplete_event_is_discarded_at_close() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n\ndata: b\n") == [msg("a")]
    parser.close()
    parser.close()  # again: nothing
    with pytest.raises(EventStreamError, match="closed"):
        parser.feed(b"\n")
    assert parse(b"data: a\n\ndata: b") == [msg("a")]  # also without a line end


def test_event_is_a_named_tuple() -> None:
    [event] = parse(b"event: batch\ndata: {}\nid: 9\n\n")
    kind, data, event_id = event
    assert (kind, data, event_id) == ("batch", "{}", "9")
    assert (event.type, event.data, event.id) == ("batch", "{}", "9")


def test_s2_read_session_shape() -> None:
    body = b'{"records":[{"seq_num":3,"timestamp":1,"headers":[],"body":"h\\u00e9"}]}'
    stream = b"event: batch\ndata: " + body + b"\n\nevent: ping\ndata: {}\n\n"
    events = parse(stream)
    assert events == [msg(body.decode(), type="batch"), msg("{}", type="ping")]


# --- Invalid UTF-8 -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        b"data: \xff\n\n",  # invalid start byte, in data
        b"da\xfeta: x\n\n",  # in a field name
        b": comment \x80\n\n",  # in a comment
        b"event: \xc3(\n\n",  # bad continuation
        b"data: \xc0\xaf\n\n",  # overlong "/"
        b"data: \xed\xa0\x80\n\n",  # a surrogate
        b"data: \xf4\x90\x80\x80\n\n",  # past U+10FFFF
        b"data: \xe2\x82\n\n",  # truncated before a line end
    ],
)
def test_invalid_utf8_is_an_error(stream: bytes) -> None:
    with pytest.raises(EventStreamError, match="not valid UTF-8"):
        parse(stream)
    with pytest.raises(EventStreamError, match="not valid UTF-8"):
        bytewise(stream)


def test_truncated_utf8_at_close_is_an_error() -> None:
    parser = EventStreamParser()
    assert parser.feed(b"data: a\n\ndata: \xe2\x82") == [msg("a")]
    with pytest.raises(EventStreamError, match="unexpected end of data at byte 15"):
        parser.close()
    with pytest.raises(EventStreamError, match="failed"):
        parser.feed(b"\xac\n\n")


def test_multibyte_character_split_across_feeds() -> None:
    euro = "€".encode()
    assert parse(b"data: " + euro[:1], euro[1:2], euro[2:] + b"\n\n") == [msg("€")]
    assert parse(b"data: \xf0\x9f", b"\x98\x80\r", b"\n\r\n") == [msg("😀")]


def test_utf8_error_message_is_short_and_positioned() -> None:
    secret = b"data: secret-payload " + b"x" * 1000
    parser = EventStreamParser()
    with pytest.raises(EventStreamError) as caught:
        parser.feed(secret + b"\xff" + b"more secret\n\n")
    message = str(caught.value)
    assert "secret" not in message
    assert "at byte 1021" in message
    assert "\\xff" in message
    assert len(message) < 120
    assert caught.value.__cause__ is None
    assert isinstance(caught.value, ResumableStreamError)
    assert isinstance(caught.value, ValueError)


def test_parser_is_spent_after_an_error() -> None:
    parser = EventStreamParser()
    with pytest.raises(EventStreamError):
        parser.feed(b"data: \xff\n\n")
    with pytest.raises(EventStreamError, match="already failed"):
        parser.feed(b"data: ok\n\n")
    parser.close()  # nothing more to say


# --- Caps --------------------------------------------------------------------------------------


def test_over_cap_line_fed_in_pieces_is_refused_without_buffering_it() -> None:
    cap, piece = 64 * 1024, b"x" * 4096
    parser = EventStreamParser(max_event_bytes=cap)
    parser.feed(b"data: ")
    fed = [6]  # bytes fed and accepted

    def feed_pieces() -> None:
        for _ in range(10 * cap // len(piece)):
            assert parser.buffered_bytes <= cap  # what it holds before this feed
            parser.feed(piece)
            fed[0] += len(piece)

    with pytest.raises(EventStreamError, match="line is over the cap of 65536 bytes"):
        feed_pieces()
    assert cap < fed[0] + len(piece) <= cap + len(piece)  # refused by the feed that crossed it
    assert parser.buffered_bytes == 0  # and dropped


def test_line_cap_is_the_same_whatever_the_chunking() -> None:
    cap = 100
    at_cap = b"data: " + b"y" * (cap - 6)
    for chunks in ([at_cap + b"\n\n"], [at_cap, b"\n\n"], [at_cap[:50], at_cap[50:] + b"\r\r"]):
        assert parse(*chunks, max_event_bytes=cap) == [msg("y" * (cap - 6))]
    over = at_cap + b"y"
    for chunks in ([over + b"\n\n"], [over, b"\n\n"], [over[:50], over[50:] + b"\n"], [over]):
        with pytest.raises(EventStreamError, match="line is over the cap"):
            parse(*chunks, max_event_bytes=cap)
    with pytest.raises(EventStreamError, match="line is over the cap"):  # a comment too
        parse(b":" + b"c" * cap + b"\n", max_event_bytes=cap)


def test_data_cap_counts_utf8_bytes_across_lines() -> None:
    # Lines within the cap; the event's data ("01234\n0123" = 10 bytes) at it.
    assert parse(b"data:01234\ndata:0123\n\n", max_event_bytes=10) == [msg("01234\n0123")]
    with pytest.raises(EventStreamError, match="data is over the cap of 10 bytes"):
        parse(b"data:01234\ndata:01234\n\n", max_event_bytes=10)
    # 5 characters but 13 bytes of data.
    with pytest.raises(EventStreamError, match="data is over the cap of 12 bytes"):
        parse("data:€€\ndata:€€\n\n".encode(), max_event_bytes=12)
    # Many data lines, each small, fed one at a time.
    parser = EventStreamParser(max_event_bytes=1000)
    # 91 lines of 10 bytes: 1000 bytes of data, joined by LF: at the cap.
    assert [parser.feed(b"data: 0123456789\n") for _ in range(91)] == [[]] * 91
    with pytest.raises(EventStreamError, match="data is over the cap"):
        parser.feed(b"data: 0123456789\n")
    # The cap is per event: the data buffer is emptied by each dispatch.
    assert len(parse(b"data: 0123456789\n\n" * 1000, max_event_bytes=20)) == 1000


def test_default_cap_takes_an_s2_batch() -> None:
    body = b'{"records":[' + b'{"body":"' + b"z" * (1024 * 1024) + b'"}]}'
    stream = b"event: batch\ndata: " + body + b"\n\n"
    chunks = [stream[i : i + 16384] for i in range(0, len(stream), 16384)]
    assert parse(*chunks) == [msg(body.decode(), type="batch")]


def test_invalid_cap() -> None:
    with pytest.raises(ValueError, match="positive"):
        EventStreamParser(max_event_bytes=0)


# --- Property: any stream, cut anywhere ----------------------------------------------------------

# Text on one line: any scalar value but CR and LF (non-ASCII, NUL, U+2028, BOM included).
LINE_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)
LINE_END = st.sampled_from(["\n", "\r", "\r\n"])


@dataclass
class Block:
    """One event as written: its lines (other than the blank line) and what it fires."""

    type: str | None
    data: list[str]
    id: str | None
    retry: str | None
    comments: list[str]


BLOCK = st.builds(
    Block,
    type=st.none() | LINE_TEXT,
    data=st.lists(LINE_TEXT, max_size=3),
    id=st.none() | LINE_TEXT,
    retry=st.none() | st.from_regex(r"[0-9]{1,6}|[0-9a-z -]{0,4}", fullmatch=True),
    comments=st.lists(LINE_TEXT, max_size=2),
)


def field(name: str, value: str, space: bool) -> str:
    """``name:value``; the optional space is written when the value starts with one."""
    return f"{name}: {value}" if space or value.startswith(" ") else f"{name}:{value}"


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Event], str, int | None]:
    """A stream and what it fires: events, the last event id, the reconnection time."""
    blocks = draw(st.lists(BLOCK, max_size=6))
    lines: list[str] = []
    expected: list[Event] = []
    last_id, retry = "", None
    for block in blocks:
        fields = [field("data", value, draw(st.booleans())) for value in block.data]
        others: list[str] = []
        if block.type is not None:
            others.append(field("event", block.type, draw(st.booleans())))
        if block.id is not None:
            others.append(field("id", block.id, draw(st.booleans())))
            if "\0" not in block.id:
                last_id = block.id
        if block.retry is not None:
            others.append(field("retry", block.retry, draw(st.booleans())))
            if block.retry.isdigit():
                retry = int(block.retry)
        others += [":" + comment for comment in block.comments]
        for other in draw(st.permutations(others)):  # anywhere, but data lines stay in order
            fields.insert(draw(st.integers(0, len(fields))), other)
        lines += fields
        lines.append("")  # the blank line
        if block.data:
            expected.append(Event(block.type or "message", "\n".join(block.data), last_id))
    unfinished = draw(st.lists(LINE_TEXT.map(lambda value: "data:" + value), max_size=2))
    text, previous_end = "", ""
    for line in lines + unfinished:
        end = draw(LINE_END)
        if previous_end == "\r" and not line and end.startswith("\n"):
            end = "\r"  # "\r" then "\n" would be one line end, not two
        text += line + end
        previous_end = end
    if draw(st.booleans()) and unfinished:
        text = text.rstrip("\r\n")  # the unfinished event's last line has no line end
    stream = text.encode()
    if draw(st.booleans()):
        stream = BOM + stream
    return stream, expected, last_id, retry


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    """The stream cut at the given points (taken modulo its length; empty pieces too)."""
    points = sorted(point % (len(stream) + 1) for point in cuts)
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def feed_all(chunks: list[bytes]) -> tuple[list[Event], str, int | None]:
    parser = EventStreamParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    parser.close()
    return events, parser.last_event_id, parser.retry_ms


@settings(max_examples=200, deadline=None)
@given(streams(), st.lists(st.integers(min_value=0), max_size=8))
def test_any_stream_cut_anywhere(
    written: tuple[bytes, list[Event], str, int | None], cuts: list[int]
) -> None:
    stream, expected, last_id, retry = written
    pieces = cut(stream, cuts)
    assert b"".join(pieces) == stream
    whole = feed_all([stream])
    assert whole == (expected, last_id, retry)
    assert feed_all(pieces) == whole


# Bytes from the format's own vocabulary, valid or not.
TOKENS = st.sampled_from(
    [
        *(b"data", b"event", b"id", b"retry", b":", b" ", b"\r", b"\n", b"5", b"x", b"\x00", BOM),
        *(b"\xff", b"\xe2\x82", b"\xac", "é".encode()),  # invalid, truncated, continuation, valid
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(TOKENS, max_size=40), st.lists(st.integers(min_value=0), max_size=6))
def test_any_bytes_cut_anywhere_agree(tokens: list[bytes], cuts: list[int]) -> None:
    """Malformed input too: cut or whole, the same events, or an EventStreamError both ways."""
    stream = b"".join(tokens)
    pieces = cut(stream, cuts)

    def outcome(chunks: list[bytes]) -> object:
        try:
            return parse(*chunks, max_event_bytes=12)
        except EventStreamError:
            return "error"

    assert outcome(pieces) == outcome([stream])
