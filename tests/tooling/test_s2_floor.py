"""The benchmark's ``s2_floor`` peer (``benches/s2_floor.py``): its bare
appends land every token on a real s2-lite, in order, one request per batch,
and an append S2 refuses fails the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import S2Lite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent / "benches"))
from workload import stream_tokens

BENCHES = Path(__file__).resolve().parent.parent.parent / "benches"


def _run_floor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCHES / "peers.py"), "s2_floor", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _stored_text(server: S2Lite, name: str) -> str:
    answer = httpx.get(
        f"{server.endpoint}/v1/streams/{name}/records",
        params={"seq_num": 0, "count": 1000},
        headers={"s2-basin": server.basin, "Accept": "application/json"},
    )
    answer.raise_for_status()
    return "".join(record["body"] for record in answer.json()["records"])


def _floor_streams(server: S2Lite) -> set[str]:
    listed = httpx.get(
        f"{server.endpoint}/v1/streams",
        params={"prefix": "bench-s2_floor-"},
        headers={"s2-basin": server.basin},
    )
    listed.raise_for_status()
    return {stream["name"] for stream in listed.json()["streams"]}


def test_every_token_lands_in_one_append_per_batch(s2lite: S2Lite) -> None:
    before = _floor_streams(s2lite)
    finished = _run_floor(s2lite.env(), "--streams", "2", "--tokens", "150", "--rate", "0")
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    assert result["tokens"] == 300
    # Batches of the default 100: 100 and 50 tokens per stream.
    assert result["requests"] == 4
    names = sorted(_floor_streams(s2lite) - before)
    assert len(names) == 2
    for index, name in enumerate(names):
        assert name.endswith(f"-{index}")
        assert _stored_text(s2lite, name) == "".join(stream_tokens(index, 150))


def test_paced_batches_hold_what_one_linger_gathers(s2lite: S2Lite) -> None:
    finished = _run_floor(
        s2lite.env(), "--streams", "1", "--tokens", "30", "--rate", "100", "--linger-ms", "100"
    )
    assert finished.returncode == 0, finished.stderr
    # 100 tokens/s for 100 ms: batches of 10.
    assert json.loads(finished.stdout)["requests"] == 3


def test_an_append_s2_refuses_fails_the_run(s2lite: S2Lite) -> None:
    finished = _run_floor(
        {**s2lite.env(), "S2_BASIN": "no-such-basin"},
        "--streams",
        "1",
        "--tokens",
        "5",
        "--rate",
        "0",
    )
    assert finished.returncode != 0
    assert "s2_floor: answered" in finished.stderr
