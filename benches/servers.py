"""The servers the peers use, one of each for a whole run on free loopback
ports: s2-lite (the cached release build) and redis-server, and the
environment that points the peers at them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
S2LITE_BIN = Path(
    os.environ.get("S2LITE_BIN", Path.home() / ".cache/resumable_fast/s2-lite-0.42.7/bin/server")
)
BASIN = "bench-basin"


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
