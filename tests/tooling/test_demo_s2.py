"""``make demo-s2`` (``tools/demo_s2.py``): s2-lite and two demo replicas from
one command, a reply started on one port followed on the other, and Ctrl-C
(SIGINT to the launcher alone, as a terminal's would reach it once the
children have sessions of their own) stopping all three."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from resumable_fast.demo.llm import full_reply

from conftest import DEFAULT_S2LITE_BIN, free_port

LAUNCHER = Path(__file__).resolve().parent.parent.parent / "tools" / "demo_s2.py"


def s2lite_binary() -> Path:
    binary = Path(os.environ.get("S2LITE_BIN", str(DEFAULT_S2LITE_BIN)))
    if not binary.is_file():
        pytest.fail(f"s2-lite binary not found at {binary}: run `make test`, which builds it")
    return binary


def launch(s2_port: int, ports: tuple[int, int]) -> subprocess.Popen[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("S2_")}
    return subprocess.Popen(
        [
            sys.executable,
            str(LAUNCHER),
            "--s2lite-bin",
            str(s2lite_binary()),
            "--s2-port",
            str(s2_port),
            "--ports",
            *map(str, ports),
            "--tokens-per-second",
            "100",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_both(process: subprocess.Popen[str], urls: list[str]) -> None:
    deadline = time.monotonic() + 60
    for url in urls:
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"demo-s2 exited with {process.returncode}: {output}")
            try:
                if httpx.get(f"{url}/api/info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("demo-s2 did not serve both replicas within 60 s")
            time.sleep(0.1)


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def finish(process: subprocess.Popen[str]) -> str:
    try:
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return output


def test_a_reply_started_on_one_replica_goes_on_on_the_other() -> None:
    s2_port, ports = free_port(), (free_port(), free_port())
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    process = launch(s2_port, ports)
    try:
        wait_for_both(process, urls)
        info = httpx.get(f"{urls[1]}/api/info", timeout=5).json()
        assert info["backend"].startswith(
            f"s2 (basin resumable-fast-demo at http://127.0.0.1:{s2_port}"
        )
        prompt = "one reply, two replicas"
        chat = httpx.post(f"{urls[0]}/api/chat", json={"prompt": prompt}, timeout=10)
        assert chat.status_code == 201, chat.text
        stream_id = chat.json()["stream_id"]
        text = ""
        with httpx.stream("GET", f"{urls[1]}/api/chat/{stream_id}/events", timeout=30) as events:
            assert events.status_code == 200
            for line in events.iter_lines():
                if line.startswith("data: "):
                    text += json.loads(line[len("data: ") :])
                if line == "event: end":
                    break
        assert text == full_reply(prompt)
    finally:
        process.send_signal(signal.SIGINT)  # the launcher alone, as Ctrl-C reaches it
        output = finish(process)
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    for port in (s2_port, *ports):
        assert refuses(port), f"port {port} still accepts connections after Ctrl-C"


def test_a_replica_that_cannot_start_stops_the_rest() -> None:
    s2_port, ports = free_port(), (free_port(), free_port())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[1]))
        taken.listen()
        process = launch(s2_port, ports)
        output = finish(process)
    assert process.returncode == 1, output
    assert f"the demo on port {ports[1]} exited" in output
    for port in (s2_port, ports[0]):
        assert refuses(port), f"port {port} still accepts connections"
