"""One run of a peer in a scenario (its driver's process, the JSON line it
prints, the CPU its server used meanwhile), and the run of the core
microbenchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from plan import OURS, Peer, Scenario
from servers import SERVER_PID_VARIABLES

HERE = Path(__file__).resolve().parent
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
    if scenario.lag:
        args.append("--lag")
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


def run_core_benchmark(quick: bool) -> str:
    """The core microbenchmark's printed report."""
    args = [sys.executable, str(HERE / "bench_core.py")] + (["--quick"] if quick else [])
    done = subprocess.run(args, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench_core.py failed ({done.returncode})")
    return done.stdout
