"""``python -m resumable_fast s2 setup`` against s2-lite: it creates a missing
basin, repairs one that differs, and changes nothing when it is set up."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from resumable_fast import S2Config
from resumable_fast.cli import main
from resumable_fast.s2 import S2Client

from conftest import S2Lite


def _use(server: S2Lite, basin: str, monkeypatch: pytest.MonkeyPatch) -> S2Config:
    for name, value in {**server.env(), "S2_BASIN": basin}.items():
        monkeypatch.setenv(name, value)
    return S2Config.from_options()


def _config_of(config: S2Config) -> dict[str, Any] | None:
    async def read() -> dict[str, Any] | None:
        client = S2Client(config)
        try:
            return await client.basin_config(config.basin)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_setup_creates_a_missing_basin_then_finds_nothing_to_change(
    s2lite: S2Lite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _use(s2lite, f"setup-{uuid.uuid4().hex[:12]}", monkeypatch)
    assert _config_of(config) is None

    assert main(["s2", "setup", "--retention-seconds", "86400"]) == 0
    assert f"created basin {config.basin}" in capsys.readouterr().out
    created = _config_of(config)
    assert created is not None
    assert created["create_stream_on_append"] is True
    assert created["create_stream_on_read"] is True
    assert created["default_stream_config"]["retention_policy"] == {"age": 86400}
    assert created["default_stream_config"]["delete_on_empty"] == {"min_age_secs": 3600}

    assert main(["s2", "setup", "--retention-seconds", "86400"]) == 0
    assert capsys.readouterr().out.strip() == "basin already set up: nothing changed"
    assert _config_of(config) == created


def test_setup_changes_what_differs_in_an_existing_basin(
    s2lite: S2Lite, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _use(s2lite, f"setup-{uuid.uuid4().hex[:12]}", monkeypatch)

    async def create_strict() -> None:
        client = S2Client(config)
        try:
            await client.create_basin(
                config.basin,
                create_stream_on_append=False,
                create_stream_on_read=True,
                default_stream_config={"retention_policy": {"age": 600}},
            )
        finally:
            await client.aclose()

    asyncio.run(create_strict())

    assert main(["s2", "setup", "--delete-on-empty-seconds", "60"]) == 0
    out = capsys.readouterr().out
    assert "create_stream_on_append: False -> True" in out
    assert "create_stream_on_read" not in out
    assert "default_stream_config.delete_on_empty: None -> {'min_age_secs': 60}" in out
    assert "retention_policy" not in out  # not asked for: left as it was
    changed = _config_of(config)
    assert changed is not None
    assert changed["create_stream_on_append"] is True
    assert changed["default_stream_config"]["retention_policy"] == {"age": 600}
    assert changed["default_stream_config"]["delete_on_empty"] == {"min_age_secs": 60}


def test_setup_without_a_basin_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("S2_BASIN", raising=False)
    assert main(["s2", "setup"]) == 2
    assert "S2_BASIN" in capsys.readouterr().err
