"""Where the demo's replies come from: the simulated LLM, or a real model.

With ``OPENAI_BASE_URL`` set, replies stream from that OpenAI-compatible
endpoint (a local Ollama, vLLM or llama.cpp server, or a hosted one) through the
official ``openai`` SDK, imported only on that path. ``OPENAI_API_KEY`` is
optional: local servers accept any key. Without ``OPENAI_BASE_URL`` the demo
uses the simulated LLM: no key, no network.

Every source has a ``description`` for the page and the log. It never holds a
credential: the key is not in it (nor in a repr), and the base URL is shown
without its userinfo, query or fragment.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from resumable_fast.demo.llm import DEFAULT_TOKENS_PER_SECOND, simulated_reply

__all__ = [
    "DEFAULT_MODEL",
    "PLACEHOLDER_API_KEY",
    "ModelSource",
    "OpenAICompatibleModel",
    "SimulatedModel",
    "default_model_name",
    "model_from_env",
    "public_url",
]

DEFAULT_MODEL = "llama3.2"
# Sent when OPENAI_API_KEY is unset: the SDK needs a key, local servers ignore it.
PLACEHOLDER_API_KEY = "not-needed"


class ModelSource(Protocol):
    """Makes a reply's token stream from a prompt."""

    @property
    def description(self) -> str:
        """What the page and the log call this source; never a credential."""
        ...

    def reply(self, prompt: str) -> AsyncIterator[str]:
        """The reply's text chunks, in order."""
        ...


@dataclass(frozen=True)
class SimulatedModel:
    """The simulated LLM (:mod:`resumable_fast.demo.llm`): no key, no network."""

    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND

    @property
    def description(self) -> str:
        return "simulated LLM"

    def reply(self, prompt: str) -> AsyncIterator[str]:
        return simulated_reply(prompt, tokens_per_second=self.tokens_per_second)


def public_url(url: str) -> str:
    """``url`` as it may be shown: scheme, host, port and path only (no userinfo,
    which can hold a password, and no query or fragment, which can hold a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True, repr=False)
class OpenAICompatibleModel:
    """A model behind an OpenAI-compatible chat completions endpoint.

    Each reply opens its own SDK client and streamed completion and closes both
    when the reply ends, fails or is closed early (Stop, a takeover, shutdown),
    so the model server stops generating. An error from the endpoint is raised
    from the reply: the stream fails for every reader, the server goes on.
    """

    base_url: str
    model: str = DEFAULT_MODEL
    api_key: str = PLACEHOLDER_API_KEY

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # Not echoed: a malformed URL may still hold credentials.
            raise ValueError(
                "OPENAI_BASE_URL must be an http(s) URL with a host, "
                "such as http://127.0.0.1:11434/v1"
            )
        if not self.model.strip():
            raise ValueError("the model name must not be empty")

    @property
    def description(self) -> str:
        return f"{self.model} at {public_url(self.base_url)}"

    def __repr__(self) -> str:
        # Neither the key nor the base URL's userinfo, query or fragment.
        return f"OpenAICompatibleModel({self.description!r})"

    async def reply(self, prompt: str) -> AsyncIterator[str]:
        from openai import AsyncOpenAI

        async with AsyncOpenAI(base_url=self.base_url, api_key=self.api_key) as client:
            stream = await client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                stream=True,
            )
            async with stream:
                async for chunk in stream:
                    if not chunk.choices:
                        continue
                    content = chunk.choices[0].delta.content
                    if content:
                        yield content


def default_model_name(environ: Mapping[str, str] | None = None) -> str:
    """``OPENAI_MODEL``, or :data:`DEFAULT_MODEL`."""
    env = os.environ if environ is None else environ
    return env.get("OPENAI_MODEL", "").strip() or DEFAULT_MODEL


def model_from_env(
    environ: Mapping[str, str] | None = None,
    *,
    model: str | None = None,
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND,
) -> ModelSource:
    """The real model when ``OPENAI_BASE_URL`` is set, else the simulated LLM.

    ``model`` defaults to :func:`default_model_name`. Raises ValueError for a
    base URL that is not http(s).
    """
    env = os.environ if environ is None else environ
    base_url = env.get("OPENAI_BASE_URL", "").strip()
    if not base_url:
        return SimulatedModel(tokens_per_second)
    return OpenAICompatibleModel(
        base_url=base_url,
        model=model if model is not None else default_model_name(env),
        api_key=env.get("OPENAI_API_KEY", "").strip() or PLACEHOLDER_API_KEY,
    )
