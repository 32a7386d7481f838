"""The synthetic LLM workload of the side-by-side benchmark (``benches/peers.py``).

Every stream gets its own deterministic token sequence: the same seed, stream
index and count give the same tokens in every process and on every machine
(``random.Random`` seeded with a string). A token is 3-6 characters (code
points) like a model's output: mostly words with a leading space, some with
punctuation, ~10% non-ASCII (accented letters, CJK, Cyrillic, emoji) and ~5%
with characters JSON must escape (quotes, backslashes, newlines, tabs).

Pacing: at ``rate`` tokens/s a stream's token ``i`` is due ``offset + i / rate``
seconds after the run starts, where the offsets spread the streams' first
tokens evenly over one token interval (``stream_offset``), so streams do not
all tick at the same instant.

``python benches/workload.py --streams N --tokens T [--seed S]`` prints the
tokens as one JSON array per stream, one per line, for peers in other
languages.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Sequence

SEED = 20240611

_WORD_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will can more out up into do any your what some them other than then now only "
    "its time like model token stream batch data python rust value return async await "
    "import class def self print list dict string number error result function request "
    "response server client"
)
# "|"-separated so that no entry is split on whitespace.
_NON_ASCII_TEXT = "é|ü|ñ|ç|ß|ø|å|日本|語|中文|한국|Привет|мир|Ω|π|—|…|€|«|»|😀|🚀|👍|🎉|✨|🔥|💡"
_WORDS = tuple(_WORD_TEXT.split())
_NON_ASCII = tuple(_NON_ASCII_TEXT.split("|"))
_ESCAPED = ('"', '\\"', "\n", "\n\n", "\t", "\\", '":', "\r\n")
_PUNCTUATION = (",", ".", ":", ";", "!", "?", "(", ")", "-", "'s")
_PAD = "aeiourstln"


def _fit(text: str, rng: random.Random) -> str:
    """Pads or trims ``text`` to 3-6 characters."""
    while len(text) < 3:
        text += rng.choice(_PAD)
    if len(text) > 6:
        text = text[: rng.randint(3, 6)]
    return text


def make_token(rng: random.Random) -> str:
    roll = rng.random()
    lead = " " if rng.random() < 0.6 else ""
    if roll < 0.10:
        text = lead + rng.choice(_NON_ASCII) + rng.choice(_NON_ASCII)
    elif roll < 0.15:
        text = rng.choice(_ESCAPED) + rng.choice(_WORDS)
    elif roll < 0.22:
        text = rng.choice(_WORDS) + rng.choice(_PUNCTUATION)
    else:
        text = lead + rng.choice(_WORDS)
    return _fit(text, rng)


def stream_tokens(stream_index: int, count: int, seed: int = SEED) -> list[str]:
    """The tokens of one stream."""
    rng = random.Random(f"resumable_fast-bench:{seed}:{stream_index}")
    return [make_token(rng) for _ in range(count)]


def stream_offset(stream_index: int, streams: int, rate: float) -> float:
    """Seconds after the run's start at which a paced stream's first token is due."""
    if rate <= 0:
        return 0.0
    return stream_index / streams / rate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print the benchmark's tokens as JSON lines")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for index in range(args.streams):
        print(json.dumps(stream_tokens(index, args.tokens, args.seed), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
