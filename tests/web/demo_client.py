"""A client of the demo app for the web tests: start a chat, read its events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from resumable_fast.demo.app import DemoServer


@dataclass
class Event:
    name: str = "message"
    id: str | None = None
    data: list[str] = field(default_factory=list)


@dataclass
class EventLog:
    events: list[Event]
    heartbeats: int

    @property
    def text(self) -> str:
        return "".join(json.loads("\n".join(e.data)) for e in self.events if e.name == "message")

    @property
    def last(self) -> str:
        return self.events[-1].name if self.events else "(none)"


async def read_events(
    http: httpx.AsyncClient,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    on_event: Callable[[Event], Awaitable[None]] | None = None,
    timeout: float = 30.0,
) -> EventLog:
    """Read an SSE response to its end (bounded by ``timeout``)."""
    events: list[Event] = []
    heartbeats = 0

    async def read() -> None:
        nonlocal heartbeats
        async with http.stream("GET", url, headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            current = Event()
            async for line in response.aiter_lines():
                if line == "":
                    if current.data or current.name != "message":
                        events.append(current)
                        if on_event is not None:
                            await on_event(current)
                    current = Event()
                elif line.startswith(":"):
                    heartbeats += 1
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        current.name = value
                    elif name == "id":
                        current.id = value
                    elif name == "data":
                        current.data.append(value)

    await asyncio.wait_for(read(), timeout)
    return EventLog(events, heartbeats)


async def start_chat(http: httpx.AsyncClient, server: DemoServer, prompt: str) -> str:
    response = await http.post(f"{server.url}/api/chat", json={"prompt": prompt})
    assert response.status_code == 201, response.text
    body = response.json()
    stream_id = body["stream_id"]
    assert isinstance(stream_id, str)
    assert body["events_url"] == f"/api/chat/{stream_id}/events"
    return stream_id
