"""Telnyx STT: the caller's end of speech to the final transcript, against the emulator.

The caller's audio is fed at real time through ``TelnyxSTTService`` in a pipecat pipeline, as a
phone line delivers it; endpointing is off, so each utterance ends only at the ``Finalize`` the
service sends at the VAD stop, and the time from that VAD stop to the ``TranscriptionFrame`` is
all client, loopback and emulator work: the emulator adds no delay of its own (its floor is 0, as
``SttFaults.result_delay`` is 0), so the figure is the overhead above the floor.

    python -m benchmarks.stt_latency --turns 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from benchmarks.stats import percentiles
from pipecat_telnyx_tts import TelnyxSTTService
from pipecat_telnyx_tts.emulator import Faults, Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.synth import OutputFormat, SynthesisRequest, synthesize_audio

RATE = 8000
CHUNK_S = 0.02
STOP_SECS = 0.2
LINES = (
    "What time do you open tomorrow?",
    "I would like to book a cleaning.",
    "Can I come in on Friday afternoon?",
    "My name is Alex Morgan.",
)


class Clock(FrameProcessor):
    """Stamps the VAD stops that pass it (before the STT) or the finals (after it)."""

    def __init__(self, kind: type[Frame]) -> None:
        super().__init__()
        self.kind = kind
        self.times: list[float] = []
        self.texts: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, self.kind):
            self.times.append(time.perf_counter())
            if isinstance(frame, TranscriptionFrame):
                self.texts.append(frame.text)
        await self.push_frame(frame, direction)


def caller_turn(emu: TelnyxEmulator, text: str, gap: float) -> list[Frame]:
    """One turn paced at real time: speech, the VAD's stop time of silence, the stop, a gap."""
    audio = synthesize_audio(SynthesisRequest(text, OutputFormat("linear16", RATE), Signal.TONE))
    emu.stt.library.add(audio.pcm, RATE, audio.words)
    silence = bytes(round(STOP_SECS * RATE) * 2)
    data = audio.pcm.astype("<i2").tobytes() + silence
    step = round(CHUNK_S * RATE) * 2
    frames: list[Frame] = [VADUserStartedSpeakingFrame()]
    for i in range(0, len(data), step):
        frames += [InputAudioRawFrame(data[i : i + step], RATE, 1), SleepFrame(CHUNK_S)]
    return [*frames, VADUserStoppedSpeakingFrame(stop_secs=STOP_SECS), SleepFrame(gap)]


async def measure(turns: int, gap: float = 0.5) -> dict[str, Any]:
    async with TelnyxEmulator(api_key="k", faults=Faults.fast()) as emu:
        stt = TelnyxSTTService(
            api_key="k", url=emu.stt_url, settings=TelnyxSTTService.Settings(endpointing=False)
        )
        stops, finals = Clock(VADUserStoppedSpeakingFrame), Clock(TranscriptionFrame)
        frames = [f for n in range(turns) for f in caller_turn(emu, LINES[n % len(LINES)], gap)]
        await run_test(
            Pipeline([stops, stt, finals]),
            frames_to_send=frames,
            pipeline_params=PipelineParams(audio_in_sample_rate=RATE),
        )
    expected = [LINES[n % len(LINES)] for n in range(turns)]
    latencies = [(f - s) * 1000 for s, f in zip(stops.times, finals.times, strict=False)]
    return {
        "turns": turns,
        "exact_transcripts": sum(a == b for a, b in zip(finals.texts, expected, strict=False)),
        "vad_stop_to_final_ms": percentiles(latencies),
        "emulator_floor_ms": 0.0,
    }


@dataclass(frozen=True)
class SttLatencyConfig:
    """What the STT latency part of ``benchmarks.run`` does."""

    turns: int = 20
    gap: float = 0.5


async def run_stt_latency(
    config: SttLatencyConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    progress(f" STT: {config.turns} caller turns, VAD stop -> final")
    result = await measure(config.turns, config.gap)
    progress(f" STT: p50 {result['vad_stop_to_final_ms']['p50']} ms")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.turns)), indent=2))


if __name__ == "__main__":
    main()
