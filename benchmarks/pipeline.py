"""A TTS service in a real pipecat pipeline, with timestamps taken where frames cross it.

The pipeline is ``[head, tts, tail]`` run by a ``PipelineWorker`` under its own ``WorkerRunner``,
as a bot runs it. Two clocks readings matter and both are ``time.perf_counter()``:

- a frame *entering* the TTS: the service's own ``on_before_process_frame`` event, which pipecat
  calls inline just before ``process_frame``. A processor placed before the TTS would see the
  frame earlier, before it waits in the TTS's input queue, which is the TTS's latency too.
- a frame *leaving* the TTS: ``tail``, a processor in direct mode, so ``push_frame`` from the
  TTS runs straight into it with no queue hop in between.

The tail keeps a small record per frame rather than the frames themselves, so that hundreds of
sessions streaming for minutes do not hold their audio in memory.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TTSService
from pipecat.workers.runner import WorkerRunner

from pipecat_telnyx_tts.emulator.synth import CHARS_PER_SECOND

NO_MARKER = -1
"""Marker of audio that is not the emulator's marker signal (all samples equal)."""

_TRACKED_IN = (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame, InterruptionFrame)
_TRACKED_OUT = (
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
)


@dataclass(frozen=True)
class Seen:
    """One frame at a crossing: when, what kind, and for audio its length and marker."""

    t: float
    kind: str
    audio_bytes: int = 0
    marker: int = NO_MARKER


def marker_of(audio: bytes) -> int:
    """The socket index the emulator's marker signal wrote into every sample, or NO_MARKER."""
    samples = np.frombuffer(audio, dtype=np.int16)
    if samples.size == 0:
        return NO_MARKER
    low, high = int(samples.min()), int(samples.max())
    return low if low == high else NO_MARKER


class Tail(FrameProcessor):
    """Records frames the moment the TTS pushes them (direct mode: no queue in between)."""

    def __init__(self, *, markers: bool) -> None:
        super().__init__(enable_direct_mode=True)
        self._markers = markers
        self.seen: list[Seen] = []
        self._counts: Counter[str] = Counter()
        self._changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Record, then pass the frame on unchanged."""
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM and isinstance(frame, _TRACKED_OUT):
            t = time.perf_counter()
            if isinstance(frame, TTSAudioRawFrame):
                marker = marker_of(frame.audio) if self._markers else NO_MARKER
                seen = Seen(t, "audio", len(frame.audio), marker)
            else:
                seen = Seen(t, type(frame).__name__)
            self.seen.append(seen)
            self._counts[seen.kind] += 1
            self._changed.set()
        await self.push_frame(frame, direction)

    def count(self, kind: str) -> int:
        return self._counts[kind]

    async def wait_count(self, kind: str, more_than: int, timeout: float) -> None:
        """Wait until more than ``more_than`` frames of ``kind`` have been recorded."""
        async with asyncio.timeout(timeout):
            while self._counts[kind] <= more_than:
                self._changed.clear()
                await self._changed.wait()


class Head(FrameProcessor):
    """Catches errors the TTS pushes upstream, so that a run cannot fail silently."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.errors: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Record errors, pass everything on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame):
            self.errors.append(frame.error)
        await self.push_frame(frame, direction)


@dataclass
class Entered:
    """Frames entering the TTS's ``process_frame``, in order."""

    seen: list[Seen] = field(default_factory=list)

    def on_frame(self, _processor: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, _TRACKED_IN):
            self.seen.append(Seen(time.perf_counter(), type(frame).__name__))


class Session:
    """One pipeline around one TTS service, as one call of a bot would run it."""

    def __init__(
        self,
        tts: TTSService,
        *,
        sample_rate: int,
        markers: bool = False,
        after: Sequence[FrameProcessor] = (),
    ) -> None:
        """``after`` go after the tail, as an output transport would."""
        self.tts = tts
        self.head = Head()
        self.tail = Tail(markers=markers)
        self.entered = Entered()
        tts.add_event_handler("on_before_process_frame", self.entered.on_frame)
        self.worker = PipelineWorker(
            Pipeline([self.head, tts, self.tail, *after]),
            params=PipelineParams(
                audio_in_sample_rate=sample_rate, audio_out_sample_rate=sample_rate
            ),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
            enable_rtvi=False,
            enable_turn_tracking=False,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._run: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self.started_at = 0.0

    async def __aenter__(self) -> Self:
        @self.worker.event_handler("on_pipeline_started")
        async def _started(_worker: PipelineWorker, _frame: StartFrame) -> None:
            self.started_at = time.perf_counter()
            self._started.set()

        await self._runner.add_workers(self.worker)
        self._run = asyncio.create_task(self._runner.run())
        async with asyncio.timeout(10):
            await self._started.wait()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(graceful=exc is None)

    async def close(self, *, graceful: bool = True) -> None:
        """End the pipeline: let it finish what it has, or cancel it at once."""
        run = self._run
        if run is None:
            return
        self._run = None
        if graceful:
            await self.worker.queue_frame(EndFrame())
        else:
            await self.worker.cancel()
        try:
            async with asyncio.timeout(15):
                await run
        except TimeoutError:
            run.cancel()

    async def send(self, frames: Sequence[Frame]) -> None:
        await self.worker.queue_frames(frames)

    async def speak(self, text: str, timeout: float = 60) -> None:
        """Send one LLM reply and wait until its end has left the TTS, after all its audio."""
        ends = self.tail.count("LLMFullResponseEndFrame")
        await self.send(llm_turn(text))
        await self.tail.wait_count("LLMFullResponseEndFrame", ends, timeout)

    def errors(self) -> list[str]:
        return list(self.head.errors)


# --------------------------------------------------------------------------- turns

_FILLERS = ("All set", "Got it", "Okay then", "Thanks", "Sure thing", "Right away")


def reply_text(number: int, sentences: int) -> str:
    """A reply whose every sentence is unique across the run. The emulator caches what it has
    synthesized (per synthesis, so per sentence here), and a cached synthesis is neither
    delayed nor paced, which would fake a perfect latency and end turns early."""
    parts = [f"Reply {number:05d}."]
    parts += [
        f"{_FILLERS[(number + i) % len(_FILLERS)]} {number:05d}." for i in range(sentences - 1)
    ]
    return " ".join(parts)


def long_reply(number: int, seconds: float) -> str:
    """One unique sentence of about ``seconds`` of emulator audio: a single synthesis, so that
    the emulator's pacing of its chunks is known exactly."""
    words = itertools.cycle(("and", "then", "the", "order", "ships", "on", "monday", "morning"))
    text = f"Reply {number:05d}"
    while len(text) / CHARS_PER_SECOND < seconds:
        text += " " + next(words)
    return text + "."


def tokens(text: str) -> list[str]:
    """Word-sized pieces with their leading space, the way an LLM streams them."""
    return re.findall(r"\s*\S+", text)


def llm_turn(text: str) -> list[Frame]:
    """The frames an LLM emits for one reply, all at once: an LLM that has already produced
    the reply, so that what is measured is the TTS, not the token rate."""
    return [
        LLMFullResponseStartFrame(),
        *(LLMTextFrame(t) for t in tokens(text)),
        LLMFullResponseEndFrame(),
    ]
