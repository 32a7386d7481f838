"""A small async client for the parts of S2's REST API that resumable_fast uses.

Every request, unary calls (appends, reads, tail checks) and read sessions
(SSE) alike, goes through the client's HTTP collaborator: an
:class:`~resumable_fast.http11.HttpClient` of its own, or whatever is passed as
``S2Client(config, http=...)`` (an
:class:`~resumable_fast.s2_transport.HttpTransport`; tests and benches pass a
wrapper around an HttpClient that records or counts what is sent).
Every error S2 answers with becomes a typed exception from
:mod:`resumable_fast.errors` (:mod:`resumable_fast.s2_answers`); the HTTP
layer's errors become ours at one boundary
(:data:`~resumable_fast.s2_transport.transport_errors`, as httpx's
``map_httpcore_exceptions``), and a transport fault that outlasts the retries
is a :class:`~resumable_fast.errors.S2ConnectionError`. The access token is
only ever placed in the ``Authorization`` header, never in a message; and
what an answer says (its message, code or body) goes through a
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
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson
from opentelemetry.metrics import MeterProvider

from resumable_fast.config import S2Config
from resumable_fast.endpoints import Origin
from resumable_fast.errors import (
    ConfigurationError,
    FencingTokenMismatchError,
    RangeNotSatisfiableError,
    S2ConnectionError,
    S2Error,
    SeqNumMismatchError,
    StreamNotFoundError,
)
from resumable_fast.http11 import (
    HttpClient,
    Request,
)
from resumable_fast.metrics import BackendKind, Metrics
from resumable_fast.records import NO_LANDING, Landing, SequencedRecord, StreamName
from resumable_fast.s2_answers import (
    backoff,
    error_from_response,
    explain_not_found,
    invalid_answer,
    is_transient,
    records_of,
    retry_after,
)
from resumable_fast.s2_transport import (
    HttpTransport,
    TransportFault,
    http_settings,
    transport_errors,
)
from resumable_fast.sse import EventStreamParser

__all__ = ["S2Client"]

logger = logging.getLogger("resumable_fast")

# S2 heartbeats an idle read session every 5-15 s; a longer silence means the
# connection is gone and the session should be reopened.
READ_SESSION_IDLE_TIMEOUT = 45.0
# Unary reads replay what a stream holds before a session follows it; the first
# is small because time to first chunk is what a reloading reader waits for.
FIRST_CATCH_UP_RECORDS = 100
CATCH_UP_RECORDS = 1000
CATCH_UP_READS = 4


# "trim" in base64 (a command header's value, in the base64 format).
_TRIM_HEADER_VALUE = base64.b64encode(b"trim").decode()

# S2's answer to any call on a stream between its delete and the end of the
# deletion, which it carries out in the background.
_DELETION_PENDING = "stream_deletion_pending"


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
        # it, the token here (see s2_answers.error_from_response).
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
                with transport_errors:
                    answer = await self._http.request(
                        endpoint.origin,
                        Request(method.encode(), (endpoint.path + path).encode(), headers, content),
                        idempotent=method == "GET",
                        timeout=self.config.request_timeout,
                    )
            except TransportFault as fault:
                delay = backoff(attempt)
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
                error = error_from_response(status, answer.content, self._redact)
                delay = retry_after(answer.header(b"retry-after")) or backoff(attempt)
                if not is_transient(error) or loop.time() + delay >= give_up_at:
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
            raise explain_not_found(exc, self.config.basin, "create_stream_on_append") from None
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
            raise explain_not_found(exc, self.config.basin, "create_stream_on_read") from None
        records = records_of(content)
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
            raise explain_not_found(exc, self.config.basin, "create_stream_on_read") from None
        try:
            tail = orjson.loads(content)["tail"]["seq_num"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise invalid_answer("a tail") from None
        if type(tail) is not int:
            raise invalid_answer("a tail")
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
                raise explain_not_found(exc, self.config.basin, "create_stream_on_read") from None
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
                delay = backoff(attempt)
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

        def retry_in(delay: float, error: S2Error | TransportFault) -> float:
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
                with transport_errors:
                    async with self._http.stream(
                        basin.origin, request, timeout=self.config.request_timeout
                    ) as response:
                        if response.status >= 400:
                            content = await response.read(self.config.request_timeout)
                            error = explain_not_found(
                                error_from_response(response.status, content, self._redact),
                                self.config.basin,
                                "create_stream_on_read",
                            )
                            if error.code == _DELETION_PENDING:
                                # The records are gone: as a read past the tail.
                                raise RangeNotSatisfiableError(0) from error
                            if not is_transient(error):
                                raise error
                            delay = retry_after(response.header(b"retry-after"))
                            await asyncio.sleep(retry_in(delay or backoff(failures + 1), error))
                            continue
                        events = EventStreamParser()
                        async for chunk in response.iter_bytes(READ_SESSION_IDLE_TIMEOUT):
                            for event in events.feed(chunk):
                                if event.type == "batch":
                                    records = records_of(event.data)
                                    if records:
                                        received = True
                                        failures, failing_since = 0, None
                                        next_seq_num = records[-1]["seq_num"] + 1
                                        yield records
                                elif event.type == "error":
                                    raise error_from_response(
                                        500, event.data.encode(), self._redact
                                    )
                                # "ping" heartbeats and the final "[DONE]" need no
                                # action: the loop reopens the session after the
                                # last record seen.
                        events.close()
            except TransportFault as fault:
                delay = retry_in(backoff(failures + 1), fault)
                logger.debug("read session on %r dropped (%s); reopening", name, fault)
                await asyncio.sleep(delay)
                continue
            except S2Error as error:
                # An error event mid-session: reopened like a failed request.
                if error.code == _DELETION_PENDING:
                    raise RangeNotSatisfiableError(0) from error
                if not is_transient(error):
                    raise
                await asyncio.sleep(retry_in(backoff(failures + 1), error))
                continue
            if not received:
                # The session ended without a record: back off before opening
                # the next, so a server that ends sessions at once is not
                # asked again and again in a hot loop.
                ended = TransportFault("the session ended without a record")
                await asyncio.sleep(retry_in(backoff(failures + 1), ended))

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
            raise invalid_answer("a basin configuration") from None
        if not isinstance(config, dict):
            raise invalid_answer("a basin configuration")
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
