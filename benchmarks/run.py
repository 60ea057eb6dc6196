"""Run every benchmark against the emulator and report them against the targets.

From the repository root::

    .venv/bin/python -m benchmarks.run                   # full run, about 21 minutes
    .venv/bin/python -m benchmarks.run --quick           # smoke-sized run, a few minutes
    .venv/bin/python -m benchmarks.run --only context    # one part
    .venv/bin/python -m benchmarks.run --only cost       # connection cost, before and after
    .venv/bin/python -m benchmarks.run --only stt --only stt_sessions --only turn --merge
                                                         # the STT parts, into the last results

Writes ``benchmarks/results/latest.{json,md,png}`` and prints the Markdown table; ``--merge``
keeps the parts of the last ``latest.json`` this run does not measure. Exits 1 when a target is
missed. Speed goals are judged here, on medians and ratios measured in one run, never
in unit tests: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from loguru import logger

from benchmarks import connection_cost, report
from benchmarks.bargein import BargeInConfig, run_bargein
from benchmarks.connection_cost import CostConfig, run_cost
from benchmarks.context import ContextConfig, run_context
from benchmarks.cpu import CpuConfig, run_cpu
from benchmarks.latency import LatencyConfig, run_latency
from benchmarks.stt_latency import SttLatencyConfig, run_stt_latency
from benchmarks.stt_sessions import SttSessionsConfig, run_stt_sessions
from benchmarks.whole_turn import TurnConfig, run_whole_turn
from pipecat_telnyx_tts.emulator import Faults

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("latency", "bargein", "cpu")
"""The first-audio, barge-in and CPU parts, which ``tests/test_benchmarks.py`` runs at the TINY
size."""
STT_PARTS = ("stt", "stt_sessions", "turn")
"""End of speech to final, STT sessions per core, and the whole turn on the fake call, which
``tests/test_stt_benchmark.py`` runs at the TINY size."""
CHOICES = (*PARTS, "context", "cost", *STT_PARTS)
"""Every part ``--only`` takes; a run without ``--only`` runs them all."""


@dataclass(frozen=True)
class Plan:
    """The size of every part of a run."""

    latency: LatencyConfig = field(default_factory=LatencyConfig)
    bargein: BargeInConfig = field(default_factory=BargeInConfig)
    cpu: CpuConfig = field(default_factory=CpuConfig)
    context: ContextConfig = field(default_factory=ContextConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    stt: SttLatencyConfig = field(default_factory=SttLatencyConfig)
    stt_sessions: SttSessionsConfig = field(default_factory=SttSessionsConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)


FULL = Plan(latency=LatencyConfig(sessions=6, turns=6))
QUICK = Plan(
    latency=LatencyConfig(sessions=2, turns=2),
    bargein=BargeInConfig(barge_ins=20, block=10),
    cpu=CpuConfig(turns=3, repeats=2, sweep=(100,), sweep_cases=("pcm",), sweep_seconds=3),
    context=ContextConfig(runs_per_behaviour=32, concurrency=16),
    cost=connection_cost.QUICK,
    stt=SttLatencyConfig(turns=6),
    stt_sessions=SttSessionsConfig(sessions=5, seconds=6.0),
    turn=TurnConfig(turns=4),
)
TINY = Plan(
    latency=LatencyConfig(
        sessions=2,
        turns=2,
        sentences=1,
        gap=0.05,
        idle_before_first_turn=0.2,
        faults=Faults.fast(upgrade_delay=0.1, first_audio_delay=0.1, pace=4.0),
    ),
    bargein=BargeInConfig(barge_ins=6, block=3, sentences=2),
    cpu=CpuConfig(
        turns=2,
        turn_seconds=2.0,
        repeats=1,
        sweep=(3,),
        sweep_cases=("pcm",),
        sweep_warmup=1.0,
        sweep_seconds=1.5,
    ),
    context=ContextConfig(runs_per_behaviour=12, concurrency=12),
    cost=connection_cost.TINY,
    stt=SttLatencyConfig(turns=2, gap=0.3),
    stt_sessions=SttSessionsConfig(sessions=2, seconds=1.0),
    turn=TurnConfig(turns=2, gap=0.5),
)
"""For the smoke test: every code path, in seconds; its numbers mean nothing."""


async def run(plan: Plan, parts: tuple[str, ...], command: str) -> dict[str, Any]:
    """Run the chosen parts and return every result, with what ran where."""
    started = time.perf_counter()
    results: dict[str, Any] = {}

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s]{message}", flush=True)

    if "latency" in parts:
        results["latency"] = await run_latency(plan.latency, progress)
    if "bargein" in parts:
        results["bargein"] = await run_bargein(plan.bargein, progress)
    if "cpu" in parts:
        results["cpu"] = await run_cpu(plan.cpu, progress)
    if "context" in parts:
        results["context"] = await run_context(plan.context, progress)
    if "cost" in parts:
        results["cost"] = await run_cost(plan.cost, progress)
    if "stt" in parts:
        results["stt"] = await run_stt_latency(plan.stt, progress)
    if "stt_sessions" in parts:
        results["stt_sessions"] = await run_stt_sessions(plan.stt_sessions, progress)
    if "turn" in parts:
        results["turn"] = await run_whole_turn(plan.turn, progress)
    results["meta"] = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "pipecat": version("pipecat-ai"),
        "cpus": os.cpu_count(),
        "duration_s": round(time.perf_counter() - started, 1),
    }
    return results


def merge(previous: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    """``results`` over the parts of ``previous`` it did not measure: the run that measured
    those stays the results' ``meta``, and this one is listed in its ``updates`` with its
    parts (an earlier update keeps only the parts not measured again). The targets are judged
    again, on the merged results."""
    merged = {k: v for k, v in previous.items() if k not in ("meta", "targets")}
    meta = dict(previous["meta"])
    update = dict(results.pop("meta"))
    update["parts"] = sorted(results)
    older = [
        {**u, "parts": [p for p in u["parts"] if p not in results]} for u in meta.get("updates", [])
    ]
    meta["updates"] = [*(u for u in older if u["parts"]), update]
    merged.update(results)
    merged["meta"] = meta
    return merged


def main(argv: list[str] | None = None) -> int:
    """Run, write the results, print the table; 1 when a target is missed."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.* go")
    parser.add_argument(
        "--only", action="append", choices=CHOICES, help="run only this part (repeatable)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the parts of the last latest.json in --out that this run does not measure",
    )
    ns = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    command = "python -m benchmarks.run" + (" --quick" if ns.quick else "")
    command += "".join(f" --only {part}" for part in ns.only or ())
    command += " --merge" if ns.merge else ""
    results = asyncio.run(run(QUICK if ns.quick else FULL, tuple(ns.only or CHOICES), command))
    if ns.merge and (ns.out / "latest.json").exists():
        results = merge(json.loads((ns.out / "latest.json").read_text()), results)
    text, goals = report.write(results, ns.out)
    print()
    print(text)
    return 0 if all(t.met for t in goals) else 1


if __name__ == "__main__":
    raise SystemExit(main())
