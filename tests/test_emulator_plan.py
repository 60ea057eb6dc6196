"""Synthesis planning without sockets: which frames a synthesis becomes and how its audio is cut
into MP3 files and sentences."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipecat_telnyx_tts.emulator.config import Signal
from pipecat_telnyx_tts.emulator.plan import PlannedFrame, plan_frames
from pipecat_telnyx_tts.emulator.synth import (
    OutputFormat,
    Part,
    Rendition,
    SynthesisRequest,
    file_cuts,
    render,
    speech_seconds,
    split_sentences,
    synthesize_pcm,
)
from pipecat_telnyx_tts.voices import Delivery

PCM = OutputFormat("linear16", 16000)
THREE = "One sentence here. A second one? And a third!"


def pcm_rendition(seconds: float) -> Rendition:
    data = bytes(round(seconds * PCM.sample_rate) * 2)
    return Rendition((Part(data, seconds),), seconds, PCM)


def test_streamed_frames_carry_all_audio_with_one_text_frame_at_a_seeded_place() -> None:
    rendition = pcm_rendition(1.0)
    frames = plan_frames(rendition, Delivery.STREAMED, 250, random.Random(3), "Hi.", False)
    audio = [f for f in frames if f.audio]
    assert len(audio) == 4
    assert b"".join(f.audio or b"" for f in audio) == rendition.data
    assert [f.at for f in audio] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    (bearing,) = [f for f in frames if f.text is not None]
    assert bearing.audio is None and bearing.text == "Hi."
    # The text frame needs no more audio than the frame before it.
    position = frames.index(bearing)
    assert bearing.at == (frames[position - 1].at if position else 0.0)
    again = plan_frames(rendition, Delivery.STREAMED, 250, random.Random(3), "Hi.", False)
    assert again == frames
    places = {
        [
            f.text
            for f in plan_frames(rendition, Delivery.STREAMED, 250, random.Random(s), "x", False)
        ].index("x")
        for s in range(20)
    }
    assert len(places) > 1, "the text frame's place must vary with the seed"


def test_concatenated_frames_are_one_per_part_with_the_text_on_the_first() -> None:
    parts = (Part(b"ID3a", 0.5), Part(b"ID3b", 1.25))
    rendition = Rendition(parts, 1.25, OutputFormat("mp3", 24000))
    frames = plan_frames(rendition, Delivery.CONCATENATED, 250, random.Random(0), "Hi.", True)
    assert frames == [
        PlannedFrame(b"ID3a", "Hi.", False, 0.5),
        PlannedFrame(b"ID3b", None, False, 1.25),
        PlannedFrame(None, "", True, 1.25),
    ]


def test_nothing_to_say_is_a_text_frame_without_audio() -> None:
    empty = Rendition((), 0.0, PCM)
    for delivery in Delivery:
        frames = plan_frames(empty, delivery, 250, random.Random(0), "**", True)
        assert frames == [PlannedFrame(None, "**", False, 0.0), PlannedFrame(None, "", True, 0.0)]


def test_sentences_split_at_sentence_ends_followed_by_space() -> None:
    assert split_sentences(THREE) == ["One sentence here.", "A second one?", "And a third!"]
    assert split_sentences("Pi is 3.14 today.") == ["Pi is 3.14 today."]
    assert split_sentences("") == []


def test_file_cuts_prefer_the_sentence_ends_nearest_an_even_split() -> None:
    assert file_cuts([10, 20, 30, 90], 100, 2) == [30]
    assert file_cuts([10, 20, 30, 90], 100, 3) == [30, 90]
    assert file_cuts([10, 20, 30, 90], 100, 5) == [10, 20, 30, 90]
    # Too few sentence ends: evenly.
    assert file_cuts([50], 90, 3) == [30, 60]
    assert file_cuts([], 100, 1) == []
    assert file_cuts([], 2, 5) == [1]


def test_sentence_pauses_are_silence_between_sentences_only() -> None:
    request = SynthesisRequest(THREE, PCM, Signal.TONE, sentence_pause_ms=200)
    pcm, ends = synthesize_pcm(request)
    plain, no_ends = synthesize_pcm(SynthesisRequest(THREE, PCM, Signal.TONE))
    assert no_ends == []
    sentences = split_sentences(THREE)
    expected = sum(speech_seconds(s) for s in sentences) + 0.2 * (len(sentences) - 1)
    assert len(pcm) / PCM.sample_rate == pytest.approx(expected, abs=0.01)
    assert len(plain) / PCM.sample_rate == pytest.approx(speech_seconds(THREE), abs=0.01)
    assert len(ends) == 2
    for end in ends:
        assert not np.any(pcm[end - 3200 : end]), "the 200 ms before a sentence break is silent"
    marker, _ = synthesize_pcm(
        SynthesisRequest(THREE, PCM, Signal.MARKER, marker=7, sentence_pause_ms=200)
    )
    assert set(np.unique(marker)) == {7}, "marker pauses still carry the marker"


def test_mp3_files_are_separate_files_split_at_sentences() -> None:
    request = SynthesisRequest(THREE, OutputFormat("mp3", 24000), Signal.TONE, mp3_files=3)
    rendition = render(request)
    assert len(rendition.parts) == 3
    assert all(part.data.startswith(b"ID3") for part in rendition.parts)
    assert rendition.data.count(b"ID3") == 3
    assert rendition.parts[-1].end_seconds == pytest.approx(rendition.audio_seconds)
    frames = plan_frames(rendition, Delivery.STREAMED, 250, random.Random(1), THREE, False)
    starts = [f.audio for f in frames if f.audio and f.audio.startswith(b"ID3")]
    assert len(starts) == 3, "each file starts a frame of its own"
    ats = [f.at for f in frames if f.audio]
    assert ats == sorted(ats)
    pcm_request = SynthesisRequest(THREE, PCM, Signal.TONE, mp3_files=3)
    assert len(render(pcm_request).parts) == 1, "only MP3 comes in several files"
