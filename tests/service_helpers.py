"""Shared pieces for driving TelnyxTTSService in real pipecat pipelines against the emulator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.task import PipelineParams
from pipecat.tests.utils import run_test

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import TelnyxEmulator
from pipecat_telnyx_tts.protocol import ClientMessage, EndMessage, TextMessage


def make_tts(
    emu: TelnyxEmulator, voice: str = "Telnyx.NaturalHD.astra", **kw: Any
) -> TelnyxTTSService:
    settings = kw.pop("settings", None) or TelnyxTTSService.Settings(voice=voice)
    return TelnyxTTSService(api_key="test-key", url=emu.url, settings=settings, **kw)


def llm_turn(*tokens: str) -> list[Frame]:
    return [
        LLMFullResponseStartFrame(),
        *(LLMTextFrame(t) for t in tokens),
        LLMFullResponseEndFrame(),
    ]


async def run(
    tts: TelnyxTTSService, frames: Sequence[Frame], rate: int = 16000
) -> tuple[list[Frame], list[Frame]]:
    down, up = await run_test(
        tts,
        frames_to_send=list(frames),
        pipeline_params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
    )
    return list(down), list(up)


def audio_frames(frames: Sequence[Frame]) -> list[TTSAudioRawFrame]:
    return [f for f in frames if isinstance(f, TTSAudioRawFrame)]


def audio_seconds(frames: Sequence[Frame]) -> float:
    return sum(len(f.audio) / 2 / f.sample_rate for f in audio_frames(frames))


def errors(frames: Sequence[Frame]) -> list[ErrorFrame]:
    return [f for f in frames if isinstance(f, ErrorFrame)]


def markers(frame: TTSAudioRawFrame) -> set[int]:
    """The emulator's marker signal: every sample is the index of the socket it came from."""
    return set(np.frombuffer(frame.audio, dtype=np.int16).tolist())


def started_and_stopped(frames: Sequence[Frame]) -> tuple[int, int]:
    return (
        sum(isinstance(f, TTSStartedFrame) for f in frames),
        sum(isinstance(f, TTSStoppedFrame) for f in frames),
    )


def wire_texts(messages: Sequence[ClientMessage]) -> list[tuple[str, bool]]:
    return [(m.text, m.flush) for m in messages if isinstance(m, TextMessage)]


def ended(messages: Sequence[ClientMessage]) -> bool:
    return any(isinstance(m, EndMessage) for m in messages)
