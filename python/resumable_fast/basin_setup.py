"""Basin set-up (``python -m resumable_fast s2 setup``): create the basin the
streams live in, or check an existing one and change what the stream layout
needs.

The layout needs create-on-append and create-on-read (a stream is made by its
first fence; asking about a stream that never started answers "empty"). A
retention policy, when asked for, bounds how long records stay; delete-on-empty
removes the streams that retention or a trim emptied, which S2 would otherwise
keep as empty streams for good.
"""

from __future__ import annotations

from dataclasses import dataclass

from resumable_fast.s2 import S2Client

__all__ = ["DEFAULT_DELETE_ON_EMPTY_SECONDS", "BasinSettings", "set_up_basin"]

DEFAULT_DELETE_ON_EMPTY_SECONDS = 3600
"""How long a stream stays empty before S2 deletes it: long enough that a
stream emptied by retention is not deleted under a reader that just asked."""


@dataclass(frozen=True)
class BasinSettings:
    """What :func:`set_up_basin` makes a basin's configuration say."""

    delete_on_empty_seconds: int = DEFAULT_DELETE_ON_EMPTY_SECONDS
    retention_seconds: int | None = None
    """Records expire this many seconds after they were appended; None leaves
    the basin's retention as it is (S2's default for new basins)."""

    def stream_config(self) -> dict[str, object]:
        """The ``default_stream_config`` fields these settings decide."""
        config: dict[str, object] = {
            "delete_on_empty": {"min_age_secs": self.delete_on_empty_seconds}
        }
        if self.retention_seconds is not None:
            config["retention_policy"] = {"age": self.retention_seconds}
        return config


async def set_up_basin(client: S2Client, basin: str, settings: BasinSettings) -> list[str]:
    """Create ``basin`` with ``settings`` if it is missing, else change the
    fields of its configuration that differ from them; the changes made, one
    line each (none when it was set up already)."""
    wanted_streams = settings.stream_config()
    config = await client.basin_config(basin)
    if config is None:
        await client.create_basin(
            basin,
            create_stream_on_append=True,
            create_stream_on_read=True,
            default_stream_config=wanted_streams,
        )
        described = ", ".join(f"{field} {value}" for field, value in wanted_streams.items())
        return [f"created basin {basin} (create-on-append, create-on-read, {described})"]
    changes: dict[str, object] = {}
    lines: list[str] = []
    for flag in ("create_stream_on_append", "create_stream_on_read"):
        if config.get(flag) is not True:
            changes[flag] = True
            lines.append(f"{flag}: {config.get(flag)} -> True")
    current = config.get("default_stream_config")
    if not isinstance(current, dict):
        current = {}  # S2 answers null for a basin made without one
    stream_changes: dict[str, object] = {}
    for field, value in wanted_streams.items():
        if current.get(field) != value:
            stream_changes[field] = value
            lines.append(f"default_stream_config.{field}: {current.get(field)} -> {value}")
    if stream_changes:
        changes["default_stream_config"] = stream_changes
    if changes:
        await client.reconfigure_basin(basin, changes)
    return lines
