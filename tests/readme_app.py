# mypy: disable-error-code="no-untyped-def"
# (the README's handlers have no return annotations; they are copied unchanged)
"""The README's "Example (FastAPI / Starlette)", copied exactly (between the
markers), for tests/backends/test_workers.py to run under ``uvicorn --workers``:

    python -m uvicorn readme_app:app --app-dir tests --workers 3

Added around it: ``llm_tokens`` (tests/readme_llm.py, a paced reply that is a
function of the stream id) and a response header ``x-worker-pid`` naming the
worker process that answered.
"""

import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from readme_llm import llm_tokens

# -- the README's example, unchanged --------------------------------------------
# isort: off
# fmt: off
from fastapi import FastAPI, Request
from resumable_fast import create_resumable_stream_context
from resumable_fast.asgi import resumable_sse, resume_sse

app, streams = FastAPI(), create_resumable_stream_context()  # S2 if S2_BASIN is set, else embedded

@app.post("/chat/{stream_id}")   # start the reply (or join it if it is running)
async def post_chat(stream_id: str, request: Request):
    return await resumable_sse(streams, request, stream_id, lambda: llm_tokens(request))

@app.get("/chat/{stream_id}")    # a reload, a second tab, EventSource's own reconnect
async def get_chat(stream_id: str, request: Request):
    return await resume_sse(streams, request, stream_id)
# fmt: on
# isort: on
# -- end of the README's example -------------------------------------------------


class WorkerPid:
    """Pure ASGI (not BaseHTTPMiddleware, which would wrap the streamed body):
    adds ``x-worker-pid`` to every response's head."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-worker-pid", b"%d" % os.getpid())]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_pid)


app.add_middleware(WorkerPid)
