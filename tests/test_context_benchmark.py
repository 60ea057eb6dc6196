"""The context benchmark (``benchmarks/context.py``): its timeline model, its plan, and the word-
timestamp behaviour at a tiny size, asserting only what must hold at any speed. How close the
record comes to what was heard is judged by ``benchmarks.run``, not here."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import accuracy, report
from benchmarks.context import (
    DIMENSIONS,
    SPEECH,
    ContextConfig,
    PlaybackEstimate,
    decoded_layout,
    mp3_decoded_samples,
    plan_runs,
    run_context,
    timeline,
    words,
)
from benchmarks.run import TINY
from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.emulator import Signal
from pipecat_telnyx_tts.emulator.synth import (
    OutputFormat,
    SynthesisRequest,
    encode_mp3,
    split_sentences,
    synthesize_pcm,
)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 44100])
@pytest.mark.parametrize("tagged", [True, False])
def test_mp3_timeline_matches_the_encoder_and_the_decoder(rate: int, tagged: bool) -> None:
    # The heard position is counted in decoded audio: a tagged file is its PCM, an untagged one
    # keeps its padding.
    rng = np.random.default_rng(rate)
    for samples in (1, 575, 576, 577, 1153, 4000, 33297):
        pcm = (rng.standard_normal(samples) * 3000).astype(np.int16)
        decoder = AudioDecoder(pcm_rate=rate, out_rate=rate)
        out = decoder.feed(encode_mp3(pcm, rate, info_tag=tagged)) + decoder.flush()
        decoded = np.frombuffer(out, dtype=np.int16).astype(float)
        assert len(decoded) == mp3_decoded_samples(samples, rate, tagged=tagged), samples
        if samples >= 400:
            probe = pcm[:400].astype(float)
            window = decoded[:800]
            assert int(np.argmax(np.correlate(window, probe, "valid"))) == 0


def _synthesis(
    text: str, spans: list[tuple[str, float, float]], seconds: float, mp3: bool
) -> SimpleNamespace:
    return SimpleNamespace(
        text=text,
        chunks_sent=3,
        audio_seconds=seconds,
        sample_rate=16000,
        mp3=mp3,
        words=spans,
        words_source="signal",
    )


def test_heard_counts_the_words_started_before_the_position() -> None:
    def pair(mp3: bool) -> list[SimpleNamespace]:
        spans = [("Sure,", 0.1, 0.4), ("the", 0.5, 0.6), ("order.", 0.7, 1.0)]
        return [
            _synthesis("Sure, the order.", spans, 1.2, mp3),
            _synthesis("It ships.", [("It", 0.05, 0.2), ("ships.", 0.3, 0.8)], 1.0, mp3),
        ]

    tl = timeline(pair(False), rate=16000, mp3_files=1)
    assert tl.words == ["sure", "the", "order", "it", "ships"]
    positions = (0.0, 0.1, 0.11, 0.55, 1.2, 1.26, 2.19, 5.0)
    assert [tl.heard(p) for p in positions] == [0, 0, 1, 2, 3, 4, 5, 5]
    # Untagged MP3: the second synthesis starts after the first's decoded length, padding and all.
    tl = timeline(pair(True), rate=16000, mp3_files=1, mp3_tagged=False)
    first = mp3_decoded_samples(round(1.2 * 16000), 16000, tagged=False) / 16000
    assert first > 1.2
    assert tl.heard(0.099) == 0 and tl.heard(0.101) == 1
    assert tl.heard(first + 0.049) == 3 and tl.heard(first + 0.051) == 4
    # Two untagged files: the second half of the PCM starts after the first file's length.
    pieces, seconds = decoded_layout(16000, 16000, mp3=True, mp3_files=2, mp3_tagged=False)
    assert [p.pcm_start for p in pieces] == [0.0, 0.5]
    assert pieces[1].decoded_start == mp3_decoded_samples(8000, 16000, tagged=False) / 16000
    assert seconds == 2 * mp3_decoded_samples(8000, 16000, tagged=False) / 16000
    # Tagged: the decoded audio is the PCM, file seams and all.
    pieces, seconds = decoded_layout(16000, 16000, mp3=True, mp3_files=2)
    assert [(p.decoded_start, p.pcm_start) for p in pieces] == [(0.0, 0.0), (0.5, 0.5)]
    assert seconds == 1.0


def test_plan_is_balanced_paired_unique_and_mostly_interrupted() -> None:
    config = ContextConfig(runs_per_behaviour=320)
    plans = plan_runs(config, ("old", "new"))
    old, new = plans[0::2], plans[1::2]
    assert [p.behaviour for p in old] == ["old"] * 320
    assert [p.behaviour for p in new] == ["new"] * 320
    base = lambda p: (p.lifecycle, p.aggregation, p.audio, p.delivery, p.llm)  # noqa: E731
    key = lambda p: (*base(p), p.speech)  # noqa: E731
    # Two full rounds: every combination, speech timing included, twice per behaviour, and the
    # arms share every draw.
    assert set(Counter(key(p) for p in old).values()) == {2}
    assert len(Counter(key(p) for p in old)) == len(list(itertools.product(*DIMENSIONS.values())))
    # Within a round, each pass over the other dimensions is every combination once, and the
    # timings take turns from draw to draw: five draws in a row of a pass hold all five.
    for start in range(0, 320, 32):
        passing = old[start : start + 32]
        assert set(Counter(base(p) for p in passing).values()) == {1}
        for i in range(0, 30, 5):
            assert {p.speech for p in passing[i : i + 5]} == set(SPEECH)
    for a, b in zip(old, new, strict=True):
        assert (key(a), a.interrupted, a.fraction, a.token_s) == (
            key(b),
            b.interrupted,
            b.fraction,
            b.token_s,
        )
        assert len(words(a.text)) == len(words(b.text))
    sentences = [s for p in plans for s in split_sentences(p.text)]
    assert len(sentences) == len(set(sentences))
    assert len({p.tag for p in plans}) == len(plans)
    assert sum(not p.interrupted for p in old) == 32
    for speech in SPEECH:
        mine = [p for p in old if p.speech == speech]
        assert sum(p.interrupted for p in mine) >= 50, speech
    for p in old:
        low, high = config.fast_token_ms if p.llm == "fast" else config.slow_token_ms
        assert low / 1000 <= p.token_s <= high / 1000
        count = len(split_sentences(p.text))
        if p.speech == "long":
            assert count == 2 and all(len(words(s)) >= 40 for s in split_sentences(p.text))
            assert "," in p.text
        else:
            assert 3 <= count <= 4
        assert p.tag in words(split_sentences(p.text)[0])


def test_the_estimate_of_playback_follows_each_timing_of_the_tone_signal() -> None:
    # The barge-ins are spread over the estimated playback: for the tone signal (the uniform
    # timing, and every timing without espeak-ng) it is the emulator's own length, sentence by
    # sentence, at each sentence's drawn rate.
    config = ContextConfig()
    estimate = PlaybackEstimate("tone", config)
    fmt = OutputFormat("linear16", config.sample_rate)
    plan = next(p for p in plan_runs(config, ("new",)) if p.speech == "espeak")
    for speech in ("uniform", "varied"):
        jitter = config.rate_jitter if speech == "varied" else 0.0
        for sentence in split_sentences(plan.text):
            request = SynthesisRequest(
                sentence, fmt, Signal.TONE, rate_jitter=jitter, jitter_seed=config.seed
            )
            pcm, _ = synthesize_pcm(request)
            assert estimate.sentence_seconds(sentence, speech) == pytest.approx(
                len(pcm) / config.sample_rate, abs=1 / config.sample_rate
            )
    # A stall before the only chunk (PCM, concatenated) delays the first audio and the end; a
    # stall mid-stream delays the end only if playback catches up with it.
    one = replace(plan, speech="espeak", delivery="concatenated", audio="pcm", token_s=0.0)
    first, end = estimate.playback(one)
    stalled_first, stalled_end = estimate.playback(replace(one, speech="stalled"))
    assert stalled_first == pytest.approx(first + config.stall_ms / 1000)
    assert stalled_end >= end + config.stall_ms / 1000 - 1e-9


MIN_VALID_BARGE_INS = 6
"""Barge-ins the central assertion must be made on, whatever the machine's load."""
MAX_BATCHES = 4


async def test_word_timestamps_record_only_what_was_heard() -> None:
    # A run whose device sat silent while the event loop was late (a loaded machine) measured the
    # machine, and the benchmark leaves it out with its pair. So that load can make this test
    # slower but never weaker, it runs batches of replies (a new draw each) until it has enough
    # barge-ins that were played as scheduled, and fails if a loaded machine never gives it them.
    runs: list[dict] = []
    valid: list[dict] = []
    for batch in range(MAX_BATCHES):
        config = replace(
            TINY.context, behaviours=("new",), seed=TINY.context.seed + batch, speech=("espeak",)
        )
        results = await run_context(config, progress=lambda _: None)
        assert len(results["runs"]) == config.runs_per_behaviour
        assert not results["errors"]
        runs += results["runs"]
        valid = [r for r in runs if r["valid"] and r["interrupted"]]
        if len(valid) >= MIN_VALID_BARGE_INS:
            break
    assert all(r["socket_found"] and r["ground_truth_aligned"] for r in runs)
    starved = sum(not r["valid"] for r in runs)
    assert len(valid) >= MIN_VALID_BARGE_INS, (
        f"playback starved in {starved} of {len(runs)} runs: too few barge-ins to judge"
    )
    # Whatever the speed: no sentence is recorded before its audio started playing.
    assert not [r for r in valid if r["unstarted_sentence_recorded"]]
    complete = [r for r in runs if not r["interrupted"]]
    assert complete
    for r in complete:
        # The whole reply, once, in order.
        assert r["exact"], r["recorded_text"]
        # Word-level text frames: a fallback to one frame per sentence fails here.
        assert r["text_frames_at_device"] > r["sentences"]


# --------------------------------------------------------------------------- verdicts


def _row(p95: float | None, most: float | None, unstarted: float | None, exact: float | None):
    return {
        "behaviour": "new",
        "dimension": "speech",
        "value": "varied",
        "barge_ins": 0 if p95 is None else 60,
        "abs_diff": {"p95": p95, "max": most},
        "unstarted_pct": unstarted,
        "uninterrupted": 0 if exact is None else 6,
        "exact_pct": exact,
    }


@pytest.mark.parametrize(
    ("row", "passed", "missed"),
    [
        (_row(1, 2, 0.0, 100.0), True, []),
        (_row(1, 2, 0.0, None), True, []),
        (_row(1.05, 2, 0.0, 100.0), False, ["abs diff p95 <= 1"]),
        (_row(1, 3, 0.0, 100.0), False, ["abs diff max <= 2"]),
        (_row(0, 0, 1.7, 100.0), False, ["unstarted sentence recorded 0 %"]),
        (_row(0, 0, 0.0, 83.3), False, ["uninterrupted exact 100 %"]),
        (_row(None, None, None, None), False, ["no barge-ins to judge"]),
    ],
)
def test_a_row_passes_only_when_it_meets_every_target(row, passed, missed) -> None:
    judged = accuracy.verdict(row)
    assert (judged["passed"], judged["missed"]) == (passed, missed)
    assert (judged["dimension"], judged["value"]) == ("speech", "varied")


def test_only_the_word_timestamp_rows_are_judged() -> None:
    rows = [_row(0, 0, 0.0, 100.0) | {"behaviour": b} for b in ("old", "new", "old")]
    assert len(accuracy.verdicts(rows)) == 1


async def test_every_speech_timing_runs_with_an_exact_ground_truth() -> None:
    # Ten replies, two per timing (one barged in, one played to the end), each from the emulator
    # its timing needs. What must hold at any speed: every run found its socket, the emulator's
    # words are the reply's, the audio played to the end is the timeline's length (within the
    # device's last, padded chunk) and the context recorded it exactly. Then the report judges
    # every row.
    config = ContextConfig(
        runs_per_behaviour=10,
        concurrency=10,
        behaviours=("new",),
        uninterrupted_every=2,
        slow_token_ms=(40.0, 60.0),
    )
    results = await run_context(config, progress=lambda _: None)
    runs = results["runs"]
    assert not results["errors"]
    assert Counter((r["speech"], r["interrupted"]) for r in runs) == {
        (speech, interrupted): 1 for speech in SPEECH for interrupted in (True, False)
    }
    assert all(r["socket_found"] and r["ground_truth_aligned"] for r in runs)
    by_speech = {r["speech"]: r for r in runs if not r["interrupted"]}
    for speech, r in by_speech.items():
        assert r["exact"], (speech, r["recorded_text"])
        assert 0 <= r["timeline_error_ms"] < config.device_chunk_ms, speech
    assert by_speech["long"]["words"] >= 80
    assert {r["words_source"] for r in runs if r["speech"] == "uniform"} == {"signal"}
    truth = results["diagnostics"]["new"]["ground_truth_by_speech"]
    assert set(truth) == set(SPEECH)
    assert all(t["misaligned"] == 0 for t in truth.values())
    # The verdicts: one per row, all, then each value of each dimension, speech included.
    judged = results["verdicts"]
    assert [(v["dimension"], v["value"]) for v in judged] == [("all", "all")] + [
        (d, v) for d, values in DIMENSIONS.items() for v in values
    ]
    table = "\n".join(report._context_md(results, "python -m benchmarks.run --only context"))
    assert "`.venv/bin/python -m benchmarks.run --only context`" in table
    for v in judged:
        label = "all" if v["dimension"] == "all" else f"{v['dimension']} {v['value']}"
        line = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert line.endswith("| PASS |") == v["passed"], line
    (target,) = report._context_row_targets(results)
    assert target.measured == sum(not v["passed"] for v in judged)
