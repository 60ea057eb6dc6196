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

from benchmarks.context import (
    DIMENSIONS,
    ContextConfig,
    decoded_layout,
    mp3_decoded_samples,
    plan_runs,
    run_context,
    timeline,
    words,
)
from benchmarks.run import TINY
from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.emulator.synth import encode_mp3


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
    config = ContextConfig(runs_per_behaviour=64)
    plans = plan_runs(config, ("old", "new"))
    old, new = plans[0::2], plans[1::2]
    assert [p.behaviour for p in old] == ["old"] * 64 and [p.behaviour for p in new] == ["new"] * 64
    key = lambda p: (p.lifecycle, p.aggregation, p.audio, p.delivery, p.llm)  # noqa: E731
    # Two full rounds: every combination twice per behaviour, and the arms share every draw.
    assert set(Counter(key(p) for p in old).values()) == {2}
    assert len(Counter(key(p) for p in old)) == len(list(itertools.product(*DIMENSIONS.values())))
    for a, b in zip(old, new, strict=True):
        assert (key(a), a.interrupted, a.fraction, a.token_s) == (
            key(b),
            b.interrupted,
            b.fraction,
            b.token_s,
        )
        assert len(words(a.text)) == len(words(b.text))
    sentences = [s for p in plans for s in p.text.split(". ")]
    assert len(sentences) == len(set(sentences))
    assert len({p.tag for p in plans}) == len(plans)
    assert sum(not p.interrupted for p in old) == 7
    for p in old:
        low, high = config.fast_token_ms if p.llm == "fast" else config.slow_token_ms
        assert low / 1000 <= p.token_s <= high / 1000
        assert 3 <= p.text.count(".") + p.text.count("?") <= 4


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
        config = replace(TINY.context, behaviours=("new",), seed=TINY.context.seed + batch)
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
