"""``make demo-s2``: the demo as two replicas behind one s2-lite, on loopback.

Starts s2-lite (in memory, or in ``--local-root``), sets up a basin with
``resumable-fast s2 setup``, then serves the demo from two processes on two
ports, both on that basin: a reply started on one port goes on, live, in a
page opened on the other. Ctrl-C (or SIGTERM) stops all three: the demos
first, so they drain what they accepted into s2-lite, then s2-lite. If any of
them exits on its own, the others are stopped too and the exit status is 1.

Each child runs in a session of its own, so the terminal's Ctrl-C reaches
only this launcher, which stops them in that order.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
BASIN = "resumable-fast-demo"
# s2-lite accepts any bearer token; the library requires one to be set.
S2LITE_TOKEN = "s2-lite-accepts-any-token"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


def _wait_until_up(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"demo-s2: {name} exited with {process.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"demo-s2: {name} did not answer {url} within {STARTUP_TIMEOUT:.0f} s")


def _stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(signum)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Stop(Exception):
    """SIGINT or SIGTERM reached the launcher."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_s2", description=__doc__.split("\n\n")[0])
    parser.add_argument("--s2lite-bin", type=Path, required=True, help="s2-lite's server binary")
    parser.add_argument("--s2-port", type=int, default=4566, help="s2-lite's port (%(default)s)")
    parser.add_argument(
        "--ports",
        type=int,
        nargs=2,
        default=(8000, 8001),
        metavar=("FIRST", "SECOND"),
        help="the two demo processes' ports (%(default)s)",
    )
    parser.add_argument(
        "--local-root",
        type=Path,
        default=None,
        help="keep s2-lite's data in this directory (default: in memory)",
    )
    parser.add_argument(
        "--tokens-per-second", default="40", help="the simulated LLM's pace (%(default)s)"
    )
    args = parser.parse_args(argv)
    if not args.s2lite_bin.is_file():
        print(
            f"demo-s2: no s2-lite at {args.s2lite_bin}: `make s2-lite` builds it", file=sys.stderr
        )
        return 2

    endpoint = f"http://{HOST}:{args.s2_port}"
    env = {name: value for name, value in os.environ.items() if not name.startswith("S2_")}
    env.update(
        S2_BASIN=BASIN,
        S2_ACCESS_TOKEN=S2LITE_TOKEN,
        S2_ACCOUNT_ENDPOINT=endpoint,
        S2_BASIN_ENDPOINT=endpoint,
    )
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    status = 0
    try:
        s2lite_args = [str(args.s2lite_bin), "--port", str(args.s2_port)]
        if args.local_root is not None:
            args.local_root.mkdir(parents=True, exist_ok=True)
            s2lite_args += ["--local-root", str(args.local_root)]
        s2lite = subprocess.Popen(s2lite_args, start_new_session=True)
        children.append(("s2-lite", s2lite))
        _wait_until_up(f"{endpoint}/health", s2lite, "s2-lite")
        setup = subprocess.run(
            [sys.executable, "-m", "resumable_fast", "s2", "setup"], env=env, check=False
        )
        if setup.returncode != 0:
            print("demo-s2: setting up the basin failed", file=sys.stderr)
            return 1
        for port in args.ports:
            demo = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "resumable_fast",
                    "demo",
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--tokens-per-second",
                    args.tokens_per_second,
                ],
                env=env,
                start_new_session=True,
            )
            children.append((f"the demo on port {port}", demo))
            _wait_until_up(f"http://{HOST}:{port}/api/info", demo, f"the demo on port {port}")
        first, second = (f"http://{HOST}:{port}/" for port in args.ports)
        print(
            f"demo-s2: two replicas on basin {BASIN} of s2-lite at {endpoint}:\n"
            f"  {first}\n  {second}\n"
            "Start a reply on one, open the other mid-reply: it goes on there. "
            "Ctrl-C stops all three.",
            flush=True,
        )
        while True:
            for name, process in children:
                if process.poll() is not None:
                    print(f"demo-s2: {name} exited with {process.returncode}", file=sys.stderr)
                    return 1
            time.sleep(0.2)
    except _Stop:
        print("demo-s2: stopping", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The demos first: they drain into s2-lite, which must still be up.
        for name, process in reversed(children):
            _stop(process)
            if name != "s2-lite" and process.returncode not in (0, -signal.SIGTERM):
                status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
