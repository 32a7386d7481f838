"""A simulated LLM: a long reply, deterministic from the prompt, at a realistic pace.

``simulated_reply(prompt)`` yields the tokens one by one; ``full_reply(prompt)``
returns the same text at once, so tests can compare what a page shows with what
the model said.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import AsyncIterator

__all__ = ["full_reply", "reply_tokens", "simulated_reply"]

DEFAULT_TOKENS_PER_SECOND = 40.0

_OPENERS = (
    "Here is how I would think about",
    "Let me walk through",
    "Good question. A careful answer about",
    "There is a lot to say about",
)
_SUBJECTS = (
    "the stream",
    "a reply",
    "every reader",
    "the producer",
    "a second tab",
    "the browser",
    "each replica",
    "the model",
    "this résumé of events",
    "the café's order queue",
    "a naïve client",
    "the façade",
    "our Zürich office",
    "the team in São Paulo",
    "a server in 東京",
    "the Ελλάδα region",
)
_VERBS = (
    "replays",
    "persists",
    "follows",
    "resumes",
    "batches",
    "records",
    "keeps",
    "streams",
    "survives",
    "reconnects to",
    "catches up with",
    "never repeats",
)
_OBJECTS = (
    "the live tail",
    "every token",
    "what was already sent",
    "the end fence",
    "a reload",
    "the last event id",
    "partial output",
    "a dropped connection",
    "the whole reply",
    "each chunk in order",
    "the jalapeño-level edge cases",
    "a flaky mobile network",
)
_TAILS = (
    "without losing a character",
    "in the same order",
    "while the model keeps writing",
    "even after a restart",
    "from any replica",
    "at its own pace",
    "exactly once",
    "with no duplicated text",
)
_CONNECTIVES = (
    "Meanwhile",
    "In practice",
    "Crucially",
    "On the other hand",
    "As a result",
    "Then",
    "Notably",
    "Still",
)
_ENDINGS = (".", ".", ".", ".", "!", " …", " ✓.")
_BULLETS = (
    "Reload the page → the reply picks up where it was",
    "Open a second tab → both show the same words",
    "Press Stop → every reader ends — cleanly",
    "Close the laptop → nothing is lost 🙂",
    "Switch networks → the browser reconnects",
    "Compare the texts → they match byte for byte",
)


def _seed(prompt: str, salt: str) -> int:
    digest = hashlib.sha256((salt + "\0" + prompt).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:16], "big")


def _topic(prompt: str) -> str:
    words = " ".join(prompt.split())
    if len(words) > 60:
        words = words[:59].rstrip() + "…"
    return words or "nothing in particular"


def _words(text: str, rng: random.Random) -> list[str]:
    """Split text into LLM-like tokens: a leading space per word, long ASCII words
    sometimes in two pieces."""
    tokens: list[str] = []
    for index, word in enumerate(text.split(" ")):
        prefix = "" if index == 0 else " "
        if len(word) > 6 and word.isascii() and word.isalpha() and rng.random() < 0.4:
            cut = rng.randint(3, len(word) - 3)
            tokens.extend([prefix + word[:cut], word[cut:]])
        else:
            tokens.append(prefix + word)
    return tokens


def _sentence(rng: random.Random, *, connective: bool) -> str:
    parts = []
    if connective:
        parts.append(rng.choice(_CONNECTIVES) + ",")
    subject = rng.choice(_SUBJECTS)
    parts.append(subject if parts else subject[0].upper() + subject[1:])
    parts.append(rng.choice(_VERBS))
    parts.append(rng.choice(_OBJECTS))
    if rng.random() < 0.6:
        parts.append(rng.choice(_TAILS))
    if rng.random() < 0.3:
        parts[-1] += ","
        parts.append("and " + rng.choice(_SUBJECTS))
        parts.append(rng.choice(_VERBS))
        parts.append(rng.choice(_OBJECTS))
    return " ".join(parts) + rng.choice(_ENDINGS)


def reply_tokens(prompt: str) -> list[str]:
    """The reply's tokens; the same prompt always gives the same tokens."""
    rng = random.Random(_seed(prompt, "text"))
    tokens: list[str] = []
    tokens += _words(f"{rng.choice(_OPENERS)} “{_topic(prompt)}”.", rng)
    paragraphs = rng.randint(5, 7)
    bullets_at = rng.randrange(1, paragraphs)
    for number in range(paragraphs):
        tokens.append("\n\n")
        if number == bullets_at:
            tokens += _words("A few things you can try:", rng)
            for bullet in rng.sample(_BULLETS, rng.randint(3, 5)):
                tokens.append("\n")
                tokens += _words("- " + bullet, rng)
            continue
        for index in range(rng.randint(3, 5)):
            sentence = _sentence(rng, connective=index > 0 and rng.random() < 0.4)
            words = _words(sentence, rng)
            if index > 0:
                words[0] = " " + words[0]
            tokens += words
    tokens.append("\n\n")
    tokens += _words("That is the whole answer — thanks for reading!", rng)
    return tokens


def full_reply(prompt: str) -> str:
    """The whole reply at once: exactly what :func:`simulated_reply` yields."""
    return "".join(reply_tokens(prompt))


async def simulated_reply(
    prompt: str, *, tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND
) -> AsyncIterator[str]:
    """Yield the reply's tokens, about ``tokens_per_second`` of them a second,
    with a small deterministic jitter and a longer pause at paragraph breaks."""
    if not tokens_per_second > 0 or math.isnan(tokens_per_second):
        raise ValueError(f"tokens_per_second must be > 0, got {tokens_per_second!r}")
    base = 1.0 / tokens_per_second
    jitter = random.Random(_seed(prompt, "pace"))
    for token in reply_tokens(prompt):
        factor = jitter.uniform(0.5, 1.5) * (3.0 if token.startswith("\n") else 1.0)
        await asyncio.sleep(base * factor)
        yield token
