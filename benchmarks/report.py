"""Targets, and the results as JSON, a Markdown table for the README and a PNG chart."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

from benchmarks import accuracy, connection_cost

matplotlib.use("Agg")
import matplotlib.pyplot as plt

OVERHEAD_P50_MS = 5.0
FORCE_MS = 10.0
MP3_CPU_MS = 5.0
SESSIONS_PER_CORE = 100
CONTEXT_DIFF_P50 = 1
CONTEXT_DIFF_P95 = 3
"""Words between what the assistant context records after a barge-in and what was heard."""


@dataclass(frozen=True)
class Target:
    """One goal of issue #5 and what this run measured for it."""

    name: str
    measured: float | None
    goal: str
    met: bool
    unit: str = ""

    def row(self) -> str:
        value = "n/a" if self.measured is None else f"{round(self.measured, 2):g}{self.unit}"
        return f"| {self.name} | {value} | {self.goal} | {'PASS' if self.met else 'MISS'} |"


def _le(value: float | None, limit: float) -> bool:
    return value is not None and value <= limit


def targets(results: dict[str, Any]) -> list[Target]:
    """Every target against what this run measured; a part that did not run is a MISS."""
    out: list[Target] = []
    latency = results.get("latency")
    if latency:
        overhead = latency["services"]["plugin"]["later"]["overhead_ms"]["p50"]
        out.append(
            Target(
                "First-audio overhead after turn 1, p50 (TTFA - injected floor)",
                overhead,
                f"<= {OVERHEAD_P50_MS:g} ms",
                _le(overhead, OVERHEAD_P50_MS),
                " ms",
            )
        )
    bargein = results.get("bargein")
    if bargein:
        for q in ("p50", "p95"):
            force = bargein["force_ms"][q]
            out.append(
                Target(
                    f"InterruptionFrame -> force on the wire, {q}",
                    force,
                    f"<= {FORCE_MS:g} ms",
                    _le(force, FORCE_MS),
                    " ms",
                )
            )
        stale = bargein["stale_frames"]
        out.append(
            Target(
                f"Stale frames over {len(bargein['barge_ins'])} randomized barge-ins",
                stale,
                "0",
                stale == 0 and not bargein["errors"],
            )
        )
    cpu = results.get("cpu")
    if cpu:
        per_second = cpu["per_audio_second"]
        mp3 = max(per_second[k]["cpu_ms_per_audio_second"] for k in ("mp3", "mp3_phone"))
        out.append(
            Target(
                "MP3 client CPU per second of audio (worst MP3 case)",
                mp3,
                f"<= {MP3_CPU_MS:g} ms",
                _le(mp3, MP3_CPU_MS),
                " ms",
            )
        )
        derived = min(
            v["sessions_per_core_derived"] for k, v in per_second.items() if k != "mp3_profile"
        )
        out.append(
            Target(
                "Real-time sessions per core, derived (1000 / CPU ms, worst format)",
                derived,
                f">= {SESSIONS_PER_CORE}",
                derived >= SESSIONS_PER_CORE,
            )
        )
        sweeps = cpu["sessions"]
        if sweeps:
            measured = min(s["max_real_time_sessions"] for s in sweeps.values())
            capped = all(s["reached_cap"] for s in sweeps.values())
            out.append(
                Target(
                    "Real-time sessions on one core, measured (worst format"
                    + (", cap of the sweep" if capped else "")
                    + ")",
                    measured,
                    f">= {SESSIONS_PER_CORE}",
                    measured >= SESSIONS_PER_CORE,
                )
            )
    context = results.get("context")
    if context:
        out += _context_targets(context)
    cost = results.get("cost")
    if cost:
        # Judged on the last variant, the service as it is now; the others are for comparison.
        last = cost["config"]["variants"][-1]["name"]
        out += [
            Target(g.name, g.measured, g.goal, g.met) for g in connection_cost.goals(cost, last)
        ]
    return out


def _context_targets(context: dict[str, Any]) -> list[Target]:
    """Targets of the word-timestamp behaviour; MISS while it did not run."""
    row = next(
        (r for r in context["summary"] if r["behaviour"] == "new" and r["dimension"] == "all"),
        None,
    )
    clean = row is not None and not context["diagnostics"]["new"]["runs_with_errors"]
    diff = row["abs_diff"] if row else {}
    p50, p95 = diff.get("p50"), diff.get("p95")
    unstarted = row["unstarted_pct"] if row else None
    exact = row["exact_pct"] if row else None
    name = "Context after a barge-in, word timestamps"
    return [
        Target(
            f"{name}: words recorded minus words heard, absolute, p50",
            p50,
            f"<= {CONTEXT_DIFF_P50}",
            _le(p50, CONTEXT_DIFF_P50),
        ),
        Target(
            f"{name}: words recorded minus words heard, absolute, p95",
            p95,
            f"<= {CONTEXT_DIFF_P95}",
            _le(p95, CONTEXT_DIFF_P95),
        ),
        Target(
            f"{name}: barge-ins recording a sentence that had not started playing",
            unstarted,
            "0 %",
            clean and unstarted == 0,
            " %",
        ),
        Target(
            f"{name}: uninterrupted replies recorded exactly, once",
            exact,
            "100 %",
            clean and exact == 100,
            " %",
        ),
        *_context_row_targets(context),
    ]


def _context_row_targets(context: dict[str, Any]) -> list[Target]:
    """The per-row accuracy targets, as one target: rows that miss them. Results written before
    the rows were judged (no ``verdicts``) keep the targets they had."""
    if "verdicts" not in context:
        return []
    judged = context["verdicts"]
    missed = sum(not v["passed"] for v in judged)
    return [
        Target(
            "Context after a barge-in, word timestamps: rows (all, each value of each dimension) "
            f"missing p95 <= {accuracy.ABS_DIFF_P95}, max <= {accuracy.ABS_DIFF_MAX}, "
            "0 % unstarted, 100 % exact",
            missed,
            f"0 of {len(judged)}",
            missed == 0,
        )
    ]


# --------------------------------------------------------------------------- Markdown


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _latency_md(latency: dict[str, Any]) -> list[str]:
    faults = latency["config"]["faults"]
    lines = [
        "",
        f"**Time to first audio** ({latency['measured_from']} -> {latency['measured_to']}; "
        f"emulator: upgrade {1000 * faults['upgrade_delay']:g} ms, first audio "
        f"{1000 * faults['first_audio_delay']:g} ms, pace {faults['pace']}, chunks "
        f"{faults['chunk_ms']} ms; injected floor {latency['floor_ms']['p50']:g} ms):",
        "",
        "| service | turns | n | TTFA p50 | TTFA p95 | overhead p50 | overhead p95 "
        "| waited for a handshake |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {
        "turn1_at_start": "turn 1, sent at pipeline start",
        "turn1_after_idle": "turn 1, after 0.5 s idle",
        "later": "turns 2+",
    }
    for service in ("plugin", "baseline"):
        for group, label in names.items():
            g = latency["services"][service][group]
            lines.append(
                f"| {service} | {label} | {g['ttfa_ms']['n']} | {_ms(g['ttfa_ms']['p50'])} "
                f"| {_ms(g['ttfa_ms']['p95'])} | {_ms(g['overhead_ms']['p50'])} "
                f"| {_ms(g['overhead_ms']['p95'])} | {g['turns_that_waited_for_the_handshake']}"
                f"/{g['ttfa_ms']['n']} |"
            )
    ratios = latency["ratios_baseline_over_plugin"]
    later = latency["services"]["plugin"]["later"]
    lines += [
        "",
        f"Baseline (connect per segment) TTFA / plugin TTFA: turns 2+ "
        f"p50 {ratios['later']['p50']}x, p95 {ratios['later']['p95']}x; turn 1 "
        f"p50 {ratios['turn1']['p50']}x, p95 {ratios['turn1']['p95']}x.",
        f"Plugin turns 2+, where the overhead goes (p50): client to wire "
        f"{_ms(later['to_wire_ms']['p50'])} ms (pipecat aggregating tokens until the first "
        f"sentence is complete {_ms(later['aggregation_ms']['p50'])} ms, that sentence through "
        f"the service, loopback and the emulator's receive loop {_ms(later['send_ms']['p50'])} "
        "ms), emulator beyond its floor "
        f"{_ms(later['server_excess_ms']['p50'])} ms, wire to pipeline "
        f"{_ms(later['from_wire_ms']['p50'])} ms.",
    ]
    return lines


def _bargein_md(bargein: dict[str, Any]) -> list[str]:
    force, stop = bargein["force_ms"], bargein["audio_stop_ms"]
    outcomes = ", ".join(f"{k} {v}" for k, v in bargein["outcomes"].items())
    return [
        "",
        f"**Barge-in** ({len(bargein['barge_ins'])} randomized: pace "
        f"{'/'.join(f'{p:g}' for p in bargein['config']['paces'])}x, chunks "
        f"{'/'.join(str(c) for c in bargein['config']['chunk_ms'])} ms, 0-"
        f"{bargein['config']['max_frames_after_force']} frames after force, "
        f"{bargein['next_turn_at_once']} followed at once by the next reply):",
        "",
        "| measure | n | p50 | p95 | max |",
        "|---|---|---|---|---|",
        f"| InterruptionFrame -> force on the wire (ms) | {force['n']} | {_ms(force['p50'])} "
        f"| {_ms(force['p95'])} | {_ms(force['max'])} |",
        f"| InterruptionFrame -> last audio of the interrupted turn (ms) | {stop['n']} "
        f"| {_ms(stop['p50'])} | {_ms(stop['p95'])} | {_ms(stop['max'])} |",
        "",
        f"Stale frames downstream after the InterruptionFrame: {bargein['stale_frames']}. "
        f"Frames the emulator sent after a force (dropped by the client): "
        f"{bargein['dropped_by_client']}. Interrupted before any audio: "
        f"{bargein['interrupted_before_first_audio']}. Outcomes: {outcomes}.",
    ]


def _cpu_md(cpu: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "**Client CPU** (emulator in another process; median of "
        f"{cpu['config']['repeats']} pipelines, {cpu['config']['turns']} turns of "
        f"{cpu['config']['turn_seconds']:g} s each):",
        "",
        "| path | CPU ms per audio s | of which decoder alone | sessions per core (derived) |",
        "|---|---|---|---|",
    ]
    for key, case in cpu["per_audio_second"].items():
        if key == "mp3_profile":
            continue
        lines.append(
            f"| {case['label']} | {case['cpu_ms_per_audio_second']:.3f} "
            f"| {case['decoder_only_ms_per_audio_second']:.3f} "
            f"| {case['sessions_per_core_derived']:.0f} |"
        )
    split = cpu["per_audio_second"]["mp3_profile"]["share_by_bucket"]
    lines += [
        "",
        "MP3 client CPU by where it is spent (cProfile, own CPU time): "
        + ", ".join(f"{k} {v:.0%}" for k, v in split.items())
        + ".",
    ]
    sweeps = cpu["sessions"]
    if sweeps:
        lines += [
            "",
            "**Concurrent sessions on one core** (client and emulator pinned to separate CPUs; "
            "real-time pacing; real time = the client's core below "
            f"{cpu['config']['max_cpu_utilization']:.0%} and no session failing; lag, delay and "
            "TTFA are reported, not judged: they also measure the machine's other load, shown as "
            "the event loop's wait for a CPU, and the emulator):",
            "",
            "| path | N | client CPU | waited for a CPU | loop lag p99 / max (ms) "
            "| client delay p99 / max (ms) | TTFA p50 under load (ms) | emulator CPU "
            "| RSS per session (MiB) | real time |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for key, sweep in sweeps.items():
            for step in sweep["steps"]:
                delay = step.get("client_delay_ms")
                delay_text = f"{_ms(delay['p99'])} / {_ms(delay['max'])}" if delay else "n/a"
                lines.append(
                    f"| {key} | {step['sessions']} | {step['cpu_utilization']:.0%} "
                    f"| {step['run_queue_wait_share']:.1%} "
                    f"| {_ms(step['loop_lag_ms']['p99'])} / {_ms(step['loop_lag_ms']['max'])} "
                    f"| {delay_text} | {_ms(step['ttfa_ms']['p50'])} "
                    f"| {step['emulator_cpu_utilization']:.0%} "
                    f"| {step['rss_per_session_mib']:.2f} "
                    f"| {'yes' if step['real_time'] else 'no'} |"
                )
    return lines


def _words(p: dict[str, Any], keys: tuple[str, ...]) -> str:
    return " / ".join("n/a" if p[k] is None else f"{p[k]:g}" for k in keys)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} %"


def _context_md(context: dict[str, Any], command: str | None = None) -> list[str]:
    config = context["config"]
    faults = config["faults"]
    names = {"old": "old (sentence text frames)", "new": "new (word timestamps)"}
    lines = [
        "",
        f"**Assistant context after a barge-in** ({config['runs_per_behaviour']} replies per "
        f"behaviour, {config['concurrency']} pipelines at once, audio played in real time; "
        f"signal {context['signal']}, ground truth: {context['ground_truth']}; emulator: first "
        f"audio {1000 * faults['first_audio_delay']:g} ms, pace {faults['pace']}x, sentence "
        f"pauses {faults['sentence_pause_ms']} ms, MP3 in {faults['mp3_files']} files; about one "
        f"reply in {config['uninterrupted_every']} not interrupted; device buffer "
        f"{config['device_buffer_ms']} ms; client event-loop lag p50 / p99 / max "
        f"{_words(context['loop_lag_ms'], ('p50', 'p99', 'max'))} ms). Words recorded by the "
        "LLMContext minus words heard, over the barge-ins; runs whose device sat silent over "
        f"{context['starved_limit_ms']:g} ms with audio waiting (a late event loop) are left out "
        "with their pair:",
        "",
        "| behaviour | runs | barge-ins | over p50 / p95 / max | under p50 / p95 / max "
        "| abs diff p50 / p95 | recorded a sentence not yet playing | uninterrupted exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in context["summary"]:
        label = (
            names.get(row["behaviour"], row["behaviour"])
            if row["dimension"] == "all"
            else f"{row['behaviour']}, {row['dimension']} {row['value']}"
        )
        exact = (
            f"{_share(row['exact_pct'])} of {row['uninterrupted']}" if row["uninterrupted"] else "-"
        )
        runs = f"{row['runs']}" + (f" (-{row['excluded']})" if row["excluded"] else "")
        lines.append(
            f"| {label} | {runs} | {row['barge_ins']} "
            f"| {_words(row['over'], ('p50', 'p95', 'max'))} "
            f"| {_words(row['under'], ('p50', 'p95', 'max'))} "
            f"| {_words(row['abs_diff'], ('p50', 'p95'))} "
            f"| {_share(row['unstarted_pct'])} | {exact} |"
        )
    lines.append("")
    for behaviour, d in context["diagnostics"].items():
        error, per_sentence = d["timeline_error_ms"], d["text_frames_per_sentence_complete"]
        lines.append(
            f"{names.get(behaviour, behaviour)}: barge-ins after the reply had ended "
            f"{d['barge_ins_after_end']}; text frames reaching the context after the "
            f"interruption {d['late_text_frames']}; barge-ins with LLM tokens processed by the "
            f"TTS after the interruption {d['runs_with_tokens_after_interruption']} (the "
            f"cancelled reply's end frame after it {d['end_frame_after_interruption']}); recorded "
            f"text not a prefix of the reply {d['recorded_not_a_prefix']}; complete replies, "
            f"text frames per sentence p50 {_words(per_sentence, ('p50',))}, played audio "
            f"minus timeline p50 / max {_words(error, ('p50', 'max'))} ms; device silent with "
            f"audio waiting (late writes) p95 / max "
            f"{_words(d['device_starved_ms'], ('p95', 'max'))} ms; "
            f"runs with errors {d['runs_with_errors']}; starved runs {d['runs_starved']}, left "
            f"out with their pairs {d['excluded_with_their_pair']} (with them: abs diff p50 / p95 "
            f"{_words(d['all_runs_abs_diff'], ('p50', 'p95'))}, recorded a sentence not yet "
            f"playing {_share(d['all_runs_unstarted_pct'])})."
        )
    if "verdicts" in context:
        lines += _context_verdicts_md(context, command)
    return lines


def _context_verdicts_md(context: dict[str, Any], command: str | None) -> list[str]:
    """The accuracy targets judged on every row of the word-timestamp behaviour."""
    rows = {
        (r["dimension"], r["value"]): r
        for r in context["summary"]
        if r["behaviour"] == accuracy.BEHAVIOUR
    }
    ran = f"`.venv/bin/{command}`" if command else "this run"
    lines = [
        "",
        f"**Accuracy targets per row, word timestamps** ({ran}): abs diff p95 <= "
        f"{accuracy.ABS_DIFF_P95} and max <= {accuracy.ABS_DIFF_MAX} words, no barge-in "
        "recording a sentence not yet playing, every uninterrupted reply exact:",
        "",
        "| row | barge-ins | under p50 / p95 / max | over p50 / p95 / max "
        "| abs diff p50 / p95 / max | unstarted | exact | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in context["verdicts"]:
        row = rows[v["dimension"], v["value"]]
        label = "all" if v["dimension"] == "all" else f"{v['dimension']} {v['value']}"
        exact = (
            f"{_share(row['exact_pct'])} of {row['uninterrupted']}" if row["uninterrupted"] else "-"
        )
        result = "PASS" if v["passed"] else f"MISS ({'; '.join(v['missed'])})"
        lines.append(
            f"| {label} | {row['barge_ins']} "
            f"| {_words(row['under'], ('p50', 'p95', 'max'))} "
            f"| {_words(row['over'], ('p50', 'p95', 'max'))} "
            f"| {_words(row['abs_diff'], ('p50', 'p95', 'max'))} "
            f"| {_share(row['unstarted_pct'])} | {exact} | {result} |"
        )
    truth = context["diagnostics"].get(accuracy.BEHAVIOUR, {}).get("ground_truth_by_speech", {})
    if truth:
        lines += [
            "",
            "Ground truth per speech timing (word timestamps): "
            + "; ".join(
                f"{speech}: misaligned {t['misaligned']}, played audio minus timeline p50 / max "
                f"{_words(t['timeline_error_ms'], ('p50', 'max'))} ms"
                for speech, t in truth.items()
            )
            + ".",
        ]
    return lines


def _p(stats: dict[str, Any], q: str) -> str:
    return _ms(stats[q])


def stt_table(results: dict[str, Any]) -> str:
    """STT and the whole turn beside the TTS's time to first audio: one row per part run."""
    lines = ["| measure (ms) | n | p50 | p95 |", "|---|---|---|---|"]
    stt = results.get("stt")
    if stt:
        s = stt["vad_stop_to_final_ms"]
        lines.append(
            f"| STT: caller's end of speech (VAD stop) -> final transcript, above the "
            f"emulator's {stt['emulator_floor_ms']:g} ms floor | {s['n']} | {_p(s, 'p50')} "
            f"| {_p(s, 'p95')} |"
        )
    turn = results.get("turn")
    if turn:
        s = turn["stop_to_first_audio_ms"]
        lines.append(
            "| whole turn: caller stops speaking -> bot's first audio, fake call with Telnyx "
            f"STT and TTS | {s['n']} | {_p(s, 'p50')} | {_p(s, 'p95')} |"
        )
    latency = results.get("latency")
    if latency:
        s = latency["services"]["plugin"]["later"]["ttfa_ms"]
        lines.append(
            f"| TTS alone: reply's first text -> first audio, turns 2+ | {s['n']} "
            f"| {_p(s, 'p50')} | {_p(s, 'p95')} |"
        )
    return "\n".join(lines)


def stt_sessions_line(sessions: dict[str, Any]) -> str:
    """STT sessions per core, in one sentence."""
    return (
        f"STT client CPU: {sessions['sessions']} callers streaming "
        f"{sessions['audio_seconds_each']:g} s of audio each at real time kept "
        f"{sessions['client_cores_busy']:g} of a core busy "
        f"({sessions['cpu_percent_per_session']:g} % per session): "
        f"{sessions['sessions_per_core']:g} STT sessions per core."
    )


def _stt_md(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "**Speech to text and the whole turn** (STT: `TelnyxSTTService` in a pipeline, the "
        "caller's audio at real time at 8 kHz, endpointing off so that each utterance ends at "
        "the `Finalize` sent at the VAD stop; the emulator adds no delay, so the figure is "
        "overhead above its floor):",
        "",
        stt_table(results),
    ]
    stt = results.get("stt")
    if stt:
        lines += ["", f"STT transcripts exact: {stt['exact_transcripts']}/{stt['turns']}."]
    turn = results.get("turn")
    if turn:
        lines += _turn_md(turn, results.get("latency"))
    sessions = results.get("stt_sessions")
    if sessions:
        lines += [
            "",
            stt_sessions_line(sessions)
            + " (Emulator in another process, answering from a script; VAD frames as a VAD "
            f"pushes them; {sessions['finals']} finals.)",
        ]
    return lines


def turn_comparison(turn: dict[str, Any], latency: dict[str, Any]) -> str:
    """What the whole turn adds to the TTS's own time to first audio, in words."""
    whole = turn["stop_to_first_audio_ms"]
    tts = latency["services"]["plugin"]["later"]["ttfa_ms"]
    return (
        f"What the rest of the turn adds to the TTS alone: the whole turn's p50 "
        f"{_ms(whole['p50'])} ms is {_ms(whole['p50'] - tts['p50'])} ms above the TTS-only time "
        f"to first audio ({_ms(tts['p50'])} ms, same TTS emulator timing), its p95 "
        f"{_ms(whole['p95'] - tts['p95'])} ms above; the STT's final came "
        f"{_ms(turn['stop_to_final_ms']['p50'])} ms (p50) after the caller stopped, and the "
        f"user's turn reached the LLM {_ms(turn['stop_to_llm_ms']['p50'])} ms (p50, p95 "
        f"{_ms(turn['stop_to_llm_ms']['p95'])} ms) after it: that wait is pipecat's turn "
        "detection (the VAD's stop time, the smart-turn model, and its wait for the STT when "
        "the final is not marked finalized), not the STT's."
    )


def _turn_md(turn: dict[str, Any], latency: dict[str, Any] | None) -> list[str]:
    faults = turn["config"]["faults"]
    rows = {
        "stop_to_first_audio_ms": "caller stops speaking -> bot's first audio on the line",
        "stop_to_final_ms": "caller stops speaking -> the STT's final",
        "stop_to_llm_ms": "caller stops speaking -> the user's turn reaches the LLM",
        "llm_to_first_sentence_ms": "the user's turn at the LLM -> its first sentence out",
        "first_sentence_to_first_audio_ms": "first sentence out -> bot's first audio on the line",
    }
    lines = [
        "",
        f"Whole turn on the fake call ({turn['config']['turns']} caller turns on one call, each "
        f"after {turn['config']['gap']:g} s of quiet; {turn['measured_from']} -> "
        f"{turn['measured_to']}; the bot's real pipeline: Telnyx media-stream transport, Silero "
        "VAD and pipecat's default turn detection, `TelnyxSTTService`, the scripted LLM "
        f"stand-in (first token at once, then one every {turn['llm_token_interval_ms']} ms), "
        f"`TelnyxTTSService`; TTS emulator: upgrade {1000 * faults['upgrade_delay']:g} ms, "
        f"first audio {1000 * faults['first_audio_delay']:g} ms, pace {faults['pace']}, chunks "
        f"{faults['chunk_ms']} ms, floor {turn['tts_floor_ms']:g} ms; STT emulator: "
        f"endpointing {turn['stt_floor_ms']:g} ms of silence on the audio's clock, recognizer "
        f"delay {turn['stt_result_delay_ms']:g} ms; transcripts exact "
        f"{turn['exact_transcripts']}/{turn['config']['turns']}):",
        "",
        "| stretch (ms) | n | p50 | p95 | max |",
        "|---|---|---|---|---|",
    ]
    for key, label in rows.items():
        s = turn[key]
        lines.append(f"| {label} | {s['n']} | {_p(s, 'p50')} | {_p(s, 'p95')} | {_p(s, 'max')} |")
    if latency:
        lines += ["", turn_comparison(turn, latency)]
    return lines


def markdown(results: dict[str, Any], goals: list[Target]) -> str:
    """The README section: the targets first, then the detail of each part."""
    meta = results["meta"]
    lines = [
        f"Benchmarks (`{meta['command']}`, {meta['date']}, {meta['cpus']} CPUs, Python "
        f"{meta['python']}, pipecat-ai {meta['pipecat']}; run took {meta['duration_s']:.0f} s)",
        "",
        "| target | measured | goal | result |",
        "|---|---|---|---|",
        *(t.row() for t in goals),
    ]
    lines[1:1] = [
        line
        for update in meta.get("updates", [])
        for line in (
            "",
            f"Parts {', '.join(update['parts'])} measured by `{update['command']}`, "
            f"{update['date']} (run took {update['duration_s']:.0f} s); the others kept.",
        )
    ]
    if "latency" in results:
        lines += _latency_md(results["latency"])
    if "bargein" in results:
        lines += _bargein_md(results["bargein"])
    if "cpu" in results:
        lines += _cpu_md(results["cpu"])
    if "context" in results:
        lines += _context_md(results["context"], _measured_by(meta, "context"))
    if any(part in results for part in ("stt", "stt_sessions", "turn")):
        lines += _stt_md(results)
    if "cost" in results:
        lines += [
            "",
            "**Connection cost per call shape**",
            "",
            connection_cost.table(results["cost"]),
        ]
    return "\n".join(lines) + "\n"


def _measured_by(meta: dict[str, Any], part: str) -> str:
    """The command of the run that measured ``part``: the last merged update holding it, else
    the run the results started from."""
    for update in reversed(meta.get("updates", [])):
        if part in update.get("parts", ()):
            return str(update["command"])
    return str(meta["command"])


# --------------------------------------------------------------------------- chart


def chart(results: dict[str, Any], path: Path) -> None:
    """Four panels, one per part, readable at README width."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax_ttfa, ax_barge, ax_cpu, ax_sessions = axes.flat
    latency = results.get("latency")
    if latency:
        names = {"turn1_at_start": "t1 start", "turn1_after_idle": "t1 idle", "later": "t2+"}
        labels = []
        for i, (service, group) in enumerate((s, g) for s in ("plugin", "baseline") for g in names):
            values = [
                t["overhead_ms"]
                for t in latency["turns"]
                if t["service"] == service and t["group"] == group
            ]
            spread = [i + 0.15 * ((k % 5) - 2) / 2 for k in range(len(values))]
            ax_ttfa.plot(
                spread, values, "o", alpha=0.6, color="C0" if service == "plugin" else "C1"
            )
            labels.append(f"{service}\n{names[group]}")
        ax_ttfa.axhline(
            OVERHEAD_P50_MS, color="red", linestyle="--", label="target 5 ms (p50, t2+)"
        )
        ax_ttfa.set_xticks(range(len(labels)), labels)
        ax_ttfa.set_ylabel("TTFA minus injected floor (ms)")
        ax_ttfa.set_title(
            f"a/b. First-audio overhead above the {latency['floor_ms']['p50']:g} ms injected floor"
        )
        ax_ttfa.legend(loc="center")
    bargein = results.get("bargein")
    if bargein:
        force = [b["force_ms"] for b in bargein["barge_ins"] if b["force_ms"] is not None]
        stop = [b["audio_stop_ms"] for b in bargein["barge_ins"] if b["audio_stop_ms"] is not None]
        ax_barge.hist([force, stop], bins=30, label=["force on the wire", "last audio out"])
        ax_barge.axvline(FORCE_MS, color="red", linestyle="--", label=f"target {FORCE_MS:g} ms")
        ax_barge.set_xlim(-0.5, max(FORCE_MS, *force, *stop) + 1)
        ax_barge.set_xlabel("ms after the InterruptionFrame entered the TTS")
        ax_barge.set_ylabel("barge-ins")
        ax_barge.set_title(
            f"c. Barge-in ({len(bargein['barge_ins'])} runs, "
            f"{bargein['stale_frames']} stale frames)"
        )
        ax_barge.legend(loc="upper center")
    cpu = results.get("cpu")
    if cpu:
        cases = {k: v for k, v in cpu["per_audio_second"].items() if k != "mp3_profile"}
        x = range(len(cases))
        ax_cpu.bar(
            [i - 0.2 for i in x],
            [c["cpu_ms_per_audio_second"] for c in cases.values()],
            width=0.4,
            label="whole client",
        )
        ax_cpu.bar(
            [i + 0.2 for i in x],
            [c["decoder_only_ms_per_audio_second"] for c in cases.values()],
            width=0.4,
            label="decoder alone",
        )
        ax_cpu.axhline(MP3_CPU_MS, color="red", linestyle="--", label="MP3 budget 5 ms")
        ax_cpu.set_xticks(list(x), list(cases))
        ax_cpu.set_ylabel("CPU ms per second of audio")
        ax_cpu.set_title("d. Client CPU per second of audio")
        ax_cpu.legend()
        for i, (key, sweep) in enumerate(cpu["sessions"].items()):
            n = [s["sessions"] for s in sweep["steps"]]
            color = f"C{2 * i}"
            ax_sessions.plot(
                n,
                [100 * s["cpu_utilization"] for s in sweep["steps"]],
                "o-",
                color=color,
                label=f"{key}: client",
            )
            ax_sessions.plot(
                n,
                [100 * s["emulator_cpu_utilization"] for s in sweep["steps"]],
                "x:",
                color=color,
                label=f"{key}: emulator",
            )
        ax_sessions.axvline(SESSIONS_PER_CORE, color="red", linestyle="--", label="target 100")
        ax_sessions.set_xlabel("concurrent real-time sessions")
        ax_sessions.set_ylabel("CPU (% of one core)")
        ax_sessions.set_ylim(0, 100)
        ax_sessions.set_title("d. Concurrent sessions, one core each side")
        ax_sessions.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, Any], out_dir: Path) -> tuple[str, list[Target]]:
    """Write latest.json, latest.md and latest.png; return the Markdown and the targets."""
    out_dir.mkdir(parents=True, exist_ok=True)
    goals = targets(results)
    results["targets"] = [
        {"name": t.name, "measured": t.measured, "goal": t.goal, "met": t.met} for t in goals
    ]
    text = markdown(results, goals)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=1) + "\n")
    (out_dir / "latest.md").write_text(text)
    chart(results, out_dir / "latest.png")
    return text, goals
