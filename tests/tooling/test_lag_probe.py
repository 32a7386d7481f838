"""The benchmark's lag probe (``benches/lag.py``): each token's lag taken once,
at the first report that covers it, by tokens acknowledged and by characters
read."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benches"))
from lag import LagProbe


def test_each_token_is_measured_once_when_first_covered() -> None:
    probe = LagProbe()
    tokens = ["ab", "c", "def"]
    sent_ns: list[int] = []
    probe.track("s", tokens, sent_ns)
    sent_ns += [time.perf_counter_ns()] * 2  # two yielded so far
    probe.acked("s", 1)
    probe.acked("s", 1)  # nothing new
    assert len(probe.persistence_ns) == 1
    # Acknowledged past what was yielded (a merged closing fence): capped.
    probe.acked("s", 5)
    assert len(probe.persistence_ns) == 2
    probe.received("s", 1)  # half of "ab": no whole token yet
    assert probe.reader_ns == []
    probe.received("s", 3)  # "ab" and "c"
    assert len(probe.reader_ns) == 2
    assert not probe.complete()
    sent_ns.append(time.perf_counter_ns())
    probe.acked("s", 3)
    probe.received("s", 6)
    assert len(probe.persistence_ns) == 3
    assert len(probe.reader_ns) == 3
    assert all(lag >= 0 for lag in probe.persistence_ns + probe.reader_ns)
    assert probe.complete()


def test_reports_for_untracked_streams_are_ignored() -> None:
    probe = LagProbe()
    probe.acked("other", 3)
    probe.received("other", 10)
    assert probe.persistence_ns == []
    assert probe.reader_ns == []
    assert probe.complete()
