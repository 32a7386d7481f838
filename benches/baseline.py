"""Another revision of this library, measured in the same harness run as the
working tree: ``harness.py --baseline REV`` (``make bench-quick BASELINE=REV``).

A structural change must not slow the library down, and two runs on a
shared machine minutes apart differ by more than such a change would. So the
revision's own peer driver runs beside ours, scenario by scenario, against
the same s2-lite, and the report gives each figure's ratio.

The revision is built once into ``~/.cache/resumable_fast/baseline-<commit>``
(``git archive`` of the commit, its own venv from its hashed requirements,
its extension built by maturin), then reused.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metrics import fmt, median_metric
from plan import EMBEDDED, EMBEDDED_DIR, OURS, Peer, Scenario

REPOSITORY = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("RESUMABLE_FAST_CACHE", Path.home() / ".cache" / "resumable_fast"))
# Our rows that the revision runs too: S2, in memory and in a data_dir.
COMPARED = (OURS, EMBEDDED, EMBEDDED_DIR)
COMPARED_METRICS = ("CPU s per 1M tokens", "latency p99 µs", "RSS KiB per in-flight stream")


@dataclass(frozen=True)
class Baseline:
    commit: str
    python: Path
    checkout: Path

    @property
    def label(self) -> str:
        return self.commit[:7]

    def peer_name(self, name: str) -> str:
        return f"{name}@{self.label}"

    def peers(self, ours: Sequence[Peer]) -> list[Peer]:
        """The revision's twin of each compared peer of ours."""
        driver = str(self.checkout / "benches" / "peers.py")
        # The harness points PYTHONPATH at this tree's package; the twin
        # imports the revision's own.
        own_package = f"PYTHONPATH={self.checkout / 'python'}"
        return [
            Peer(
                self.peer_name(peer.name),
                ("env", own_package, str(self.python), driver, peer.name),
                peer.needs,
                live_readers=peer.live_readers,
                live_readers_only=peer.live_readers_only,
            )
            for peer in ours
            if peer.name in COMPARED
        ]


def _run(args: Sequence[str], **kwargs: Any) -> None:
    print("baseline:", " ".join(str(arg) for arg in args), file=sys.stderr, flush=True)
    subprocess.run(args, check=True, **kwargs)


def prepare(revision: str) -> Baseline:
    """The revision, built (once) with its own dependencies."""
    commit = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--verify", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = CACHE_DIR / f"baseline-{commit}"
    checkout, venv = root / "src", root / "venv"
    python = venv / "bin" / "python"
    ready = root / ".ready"
    if not ready.exists():
        checkout.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPOSITORY), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(checkout, filter="data")
        _run([sys.executable, "-m", "venv", str(venv)])
        for requirements in ("dev.txt", "bench.txt"):
            _run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--require-hashes",
                    "-r",
                    str(checkout / "requirements" / requirements),
                ]
            )
        _run(
            [str(venv / "bin" / "maturin"), "develop", "--release", "--locked"],
            cwd=checkout,
            env={**os.environ, "VIRTUAL_ENV": str(venv)},
        )
        ready.touch()
    return Baseline(commit, python, checkout)


def comparison(
    plan: Sequence[Scenario],
    results: dict[tuple[str, str], list[dict[str, Any]]],
    baseline: Baseline,
) -> str:
    """A markdown section: each compared figure of ours beside the revision's,
    with their ratio (below 1: the working tree does better)."""
    lines = [
        f"## Against {baseline.label} (the same run)",
        "",
        "Medians over this run's runs; ratio = this tree / "
        f"{baseline.label} (for each figure lower is better).",
        "",
        "| scenario | peer | figure | this tree | " + baseline.label + " | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for scenario in plan:
        for name in COMPARED:
            ours = results.get((scenario.name, name))
            theirs = results.get((scenario.name, baseline.peer_name(name)))
            if not ours or not theirs:
                continue
            for metric in COMPARED_METRICS:
                mine, base = median_metric(ours, metric), median_metric(theirs, metric)
                if mine is None or base is None:
                    continue
                ratio = f"{mine / base:.2f}" if base else "—"
                lines.append(
                    f"| {scenario.name} | {name} | {metric} | {fmt(mine)} | {fmt(base)} | {ratio} |"
                )
    return "\n".join(lines) + "\n"
