"""Stalled tabs cost little memory (issue 21, item 3).

2,000 readers of one live reply whose clients stopped reading (``resume_sse``
stops pulling for a stalled connection) each read the first chunk and then
nothing while the producer writes a 150 KiB reply to its end: on S2, on the
embedded backend in memory and in a ``data_dir``. Each runs in a process of
its own (``stalled_readers_process.py``), so the RSS measured is
that of the context, the producer and the readers alone. The readers share one
copy of what they have not read yet (a feed's window; in memory, the store)
and each costs only its position: all 2,000 together must cost under 32 MB.
Then every reader reads on and must get the exact full text: a bound that
lost text would be no bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import S2Lite

HELPER = Path(__file__).parent.parent / "stalled_readers_process.py"
READERS = 2000
CHARS = 150 * 1024
LIMIT = 32 * 1000 * 1000

Figure = int | str | float | bool


def run_helper(backend: str, env: dict[str, str]) -> dict[str, Figure]:
    completed = subprocess.run(
        [sys.executable, str(HELPER), backend, str(READERS), str(CHARS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result: dict[str, Figure] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("backend", ["s2", "embedded", "embedded-dir"])
def test_stalled_readers_of_a_live_reply_cost_little_and_lose_nothing(
    s2lite: S2Lite, backend: str, tmp_path: Path
) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("S2_", "RESUMABLE_FAST_"))
    }
    if backend == "s2":
        env.update(s2lite.env())
    elif backend == "embedded-dir":
        env["RESUMABLE_FAST_DATA_DIR"] = str(tmp_path / "data")
    result = run_helper(backend, env)
    print(json.dumps(result))
    chunks, exact, growth = result["chunks"], result["exact"], result["growth"]
    assert isinstance(chunks, int)
    assert isinstance(growth, int)
    assert chunks > 25_000  # LLM-sized tokens: thousands of batches
    assert exact == READERS, "a reader did not get the exact full text"
    assert growth < LIMIT, (
        f"{READERS} stalled readers of a {CHARS // 1024} KiB reply grew RSS by "
        f"{growth / 1e6:.1f} MB ({backend})"
    )
