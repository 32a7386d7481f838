"""Several OS processes on one embedded ``data_dir`` (one SQLite database):

* the README's FastAPI example (tests/readme_app.py) under a real
  ``uvicorn --workers 3``: a reply produced by one worker is resumed, exact,
  from every worker while it streams; once finished, every worker answers
  422, and 404 for an id never created;
* ``resumable_stream`` racing for the same ids from three processes: exactly
  one ``make_stream`` call per id, and every process reads the same text.

No S2 here: the ``S2_*`` variables are stripped from the children's
environment, so the example's context is the embedded one in
``RESUMABLE_FAST_DATA_DIR``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from claim_process import claim_tokens
from readme_llm import TOKENS, TOKENS_PER_SECOND, reply_text

from conftest import free_port

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).parent.parent
WORKERS = 3
REPLIES = 8
# Mid-stream resumes each worker must have served.
RESUMES_PER_WORKER = 2
# Resumes started at most, over all replies, before the test gives up.
MAX_RESUMES = 600
# Requests at most for each "every worker answers" phase.
MAX_PROBES = 300
READ_TIMEOUT = 30.0


def child_env(data_dir: Path | None) -> dict[str, str]:
    """This environment without S2 (and without a data_dir unless given)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("S2_") and name != "RESUMABLE_FAST_DATA_DIR"
    }
    if data_dir is not None:
        env["RESUMABLE_FAST_DATA_DIR"] = str(data_dir)
    return env


# -- test 1: the README app under uvicorn --workers 3 ---------------------------------


@dataclass
class SseResult:
    status: int
    pid: int
    text: str = ""
    ended: bool = False
    problems: list[str] = field(default_factory=list)


def parse_sse(body: str) -> tuple[str, bool, list[str]]:
    """The text of an event stream (asgi.py's format), whether it ended with
    ``event: end``, and what broke the format: ids that are not the running
    character count, events after the end, unknown events."""
    text, ended, problems = "", False, []
    for block in body.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        if not lines:
            continue  # a heartbeat, or the end of the body
        fields: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(": ")
            fields[name] = value
        if ended:
            problems.append(f"an event after the end: {block!r}")
        if fields.get("event") == "end":
            ended = True
            continue
        if "event" in fields or set(fields) != {"id", "data"}:
            problems.append(f"not a chunk event: {block!r}")
            continue
        chunk = orjson.loads(fields["data"])
        text += chunk
        if fields["id"] != str(len(text)):
            problems.append(f"id {fields['id']} after {len(text)} characters")
    return text, ended, problems


def worker_pid(response: httpx.Response) -> int:
    pid = response.headers.get("x-worker-pid")
    assert pid is not None, f"{response.status_code} without x-worker-pid (an error page?)"
    return int(pid)


async def read_sse(client: httpx.AsyncClient, method: str, url: str) -> SseResult:
    """One request on a connection of its own; the whole SSE body if 200."""
    async with client.stream(method, url, headers={"connection": "close"}) as response:
        result = SseResult(response.status_code, worker_pid(response))
        if response.status_code != 200:
            await response.aread()
            result.text = response.text
            return result
        if not response.headers["content-type"].startswith("text/event-stream"):
            result.problems.append(f"content-type {response.headers['content-type']}")
        body = b"".join([raw async for raw in response.aiter_raw()]).decode("utf-8")
    result.text, result.ended, problems = parse_sse(body)
    result.problems += problems
    return result


@dataclass
class Reply:
    stream_id: str
    producer: asyncio.Task[SseResult] | None = None
    first_event: asyncio.Event = field(default_factory=asyncio.Event)
    resumes: list[asyncio.Task[SseResult]] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.first_event.is_set() and self.producer is not None and not self.producer.done()


async def produce(client: httpx.AsyncClient, url: str, reply: Reply) -> SseResult:
    """POST the reply and read it to its end, flagging its first event."""
    async with client.stream("POST", url, headers={"connection": "close"}) as response:
        result = SseResult(response.status_code, worker_pid(response))
        if response.status_code != 200:
            reply.first_event.set()
            await response.aread()
            result.text = response.text
            return result
        body = b""
        async for raw in response.aiter_raw():
            body += raw
            if not reply.first_event.is_set() and b"\nid: " in b"\n" + body:
                reply.first_event.set()
    reply.first_event.set()
    result.text, result.ended, result.problems = parse_sse(body.decode("utf-8"))
    return result


class Server:
    """``python -m uvicorn readme_app:app --workers 3`` on a free loopback port."""

    def __init__(self, tmp_path: Path, data_dir: Path | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "uvicorn.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "readme_app:app",
                    "--app-dir",
                    str(HERE),
                    "--workers",
                    str(WORKERS),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--no-access-log",
                    "--timeout-graceful-shutdown",
                    "10",
                ],
                env=child_env(data_dir),
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, then wait; SIGKILL (and fail) if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(
                    f"uvicorn did not exit within 30 s of SIGTERM:\n{self.log()}"
                ) from None
        return self.process.returncode


async def every_worker_answers(
    client: httpx.AsyncClient,
    server: Server,
    what: str,
    next_url: Callable[[int], str],
    expected_status: int,
    workers: set[int] | None = None,
) -> set[int]:
    """GET ``next_url(attempt)`` on fresh connections until ``WORKERS``
    different pids answered (or those of ``workers``), each with
    ``expected_status``; the pids."""
    seen: Counter[int] = Counter()
    for attempt in range(MAX_PROBES):
        if server.process.poll() is not None:
            raise AssertionError(
                f"uvicorn exited with {server.process.returncode}:\n{server.log()}"
            )
        try:
            response = await client.get(next_url(attempt), headers={"connection": "close"})
        except httpx.TransportError:
            if workers is not None:
                raise
            await asyncio.sleep(0.1)  # not listening yet
            continue
        pid = worker_pid(response)
        assert response.status_code == expected_status, (
            f"{what}: worker {pid} answered {response.status_code} {response.text!r}, "
            f"expected {expected_status}"
        )
        if workers is not None:
            assert pid in workers, f"{what}: pid {pid} is not one of the workers {workers}"
        seen[pid] += 1
        if len(seen) == (len(workers) if workers is not None else WORKERS):
            return set(seen)
    raise AssertionError(
        f"{what}: after {MAX_PROBES} requests only workers {dict(seen)} answered, "
        f"expected {WORKERS} different ones"
    )


def readme_example() -> str:
    section = (HERE.parent / "README.md").read_text().split("## Example (FastAPI / Starlette)")[1]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no python block in the README's example section"
    return match.group(1)


async def test_readme_app_under_uvicorn_workers_resumes_on_every_worker(tmp_path: Path) -> None:
    assert readme_example() in (HERE / "readme_app.py").read_text(), (
        "tests/readme_app.py no longer holds the README's example verbatim"
    )
    started = time.monotonic()
    server = Server(tmp_path, tmp_path / "data")
    try:
        async with httpx.AsyncClient(
            base_url=server.url,
            timeout=READ_TIMEOUT,
            trust_env=False,
            # No kept-alive connections: every request opens a connection of
            # its own, which the listening socket hands to any worker.
            limits=httpx.Limits(max_keepalive_connections=0),
        ) as client:
            never = f"never-{uuid.uuid4().hex}"
            workers = await every_worker_answers(
                client, server, "start-up", lambda _: f"/chat/{never}", 404
            )
            replies = [Reply(f"reply-{index}-{uuid.uuid4().hex}") for index in range(REPLIES)]
            resumes_by_worker: Counter[int] = Counter()
            started_resumes = 0

            def coverage() -> bool:
                return all(resumes_by_worker[pid] >= RESUMES_PER_WORKER for pid in workers)

            async def resume(reply: Reply) -> SseResult:
                result = await read_sse(client, "GET", f"/chat/{reply.stream_id}")
                if result.status == 200:
                    resumes_by_worker[result.pid] += 1
                return result

            # Replies start a fifth of a reply apart; while any streams, a
            # resume of a live one starts every 15 ms, round robin, until every
            # worker has served its mid-stream resumes and each reply has had
            # a few.
            reply_seconds = TOKENS / TOKENS_PER_SECOND
            next_start = asyncio.get_running_loop().time()
            turn = 0
            while True:
                now = asyncio.get_running_loop().time()
                waiting = [reply for reply in replies if reply.producer is None]
                if waiting and now >= next_start:
                    reply = waiting[0]
                    reply.producer = asyncio.create_task(
                        produce(client, f"/chat/{reply.stream_id}", reply)
                    )
                    next_start = now + reply_seconds / 5
                live = [reply for reply in replies if reply.live]
                satisfied = coverage() and all(len(reply.resumes) >= 3 for reply in replies)
                if satisfied or started_resumes >= MAX_RESUMES:
                    break
                if not waiting and all(
                    r.producer is not None and r.producer.done() for r in replies
                ):
                    break
                if live:
                    reply = live[turn % len(live)]
                    turn += 1
                    reply.resumes.append(asyncio.create_task(resume(reply)))
                    started_resumes += 1
                await asyncio.sleep(0.015)

            producers = [reply.producer for reply in replies if reply.producer is not None]
            await asyncio.wait_for(
                asyncio.gather(*producers, *(t for r in replies for t in r.resumes)),
                READ_TIMEOUT,
            )
            streamed = time.monotonic()

            cross_worker = 0
            for reply in replies:
                expected = reply_text(reply.stream_id)
                if reply.producer is None:
                    continue  # not started: coverage came first
                made = reply.producer.result()
                assert made.status == 200, f"POST {reply.stream_id}: {made.status} {made.text!r}"
                assert made.problems == [], made.problems
                assert made.ended, f"POST {reply.stream_id}: no end event"
                assert made.text == expected, f"POST {reply.stream_id}: the text differs"
                for task in reply.resumes:
                    got = task.result()
                    # 422: the reply ended between the check that it was live
                    # and the request's arrival. Anything else is a failure:
                    # a 404 means that worker does not see the stream.
                    assert got.status in (200, 422), (
                        f"resume of live {reply.stream_id} on worker {got.pid} (producer "
                        f"{made.pid}): {got.status} {got.text!r}"
                    )
                    if got.status == 200:
                        assert got.problems == [], (got.pid, got.problems)
                        assert got.ended, f"resume on worker {got.pid}: no end event"
                        assert got.text == expected, (
                            f"resume of {reply.stream_id} on worker {got.pid} (producer "
                            f"{made.pid}): {len(got.text)} characters, expected {len(expected)}"
                        )
                        cross_worker += got.pid != made.pid
            assert coverage(), (
                f"after {started_resumes} resumes (cap {MAX_RESUMES}) the workers served "
                f"{ {pid: resumes_by_worker[pid] for pid in workers} } mid-stream resumes; "
                f"each needs {RESUMES_PER_WORKER}"
            )
            assert cross_worker >= RESUMES_PER_WORKER, cross_worker

            finished = [reply.stream_id for reply in replies if reply.producer is not None]
            await every_worker_answers(
                client,
                server,
                "a finished reply",
                lambda attempt: f"/chat/{finished[attempt % len(finished)]}",
                422,
                workers,
            )
            await every_worker_answers(
                client,
                server,
                "an unknown id",
                lambda attempt: f"/chat/unknown-{attempt}-{uuid.uuid4().hex}",
                404,
                workers,
            )
            print(
                f"{len(finished)} replies, {started_resumes} resumes "
                f"({dict(resumes_by_worker)} mid-stream by worker, {cross_worker} on another "
                f"worker than the producer's), {streamed - started:.1f} s from start-up to the "
                "last reply's end"
            )
    finally:
        returncode = server.stop()
    assert returncode == 0, f"uvicorn exited with {returncode}:\n{server.log()}"


# -- test 2: resumable_stream racing from three processes ----------------------------

CLAIM_IDS_PER_ROUND = 10
CLAIM_ROUNDS = 3


async def read_line(process: asyncio.subprocess.Process, what: str) -> str:
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), READ_TIMEOUT)
    assert line, f"process {process.pid} ended while we waited for {what}"
    return line.decode()


async def test_concurrent_resumable_stream_from_three_processes_makes_one_stream(
    tmp_path: Path,
) -> None:
    claims_file = tmp_path / "claims.txt"
    claims_file.touch()
    env = child_env(tmp_path / "data")
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "claim_process.py"),
            str(claims_file),
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(WORKERS)
    ]
    pids = {process.pid for process in processes}
    try:
        for process in processes:
            assert await read_line(process, "ready") == "ready\n"
        all_ids: list[str] = []
        made_by: Counter[int] = Counter()
        for round_number in range(CLAIM_ROUNDS):
            ids = [
                f"race-{round_number}-{index}-{uuid.uuid4().hex}"
                for index in range(CLAIM_IDS_PER_ROUND)
            ]
            all_ids += ids
            go = f"go {' '.join(ids)}\n".encode()
            # Each process waits in readline: they start within microseconds,
            # the first one told in turn.
            for offset in range(len(processes)):
                process = processes[(round_number + offset) % len(processes)]
                assert process.stdin is not None
                process.stdin.write(go)
            for process in processes:
                assert process.stdin is not None
                await process.stdin.drain()
            for process in processes:
                results = [orjson.loads(await read_line(process, "a result")) for _ in ids]
                assert await read_line(process, "the round's end") == "round done\n"
                assert [result["id"] for result in results] == ids
                for result in results:
                    stream_id = result["id"]
                    assert not result["finished"], (
                        f"process {process.pid} found {stream_id} finished already: "
                        "the processes did not start together"
                    )
                    assert result["text"] == "".join(claim_tokens(stream_id)), (
                        f"process {process.pid} read another text for {stream_id}"
                    )
                    if result["made"]:
                        made_by[process.pid] += 1
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in processes:
            assert await asyncio.wait_for(process.wait(), READ_TIMEOUT) == 0
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()

    claims = [line.split() for line in claims_file.read_text().splitlines()]
    calls = Counter(stream_id for _, stream_id in claims)
    assert {int(pid) for pid, _ in claims} <= pids
    twice = {stream_id: count for stream_id, count in calls.items() if count != 1}
    assert twice == {}, f"make_stream was called more than once for {twice}"
    assert sorted(calls) == sorted(all_ids), "some id had no make_stream call"
    assert sum(made_by.values()) == len(all_ids)
    print(f"make_stream calls by process: {dict(Counter(int(pid) for pid, _ in claims))}")
