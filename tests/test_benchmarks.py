"""The benchmark code, run at a tiny size: its structure and the results that must hold at any
speed. Timing is never asserted here (the machine is shared and noisy); ``benchmarks.run`` judges
speed on a full run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# The chart needs matplotlib, from the ``bench`` extra.
pytest.importorskip("matplotlib")

from benchmarks import connection_cost, report
from benchmarks.connection_cost import run_cost
from benchmarks.pipeline import NO_MARKER, long_reply, marker_of, reply_text, tokens
from benchmarks.run import PARTS, TINY, run
from benchmarks.stats import first_chunk_seconds, injected_floor
from pipecat_telnyx_tts.emulator import Faults


def test_floor_follows_the_emulators_chunking() -> None:
    # 250 ms chunks at 16 kHz are 4000 samples; a synthesis shorter than that is one chunk.
    assert first_chunk_seconds(250, 16000, 3.0) == pytest.approx(0.25)
    assert first_chunk_seconds(250, 16000, 0.1) == pytest.approx(0.1)
    faults = Faults.fast(first_audio_delay=0.2, pace=2.0, chunk_ms=100)
    assert injected_floor(faults, 16000, 3.0) == pytest.approx(0.25)


def test_texts_are_unique_and_tokenized_like_an_llm() -> None:
    sentences = [x for n in (7, 8) for x in reply_text(n, 3).split(". ")]
    assert len(set(sentences)) == len(sentences) == 6
    assert "".join(tokens(reply_text(7, 3))) == reply_text(7, 3)
    assert long_reply(3, 2.0).count(".") == 1
    assert marker_of((5).to_bytes(2, "little", signed=True) * 4) == 5
    assert marker_of(b"\x01\x00\x02\x00") == NO_MARKER


async def test_tiny_run_has_every_result_and_no_stale_frame(tmp_path: Path) -> None:
    results = await run(TINY, PARTS, "tests")
    text, goals = report.write(results, tmp_path)

    latency = results["latency"]
    assert not latency["errors"]
    for service in ("plugin", "baseline"):
        groups = latency["services"][service]
        assert groups["later"]["ttfa_ms"]["n"] == TINY.latency.sessions
        assert groups["turn1"]["ttfa_ms"]["n"] == TINY.latency.sessions
    # The baseline connects for every segment, so every one of its turns waits for a handshake.
    baseline_turns = [t for t in latency["turns"] if t["service"] == "baseline"]
    assert all(t["upgrade_wait_ms"] > 0 for t in baseline_turns)
    assert set(latency["ratios_baseline_over_plugin"]["later"]) == {"p50", "p95"}

    bargein = results["bargein"]
    assert not bargein["errors"]
    assert len(bargein["barge_ins"]) == TINY.bargein.barge_ins
    assert bargein["stale_frames"] == 0
    assert bargein["unattributed_audio_frames"] == 0
    assert bargein["final_turn_spoke"]
    assert bargein["outcomes"].get("force_missing", 0) == 0
    assert bargein["force_ms"]["n"] == bargein["outcomes"].get("force_sent", 0)

    cpu = results["cpu"]
    for key in ("pcm", "pcm_resampled", "mp3", "mp3_phone"):
        case = cpu["per_audio_second"][key]
        assert case["cpu_ms_per_audio_second"] > 0 and not case["errors"]
    assert cpu["per_audio_second"]["mp3_profile"]["top_functions"]
    [step] = cpu["sessions"]["pcm"]["steps"]
    assert step["error_count"] == 0 and step["audio_seconds"] > 0
    assert step["client_delay_ms"]["n"] > 0 and step["unpaired_frames"] == 0

    saved = json.loads((tmp_path / "latest.json").read_text())
    assert {"latency", "bargein", "cpu", "meta", "targets"} <= set(saved)
    assert len(saved["targets"]) == len(goals) == 7
    assert (tmp_path / "latest.png").stat().st_size > 10_000
    assert (tmp_path / "latest.md").read_text() == text
    assert "| target | measured | goal | result |" in text


async def test_tiny_cost_run_measures_every_call_from_the_emulators_records() -> None:
    results = await run_cost(connection_cost.TINY)
    calls = {(c["variant"], c["shape"]): c for c in results["calls"]}
    assert set(calls) == {(v, s) for v in ("head", "after") for s in ("idle", "talk")}
    for variant in ("head", "after"):
        idle, talk = calls[variant, "idle"], calls[variant, "talk"]
        assert not idle["errors"] and not talk["errors"]
        assert idle["turns"] == 0 and idle["handshakes"] >= 1 and idle["sockets_peak"] >= 1
        assert talk["turns_spoken"] == talk["turns"] == 2
        assert talk["ttfa_ms"]["n"] == 2 and talk["ttfa_ms"]["p50"] > 0
        assert 0 < talk["sockets_mean"] <= talk["sockets_peak"]
        assert talk["handshakes_per_turn"] == talk["handshakes"] / 2
        first = talk["turn_detail"][0]
        assert first["waited"] is True and first["handshake_wait_ms"] > 0
        for turn in talk["turn_detail"]:
            assert turn["socket"] >= 1 and isinstance(turn["waited"], bool)
            assert turn["audio_s"] >= 0.6
        assert [g.name.split(", ")[-1] for g in connection_cost.goals(results, variant)] == [
            "handshakes a minute",
            "handshakes a turn",
            "turns after the first that waited for a handshake (first token >= 300 ms)",
        ]
    text = connection_cost.table(results)
    assert text.count("| talk |") == 2 and text.count("waited for a handshake") == 2


def test_cost_command_line_takes_variants_and_faults() -> None:
    config, command = connection_cost.config_from_args(
        ["--quick", "--variant", "warm", ".", '{"a": 1}', "--fault", "retry_after=3"]
    )
    assert config.variants == (connection_cost.Variant("warm", ".", {"a": 1}),)
    assert config.faults.retry_after == 3 and config.faults.upgrade_delay == 1.2
    assert config.shapes == connection_cost.QUICK.shapes
    assert command.startswith("python -m benchmarks.connection_cost --quick --variant warm .")
    with pytest.raises(SystemExit):
        connection_cost.config_from_args(["--fault", "no_such_field=1"])
