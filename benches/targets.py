"""The issue's targets, each checked against the figures of this run: the
report's first table."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from metrics import fmt, median_metric, tokens_per_cpu_second
from plan import (
    BASELINES,
    EMBEDDED,
    EMBEDDED_DIR,
    LAG,
    LIVE_READERS,
    MEMORY,
    OUR_VARIANTS,
    OURS,
    PACED,
    RESUME,
    THROUGHPUT_MANY,
    Scenario,
    scenario_of,
)

# The embedded data_dir's CPU per token against in memory, at 100 streams.
DATA_DIR_CPU_GOAL = 1.5


def core_ratios(core: str) -> dict[str, tuple[float, float | None]]:
    """(A)'s ratio and measured ceiling by workload (tokens, chunks), from
    bench_core's report."""
    section = core.split("\n(B) ", 1)[0]
    found = re.findall(
        r"ratio rust/pure-python \[(\w+)\]: ([\d.]+)x.*?(?:= ([\d.]+)x)?$", section, re.M
    )
    return {
        load: (float(ratio), float(ceiling) if ceiling else None) for load, ratio, ceiling in found
    }


def targets(
    plan: Sequence[Scenario], results: dict[tuple[str, str], list[dict[str, Any]]], core: str
) -> list[str]:
    """The issue's targets, each measured in this run: a table."""

    def rows_of(scenario: Scenario | None, peer: str) -> list[dict[str, Any]] | None:
        return results.get((scenario.name, peer)) if scenario else None

    def cpu_ratio_row(scenario: Scenario, peer: str, floor_peer: str, goal: float) -> str:
        """CPU per persisted token of ``peer`` against ``floor_peer``'s, at most ``goal``."""
        cpu = median_metric(rows_of(scenario, peer) or [], "CPU s per 1M tokens")
        floor = median_metric(rows_of(scenario, floor_peer) or [], "CPU s per 1M tokens")
        ratio = cpu / floor if cpu and floor else None
        return (
            f"| CPU per persisted token, {scenario.name}: {peer} / {floor_peer} "
            f"| {f'{ratio:.2f}x' if ratio else '—'} | <= {goal}x "
            f"| {verdict(ratio, goal + 1e-9, False)} |"
        )

    def verdict(value: float | None, goal: float, above: bool) -> str:
        """``above``: the value must exceed the goal (or reach it, for a ratio
        goal above 1); else stay under it."""
        if value is None:
            return "not measured"
        met = (value >= goal if goal > 1 else value > goal) if above else value < goal
        return "met" if met else "**missed**"

    lines = ["| target | measured in this run | goal | |", "| --- | --- | --- | --- |"]
    for load, (core_ratio, ceiling) in core_ratios(core).items():
        bound = f" (measured ceiling {ceiling:.1f}x)" if ceiling is not None else ""
        lines.append(
            # Issue 15 replaced the 20x goal, which the binding's measured
            # ceiling rules out, by CPU per persisted token against raw.
            f"| core accumulate+frame vs pure Python ({load}) | {core_ratio:.1f}x{bound} "
            f"| diagnostic (was >= 20x) | — |"
        )
    many = scenario_of(plan, THROUGHPUT_MANY)
    ours = rows_of(many, OURS)
    ours_efficiency = tokens_per_cpu_second(ours) if ours else None
    for peer, goal in (("node_s2", 3.0), ("s2sdk_producer", 1.0)):
        rows = rows_of(many, peer)
        theirs = tokens_per_cpu_second(rows) if rows else None
        ratio = ours_efficiency / theirs if ours_efficiency and theirs else None
        shown = f"{ratio:.2f}x" if ratio is not None else "—"
        goal_text = f">= {goal:.0f}x" if goal > 1 else "> 1x (ahead)"
        lines.append(
            f"| tokens per CPU-second, {many.name if many else 'many streams'}: ours vs {peer} "
            f"| {shown} | {goal_text} | {verdict(ratio, goal, True)} |"
        )
    # Issue 15: ahead of every peer a user would pick, in each throughput and
    # paced scenario; the best of them (most tokens per CPU-second) stands for all.
    for scenario in plan:
        if not scenario.plain:
            continue
        ours_rows = rows_of(scenario, OURS)
        ours_efficiency = tokens_per_cpu_second(ours_rows) if ours_rows else None
        measured = [
            (efficiency, name)
            for (scenario_name, name), rows in results.items()
            if scenario_name == scenario.name and name not in (OURS, *OUR_VARIANTS, *BASELINES)
            if (efficiency := tokens_per_cpu_second(rows))
        ]
        best_efficiency, best = max(measured, default=(None, "no peer measured"))
        ratio = ours_efficiency / best_efficiency if ours_efficiency and best_efficiency else None
        lines.append(
            f"| tokens per CPU-second, {scenario.name}: ours vs the best other peer ({best}) "
            f"| {f'{ratio:.2f}x' if ratio is not None else '—'} | > 1x (ahead) "
            f"| {verdict(ratio, 1.0, True)} |"
        )
    paced = scenario_of(plan, PACED)
    ours_p99 = median_metric(rows_of(paced, OURS) or [], "latency p99 µs")
    raw_p99 = median_metric(rows_of(paced, "raw") or [], "latency p99 µs")
    handoff_p99 = median_metric(rows_of(paced, "raw_task") or [], "latency p99 µs")
    added = ours_p99 - raw_p99 if ours_p99 is not None and raw_p99 is not None else None
    floor = handoff_p99 - raw_p99 if handoff_p99 is not None and raw_p99 is not None else None
    # Issue 24: within 1.5x of the floor (was: under 100 µs).
    over_floor = added / floor if added is not None and floor else None
    lines.append(
        f"| producer-client added latency p99, {paced.name if paced else 'paced'} "
        f"(ours p99 - raw p99, against the floor: raw_task p99 - raw p99, one task-to-task "
        f"handoff) | {fmt(added)} µs, floor {fmt(floor)} µs: "
        f"{f'{over_floor:.2f}x' if over_floor is not None else '—'} | <= 1.5x "
        f"| {verdict(over_floor, 1.5 + 1e-9, False)} |"
    )
    resume = scenario_of(plan, RESUME)
    first = median_metric(rows_of(resume, OURS) or [], "resume first chunk p50 ms")
    lines.append(
        f"| resume of a finished stream, time to first chunk p50, {resume.name if resume else ''} "
        f"| {fmt(first)} ms | < 5 ms | {verdict(first, 5, False)} |"
    )
    memory = scenario_of(plan, MEMORY)
    per_stream = median_metric(rows_of(memory, OURS) or [], "RSS KiB per in-flight stream")
    raw_per_stream = median_metric(rows_of(memory, "raw") or [], "RSS KiB per in-flight stream")
    net = (
        per_stream - raw_per_stream
        if per_stream is not None and raw_per_stream is not None
        else None
    )
    lines.append(
        f"| RSS per in-flight stream, {memory.name if memory else 'memory'} "
        f"| {fmt(per_stream)} KiB ({fmt(net)} KiB above raw's own) | < 8 KiB "
        f"| {verdict(per_stream, 8, False)} |"
    )
    # Issue 24: close to the floor, CPU per persisted token against raw_task
    # (a source in a task of its own, one task-to-task handoff per token: what
    # keeps real sources safe), at 100 and 1,000 unpaced streams. These
    # replace issue 15's ratios to raw passthrough.
    for scenario in plan:
        if scenario.rate or scenario.streams < 100 or not scenario.name.startswith("throughput"):
            continue
        for peer, goal in ((EMBEDDED, 1.3), (OURS, 2.0)):
            lines.append(cpu_ratio_row(scenario, peer, "raw_task", goal))
    # The data_dir's cost: CPU per token against in memory at 100 streams.
    for scenario in plan:
        if scenario.streams != 100 or not scenario.plain:
            continue
        lines.append(cpu_ratio_row(scenario, EMBEDDED_DIR, EMBEDDED, DATA_DIR_CPU_GOAL))
    # Issue 24: no speed bought with staleness. At the shipped defaults a
    # reader in another context has each token within 250 ms (p99).
    lag = scenario_of(plan, LAG)
    reader_p99 = median_metric(rows_of(lag, OURS) or [], "reader lag p99 ms")
    persistence_p99 = median_metric(rows_of(lag, OURS) or [], "persistence lag p99 ms")
    lines.append(
        f"| live-reader lag p99, {lag.name if lag else 'lag'}: ours, source yield to a reader "
        f"in another context (persistence lag p99 {fmt(persistence_p99)} ms) "
        f"| {fmt(reader_p99)} ms | < 250 ms | {verdict(reader_p99, 250, False)} |"
    )
    live = scenario_of(plan, LIVE_READERS)
    for name in ("CPU s per 1M tokens", "requests per 1k tokens"):
        shared = median_metric(rows_of(live, OURS) or [], name)
        unshared = median_metric(rows_of(live, "resumable_fast_s2_unshared") or [], name)
        saving = unshared / shared if shared and unshared else None
        lines.append(
            f"| {live.name if live else 'live readers'}: {name}, one S2 session per reader / "
            f"one shared | {f'{saving:.1f}x' if saving else '—'} | > 1x "
            f"| {verdict(saving, 1.0, True)} |"
        )
    return lines
