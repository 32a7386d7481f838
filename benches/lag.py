"""Staleness, measured beside speed (issue 24): how long after the source
yielded a token it was acknowledged by the store (persistence lag), and how
long until a reader in another context had it (live-reader lag).

A peer run with ``--lag`` gets a :class:`LagProbe`. ``benches/peers.py``
registers each stream's yield times with it (``perf_counter_ns``, the ones
the latency column uses) and its text's token boundaries; the peer reports,
as they happen, how many of a stream's tokens the store has acknowledged
(:meth:`LagProbe.acked`); a second peer of the same kind, with a client of
its own (another context, another S2 connection pool), follows every stream
live from its start and reports how much of its text it has
(:meth:`LagProbe.received`). Each token's lag is taken once, at the first
report that covers it. The hooks run only in the lag scenario, so the other
scenarios' CPU figures carry none of their cost.
"""

from __future__ import annotations

import bisect
import time
from itertools import accumulate


class LagProbe:
    """Per-token persistence and live-reader lag of one run, in nanoseconds."""

    def __init__(self) -> None:
        self._sent_ns: dict[str, list[int]] = {}
        # Each stream's token ends, as character offsets into its text.
        self._token_ends: dict[str, list[int]] = {}
        self._acked: dict[str, int] = {}
        self._received_tokens: dict[str, int] = {}
        self.persistence_ns: list[int] = []
        self.reader_ns: list[int] = []

    def track(self, stream_id: str, tokens: list[str], sent_ns: list[int]) -> None:
        """Follow ``stream_id``, whose source appends each token's yield time
        to ``sent_ns`` as it yields it."""
        self._sent_ns[stream_id] = sent_ns
        self._token_ends[stream_id] = list(accumulate(len(token) for token in tokens))
        self._acked[stream_id] = 0
        self._received_tokens[stream_id] = 0

    def acked(self, stream_id: str, tokens: int) -> None:
        """The store has acknowledged the stream's first ``tokens`` tokens."""
        if stream_id in self._acked:
            self._advance(self._acked, self.persistence_ns, stream_id, tokens)

    def received(self, stream_id: str, characters: int) -> None:
        """A reader in another context has the stream's first ``characters``."""
        ends = self._token_ends.get(stream_id)
        if ends is not None:
            tokens = bisect.bisect_right(ends, characters)
            self._advance(self._received_tokens, self.reader_ns, stream_id, tokens)

    def _advance(
        self, done_by_stream: dict[str, int], lags_ns: list[int], stream_id: str, tokens: int
    ) -> None:
        """Take the lag of the stream's tokens from the last report's count up
        to ``tokens`` (never past what the source has yielded)."""
        done = done_by_stream[stream_id]
        sent = self._sent_ns[stream_id]
        upto = min(tokens, len(sent))
        if upto <= done:
            return
        now = time.perf_counter_ns()
        lags_ns.extend(now - sent[index] for index in range(done, upto))
        done_by_stream[stream_id] = upto

    def complete(self) -> bool:
        """Whether every tracked token was both acknowledged and read."""
        return all(
            self._acked[stream_id] == len(ends) and self._received_tokens[stream_id] == len(ends)
            for stream_id, ends in self._token_ends.items()
        )
