"""The STT latency benchmark at a tiny size: its structure and exact transcripts; never its
timing (the machine is shared and noisy)."""

from __future__ import annotations

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
