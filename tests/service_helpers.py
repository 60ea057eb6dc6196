"""Shared pieces for driving TelnyxTTSService in real pipecat pipelines against the emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    DataFrame,
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import run_test

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import TelnyxEmulator
from pipecat_telnyx_tts.protocol import ClientMessage, EndMessage, TextMessage


def make_tts(
    emu: TelnyxEmulator, voice: str = "Telnyx.NaturalHD.astra", **kw: Any
) -> TelnyxTTSService:
    settings = kw.pop("settings", None) or TelnyxTTSService.Settings(voice=voice)
    return TelnyxTTSService(api_key="test-key", url=emu.url, settings=settings, **kw)


def server_ignores_the_ask(monkeypatch: Any) -> None:
    """The service asks for no idle window, so the emulator's own ``inactivity_timeout`` applies:
    the same as a server that ignores the ask."""
    monkeypatch.setattr(TelnyxTTSService, "INACTIVITY_TIMEOUT_S", None)


def llm_turn(*tokens: str) -> list[Frame]:
    return [
        LLMFullResponseStartFrame(),
        *(LLMTextFrame(t) for t in tokens),
        LLMFullResponseEndFrame(),
    ]


async def run(
    tts: TelnyxTTSService | Pipeline, frames: Sequence[Frame], rate: int = 16000
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


@dataclass
class Until(DataFrame):
    """Holds back the frames queued after it until ``predicate`` holds: a script's cue.

    Pipelines under test are fed a fixed list of frames; this lets the list wait for something
    to have happened (a socket closed, the service written off) instead of sleeping and hoping.
    """

    predicate: Callable[[], bool] = field(default=lambda: True)
    event: asyncio.Event | None = None
    """Waited on instead of polling ``predicate``: for many pipelines waiting at once."""
    timeout: float = 10.0
    then: Callable[[], None] | None = None
    """Run once the predicate holds, before the next frame goes on (to change the emulator)."""


@dataclass
class Push(DataFrame):
    """Pushes ``frame`` in its turn. System frames (an interruption) overtake queued frames, so
    one meant to come after an :class:`Until` is wrapped in this."""

    frame: Frame | None = None


class Gate(FrameProcessor):
    """Plays :class:`Until` and :class:`Push` frames; passes every other frame on unchanged."""

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, Push):
            assert frame.frame is not None
            await self.push_frame(frame.frame, direction)
            return
        if not isinstance(frame, Until):
            await self.push_frame(frame, direction)
            return
        if frame.event is not None:
            try:
                async with asyncio.timeout(frame.timeout):
                    await frame.event.wait()
            except TimeoutError:
                raise AssertionError("cue never came: the event was not set") from None
        deadline = time.monotonic() + frame.timeout
        while not frame.predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"cue never came: {frame.predicate}")
            await asyncio.sleep(0.005)
        if frame.then is not None:
            frame.then()


def gated(tts: TelnyxTTSService) -> Pipeline:
    """``tts`` behind a :class:`Gate`, for ``run`` / ``run_test``."""
    return Pipeline([Gate(), tts])
