"""Word-level text frames in real pipelines: what the assistant context is built from, plus the
pipecat conventions around a turn (connection events, TTFA, tracing)."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSTextFrame,
)
from pipecat.services.tts_service import TextAggregationMode
from service_helpers import Push, Until, errors, gated, llm_turn, make_tts, run, wire_texts
from test_fault_support import captured_logs

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


@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
async def test_text_of_an_interrupted_reply_that_arrives_after_the_interruption_is_not_spoken(
    mode,
):
    # The interruption, a system frame, overtakes a token still queued at the service; the
    # token then reaches it after the interruption, as here.
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, text_aggregation_mode=mode)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("First reply here. "),
            Until(lambda: any(c.syntheses for c in emu.connections)),
            Push(InterruptionFrame()),
            LLMTextFrame("Stale words "),
            LLMTextFrame("from before. "),
            LLMFullResponseEndFrame(),
            *llm_turn("Fresh reply now."),
        ]
        with captured_logs() as logs:
            down, _ = await run(gated(tts), frames)
    sent = " ".join(
        text for c in emu.connections for text, _ in wire_texts(emu.received_messages(c.index))
    )
    assert "Stale" not in sent and "before" not in sent
    assert "Fresh reply now." in sent
    assert "Stale" not in " ".join(f.text for f in text_frames(down))
    assert any("Stale words" in line.message for line in logs), "dropped text is named"
