"""Word-level text frames in real pipelines: what the assistant context is built from, plus the
pipecat conventions around a turn (connection events, TTFA, tracing)."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    TTSTextFrame,
)
from pipecat.services.tts_service import TextAggregationMode
from service_helpers import errors, llm_turn, make_tts, run

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator

REPLY = (
    "Sure, I can help. ",
    "Your order ships on Monday, ",
    "and it arrives by Thursday. ",
    "Ok.",
)
TEXT = "".join(REPLY)


def text_frames(frames: list) -> list[TTSTextFrame]:
    return [f for f in frames if isinstance(f, TTSTextFrame)]


@pytest.mark.parametrize("lifecycle", ["observed", "documented"])
@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
@pytest.mark.parametrize(
    ("voice", "audio_format"),
    [
        ("Telnyx.NaturalHD.astra", "linear16"),
        ("Telnyx.NaturalHD.astra", "mp3"),
        ("aws.Polly.Generative.Lucia", "linear16"),
        ("Telnyx.KokoroTTS.af_heart", None),
    ],
)
async def test_a_turn_is_pushed_word_by_word_once_in_order(lifecycle, mode, voice, audio_format):
    # The guard against falling back to sentence-level frames: those are queued ahead of the
    # audio and commit sentences nobody heard after a barge-in.
    async with TelnyxEmulator(lifecycle=lifecycle, signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice=voice, audio_format=audio_format, text_aggregation_mode=mode)
        down, up = await run(tts, llm_turn(*REPLY))
    assert not errors(up)
    words = text_frames(down)
    assert [f.text for f in words] == TEXT.split()
    assert all(f.pts for f in words), "every word is timed, so the transport releases it on time"
    assert [f.pts for f in words] == sorted(f.pts for f in words)
    # Words carry no spacing of their own: the assistant aggregator joins them with spaces.
    assert not any(f.includes_inter_frame_spaces for f in words)


async def test_sentence_frames_remain_available_when_asked_for():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, word_timestamps=False)
        down, _ = await run(tts, llm_turn(*REPLY))
    assert [f.text.strip() for f in text_frames(down)] == [
        "Sure, I can help.",
        "Your order ships on Monday, and it arrives by Thursday.",
        "Ok.",
    ]
