"""Side-by-side benchmark harness: every peer, same machine, same servers, one run.

Starts s2-lite (the cached release build) and redis-server on free loopback
ports, runs each peer driver for each scenario several times (measuring the
CPU of the server the peer uses, s2-lite or redis-server, beside its own), and writes
``benches/results/<date>.md`` (medians with min/max, ratios against ours) and a
plot ``benches/results/<date>.png``. A peer that cannot run fails the harness.

Its parts: ``plan.py`` (the peers and the scenarios), ``servers.py``,
``runs.py`` (one run of a peer), ``metrics.py``, ``targets.py`` (the goals
checked) and ``report.py``.

With ``--baseline REV`` the revision REV of this library runs beside the
working tree, scenario by scenario, and the report ends with each of our
figures' ratio to its (``baseline.py``).

Usage: python benches/harness.py [--quick] [--runs N] [--out DIR] [--baseline REV]
    [--peers NAMES] [--scenarios KINDS] [--label LABEL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path
from typing import Any

import baseline
from plan import PEERS, scenarios
from report import plot, render
from runs import run_core_benchmark, run_peer
from servers import servers

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=100)  # the library's default
    parser.add_argument("--linger-ms", type=float, default=200.0)  # the library's default
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--peers", default=",".join(peer.name for peer in PEERS))
    parser.add_argument(
        "--scenarios",
        metavar="KINDS",
        help="run only the scenarios whose names start with one of these, comma-separated",
    )
    parser.add_argument(
        "--label", help="appended to the report's file names (<date>[-quick]-<label>.md)"
    )
    parser.add_argument(
        "--baseline", metavar="REV", help="a revision of this library to run beside this tree"
    )
    options = parser.parse_args()
    # Three runs give a median; the full plan takes about 40 minutes with them.
    runs = options.runs or (1 if options.quick else 3)
    wanted = set(options.peers.split(","))
    peers = [peer for peer in PEERS if peer.name in wanted]
    base = baseline.prepare(options.baseline) if options.baseline else None
    if base is not None:
        peers += base.peers(peers)
    plan = scenarios(options.quick)
    if options.scenarios:
        kinds = tuple(options.scenarios.split(","))
        plan = [scenario for scenario in plan if scenario.name.startswith(kinds)]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    print("core microbenchmark (benches/bench_core.py) ...", file=sys.stderr, flush=True)
    core = run_core_benchmark(options.quick)
    with tempfile.TemporaryDirectory() as tmp, servers(Path(tmp)) as env:
        total = sum(
            peer.runs_in(scenario) * min(runs, peer.max_runs or runs)
            for scenario in plan
            for peer in peers
        )
        step = 0
        for run in range(runs):
            for scenario in plan:
                for peer in peers:
                    if not peer.runs_in(scenario) or run >= (peer.max_runs or runs):
                        continue
                    step += 1
                    print(
                        f"[{step}/{total}] run {run + 1}: {scenario.name}: {peer.name}",
                        file=sys.stderr,
                        flush=True,
                    )
                    result = run_peer(peer, scenario, env, options.batch_size, options.linger_ms)
                    results.setdefault((scenario.name, peer.name), []).append(result)
    options.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.date.today().isoformat() + ("-quick" if options.quick else "")
    if options.label:
        stamp += f"-{options.label}"
    plot(plan, peers, results, options.out / f"{stamp}.png")
    report = render(plan, peers, results, runs, options, f"{stamp}.png", core)
    if base is not None:
        report += "\n" + baseline.comparison(plan, results, base)
    (options.out / f"{stamp}.md").write_text(report)
    print(report)
    never_ran = [
        peer.name
        for peer in peers
        if all(
            "failed" in r for scenario in plan for r in results.get((scenario.name, peer.name), [])
        )
    ]
    if never_ran:
        raise SystemExit(f"peers that failed every run: {', '.join(never_ran)}")


if __name__ == "__main__":
    main()
