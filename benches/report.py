"""The report of a run: ``benches/results/<date>.md`` (the targets, a table
per scenario, the core microbenchmark's output) and its plot, ``<date>.png``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from metrics import (
    LAG_METRICS,
    METRICS,
    fmt,
    median_metric,
    metrics,
    summarize,
    tokens_per_cpu_second,
)
from plan import BASELINES, OURS, Peer, Scenario
from targets import targets

ROOT = Path(__file__).resolve().parent.parent


def plot(
    plan: Sequence[Scenario],
    peers: Sequence[Peer],
    results: dict[tuple[str, str], list[dict[str, Any]]],
    path: Path,
) -> None:
    """Tokens per CPU-second of each peer in each unpaced scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unpaced = [s for s in plan if not s.rate and not s.reader and not s.hold]
    figure, axes = plt.subplots(1, len(unpaced), figsize=(5 * len(unpaced), 4.5), squeeze=False)
    for axis, scenario in zip(axes[0], unpaced, strict=True):
        names = [p.name for p in peers if p.name not in BASELINES]
        values = [tokens_per_cpu_second(results.get((scenario.name, n), [])) or 0.0 for n in names]
        colors = ["#2b59c3" if n.startswith("resumable_fast") else "#9aa3b2" for n in names]
        axis.barh(names, values, color=colors)
        axis.set_title(scenario.name)
        axis.set_xlabel("persisted tokens per CPU-second (client process)")
        axis.invert_yaxis()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _commit() -> str:
    """The checked-out commit, marked when the tree has changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            # The report being written is not a change to the code measured.
            [
                "git",
                "-C",
                str(ROOT),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benches/results",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"`{head}`" + (" with local changes" if dirty else "")


def _make_command(options: argparse.Namespace) -> str:
    return f"python benches/harness.py{' --quick' if options.quick else ''}"


def _command_line() -> str:
    """How the harness was run, as typed (its options decide what the report holds)."""
    return " ".join(["python benches/harness.py", *sys.argv[1:]])


def render(
    plan: Sequence[Scenario],
    peers: Sequence[Peer],
    results: dict[tuple[str, str], list[dict[str, Any]]],
    runs: int,
    options: argparse.Namespace,
    plot_name: str,
    core: str,
) -> str:
    command = _command_line()
    lines = [
        f"# Benchmarks, {dt.date.today().isoformat()}",
        "",
        f"Command: `{command}`"
        f" (`make bench{'-quick' if options.quick else ''}`"
        f"{' with other options' if command != _make_command(options) else ''}); "
        f"{runs} run(s) per cell (one for "
        f"{', '.join(p.name for p in peers if p.max_runs == 1) or 'none'}), "
        f"median (min to max); batch size {options.batch_size}, "
        f"linger {options.linger_ms} ms; code at commit {_commit()}; one machine "
        f"({os.cpu_count()} CPUs, "
        f"{platform.platform()}), one s2-lite and one redis-server, loopback. "
        "Server CPU is s2-lite's for the S2 peers "
        f"({', '.join(p.name for p in peers if p.needs == 's2') or 'none in this run'}) "
        "and redis-server's for the Redis peers "
        f"({', '.join(p.name for p in peers if p.needs == 'redis') or 'none in this run'}), "
        "over each peer's whole run (its verifying resumes included); the other CPU "
        "column is the peer's own process over its produce phase. "
        f"The last column of each table is {OURS}'s persisted tokens per CPU-second "
        "divided by the peer's (> 1: ours does the same work with less CPU); in the "
        "memory table, the peer's RSS per in-flight stream divided by ours.",
        "",
        "## Targets",
        "",
        *targets(plan, results, core),
        "",
        f"![tokens per CPU-second]({plot_name})",
        "",
    ]
    for scenario in plan:
        lines += [
            f"## {scenario.name} ({scenario.streams:,} x {scenario.tokens:,} tokens, "
            f"rate {scenario.rate or 'unpaced'}{', held halfway' if scenario.hold else ''})",
            "",
        ]
        names = list(METRICS)
        ours = results.get((scenario.name, OURS))
        ours_value: float | None
        if scenario.lag:
            names = list(LAG_METRICS)
        if scenario.hold:
            names = ["RSS KiB per in-flight stream", "CPU s per 1M tokens"]
            ours_value = median_metric(ours, names[0]) if ours else None
            last = "peer / ours, RSS per stream"
        else:
            ours_value = tokens_per_cpu_second(ours) if ours else None
            last = "ours vs peer, tokens/CPU-s"
        lines.append("| peer | " + " | ".join(names) + f" | {last} |")
        lines.append("| --- |" + " --- |" * (len(names) + 1))
        for peer in peers:
            if not peer.runs_in(scenario):
                continue
            peer_results = results[(scenario.name, peer.name)]
            rows = [metrics(r) for r in peer_results]
            succeeded = [r for r in peer_results if "failed" not in r]
            version = succeeded[0].get("versions", {}) if succeeded else {}
            failures = [r["failed"] for r in peer_results if "failed" in r]
            cells = []
            for name in names:
                values = [value for row in rows if (value := row[name]) is not None]
                if not values:
                    cells.append("—")
                    continue
                med, low, high = summarize(values)
                cells.append(
                    fmt(med) if len(values) == 1 else f"{fmt(med)} ({fmt(low)} to {fmt(high)})"
                )
            if scenario.hold:
                theirs = median_metric(peer_results, names[0])
                ratio = (
                    f"{theirs / ours_value:.2f}x"
                    if ours_value and theirs and peer.name not in BASELINES
                    else "—"
                )
            else:
                efficiency = tokens_per_cpu_second(peer_results)
                ratio = (
                    f"{ours_value / efficiency:.2f}x"
                    if ours_value and efficiency and peer.name not in BASELINES
                    else "—"
                )
            label = peer.name + (f" <sub>{json.dumps(version)}</sub>" if version else "")
            if failures:
                label += (
                    f" **failed in {len(failures)} of {len(peer_results)} runs**: "
                    f"{failures[0].replace('|', '/')}"
                )
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    lines += [
        "## Core microbenchmark (`benches/bench_core.py`)",
        "",
        "```",
        core.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
