""":func:`create_resumable_stream_context`: a context made from options and the
environment, which chooses its backend (S2, or the embedded store in memory
or in a ``data_dir``) and that backend's settings. The context itself works
on any :class:`~resumable_fast.backends.Backend` (:mod:`resumable_fast.context`)."""

from __future__ import annotations

import logging
import os
from typing import Literal

from opentelemetry.metrics import MeterProvider

from resumable_fast.backends import DEFAULT_RETENTION_SECONDS, Backend, EmbeddedBackend, Store
from resumable_fast.config import BatchSettings, S2Config
from resumable_fast.context import (
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_LIVENESS_TIMEOUT,
    ResumableStreamContext,
)
from resumable_fast.endpoints import Verify
from resumable_fast.errors import ConfigurationError
from resumable_fast.memory_store import EmbeddedStore
from resumable_fast.s2 import S2Client
from resumable_fast.sqlite_store import SqliteStore

__all__ = ["create_resumable_stream_context"]

logger = logging.getLogger("resumable_fast")


def create_resumable_stream_context(
    *,
    backend: Literal["auto", "embedded", "s2"] = "auto",
    basin: str | None = None,
    access_token: str | None = None,
    account_endpoint: str | None = None,
    basin_endpoint: str | None = None,
    batch_size: int | None = None,
    linger_ms: float | None = None,
    max_batch_bytes: int | None = None,
    request_timeout: float | None = None,
    verify: Verify | None = None,
    proxy: str | None = None,
    trust_env: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
    key_prefix: str = "",
    retry_deadline: float | None = None,
    liveness_timeout: float | None = DEFAULT_LIVENESS_TIMEOUT,
    share_read_sessions: bool | None = None,
    trim_finished: bool = False,
    meter_provider: MeterProvider | None = None,
) -> ResumableStreamContext:
    """Create a context. Explicit options win over environment variables.

    ``backend="auto"`` uses S2 when a basin is configured (``basin=`` or
    ``S2_BASIN``) and the embedded backend otherwise. The embedded backend
    keeps streams in this process's memory, or with ``data_dir`` (also
    ``RESUMABLE_FAST_DATA_DIR``) in a SQLite database there that every
    process naming the directory shares, across restarts (a directory it
    cannot use is a :class:`StoreUnavailableError` here); either way a
    stream idle for ``retention_seconds`` is dropped.
    ``key_prefix`` is put before every stream id in the backend (escaped,
    then ``:``), so tenants sharing a basin never see each other's streams,
    whatever their prefixes and ids. ``retry_deadline``
    (seconds, default 60) bounds how long a request to S2 is retried through
    transient faults before it fails with a typed error. Readers end an
    unfinished stream with :class:`StreamIncompleteError` after
    ``liveness_timeout`` seconds without a record (None: wait forever); live
    producers append a heartbeat when idle for a third of it, and
    ``resumable_stream`` takes over a stream silent for longer. Readers of
    one stream in this process share one S2 read session
    (``share_read_sessions``, default: on S2 and in a ``data_dir``, not in
    memory, whose sessions cost nothing). ``trim_finished`` (S2 only; a
    :class:`ConfigurationError` on the embedded backend) trims each stream
    this context produced to its end fence once that has landed: its text is
    gone, it still answers ``"DONE"``, and it is never produced again.
    ``meter_provider`` is where the metrics go (:mod:`resumable_fast.metrics`),
    by default the global one.
    """
    if backend not in ("auto", "embedded", "s2"):
        raise ConfigurationError(f"backend must be 'auto', 'embedded' or 's2', got {backend!r}")
    batching = BatchSettings.from_options(
        batch_size=batch_size, linger_ms=linger_ms, max_batch_bytes=max_batch_bytes
    )
    if backend == "auto":
        backend = "s2" if (basin or os.environ.get("S2_BASIN")) else "embedded"
    chosen: Backend
    if backend == "s2":
        chosen = S2Client(
            S2Config.from_options(
                basin=basin,
                access_token=access_token,
                account_endpoint=account_endpoint,
                basin_endpoint=basin_endpoint,
                request_timeout=request_timeout,
                verify=verify,
                proxy=proxy,
                trust_env=trust_env,
                retry_deadline=retry_deadline,
            ),
            meter_provider=meter_provider,
        )
    else:
        if retention_seconds <= 0:
            raise ConfigurationError("retention_seconds must be > 0")
        directory = data_dir if data_dir is not None else os.environ.get("RESUMABLE_FAST_DATA_DIR")
        store: Store = (
            SqliteStore.shared(directory, retention_seconds)
            if directory
            else EmbeddedStore.shared(retention_seconds)
        )
        chosen = EmbeddedBackend(store)
    _log_backend_once(chosen.description)
    return ResumableStreamContext(
        chosen,
        batching,
        drain_timeout=drain_timeout,
        key_prefix=key_prefix,
        liveness_timeout=liveness_timeout,
        share_read_sessions=share_read_sessions,
        trim_finished=trim_finished,
        meter_provider=meter_provider,
    )


_logged_backends: set[str] = set()


def _log_backend_once(description: str) -> None:
    if description not in _logged_backends:
        _logged_backends.add(description)
        logger.info("resumable_fast backend: %s", description)
