"""Focused reproductions of the service bugs the fault matrix found, one scenario each, so that a
fix can be checked (and kept) without reading the matrix. Each docstring says what went wrong
before the fix; the assertions say what must hold; the matrix cells named fail the same way.
"""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.tests.utils import SleepFrame
from test_fault_support import check_contexts_end, conn_with, drive, markers

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from tests.service_helpers import audio_frames, llm_turn, make_tts, server_ignores_the_ask

LIFECYCLES = ["observed", "documented"]


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_text_after_a_mid_turn_failure_does_not_reopen_the_turns_context(
    lifecycle: str,
) -> None:
    """A turn fails after its first sentence (server error frame); the LLM then sends the rest.

    The bug: the failure ended the turn's audio context; the next sentence made pipecat open it
    again (a second TTSStartedFrame with the same context id) and ``run_tts`` refused to speak,
    so nothing but pipecat's stop_frame_timeout_s (12 s since the service raised it) ended that
    context: the next turn's audio was held that long, and a spurious "completed with no audio"
    ErrorFrame followed, which also counts toward pipecat's three-silent-contexts guard.
    Matrix: ``error-``, ``drop-`` and ``inactivity-mid_turn-*``, ``http403/400-mid_turn-*``.
    """
    faults = Faults.fast(error_after_chunks=1, fault_count=1)
    async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("The first sentence fails. "),
            LLMTextFrame("Then"),
            SleepFrame(0.4),
            LLMTextFrame(" the rest arrives."),
            LLMFullResponseEndFrame(),
            *llm_turn("The next turn."),
        ]
        out = await drive(tts, emu, frames)
        started = [f.context_id for f in out.down if isinstance(f, TTSStartedFrame)]
        assert len(started) == len(set(started)), "a context was started twice"
        assert [e.error for e in out.errors()] == [
            "Telnyx reported an error: Error in audio response"
        ]
        assert any("the rest arrives" in w for w in out.warnings()), "the dropped text is named"
        check_contexts_end(out, tts)


async def test_turns_after_the_service_became_unusable_end_their_contexts() -> None:
    """After a 401 the service is unusable and pipecat stops calling ``run_tts``, but it still
    opens each new turn's audio context (TTSStartedFrame) first. The bug: nothing of the service
    ended it, so each later turn held the pipeline for stop_frame_timeout_s (12 s; two turns
    overran the 15 s bound) and left a TTSStartedFrame without its TTSStoppedFrame. Matrix:
    every ``http4xx-*`` cell but ``http401-mid_turn``.
    """
    async with TelnyxEmulator(
        api_key="the-right-key", signal="marker", faults=Faults.fast()
    ) as emu:
        tts = make_tts(emu)
        frames = [SleepFrame(0.2), *llm_turn("Not spoken."), *llm_turn("Nor this.")]
        out = await drive(tts, emu, frames)
        assert not tts.is_usable
        warnings = "\n".join(out.warnings())
        assert "Not spoken." in warnings and "Nor this." in warnings
        started = sum(isinstance(f, TTSStartedFrame) for f in out.down)
        stopped = sum(isinstance(f, TTSStoppedFrame) for f in out.down)
        assert started == stopped, f"{started} contexts started, {stopped} stopped"
        check_contexts_end(out, tts)


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_a_clean_close_before_the_final_frame_is_not_a_silent_truncation(
    lifecycle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server closes with 1000 "inactivity timeout" while it is still streaming a turn's
    audio (the client's last frame was end of sequence, and streaming out is not activity).

    The bug: ``Turn.on_closed`` took any clean close after end of sequence as the end of the
    turn, so the turn "finished" with most of its audio missing (0.4 s of 2.4 s) and no error
    or warning at all. Under both readings the server sends a final frame before its closing
    1000, so a close with no final frame after end of sequence means the audio was cut.
    """
    server_ignores_the_ask(monkeypatch)
    faults = Faults.fast(pace=1.0, chunk_ms=100, inactivity_timeout=0.5)
    async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
        tts = make_tts(emu)
        text = "This sentence takes two seconds."
        out = await drive(tts, emu, llm_turn(text))
        conn = conn_with(emu, text)
        assert conn is not None and conn.close_reason == "inactivity timeout", emu._summary()
        synthesized = sum(s.audio_seconds for s in conn.syntheses)
        played = sum(
            len(f.audio) / 2 / f.sample_rate
            for f in audio_frames(out.down)
            if conn.index in markers(f)
        )
        cut = played < synthesized - 0.01
        if cut:
            assert out.errors(), (
                f"{played:.2f} s of {synthesized:.2f} s played, the close came before the final "
                "frame, and no ErrorFrame says the turn was cut short"
            )
        check_contexts_end(out, tts)
