"""The STT benchmarks at a tiny size: their structure and exact transcripts; never their timing
(the machine is shared and noisy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The report's chart needs matplotlib, from the ``bench`` extra.
pytest.importorskip("matplotlib")

from benchmarks import report
from benchmarks.readme import LATEST
from benchmarks.run import STT_PARTS, TINY, merge, run
from benchmarks.stt_latency import measure
from benchmarks.stt_sessions import measure as measure_sessions


async def test_tiny_stt_latency_run_measures_every_turn() -> None:
    result = await measure(turns=2, gap=0.3)
    assert result["exact_transcripts"] == 2
    assert result["vad_stop_to_final_ms"]["n"] == 2
    assert result["vad_stop_to_final_ms"]["p50"] >= 0


async def test_tiny_stt_sessions_run_transcribes_every_caller() -> None:
    result = await measure_sessions(sessions=2, seconds=1.0)
    assert result["sessions"] == 2 and result["audio_seconds_each"] >= 6
    assert result["finals"] == 2, "one scripted final per caller turn"
    assert result["client_cores_busy"] > 0


async def test_tiny_stt_parts_of_the_suite_measure_every_turn_and_merge_beside_the_tts(
    tmp_path: Path,
) -> None:
    """The STT parts through ``benchmarks.run`` at the TINY size, merged into a results file that
    holds the TTS's figures, as ``--merge`` does: the whole turn on the fake call measures every
    caller turn end to end, and the report puts it beside the TTS's time to first audio."""
    results = await run(TINY, STT_PARTS, "tests")
    turn = results["turn"]
    assert turn["exact_transcripts"] == TINY.turn.turns
    assert len(turn["turns"]) == TINY.turn.turns
    for timing in turn["turns"]:
        assert all(timing[key] is not None for key in timing if key.endswith("_ms")), timing
        # The stretches are consecutive on one clock: the STT's final and the LLM come between
        # the caller's end of speech and the bot's answer.
        assert 0 < timing["stop_to_llm_ms"] < timing["stop_to_first_audio_ms"]
    assert turn["stop_to_first_audio_ms"]["n"] == TINY.turn.turns
    assert turn["tts_floor_ms"] == 450 and turn["stt_floor_ms"] == 100
    assert results["stt"]["exact_transcripts"] == TINY.stt.turns
    assert results["stt_sessions"]["finals"] == TINY.stt_sessions.sessions

    previous = json.loads(LATEST.read_text())
    merged = merge(previous, results)
    assert merged["latency"] == previous["latency"] and merged["cpu"] == previous["cpu"]
    assert merged["meta"]["command"] == previous["meta"]["command"]
    [update] = [u for u in merged["meta"]["updates"] if u["command"] == "tests"]
    assert update["parts"] == sorted(STT_PARTS)
    text, goals = report.write(merged, tmp_path)
    assert len(goals) == len(previous["targets"]), "the STT parts add no target"
    assert report.stt_table(merged) in text
    assert "| TTS alone: reply's first text -> first audio, turns 2+ |" in text
    assert "What the rest of the turn adds to the TTS alone" in text
    assert "Parts stt, stt_sessions, turn measured by `tests`" in text
    assert json.loads((tmp_path / "latest.json").read_text())["turn"]["turns"] == turn["turns"]
