"""Telnyx STT sessions per core: the client's CPU for N callers streaming at real time.

The emulator runs in a child process (its CPU is not the client's) and answers from a script;
this process runs N pipelines, each ``TelnyxSTTService`` fed 20 ms frames of a caller who talks
and pauses, with VAD start and stop frames as a VAD would push them. CPU is
``time.process_time()`` of this process over the wall time of the run (1.0 = one core busy), so
sessions per core is N over that.

    python -m benchmarks.stt_sessions --sessions 20 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.task import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from pipecat_telnyx_tts import TelnyxSTTService
from pipecat_telnyx_tts.emulator import Signal
from pipecat_telnyx_tts.emulator.synth import OutputFormat, SynthesisRequest, synthesize_audio

RATE = 8000
CHUNK_S = 0.02
TALK = "I would like to book a cleaning for next Friday afternoon, please."


def caller(seconds: float) -> tuple[list[Frame], float]:
    """A caller who talks (about 4.5 s) then listens for 2 s, for at least ``seconds``; the
    frames and the audio seconds they hold."""
    speech = synthesize_audio(SynthesisRequest(TALK, OutputFormat("linear16", RATE), Signal.TONE))
    step = round(CHUNK_S * RATE)
    talk = speech.pcm.astype("<i2").tobytes()
    pause = bytes(2 * RATE * 2)
    frames: list[Frame] = []
    elapsed = 0.0
    while elapsed < seconds:
        frames.append(VADUserStartedSpeakingFrame())
        for data in (talk, pause):
            for i in range(0, len(data), step * 2):
                frames += [InputAudioRawFrame(data[i : i + step * 2], RATE, 1), SleepFrame(CHUNK_S)]
                elapsed += CHUNK_S
            if data is talk:
                frames.append(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    return frames, elapsed


async def emulator(script: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipecat_telnyx_tts.emulator", "--port", "0", "--api-key", "k",
        "--log-level", "warning", "--stt-script", str(script),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    lines = [(await process.stdout.readline()).decode() for _ in range(3)]
    return process, lines[2].split(" at ", 1)[1].split(" ", 1)[0]


async def measure(sessions: int, seconds: float) -> dict[str, Any]:
    frames, audio_seconds = caller(seconds)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "caller.txt"
        script.write_text(f"{TALK}\n" * (sessions * (int(seconds) // 6 + 2)), encoding="utf-8")
        process, url = await emulator(script)
        try:
            services = [TelnyxSTTService(api_key="k", url=url) for _ in range(sessions)]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            results = await asyncio.gather(
                *(
                    run_test(
                        stt,
                        frames_to_send=frames,
                        pipeline_params=PipelineParams(audio_in_sample_rate=RATE),
                    )
                    for stt in services
                )
            )
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            process.terminate()
            await process.wait()
    finals = sum(1 for down, _ in results for f in down if type(f).__name__ == "TranscriptionFrame")
    cores = cpu / wall
    return {
        "sessions": sessions,
        "audio_seconds_each": round(audio_seconds, 1),
        "wall_seconds": round(wall, 2),
        "client_cores_busy": round(cores, 3),
        "cpu_percent_per_session": round(100 * cores / sessions, 2),
        "sessions_per_core": round(sessions / cores, 1) if cores else None,
        "finals": finals,
    }


@dataclass(frozen=True)
class SttSessionsConfig:
    """What the STT sessions part of ``benchmarks.run`` does."""

    sessions: int = 20
    seconds: float = 20.0


async def run_stt_sessions(
    config: SttSessionsConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    progress(f" STT sessions: {config.sessions} callers for {config.seconds:g} s")
    result = await measure(config.sessions, config.seconds)
    progress(f" STT sessions: {result['client_cores_busy']} cores busy")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.sessions, args.seconds)), indent=2))


if __name__ == "__main__":
    main()
