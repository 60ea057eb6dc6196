"""The STT latency benchmark at a tiny size: its structure and exact transcripts; never its
timing (the machine is shared and noisy)."""

from __future__ import annotations

from benchmarks.stt_latency import measure


async def test_tiny_stt_latency_run_measures_every_turn() -> None:
    result = await measure(turns=2, gap=0.3)
    assert result["exact_transcripts"] == 2
    assert result["vad_stop_to_final_ms"]["n"] == 2
    assert result["vad_stop_to_final_ms"]["p50"] >= 0
