"""Resumable LLM token streams, persisted to S2 in batches by a Rust core."""

from resumable_fast.backends import Backend, EmbeddedBackend, EmbeddedStore
from resumable_fast.config import BatchSettings, S2Config
from resumable_fast.context import (
    MakeStream,
    ResumableStreamContext,
    StreamState,
    create_resumable_stream_context,
    new_stream_id,
)
from resumable_fast.errors import (
    BasinMisconfiguredError,
    ConfigurationError,
    EventStreamError,
    FencingTokenMismatchError,
    InvalidChunkError,
    InvalidStreamIdError,
    RangeNotSatisfiableError,
    ResponseTooLargeError,
    ResumableStreamError,
    S2AuthError,
    S2ConnectionError,
    S2Error,
    SeqNumMismatchError,
    StreamExistsError,
    StreamFailedError,
    StreamIncompleteError,
    StreamNotFoundError,
    TLSVerificationError,
)
from resumable_fast.streams import ResumableStream

__all__ = [
    "Backend",
    "BasinMisconfiguredError",
    "BatchSettings",
    "ConfigurationError",
    "EmbeddedBackend",
    "EmbeddedStore",
    "EventStreamError",
    "FencingTokenMismatchError",
    "InvalidChunkError",
    "InvalidStreamIdError",
    "MakeStream",
    "RangeNotSatisfiableError",
    "ResponseTooLargeError",
    "ResumableStream",
    "ResumableStreamContext",
    "ResumableStreamError",
    "S2AuthError",
    "S2Config",
    "S2ConnectionError",
    "S2Error",
    "SeqNumMismatchError",
    "StreamExistsError",
    "StreamFailedError",
    "StreamIncompleteError",
    "StreamNotFoundError",
    "StreamState",
    "TLSVerificationError",
    "create_resumable_stream_context",
    "new_stream_id",
]
