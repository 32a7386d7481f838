"""A small async client for the parts of S2's REST API that resumable_fast uses.

Every request, unary calls (appends, reads, tail checks) and read sessions
(SSE) alike, goes through the client's HTTP collaborator: an
:class:`~resumable_fast.http11.HttpClient` of its own, or whatever is passed as
``S2Client(config, http=...)`` (an :class:`HttpTransport`; tests and benches
pass a wrapper around an HttpClient that records or counts what is sent).
Every error S2 answers with becomes a typed exception from
:mod:`resumable_fast.errors`; the HTTP layer's errors become ours at one
boundary (:data:`_transport_errors`, as httpx's ``map_httpcore_exceptions``),
and a transport fault that outlasts the retries is a
:class:`~resumable_fast.errors.S2ConnectionError`. The access token is only
ever placed in the ``Authorization`` header, never in a message; and what an
answer says (its message, code or body) goes through a
:class:`~resumable_fast.endpoints.Redactor` before it is kept in an error or
logged, so an upstream that echoes the request (a gateway, a proxy) cannot
put the token or the proxy's credentials there (issue 21).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ipaddress
import logging
import random
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

import orjson
from opentelemetry.metrics import MeterProvider

from resumable_fast.config import S2Config
from resumable_fast.endpoints import Origin, Redactor
from resumable_fast.errors import (
    BasinMisconfiguredError,
    ConfigurationError,
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    ResumableStreamError,
    S2AuthError,
    S2ConnectionError,
    S2Error,
    SeqNumMismatchError,
    StreamNotFoundError,
)
from resumable_fast.http11 import (
    ClientClosed,
    HttpClient,
    HttpSettings,
    Request,
    Response,
    StreamingResponse,
    TransportError,
)
from resumable_fast.metrics import BackendKind, Metrics
from resumable_fast.records import NO_LANDING, Landing, SequencedRecord, StreamName
from resumable_fast.sse import EventStreamParser

__all__ = ["DelegatingHttp", "HttpTransport", "S2Client", "http_settings"]

logger = logging.getLogger("resumable_fast")

# S2 heartbeats an idle read session every 5-15 s; a longer silence means the
# connection is gone and the session should be reopened.
READ_SESSION_IDLE_TIMEOUT = 45.0
# Unary reads replay what a stream holds before a session follows it; the first
# is small because time to first chunk is what a reloading reader waits for.
FIRST_CATCH_UP_RECORDS = 100
CATCH_UP_RECORDS = 1000
CATCH_UP_READS = 4
MAX_BACKOFF_SECONDS = 2.0
# How much of an error's answer its message keeps: a body that is not JSON
# (an excerpt), a JSON message, a code.
ERROR_EXCERPT_CHARS = 200
ERROR_MESSAGE_CHARS = 1000
ERROR_CODE_CHARS = 100
# S2 answers a read with at most 1 MiB of records, which JSON makes larger.
MAX_ANSWER_BYTES = 16 * 1024 * 1024


class HttpTransport(Protocol):
    """What :class:`S2Client` needs of its HTTP client: an
    :class:`~resumable_fast.http11.HttpClient`, or an object around one."""

    @property
    def redactor(self) -> Redactor:
        """Cleans what answers say of the credentials sent (it learns the
        proxy's as they are resolved; S2Client adds its token)."""
        ...

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response: ...

    def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AbstractAsyncContextManager[StreamingResponse]: ...

    async def aclose(self) -> None: ...


class DelegatingHttp:
    """An :class:`HttpTransport` that passes every call to ``inner``:
    subclass it to observe or change some (a test's recorder, a bench's
    request counter) and pass it as ``S2Client(config, http=...)``."""

    def __init__(self, inner: HttpTransport) -> None:
        self.inner = inner

    @property
    def redactor(self) -> Redactor:
        return self.inner.redactor

    async def request(
        self, origin: Origin, request: Request, *, idempotent: bool, timeout: float
    ) -> Response:
        return await self.inner.request(origin, request, idempotent=idempotent, timeout=timeout)

    def stream(
        self, origin: Origin, request: Request, *, timeout: float
    ) -> AbstractAsyncContextManager[StreamingResponse]:
        return self.inner.stream(origin, request, timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


def http_settings(config: S2Config) -> HttpSettings:
    """The HTTP settings ``config`` asks for (an S2Client's own HttpClient
    uses them; so should one passed as ``http=``)."""
    return HttpSettings(
        verify=config.verify,
        trust_env=config.trust_env,
        proxy=config.proxy,
        max_body_bytes=MAX_ANSWER_BYTES,
    )


class _TransportFault(S2ConnectionError):
    """A transport fault on one attempt, as ours: the same request may get
    past it. Its message is the fault's repr."""


class _MappedTransportErrors:
    """The one boundary where the HTTP layer's errors become ours: a
    :class:`~resumable_fast.http11.TransportError` a :class:`_TransportFault`
    (which the retries handle), a closed HTTP client this client's closed
    error. What the HTTP layer raises as ours already (an answer over its cap,
    a certificate that does not verify) passes. Stateless, so one instance
    serves every request without an allocation."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(error, TransportError):
            raise _TransportFault(repr(error)) from error
        if isinstance(error, ClientClosed):
            raise ResumableStreamError("the S2 client is closed (its context was closed)") from None


_transport_errors = _MappedTransportErrors()


def _is_transient(error: S2Error) -> bool:
    """Faults after which the same request may succeed."""
    return error.status in (429, 500, 502, 503, 504) or (
        error.status == 409 and error.code == "transaction_conflict"
    )


def _invalid_answer(what: str) -> S2Error:
    """S2 (or something in between) answered with JSON its API does not specify."""
    return S2Error(200, "invalid_response", f"S2 answered {what} not as its API specifies")


def _records_of(data: bytes | str) -> list[SequencedRecord]:
    """The records of a read's answer or a session's batch, checked."""
    try:
        records = orjson.loads(data)["records"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise _invalid_answer("records") from None
    if type(records) is not list:
        raise _invalid_answer("records")
    for record in records:
        if (
            type(record) is not dict
            or type(record.get("seq_num")) is not int
            or type(record.get("body", "")) is not str
            or type(record.get("headers", [])) is not list
        ):
            raise _invalid_answer("a record")
    return records


# "trim" in base64 (a command header's value, in the base64 format).
_TRIM_HEADER_VALUE = base64.b64encode(b"trim").decode()

# S2's answer to any call on a stream between its delete and the end of the
# deletion, which it carries out in the background.
_DELETION_PENDING = "stream_deletion_pending"


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter, capped."""
    return random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.025 * 2**attempt))


def _retry_after(value: str | bytes | None) -> float | None:
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), 30.0)
    except ValueError:
        return None


def _explain_not_found(error: S2Error, basin: str, setting: str) -> S2Error:
    """A 404 from a basin call means the basin is missing or is not set to
    create streams on demand, which the stream layout relies on."""
    if not isinstance(error, StreamNotFoundError):
        return error
    if error.code == "basin_not_found":
        message = f"basin {basin!r} does not exist (create it, or check S2_BASIN)"
    elif error.code == "stream_not_found":
        message = (
            f"basin {basin!r} does not create streams on demand: "
            f"enable {setting} in its configuration"
        )
    else:
        return error
    misconfigured = BasinMisconfiguredError(error.status, error.code, message)
    misconfigured.attempts = error.attempts
    return misconfigured


def _error_from_response(status: int, content: bytes, redact: Redactor) -> S2Error:
    """The typed error for an answer. Nothing of the answer reaches the
    error but through ``redact``: an upstream may echo the request, with
    its credentials, in any field."""
    try:
        payload: Any = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        payload = None
    if status == 412 and isinstance(payload, dict):
        if "fencing_token_mismatch" in payload:
            token = redact(str(payload["fencing_token_mismatch"]), ERROR_CODE_CHARS)
            return FencingTokenMismatchError(token)
        if "seq_num_mismatch" in payload:
            expected = payload["seq_num_mismatch"]
            if type(expected) is not int:
                return _invalid_answer("a sequence number mismatch")
            return SeqNumMismatchError(expected)
    if status == 416:
        tail = payload.get("tail") if isinstance(payload, dict) else None
        seq_num = tail.get("seq_num") if isinstance(tail, dict) else None
        return RangeNotSatisfiableError(seq_num if type(seq_num) is int else None)
    raw_code = payload.get("code") if isinstance(payload, dict) else None
    code = None if raw_code is None else redact(str(raw_code), ERROR_CODE_CHARS)
    if isinstance(payload, dict):
        message = redact(str(payload.get("message", "")), ERROR_MESSAGE_CHARS)
    else:
        # Enough bytes for the excerpt's characters and the look past its cut.
        text = content[: 4 * (ERROR_EXCERPT_CHARS + 16)].decode("utf-8", "replace")
        message = redact(text, ERROR_EXCERPT_CHARS)
    if status in (401, 403):
        return S2AuthError(status, code, message or "access token refused")
    if status == 404:
        return StreamNotFoundError(status, code, message or "not found")
    return S2Error(status, code, message)


@dataclass(frozen=True)
class _Endpoint:
    """An API root, split for building requests by hand."""

    url: str
    origin: Origin
    path: str
    host: str

    @property
    def display(self) -> str:
        """``scheme://host[:port]``, for messages."""
        return f"{self.origin[0]}://{self.host}"

    @property
    def cleartext_remote(self) -> bool:
        """Plain HTTP to a host that is not this machine."""
        if self.origin[0] != "http":
            return False
        host = self.origin[1]
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True

    @classmethod
    def parse(cls, url: str) -> _Endpoint:
        origin = Origin.of(url)
        return cls(url, origin, urlsplit(url).path.rstrip("/"), origin.authority)


def _header_lines(fields: dict[str, str]) -> bytes:
    """Request headers as serialized lines (the client adds Host and
    Content-Length)."""
    fields = {"Accept-Encoding": "identity", **fields}
    for name, value in fields.items():
        if any(char in value for char in "\r\n\0") or not value.isascii():
            # The value is not quoted: it may be the access token.
            raise ConfigurationError(f"the {name} header holds characters HTTP cannot carry")
    return "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode("ascii")


class S2Client:
    """Append, read, follow and inspect the streams of one basin."""

    kind: BackendKind = "s2"

    def __init__(
        self,
        config: S2Config,
        *,
        http: HttpTransport | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        """``http``: what the requests go through (default: an
        :class:`~resumable_fast.http11.HttpClient` with
        :func:`http_settings`), for a caller that wraps or shares one.
        ``meter_provider``: where its retries are counted (default: the
        global one)."""
        self.config = config
        self._metrics = Metrics(self.kind, meter_provider)
        endpoint = config.basin_endpoint.replace("{basin}", config.basin)
        self.description = f"s2 (basin {config.basin} at {endpoint})"
        self.retries = 0  # requests sent again after a transient fault
        headers = {"User-Agent": "resumable_fast"}
        if config.access_token:
            headers["Authorization"] = f"Bearer {config.access_token}"
        self._http = http if http is not None else HttpClient(http_settings(config))
        # Every credential sent: the proxy's once the HTTP client resolves
        # it, the token here (see _error_from_response).
        self._redact = self._http.redactor
        self._redact.add(config.access_token)
        basin_headers = dict(headers)
        if config.shared_basin_endpoint:
            basin_headers["s2-basin"] = config.basin
        self._basin = _Endpoint.parse(config.basin_url)
        self._account = _Endpoint.parse(config.account_url)
        if config.access_token:
            for plain in {e.host for e in (self._basin, self._account) if e.cleartext_remote}:
                logger.warning(
                    "the S2 access token goes over plain HTTP to %s: use an https:// endpoint",
                    plain,
                )
        self._session_headers = _header_lines({**basin_headers, "Accept": "text/event-stream"})
        self._append_headers = _header_lines({**basin_headers, "Content-Type": "application/json"})
        self._read_headers = _header_lines({**basin_headers, "Accept": "application/json"})
        # A trim's body is 8 binary bytes, which only the base64 format carries.
        self._binary_append_headers = _header_lines(
            {**basin_headers, "Content-Type": "application/json", "s2-format": "base64"}
        )
        self._account_headers = _header_lines({**headers, "Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"S2Client({self.config!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _records_path(name: StreamName) -> str:
        # Cached: a producing stream sends one request per batch.
        return f"/streams/{quote(name, safe='')}/records"

    async def _request(
        self,
        method: str,
        endpoint: _Endpoint,
        path: str,
        *,
        headers: bytes,
        content: bytes | None = None,
    ) -> bytes:
        """Send a request, retrying transient faults with capped, jittered backoff
        until ``retry_deadline`` seconds have passed since the first attempt.

        Appends are safe to retry: data batches carry ``match_seq_num`` and
        fences change the token, so a retried append that already landed fails
        with a 412 instead of landing twice (see :meth:`append`).
        """
        attempt = 0
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.retry_deadline
        while True:
            attempt += 1
            try:
                with _transport_errors:
                    answer = await self._http.request(
                        endpoint.origin,
                        Request(method.encode(), (endpoint.path + path).encode(), headers, content),
                        idempotent=method == "GET",
                        timeout=self.config.request_timeout,
                    )
            except _TransportFault as fault:
                delay = _backoff(attempt)
                if loop.time() + delay >= give_up_at:
                    raise S2ConnectionError(
                        f"S2 unreachable at {endpoint.display} after {attempt} attempts "
                        f"({self.config.retry_deadline:g} s): {fault}"
                    ) from None
                logger.debug("%s %s: %s; retrying in %.3fs", method, endpoint.display, fault, delay)
            else:
                status = answer.status
                if status < 400:
                    return answer.content
                error = _error_from_response(status, answer.content, self._redact)
                delay = _retry_after(answer.header(b"retry-after")) or _backoff(attempt)
                if not _is_transient(error) or loop.time() + delay >= give_up_at:
                    if attempt > 1:
                        error.attempts = attempt
                    raise error
                logger.debug("%s %s: %s; retrying in %.3fs", method, endpoint.display, error, delay)
            self.retries += 1
            self._metrics.retried()
            await asyncio.sleep(delay)

    async def append(
        self, name: StreamName, append_input: bytes, landing: Landing = NO_LANDING
    ) -> None:
        """POST one framed ``AppendInput``; ``landing`` lets a retry
        recognise that an earlier attempt landed although its answer was lost.
        """
        try:
            await self._request(
                "POST",
                self._basin,
                self._records_path(name),
                headers=self._append_headers,
                content=append_input,
            )
        except StreamNotFoundError as exc:
            raise _explain_not_found(exc, self.config.basin, "create_stream_on_append") from None
        except SeqNumMismatchError as exc:
            landed = landing.end_seq_num
            if exc.attempts > 1 and landed is not None and exc.expected_seq_num == landed:
                return
            raise
        except FencingTokenMismatchError as exc:
            fence = landing.new_fence
            if exc.attempts > 1 and fence is not None and exc.current_token == fence:
                return

            raise

    async def read(
        self,
        name: StreamName,
        *,
        seq_num: int | None = None,
        tail_offset: int | None = None,
        count: int | None = None,
    ) -> list[SequencedRecord]:
        """One unary read (at most 1000 records / 1 MiB)."""
        params: dict[str, int] = {}
        if seq_num is not None:
            params["seq_num"] = seq_num
        if tail_offset is not None:
            params["tail_offset"] = tail_offset
        if count is not None:
            params["count"] = count
        path = self._records_path(name)
        if params:
            path += "?" + urlencode(params)
        try:
            content = await self._request("GET", self._basin, path, headers=self._read_headers)
        except StreamNotFoundError as exc:
            raise _explain_not_found(exc, self.config.basin, "create_stream_on_read") from None
        records = _records_of(content)
        return records

    async def last_record(self, name: StreamName) -> SequencedRecord | None:
        """The stream's last record, or None when it has none (creating it on read)."""
        try:
            records = await self.read(name, tail_offset=1, count=1)
        except RangeNotSatisfiableError:
            return None
        return records[-1] if records else None

    async def check_tail(self, name: StreamName) -> int:
        """The sequence number the next record will get."""
        try:
            content = await self._request(
                "GET", self._basin, self._records_path(name) + "/tail", headers=self._read_headers
            )
        except StreamNotFoundError as exc:
            raise _explain_not_found(exc, self.config.basin, "create_stream_on_read") from None
        try:
            tail = orjson.loads(content)["tail"]["seq_num"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise _invalid_answer("a tail") from None
        if type(tail) is not int:
            raise _invalid_answer("a tail")
        return tail

    async def delete(self, name: StreamName) -> None:
        """Delete the stream, and return once S2 has: it answers 202 and
        deletes in the background, answering every call on the stream with
        409 ``stream_deletion_pending`` meanwhile, so the tail is asked (with
        backoff, up to ``retry_deadline``) until it answers. A stream that
        does not exist is left as it is."""
        try:
            await self._request(
                "DELETE",
                self._basin,
                f"/streams/{quote(name, safe='')}",
                headers=self._read_headers,
            )
        except StreamNotFoundError as exc:
            if exc.code != "stream_not_found":
                raise _explain_not_found(exc, self.config.basin, "create_stream_on_read") from None
            return
        except S2Error as exc:
            if exc.code != _DELETION_PENDING:  # deleted already, by another caller
                raise
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.retry_deadline
        attempt = 0
        while True:
            try:
                await self.check_tail(name)
                return
            except S2Error as exc:
                attempt += 1
                delay = _backoff(attempt)
                if exc.code != _DELETION_PENDING or loop.time() + delay >= give_up_at:
                    raise
            await asyncio.sleep(delay)

    async def trim(self, name: StreamName, trim_point: int, match_seq_num: int) -> None:
        """Append a ``trim`` command (body: the trim point, 8 bytes big-endian)
        at ``match_seq_num``, without a fencing token: S2 drops the records
        before ``trim_point``, eventually. A retry whose first attempt landed
        fails with a sequence number mismatch at ``match_seq_num + 1``, which
        is taken as landed."""
        record = {
            "headers": [["", _TRIM_HEADER_VALUE]],
            "body": base64.b64encode(trim_point.to_bytes(8, "big")).decode(),
        }
        body = orjson.dumps({"records": [record], "match_seq_num": match_seq_num})
        try:
            await self._request(
                "POST",
                self._basin,
                self._records_path(name),
                headers=self._binary_append_headers,
                content=body,
            )
        except SeqNumMismatchError as exc:
            if not (exc.attempts > 1 and exc.expected_seq_num == match_seq_num + 1):
                raise

    async def _read_or_empty(
        self, name: StreamName, seq_num: int, count: int
    ) -> list[SequencedRecord]:
        try:
            return await self.read(name, seq_num=seq_num, count=count)
        except RangeNotSatisfiableError:
            return []

    async def _catch_up(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        """What the stream holds from ``seq_num`` up to its tail, in order: a
        small first read (with the tail check beside it), then reads of the
        remaining ranges a few at a time."""
        first, tail = await asyncio.gather(
            self._read_or_empty(name, seq_num, FIRST_CATCH_UP_RECORDS),
            self.check_tail(name),
        )
        if not first:
            return
        yield first
        next_seq_num = first[-1]["seq_num"] + 1
        while next_seq_num < tail:
            starts = range(
                next_seq_num,
                min(tail, next_seq_num + CATCH_UP_READS * CATCH_UP_RECORDS),
                CATCH_UP_RECORDS,
            )
            batches = await asyncio.gather(
                *(self._read_or_empty(name, start, CATCH_UP_RECORDS) for start in starts)
            )
            progressed = False
            for batch in batches:
                # A read capped by bytes returns fewer records; the reads after
                # it then start past a gap and are read again from there.
                if not batch or batch[0]["seq_num"] != next_seq_num:
                    break
                yield batch
                next_seq_num = batch[-1]["seq_num"] + 1
                progressed = True
            if not progressed:
                return  # the session picks up from here

    async def read_session(
        self, name: StreamName, seq_num: int
    ) -> AsyncGenerator[list[SequencedRecord], None]:
        """Follow a stream from ``seq_num`` on, batch by batch, without end.

        What the stream already holds is read with unary reads (a small first
        one, so the first chunk arrives fast), and only once they reach the
        tail is an SSE session opened to follow it live: a finished stream is
        replayed without a session at all. When the connection drops or S2
        closes the session, it is reopened just after the last record seen, so
        nothing is repeated or skipped.
        """
        next_seq_num = seq_num
        async with aclosing(self._catch_up(name, seq_num)) as catch_up:
            async for caught_up in catch_up:
                next_seq_num = caught_up[-1]["seq_num"] + 1
                yield caught_up
        failures = 0
        failing_since: float | None = None  # first failure since records last came
        loop = asyncio.get_running_loop()
        basin = self._basin
        path = (basin.path + self._records_path(name)).encode()

        def retry_in(delay: float, error: S2Error | _TransportFault) -> float:
            """How long to wait before reopening, or raise once past the deadline."""
            nonlocal failures, failing_since
            failures += 1
            now = loop.time()
            if failing_since is None:
                failing_since = now
            if now + delay - failing_since >= self.config.retry_deadline:
                if isinstance(error, S2Error):
                    error.attempts = failures
                    raise error
                raise S2ConnectionError(
                    f"read session on {name!r} failed {failures} times in "
                    f"{self.config.retry_deadline:g} s: {error}"
                ) from None
            self.retries += 1
            self._metrics.retried()
            return delay

        while True:
            received = False
            try:
                request = Request(
                    b"GET", path + b"?seq_num=%d" % next_seq_num, self._session_headers
                )
                with _transport_errors:
                    async with self._http.stream(
                        basin.origin, request, timeout=self.config.request_timeout
                    ) as response:
                        if response.status >= 400:
                            content = await response.read(self.config.request_timeout)
                            error = _explain_not_found(
                                _error_from_response(response.status, content, self._redact),
                                self.config.basin,
                                "create_stream_on_read",
                            )
                            if error.code == _DELETION_PENDING:
                                # The records are gone: as a read past the tail.
                                raise RangeNotSatisfiableError(0) from error
                            if not _is_transient(error):
                                raise error
                            delay = _retry_after(response.header(b"retry-after"))
                            await asyncio.sleep(retry_in(delay or _backoff(failures + 1), error))
                            continue
                        events = EventStreamParser()
                        async for chunk in response.iter_bytes(READ_SESSION_IDLE_TIMEOUT):
                            for event in events.feed(chunk):
                                if event.type == "batch":
                                    records = _records_of(event.data)
                                    if records:
                                        received = True
                                        failures, failing_since = 0, None
                                        next_seq_num = records[-1]["seq_num"] + 1
                                        yield records
                                elif event.type == "error":
                                    raise _error_from_response(
                                        500, event.data.encode(), self._redact
                                    )
                                # "ping" heartbeats and the final "[DONE]" need no
                                # action: the loop reopens the session after the
                                # last record seen.
                        events.close()
            except _TransportFault as fault:
                delay = retry_in(_backoff(failures + 1), fault)
                logger.debug("read session on %r dropped (%s); reopening", name, fault)
                await asyncio.sleep(delay)
                continue
            except S2Error as error:
                # An error event mid-session: reopened like a failed request.
                if error.code == _DELETION_PENDING:
                    raise RangeNotSatisfiableError(0) from error
                if not _is_transient(error):
                    raise
                await asyncio.sleep(retry_in(_backoff(failures + 1), error))
                continue
            if not received:
                # The session ended without a record: back off before opening
                # the next, so a server that ends sessions at once is not
                # asked again and again in a hot loop.
                ended = _TransportFault("the session ended without a record")
                await asyncio.sleep(retry_in(_backoff(failures + 1), ended))

    async def create_basin(
        self,
        basin: str,
        *,
        create_stream_on_append: bool,
        create_stream_on_read: bool,
        default_stream_config: Mapping[str, object] | None = None,
    ) -> None:
        """Create a basin (account-level call); ``default_stream_config`` is
        S2's config of the basin's new streams (retention, delete-on-empty)."""
        config: dict[str, object] = {
            "create_stream_on_append": create_stream_on_append,
            "create_stream_on_read": create_stream_on_read,
        }
        if default_stream_config is not None:
            config["default_stream_config"] = dict(default_stream_config)
        body = orjson.dumps({"basin": basin, "config": config})
        await self._request(
            "POST", self._account, "/basins", headers=self._account_headers, content=body
        )

    async def basin_config(self, basin: str) -> dict[str, Any] | None:
        """A basin's configuration as S2 answers it, or None when the basin
        does not exist (account-level call)."""
        try:
            content = await self._request(
                "GET",
                self._account,
                f"/basins/{quote(basin, safe='')}",
                headers=self._account_headers,
            )
        except StreamNotFoundError as exc:
            if exc.code == "basin_not_found":
                return None
            raise
        try:
            config = orjson.loads(content)
        except orjson.JSONDecodeError:
            raise _invalid_answer("a basin configuration") from None
        if not isinstance(config, dict):
            raise _invalid_answer("a basin configuration")
        return config

    async def reconfigure_basin(self, basin: str, changes: Mapping[str, object]) -> None:
        """Change the fields of a basin's configuration named in ``changes``
        (S2's partial reconfiguration; account-level call)."""
        await self._request(
            "PATCH",
            self._account,
            f"/basins/{quote(basin, safe='')}",
            headers=self._account_headers,
            content=orjson.dumps(dict(changes)),
        )
