"""The figures of a peer's runs: each run's JSON line as per-token metrics,
their medians over runs, and how a figure prints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def summarize(values: Sequence[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


METRICS = (
    "tokens/s",
    "CPU s per 1M tokens",
    "server CPU s per 1M tokens",
    "latency p50 µs",
    "latency p99 µs",
    "requests per 1k tokens",
    "resume first chunk p50 ms",
    "resume full p50 ms",
    "RSS KiB per in-flight stream",
)
# Measured in the lag scenario only (--lag).
LAGS = (
    "persistence lag p50 ms",
    "persistence lag p99 ms",
    "reader lag p50 ms",
    "reader lag p99 ms",
)
# The lag scenario's table: staleness beside the CPU it costs.
LAG_METRICS = (*LAGS, "CPU s per 1M tokens", "requests per 1k tokens")


def metrics(result: dict[str, Any]) -> dict[str, float | None]:
    if "failed" in result:
        return dict.fromkeys((*METRICS, *LAGS))
    tokens = result["tokens"]
    requests = result.get("requests")
    latency = result.get("latency_us") or {}
    first = result.get("resume_first_chunk_ms") or {}
    full = result.get("resume_full_ms") or {}
    persistence = result.get("persistence_lag_ms") or {}
    reader = result.get("reader_lag_ms") or {}
    return {
        "tokens/s": tokens / result["wall_s"] if result["wall_s"] else None,
        "CPU s per 1M tokens": result["cpu_s"] / tokens * 1e6 if tokens else None,
        "server CPU s per 1M tokens": (
            result["server_cpu_s"] / tokens * 1e6
            if tokens and result.get("server_cpu_s") is not None
            else None
        ),
        "latency p50 µs": latency.get("p50"),
        "latency p99 µs": latency.get("p99"),
        "requests per 1k tokens": requests / tokens * 1000 if requests and tokens else None,
        "resume first chunk p50 ms": first.get("p50"),
        "resume full p50 ms": full.get("p50"),
        "RSS KiB per in-flight stream": (
            result["rss_in_flight_kib"] / result["config"]["streams"]
            if result.get("rss_in_flight_kib") is not None
            else None
        ),
        "persistence lag p50 ms": persistence.get("p50"),
        "persistence lag p99 ms": persistence.get("p99"),
        "reader lag p50 ms": reader.get("p50"),
        "reader lag p99 ms": reader.get("p99"),
    }


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def median_metric(rows: list[dict[str, Any]], name: str) -> float | None:
    values = [v for v in (metrics(row)[name] for row in rows) if v is not None]
    return statistics.median(values) if values else None


def tokens_per_cpu_second(rows: list[dict[str, Any]]) -> float | None:
    cpu = median_metric(rows, "CPU s per 1M tokens")
    return 1e6 / cpu if cpu else None
