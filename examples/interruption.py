"""Barge-in, offline: Telnyx TTS is interrupted mid-reply, then speaks the next reply.

    python3 -m venv .venv && .venv/bin/pip install -e ".[speech]"   # once, in the repository
    .venv/bin/python examples/interruption.py

A local Telnyx emulator with live-like timing stands in for Telnyx. A reply is spoken through
``TelnyxTTSService`` in a Pipecat pipeline; once its audio is flowing, an ``InterruptionFrame``
arrives, as when a caller talks over the bot; then a second reply is spoken. The script prints
what the caller heard of each turn, whether Telnyx was told to stop (``{"force": true}``), and
whether any audio of the interrupted reply came after the interruption; it exits 1 if the barge-in
was not clean. Audio arrives faster than it plays, so an interrupted turn has delivered more than
the caller heard: a caller hears a turn from its first audio until the interruption.
Against Telnyx itself: no emulator, your API key, and no ``url``.
"""

from __future__ import annotations

import asyncio
import sys
import time

from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.protocol import ForceMessage

FIRST_REPLY = (
    "Thanks for calling Riverside Dental, this is Astra. I can book, move or cancel an "
    "appointment for you. The next free slot is tomorrow at half past ten in the morning."
)
SECOND_REPLY = "Of course. Which appointment would you like to move?"
BARGE_IN_AFTER_S = 0.5
"""The caller starts talking this long after the bot's first audio: mid-sentence."""


class Speaker(FrameProcessor):
    """Stands where the call's audio output would be: notes what a caller would hear."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = {}
        """Seconds of audio delivered per turn (the TTS context id), in the order they spoke."""
        self.started_at: dict[str, float] = {}
        """When each turn's first audio arrived: it starts playing then."""
        self.heard_of_cut_turn = 0.0
        """Seconds of the interrupted turn played before the interruption silenced it."""
        self.cut_turn: str | None = None
        self.late_frames = 0
        """Audio of the interrupted turn arriving after the interruption: it would be heard."""
        self.first_audio = asyncio.Event()
        self.next_turn_over = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and frame.context_id:
            turn = frame.context_id
            if turn == self.cut_turn:
                self.late_frames += 1
            seconds = len(frame.audio) / 2 / frame.sample_rate  # 16-bit mono
            self.seconds[turn] = self.seconds.get(turn, 0.0) + seconds
            self.started_at.setdefault(turn, time.monotonic())
            self.first_audio.set()
        elif isinstance(frame, InterruptionFrame) and self.seconds:
            self.cut_turn = list(self.seconds)[-1]
            playing_for = time.monotonic() - self.started_at[self.cut_turn]
            self.heard_of_cut_turn = min(playing_for, self.seconds[self.cut_turn])
        elif isinstance(frame, TTSStoppedFrame) and self.cut_turn not in (None, frame.context_id):
            self.next_turn_over.set()
        await self.push_frame(frame, direction)


async def converse(worker: PipelineWorker, speaker: Speaker) -> None:
    """Reply, barge in once the reply is audible, reply again; then end the pipeline."""
    try:
        async with asyncio.timeout(30):
            await worker.queue_frame(TTSSpeakFrame(FIRST_REPLY))
            await speaker.first_audio.wait()
            await asyncio.sleep(BARGE_IN_AFTER_S)
            await worker.queue_frames([InterruptionFrame(), TTSSpeakFrame(SECOND_REPLY)])
            await speaker.next_turn_over.wait()
        await worker.queue_frame(EndFrame())
    except TimeoutError:
        await worker.cancel(reason="the replies did not finish in 30 s")


async def main() -> int:
    logger.remove()  # Pipecat logs every frame at DEBUG; keep the output to what matters here.
    logger.add(sys.stderr, level="WARNING")
    # Live-like timing, and a server that still sends a few frames it had ready after the force.
    async with TelnyxEmulator(faults=Faults(frames_after_force=4)) as emu:
        tts = TelnyxTTSService(api_key="emulator-accepts-any-key", url=emu.url)
        speaker = Speaker()
        worker = PipelineWorker(
            Pipeline([tts, speaker]),
            params=PipelineParams(audio_out_sample_rate=16000),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        talk = asyncio.create_task(converse(worker, speaker))
        await runner.run()
        await talk
    forced = any(isinstance(m, ForceMessage) for m in emu.received_messages())
    after_force = sum(s.frames_after_force_sent for c in emu.connections for s in c.syntheses)
    for n, (turn, seconds) in enumerate(speaker.seconds.items(), start=1):
        if turn == speaker.cut_turn:
            print(
                f"Turn {n}: the caller heard {speaker.heard_of_cut_turn:.2f} s, then interrupted "
                f"({seconds:.2f} s of its audio had arrived)"
            )
        else:
            print(f"Turn {n}: the caller heard {seconds:.2f} s, spoken to the end")
    print(f"Force sent to Telnyx for the interrupted turn: {'yes' if forced else 'NO'}")
    print(f"Frames the server still sent after the force: {after_force}")
    print(f"Audio of the interrupted turn after the interruption: {speaker.late_frames} frames")
    clean = forced and speaker.late_frames == 0 and len(speaker.seconds) == 2
    print("Clean barge-in." if clean else "The barge-in was NOT clean.")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
