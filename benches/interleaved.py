"""Peer runs with settings of their own, interleaved against one s2-lite and
one redis-server: for the experiments whose arms differ in more than the peer
(a linger, a batch size), which the harness, one setting for all peers,
cannot run side by side. Each run goes through every arm in turn, so noise
on this shared machine falls on all of them alike; it prints each arm's
median (min to max) CPU µs per token, latency p99 and requests.

Usage::

    python benches/interleaved.py RUNS "PEER OPTIONS..." ["PEER OPTIONS..." ...]

e.g. ``python benches/interleaved.py 5 "resumable_fast_s2 --streams 1000
--tokens 100 --rate 0" "resumable_fast_s2 --streams 1000 --tokens 100 --rate 0
--linger-ms 10000"``. Each arm is the arguments of ``benches/peers.py``.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from servers import servers

HERE = Path(__file__).resolve().parent


def _spread(values: list[float], digits: int) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f} to {max(values):.{digits}f})"
    )


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    runs, arms = int(argv[0]), [shlex.split(arm) for arm in argv[1:]]
    cpu_us: list[list[float]] = [[] for _ in arms]
    p99_us: list[list[float]] = [[] for _ in arms]
    requests: list[list[float]] = [[] for _ in arms]
    with tempfile.TemporaryDirectory() as work, servers(Path(work)) as env:
        for run in range(runs):
            for index, arm in enumerate(arms):
                print(f"run {run + 1}: {shlex.join(arm)}", file=sys.stderr, flush=True)
                finished = subprocess.run(
                    [sys.executable, str(HERE / "peers.py"), *arm],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if finished.returncode != 0:
                    print(finished.stderr, file=sys.stderr)
                    return 1
                result = json.loads(finished.stdout)
                cpu_us[index].append(result["cpu_s"] / result["tokens"] * 1e6)
                p99_us[index].append(result["latency_us"]["p99"])
                requests[index].append(result["requests"])
    print(f"{runs} interleaved runs per arm, median (min to max)")
    print("| arm | CPU µs per token | latency p99 µs | requests |")
    print("| --- | --- | --- | --- |")
    for index, arm in enumerate(arms):
        print(
            f"| `{shlex.join(arm)}` | {_spread(cpu_us[index], 2)} | "
            f"{_spread(p99_us[index], 1)} | {statistics.median(requests[index]):.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
