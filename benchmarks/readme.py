"""The README's measured figures, rendered from a benchmark results file.

From the repository root, after a run of ``benchmarks.run``::

    .venv/bin/python -m benchmarks.readme          # reads benchmarks/results/latest.json

prints every table and figure the README quotes from the run; ``tests/test_readme.py`` checks that
the README holds each of them, so the README's numbers are the committed run's, and a new run
reaches the README by pasting this output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import report

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"

COST_CASES = {
    "pcm": "PCM at the output rate (NaturalHD, 16 kHz)",
    "pcm_resampled": "PCM resampled (Qwen3TTS, 24 -> 16 kHz)",
    "mp3": "MP3 (KokoroTTS, 22.05 -> 16 kHz)",
}
"""The CPU cases of the README's cost table, in its order, under the README's names."""


def load(path: Path = LATEST) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text())
    return results


def targets_table(results: dict[str, Any]) -> str:
    """The run's targets, as ``latest.md`` opens with them."""
    goals = report.targets(results)
    lines = ["| target | measured | goal | result |", "|---|---|---|---|"]
    return "\n".join([*lines, *(goal.row() for goal in goals)])


def ttfa_table(results: dict[str, Any]) -> str:
    """Time to first audio of the plugin and the baseline, turn 1 both ways and turns 2+."""
    services = results["latency"]["services"]
    lines = [
        "| client | turn 1, sent at pipeline start | turn 1, after 0.5 s idle "
        "| turns 2+ (p50 / p95, n={n}) |".format(n=services["plugin"]["later"]["ttfa_ms"]["n"]),
        "|---|---|---|---|",
    ]
    names = {"plugin": "this plugin", "baseline": "connect-per-segment baseline"}
    for key, name in names.items():
        s = services[key]
        at_start = f"{s['turn1_at_start']['ttfa_ms']['p50']:.0f}"
        if key == "plugin" and s["turn1_at_start"]["turns_that_waited_for_the_handshake"]:
            at_start += " (paid the first handshake)"
        later = s["later"]["ttfa_ms"]
        lines.append(
            f"| {name} | {at_start} | {s['turn1_after_idle']['ttfa_ms']['p50']:.0f} "
            f"| {later['p50']:.1f} / {later['p95']:.1f} |"
        )
    return "\n".join(lines)


def baseline_ratio(results: dict[str, Any]) -> str:
    """How much longer the baseline's first audio takes after turn 1, as the README words it."""
    ratio = results["latency"]["ratios_baseline_over_plugin"]["later"]["p50"]
    return f"{ratio:.2f}x the plugin's first-audio time after turn 1"


def _largest_real_time(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    real = [s for s in steps if s["real_time"]]
    return max(real, key=lambda s: s["sessions"]) if real else None


def _measured_cell(results: dict[str, Any], case: str) -> str:
    sessions = results["cpu"]["sessions"].get(case)
    if not sessions:
        return "not measured"
    steps = sessions["steps"]
    best = _largest_real_time(steps)
    if best is None:
        return f"not real time at {min(s['sessions'] for s in steps)} sessions"
    cell = (
        f"{best['sessions']} sessions in real time at {best['cpu_utilization']:.0%} of the core, "
        f"{best['rss_per_session_mib']:.2f} MiB each"
    )
    beyond = [s for s in steps if s["sessions"] > best["sessions"]]
    if beyond:
        cell += f"; not at {min(s['sessions'] for s in beyond)}"
    else:
        cell += f"; {best['sessions']} was the sweep's cap"
    return cell


def cost_table(results: dict[str, Any]) -> str:
    """What the TTS client costs per second of audio, derived and measured on one core."""
    per_second = results["cpu"]["per_audio_second"]
    lines = [
        "| audio path | client CPU per second of audio | real-time sessions per core, derived "
        "| measured on one core |",
        "|---|---|---|---|",
    ]
    for case, name in COST_CASES.items():
        c = per_second[case]
        lines.append(
            f"| {name} | {c['cpu_ms_per_audio_second']:.1f} ms "
            f"| {c['sessions_per_core_derived']:.0f} | {_measured_cell(results, case)} |"
        )
    return "\n".join(lines)


def cpu_budget(results: dict[str, Any]) -> str:
    """The per-call CPU figures, in the words of the README's budget."""
    c = results["cpu"]["per_audio_second"]
    return (
        f"about {c['pcm']['cpu_ms_per_audio_second']:.1f} ms per second of audio for PCM at the\n"
        f"  pipeline's rate, {c['pcm_resampled']['cpu_ms_per_audio_second']:.1f} ms when it is "
        f"resampled, and {c['mp3']['cpu_ms_per_audio_second']:.1f} ms for MP3 voices\n"
        "  (KokoroTTS, or any voice answering in MP3), of which the MP3 decoder alone takes "
        f"{c['mp3']['decoder_only_ms_per_audio_second']:.1f} ms"
    )


def pipecat_share(results: dict[str, Any]) -> str:
    """The share of the MP3 client's CPU spent in pipecat, from the run's profile."""
    share = results["cpu"]["per_audio_second"]["mp3_profile"]["share_by_bucket"]["pipecat"]
    return f"{share:.0%} of the MP3 client's CPU is pipecat's"


def context_table(results: dict[str, Any]) -> str:
    """The context benchmark's table, as ``latest.md`` has it."""
    lines = report._context_md(results["context"])
    start = next(i for i, line in enumerate(lines) if line.startswith("| behaviour |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


def stt_table(results: dict[str, Any]) -> str:
    """STT's end of speech to final and the whole turn, beside the TTS's first audio."""
    return report.stt_table(results)


def whole_turn(results: dict[str, Any]) -> str:
    """What the whole turn adds to the TTS's own first audio."""
    return report.turn_comparison(results["turn"], results["latency"])


def stt_sessions(results: dict[str, Any]) -> str:
    """STT sessions per core."""
    return report.stt_sessions_line(results["stt_sessions"])


FIGURES = {
    "targets": targets_table,
    "time to first audio": ttfa_table,
    "baseline ratio": baseline_ratio,
    "client cost": cost_table,
    "CPU budget": cpu_budget,
    "pipecat share": pipecat_share,
    "context": context_table,
    "speech to text": stt_table,
    "whole turn": whole_turn,
    "STT sessions": stt_sessions,
}
"""Every figure the README quotes from a run, by name."""


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.readme",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results", nargs="?", type=Path, default=LATEST, help="a results JSON")
    ns = parser.parse_args()
    results = load(ns.results)
    for name, render in FIGURES.items():
        print(f"{name}:\n\n{render(results)}\n")


if __name__ == "__main__":
    main()
