"""Side-by-side benchmark harness: every peer, same machine, same servers, one run.

Starts s2-lite (the cached release build) and redis-server on free loopback
ports, runs each peer driver for each scenario several times (measuring the
CPU of the server the peer uses, s2-lite or redis-server, beside its own), and writes
``benches/results/<date>.md`` (medians with min/max, ratios against ours) and a
plot ``benches/results/<date>.png``. A peer that cannot run fails the harness.

Peers speak one protocol: ``<driver> --streams N --tokens T --rate R
--batch-size B --linger-ms L [--reader]`` prints one JSON line (see
``benches/peers.py``).

Usage: python benches/harness.py [--quick] [--runs N] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
S2LITE_BIN = Path(
    os.environ.get("S2LITE_BIN", Path.home() / ".cache/resumable_fast/s2-lite-0.42.7/bin/server")
)
BASIN = "bench-basin"
OURS = "resumable_fast_s2"
# Peers that persist nothing: what the others are measured against, not ranked.
BASELINES = ("raw", "raw_task")
EMBEDDED, EMBEDDED_DIR = "resumable_fast_embedded", "resumable_fast_embedded_dir"
# This library's other rows (on the embedded backend, in memory or in a
# data_dir, with its pure-Python core): not peers a user would pick instead of it.
OUR_VARIANTS = (EMBEDDED, EMBEDDED_DIR, "pure_python")
# The embedded data_dir's CPU per token against in memory, at 100 streams.
DATA_DIR_CPU_GOAL = 1.5


@dataclass(frozen=True)
class Peer:
    name: str
    command: tuple[str, ...]
    needs: str  # "s2", "redis" or "none"
    # Takes --live-readers (the Python peers that can resume a live stream).
    live_readers: bool = False
    # Runs in the live-readers scenario only.
    live_readers_only: bool = False
    # For peers 30-100x slower than ours per token: fewer runs, and a phase
    # that takes longer than this many seconds is reported as failed.
    max_runs: int | None = None
    timeout_s: float | None = None

    def runs_in(self, scenario: Scenario) -> bool:
        if scenario.live_readers:
            return self.live_readers
        return not self.live_readers_only


# The Python packages that poll Redis (0.4-1 ms of CPU per token): one run
# per scenario ranks them, and a run that hangs (fastapi-resumable-stream's
# defaults at 100 streams) fails in two minutes rather than in ten.
SLOW_PEER: dict[str, Any] = {"max_runs": 1, "timeout_s": 120.0}

PEERS = (
    Peer("raw", (sys.executable, str(HERE / "peers.py"), "raw"), "none"),
    # The floor of a task-to-task handoff: a source in a task of its own, as
    # the library keeps it, nothing persisted.
    Peer("raw_task", (sys.executable, str(HERE / "peers.py"), "raw_task"), "none"),
    Peer(OURS, (sys.executable, str(HERE / "peers.py"), OURS), "s2", live_readers=True),
    # Ours with a read session per reader: what sharing one saves.
    Peer(
        "resumable_fast_s2_unshared",
        (sys.executable, str(HERE / "peers.py"), "resumable_fast_s2_unshared"),
        "s2",
        live_readers=True,
        live_readers_only=True,
    ),
    Peer(EMBEDDED, (sys.executable, str(HERE / "peers.py"), EMBEDDED), "none", live_readers=True),
    # The same in a data_dir (SQLite; a fresh directory each run, made and
    # removed by the peer process, whose CPU includes the store's writer thread).
    Peer(
        EMBEDDED_DIR,
        (sys.executable, str(HERE / "peers.py"), EMBEDDED_DIR),
        "none",
        live_readers=True,
    ),
    Peer("pure_python", (sys.executable, str(HERE / "peers.py"), "pure_python"), "s2"),
    Peer("s2sdk_naive", (sys.executable, str(HERE / "peers.py"), "s2sdk_naive"), "s2"),
    Peer("s2sdk_producer", (sys.executable, str(HERE / "peers.py"), "s2sdk_producer"), "s2"),
    Peer("node_s2", ("node", str(HERE / "node/s2_peer.mjs")), "s2"),
    Peer("vercel_redis", ("node", str(HERE / "node/redis_peer.mjs")), "redis"),
    Peer(
        "redis_streams",
        (sys.executable, str(HERE / "peers.py"), "redis_streams"),
        "redis",
        live_readers=True,
    ),
    Peer(
        "py_resumable_stream",
        (sys.executable, str(HERE / "peers.py"), "py_resumable_stream"),
        "redis",
        live_readers=True,
    ),
    Peer(
        "fastapi_resumable_stream",
        (sys.executable, str(HERE / "peers.py"), "fastapi_resumable_stream"),
        "redis",
        live_readers=True,
        **SLOW_PEER,
    ),
    # The same with settings that let it finish where its defaults fail.
    Peer(
        "fastapi_resumable_stream_tuned",
        (sys.executable, str(HERE / "peers.py"), "fastapi_resumable_stream_tuned"),
        "redis",
        live_readers=True,
        **SLOW_PEER,
    ),
    Peer(
        "assistant_stream",
        (sys.executable, str(HERE / "peers.py"), "assistant_stream"),
        "redis",
        live_readers=True,
        **SLOW_PEER,
    ),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int
    tokens: int
    rate: float
    reader: bool = False
    hold: bool = False  # every stream held mid-reply while RSS is sampled
    live_readers: int = 0  # readers of each stream following it live


MEMORY = "memory"
PACED = "paced"
THROUGHPUT_MANY = "throughput, many streams"
RESUME = "resume"
LIVE_READERS = "live readers"


def scenarios(quick: bool) -> list[Scenario]:
    """Each scenario's name starts with its kind (the targets look them up)."""
    if quick:
        return [
            Scenario("throughput, 1 stream", 1, 500, 0),
            Scenario("throughput, many streams: 100", 100, 50, 0),
            Scenario("paced 50 tok/s, 20 streams", 20, 50, 50),
            Scenario("resume, 2,000-token stream", 2, 2000, 0, reader=True),
            Scenario("memory, 1,000 streams in flight", 1000, 8, 0, hold=True),
            Scenario("live readers, 100 of one stream", 1, 200, 100, live_readers=100),
        ]
    return [
        Scenario("throughput, 1 stream", 1, 10_000, 0),
        Scenario("throughput, 100 streams", 100, 500, 0),
        Scenario("throughput, many streams: 1,000", 1000, 100, 0),
        Scenario("paced 50 tok/s, 100 streams", 100, 200, 50),
        Scenario("resume, 10,000-token stream", 10, 10_000, 0, reader=True),
        Scenario("memory, 10,000 streams in flight", 10_000, 8, 0, hold=True),
        Scenario("live readers, 1,000 of one stream", 1, 500, 100, live_readers=1000),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start on port {port}")


@contextmanager
def servers(work: Path) -> Iterator[dict[str, str]]:
    """s2-lite and redis-server on loopback; yields the peers' environment."""
    if not S2LITE_BIN.is_file():
        raise SystemExit(f"s2-lite not found at {S2LITE_BIN}: run `make bench`")
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server not found: run `make bench` (installs Debian's)")
    init = work / "init.json"
    init.write_text(
        json.dumps(
            {
                "basins": [
                    {
                        "name": BASIN,
                        "config": {"create_stream_on_append": True, "create_stream_on_read": True},
                    }
                ]
            }
        )
    )
    s2_port, redis_port = free_port(), free_port()
    log = (work / "s2lite.log").open("wb")
    s2lite = subprocess.Popen(
        [str(S2LITE_BIN), "--port", str(s2_port), "--init-file", str(init)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    redis_server = subprocess.Popen(
        [
            redis,
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(s2_port, s2lite, "s2-lite")
        wait_for_port(redis_port, redis_server, "redis-server")
        endpoint = f"http://127.0.0.1:{s2_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("S2_")}
        env.update(
            {
                "S2_ACCESS_TOKEN": "bench-token-not-checked",
                "S2_BASIN": BASIN,
                "S2_ACCOUNT_ENDPOINT": endpoint,
                "S2_BASIN_ENDPOINT": endpoint,
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}",
                "PYTHONPATH": str(ROOT / "python"),
            }
        )
        # Each run's server CPU is read from these processes (run_peer).
        env["S2LITE_PID"] = str(s2lite.pid)
        env["REDIS_PID"] = str(redis_server.pid)
        yield env
    finally:
        for process in (s2lite, redis_server):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


# The variable in the peers' environment holding the pid of the server that
# each kind of peer uses, whose CPU is measured over each of its runs.
SERVER_PID_VARIABLES = {"s2": "S2LITE_PID", "redis": "REDIS_PID"}
# Each Python peer gives up after 600 s in a phase (peers.py --timeout), each
# Node peer after 900 s in all (--timeout-s); this catches what would not.
RUN_TIMEOUT_S = 1800


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def run_peer(
    peer: Peer, scenario: Scenario, env: dict[str, str], batch_size: int, linger_ms: float
) -> dict[str, Any]:
    args = [
        *peer.command,
        "--streams",
        str(scenario.streams),
        "--tokens",
        str(scenario.tokens),
        "--rate",
        str(scenario.rate),
        "--batch-size",
        str(batch_size),
        "--linger-ms",
        str(linger_ms),
    ]
    if scenario.reader:
        args.append("--reader")
    if scenario.hold:
        args.append("--hold")
    timeout_s = peer.timeout_s
    if scenario.live_readers:
        # Ours takes seconds here; a peer whose readers hang fails in a minute,
        # not after the default ten.
        args += ["--live-readers", str(scenario.live_readers)]
        timeout_s = 60.0
    run_timeout_s: float = RUN_TIMEOUT_S
    if timeout_s is not None:
        args += ["--timeout", str(timeout_s)]
        # Each phase has timeout_s; a peer that then hangs closing is killed.
        run_timeout_s = 4 * timeout_s
    server = SERVER_PID_VARIABLES.get(peer.needs)
    server_pid = int(env[server]) if server else None
    before = process_cpu_seconds(server_pid) if server_pid else 0.0
    returncode: int | None = None
    try:
        done = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=run_timeout_s, check=False
        )
        returncode, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        # run() killed the peer: a hang is that peer's failure, not the harness's.
        stdout = ""
        stderr = expired.stderr.decode(errors="replace") if expired.stderr else ""
    server_cpu = process_cpu_seconds(server_pid) - before if server_pid else None
    failure: str | None = None
    result: dict[str, Any] = {}
    if returncode is None:
        failure = f"killed after {run_timeout_s:g} s: {_last_error_line(stderr)}"
    elif returncode != 0:
        failure = f"exit status {returncode}: {_last_error_line(stderr)}"
    else:
        result = json.loads(stdout.strip().splitlines()[-1])
        if not result.get("verified"):
            failure = "streams did not verify (a text differed)"
    if failure is not None:
        sys.stderr.write(stderr[-4000:])
        if peer.name == OURS:
            raise SystemExit(f"{OURS} failed on '{scenario.name}': {failure}")
        # Another peer failing under a load is a finding: it goes in the report.
        print(f"  {peer.name} FAILED on '{scenario.name}': {failure}", file=sys.stderr)
        return {"failed": failure}
    result["server_cpu_s"] = server_cpu
    return result


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


def summarize(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


METRICS = (
    "tokens/s",
    "CPU s per 1M tokens",
    "server CPU s per 1M tokens",
    "latency p50 µs",
    "latency p99 µs",
    "requests per 1k tokens",
    "resume first chunk p50 ms",
    "resume full p50 ms",
    "RSS KiB per in-flight stream",
)


def metrics(result: dict[str, Any]) -> dict[str, float | None]:
    if "failed" in result:
        return dict.fromkeys(METRICS)
    tokens = result["tokens"]
    requests = result.get("requests")
    latency = result.get("latency_us") or {}
    first = result.get("resume_first_chunk_ms") or {}
    full = result.get("resume_full_ms") or {}
    return {
        "tokens/s": tokens / result["wall_s"] if result["wall_s"] else None,
        "CPU s per 1M tokens": result["cpu_s"] / tokens * 1e6 if tokens else None,
        "server CPU s per 1M tokens": (
            result["server_cpu_s"] / tokens * 1e6
            if tokens and result.get("server_cpu_s") is not None
            else None
        ),
        "latency p50 µs": latency.get("p50"),
        "latency p99 µs": latency.get("p99"),
        "requests per 1k tokens": requests / tokens * 1000 if requests and tokens else None,
        "resume first chunk p50 ms": first.get("p50"),
        "resume full p50 ms": full.get("p50"),
        "RSS KiB per in-flight stream": (
            result["rss_in_flight_kib"] / result["config"]["streams"]
            if result.get("rss_in_flight_kib") is not None
            else None
        ),
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--linger-ms", type=float, default=100.0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--peers", default=",".join(peer.name for peer in PEERS))
    options = parser.parse_args()
    # Three runs give a median; the full plan takes about an hour with them.
    runs = options.runs or (1 if options.quick else 3)
    wanted = set(options.peers.split(","))
    peers = [peer for peer in PEERS if peer.name in wanted]
    plan = scenarios(options.quick)
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
    plot(plan, peers, results, options.out / f"{stamp}.png")
    report = render(plan, peers, results, runs, options, f"{stamp}.png", core)
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


def run_core_benchmark(quick: bool) -> str:
    """The core microbenchmark's printed report."""
    args = [sys.executable, str(HERE / "bench_core.py")] + (["--quick"] if quick else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench_core.py failed ({done.returncode})")
    return done.stdout


def core_ratios(core: str) -> dict[str, tuple[float, float | None]]:
    """(A)'s ratio and measured ceiling by workload (tokens, chunks), from
    bench_core's report."""
    section = core.split("\n(B) ", 1)[0]
    found = re.findall(
        r"ratio rust/pure-python \[(\w+)\]: ([\d.]+)x.*?(?:= ([\d.]+)x)?$", section, re.M
    )
    return {
        load: (float(ratio), float(ceiling) if ceiling else None) for load, ratio, ceiling in found
    }


def median_metric(rows: list[dict[str, Any]], name: str) -> float | None:
    values = [v for v in (metrics(row)[name] for row in rows) if v is not None]
    return statistics.median(values) if values else None


def tokens_per_cpu_second(rows: list[dict[str, Any]]) -> float | None:
    cpu = median_metric(rows, "CPU s per 1M tokens")
    return 1e6 / cpu if cpu else None


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


def scenario_of(plan: Sequence[Scenario], kind: str) -> Scenario | None:
    return next((scenario for scenario in plan if scenario.name.startswith(kind)), None)


def targets(
    plan: Sequence[Scenario], results: dict[tuple[str, str], list[dict[str, Any]]], core: str
) -> list[str]:
    """The issue's targets, each measured in this run: a table."""

    def rows_of(scenario: Scenario | None, peer: str) -> list[dict[str, Any]] | None:
        return results.get((scenario.name, peer)) if scenario else None

    def verdict(value: float | None, goal: float, above: bool) -> str:
        """``above``: the value must exceed the goal (or reach it, for a ratio
        goal above 1); else stay under it."""
        if value is None:
            return "not measured"
        met = (value >= goal if goal > 1 else value > goal) if above else value < goal
        return "met" if met else "**missed**"

    lines = ["| target | measured in this run | goal | |", "| --- | --- | --- | --- |"]
    for load, (core_ratio, ceiling) in core_ratios(core).items():
        bound = f" (measured ceiling {ceiling:.1f}x)" if ceiling is not None else ""
        lines.append(
            # Issue 15 replaced the 20x goal, which the binding's measured
            # ceiling rules out, by CPU per persisted token against raw.
            f"| core accumulate+frame vs pure Python ({load}) | {core_ratio:.1f}x{bound} "
            f"| diagnostic (was >= 20x) | — |"
        )
    many = scenario_of(plan, THROUGHPUT_MANY)
    ours = rows_of(many, OURS)
    ours_efficiency = tokens_per_cpu_second(ours) if ours else None
    for peer, goal in (("node_s2", 3.0), ("s2sdk_producer", 1.0)):
        rows = rows_of(many, peer)
        theirs = tokens_per_cpu_second(rows) if rows else None
        ratio = ours_efficiency / theirs if ours_efficiency and theirs else None
        shown = f"{ratio:.2f}x" if ratio is not None else "—"
        goal_text = f">= {goal:.0f}x" if goal > 1 else "> 1x (ahead)"
        lines.append(
            f"| tokens per CPU-second, {many.name if many else 'many streams'}: ours vs {peer} "
            f"| {shown} | {goal_text} | {verdict(ratio, goal, True)} |"
        )
    # Issue 15: ahead of every peer a user would pick, in each throughput and
    # paced scenario; the best of them (most tokens per CPU-second) stands for all.
    for scenario in plan:
        if scenario.reader or scenario.hold or scenario.live_readers:
            continue
        ours_rows = rows_of(scenario, OURS)
        ours_efficiency = tokens_per_cpu_second(ours_rows) if ours_rows else None
        measured = [
            (efficiency, name)
            for (scenario_name, name), rows in results.items()
            if scenario_name == scenario.name and name not in (OURS, *OUR_VARIANTS, *BASELINES)
            if (efficiency := tokens_per_cpu_second(rows))
        ]
        best_efficiency, best = max(measured, default=(None, "no peer measured"))
        ratio = ours_efficiency / best_efficiency if ours_efficiency and best_efficiency else None
        lines.append(
            f"| tokens per CPU-second, {scenario.name}: ours vs the best other peer ({best}) "
            f"| {f'{ratio:.2f}x' if ratio is not None else '—'} | > 1x (ahead) "
            f"| {verdict(ratio, 1.0, True)} |"
        )
    paced = scenario_of(plan, PACED)
    ours_p99 = median_metric(rows_of(paced, OURS) or [], "latency p99 µs")
    raw_p99 = median_metric(rows_of(paced, "raw") or [], "latency p99 µs")
    handoff_p99 = median_metric(rows_of(paced, "raw_task") or [], "latency p99 µs")
    added = ours_p99 - raw_p99 if ours_p99 is not None and raw_p99 is not None else None
    floor = handoff_p99 - raw_p99 if handoff_p99 is not None and raw_p99 is not None else None
    lines.append(
        f"| producer-client added latency p99, {paced.name if paced else 'paced'} "
        f"(ours p99 - raw p99; floor: raw_task p99 - raw p99, one task-to-task handoff) "
        f"| {fmt(added)} µs (floor {fmt(floor)} µs) | < 100 µs | {verdict(added, 100, False)} |"
    )
    resume = scenario_of(plan, RESUME)
    first = median_metric(rows_of(resume, OURS) or [], "resume first chunk p50 ms")
    lines.append(
        f"| resume of a finished stream, time to first chunk p50, {resume.name if resume else ''} "
        f"| {fmt(first)} ms | < 5 ms | {verdict(first, 5, False)} |"
    )
    memory = scenario_of(plan, MEMORY)
    per_stream = median_metric(rows_of(memory, OURS) or [], "RSS KiB per in-flight stream")
    raw_per_stream = median_metric(rows_of(memory, "raw") or [], "RSS KiB per in-flight stream")
    net = (
        per_stream - raw_per_stream
        if per_stream is not None and raw_per_stream is not None
        else None
    )
    lines.append(
        f"| RSS per in-flight stream, {memory.name if memory else 'memory'} "
        f"| {fmt(per_stream)} KiB ({fmt(net)} KiB above raw's own) | < 8 KiB "
        f"| {verdict(per_stream, 8, False)} |"
    )
    # Issue 15: close to the floor at 1,000 streams, CPU per persisted token
    # against raw passthrough (raw_task, one task-to-task handoff per token,
    # is the floor of a source kept in a task of its own).
    raw_cpu = median_metric(rows_of(many, "raw") or [], "CPU s per 1M tokens")
    handoff_cpu = median_metric(rows_of(many, "raw_task") or [], "CPU s per 1M tokens")
    for peer, goal in ((EMBEDDED, 2.0), (OURS, 3.0)):
        cpu = median_metric(rows_of(many, peer) or [], "CPU s per 1M tokens")
        ratio = cpu / raw_cpu if cpu and raw_cpu else None
        floor = handoff_cpu / raw_cpu if handoff_cpu and raw_cpu else None
        lines.append(
            f"| CPU per persisted token, {many.name if many else 'many streams'}: {peer} / raw "
            f"(raw_task / raw: {f'{floor:.2f}x' if floor else '—'}) "
            f"| {f'{ratio:.2f}x' if ratio else '—'} | <= {goal:.0f}x "
            f"| {verdict(ratio, goal + 1e-9, False)} |"
        )
    # The data_dir's cost: CPU per token against in memory at 100 streams.
    for scenario in plan:
        if scenario.streams != 100 or scenario.reader or scenario.hold or scenario.live_readers:
            continue
        memory_cpu = median_metric(rows_of(scenario, EMBEDDED) or [], "CPU s per 1M tokens")
        dir_cpu = median_metric(rows_of(scenario, EMBEDDED_DIR) or [], "CPU s per 1M tokens")
        ratio = dir_cpu / memory_cpu if dir_cpu and memory_cpu else None
        lines.append(
            f"| CPU per persisted token, {scenario.name}: {EMBEDDED_DIR} / {EMBEDDED} "
            f"| {f'{ratio:.2f}x' if ratio else '—'} | <= {DATA_DIR_CPU_GOAL}x "
            f"| {verdict(ratio, DATA_DIR_CPU_GOAL + 1e-9, False)} |"
        )
    live = scenario_of(plan, LIVE_READERS)
    for name in ("CPU s per 1M tokens", "requests per 1k tokens"):
        shared = median_metric(rows_of(live, OURS) or [], name)
        unshared = median_metric(rows_of(live, "resumable_fast_s2_unshared") or [], name)
        saving = unshared / shared if shared and unshared else None
        lines.append(
            f"| {live.name if live else 'live readers'}: {name}, one S2 session per reader / "
            f"one shared | {f'{saving:.1f}x' if saving else '—'} | > 1x "
            f"| {verdict(saving, 1.0, True)} |"
        )
    return lines


def render(
    plan: Sequence[Scenario],
    peers: Sequence[Peer],
    results: dict[tuple[str, str], list[dict[str, Any]]],
    runs: int,
    options: argparse.Namespace,
    plot_name: str,
    core: str,
) -> str:
    lines = [
        f"# Benchmarks, {dt.date.today().isoformat()}",
        "",
        f"Command: `python benches/harness.py{' --quick' if options.quick else ''}`"
        f" (`make bench{'-quick' if options.quick else ''}`); "
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


if __name__ == "__main__":
    main()
