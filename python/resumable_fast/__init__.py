"""Resumable LLM token streams, persisted to S2 in batches by a Rust core."""

from resumable_fast import errors
from resumable_fast.backends import Backend, EmbeddedBackend
from resumable_fast.chats import (
    active_chat_stream,
    delete_chat_stream,
    resume_chat_stream,
    start_chat_stream,
    stop_chat_stream,
)
from resumable_fast.config import BatchSettings, S2Config
from resumable_fast.context import (
    MakeStream,
    ResumableStreamContext,
    StreamState,
    new_stream_id,
)
from resumable_fast.errors import *  # noqa: F403 (every error is public: errors.__all__)
from resumable_fast.factory import create_resumable_stream_context
from resumable_fast.memory_store import EmbeddedStore
from resumable_fast.records import NO_LANDING, Landing, StreamName
from resumable_fast.sqlite_store import SqliteStore
from resumable_fast.streams import ResumableStream
from resumable_fast.ui_messages import (
    UI_MESSAGE_STREAM_HEADERS,
    encode_ui_message_part,
    to_ui_message_stream,
)

__all__ = [
    "NO_LANDING",
    "UI_MESSAGE_STREAM_HEADERS",
    "Backend",
    "BatchSettings",
    "EmbeddedBackend",
    "EmbeddedStore",
    "Landing",
    "MakeStream",
    "ResumableStream",
    "ResumableStreamContext",
    "S2Config",
    "SqliteStore",
    "StreamName",
    "StreamState",
    "active_chat_stream",
    "create_resumable_stream_context",
    "delete_chat_stream",
    "encode_ui_message_part",
    "new_stream_id",
    "resume_chat_stream",
    "start_chat_stream",
    "stop_chat_stream",
    "to_ui_message_stream",
    *errors.__all__,
]
