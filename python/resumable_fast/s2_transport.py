"""The HTTP seam of :class:`~resumable_fast.s2.S2Client`: what it needs of an
HTTP client (:class:`HttpTransport`), the pass-through a recording or
counting wrapper subclasses (:class:`DelegatingHttp`), the settings its own
client is made with, and the one boundary where the HTTP layer's errors
become ours (:data:`transport_errors`, as httpx's ``map_httpcore_exceptions``).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol

from resumable_fast.config import S2Config
from resumable_fast.endpoints import Origin, Redactor
from resumable_fast.errors import ResumableStreamError, S2ConnectionError
from resumable_fast.http11 import (
    ClientClosed,
    HttpSettings,
    Request,
    Response,
    StreamingResponse,
    TransportError,
)

__all__ = [
    "DelegatingHttp",
    "HttpTransport",
    "TransportFault",
    "http_settings",
    "transport_errors",
]

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


class TransportFault(S2ConnectionError):
    """A transport fault on one attempt, as ours: the same request may get
    past it. Its message is the fault's repr."""


class _MappedTransportErrors:
    """The one boundary where the HTTP layer's errors become ours: a
    :class:`~resumable_fast.http11.TransportError` a :class:`TransportFault`
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
            raise TransportFault(repr(error)) from error
        if isinstance(error, ClientClosed):
            raise ResumableStreamError("the S2 client is closed (its context was closed)") from None


transport_errors = _MappedTransportErrors()
