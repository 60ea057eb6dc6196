"""Speak text through :class:`TelnyxTTSService` in a real Pipecat pipeline and write a WAV.

This is the code behind ``pipecat-telnyx-tts demo`` and ``pipecat-telnyx-tts say``. The text goes
in the way an LLM's reply does (``LLMFullResponseStartFrame``, token-sized ``LLMTextFrame``\\ s,
``LLMFullResponseEndFrame``), so what is measured is what a voice agent would see: the time from
the reply's first text entering the TTS to the first audio frame leaving it.

Without a Telnyx API key the embedded emulator is started in-process, so the whole path (sockets,
protocol, decoding, pipecat) runs offline; the caller is told which one was used.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from websockets.exceptions import InvalidStatus

from pipecat_telnyx_tts.common import DEFAULT_RATE, DEFAULT_VOICE, counted
from pipecat_telnyx_tts.protocol import DEFAULT_URL
from pipecat_telnyx_tts.request import check_voice
from pipecat_telnyx_tts.service import TelnyxTTSService
from pipecat_telnyx_tts.voice_list import VoiceList, VoiceListUnavailable, fetch_voice_list
from pipecat_telnyx_tts.voices import family_of

DEMO_REPLY = (
    "Thanks for calling Riverside Dental, this is Astra. "
    "I can book, move or cancel an appointment for you. "
    "The next free slot is tomorrow at half past ten in the morning. "
    "Would you like me to hold it for you?"
)
"""A scripted agent reply: several sentences, so sentence-by-sentence synthesis shows."""

DEMO_TOKEN_DELAY_S = 0.03
"""About 33 tokens per second, a fast hosted LLM: the TTS has to start before the reply ends."""
LEAD_IN_S = 0.5
"""Pause between pipeline start and the reply. In a call the reply comes after the caller has
spoken, and the service uses that time to connect; without the pause the demo would measure a
cold start no call ever sees."""

BUDGET_S = 30.0
"""Seconds allowed beyond the text's own streaming and speaking time. The service gives up on a
silent server sooner (10 s); this only bounds what nothing else does."""

Notify = Callable[[str], None]


class SpeakError(Exception):
    """A failure the user can fix; the message says what to change."""


@dataclass(frozen=True)
class Endpoint:
    """Where the TTS connects, with the key it sends."""

    url: str
    api_key: str
    emulated: bool
    description: str


@dataclass
class SpeakResult:
    """What one run produced."""

    path: Path
    sample_rate: int
    audio_seconds: float
    first_audio_ms: float | None
    """From the reply's first text entering the TTS to its first audio frame leaving it."""
    sentences: list[str] = field(default_factory=list)
    endpoint: str = ""


def _emulator_signal() -> str:
    from pipecat_telnyx_tts.emulator.config import Signal
    from pipecat_telnyx_tts.emulator.synth import resolve_signal

    if resolve_signal(Signal.AUTO) is Signal.SPEECH:
        return "espeak-ng speech"
    return "a synthetic tone (install the [speech] extra for espeak-ng speech)"


def check_url(url: str) -> None:
    """Refuse, before anything connects, a URL that can never be a TTS WebSocket."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("ws", "wss") or not parts.hostname:
        raise SpeakError(
            f"{url!r} is not a WebSocket URL: give ws://HOST[:PORT]/PATH or wss://..., such as "
            f"{DEFAULT_URL} or the ws:// URL the emulator prints"
        )


def describe_failure(frame: ErrorFrame, url: str) -> str:
    """What the first error of a run means to someone who typed ``url``, in one line."""
    error = frame.exception
    if isinstance(error, InvalidStatus) and error.response.status_code == 404:
        return (
            f"no TTS WebSocket at {url} (HTTP 404): check the URL's path; Telnyx's and the "
            "emulator's is /v2/text-to-speech/speech"
        )
    if isinstance(error, OSError):
        if isinstance(error, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(error, TimeoutError):
            reason = "timed out"
        else:
            reason = error.strerror or type(error).__name__
        return f"cannot connect to {url} ({reason}): check the URL and that the server is running"
    return frame.error


SKIP_CHECK_ADVICE = (
    "if it is a voice cloned for your account, which the list may lack, pass --no-voice-check"
)


async def listed_voices(endpoint: Endpoint) -> VoiceList | None:
    """The endpoint's voice list, which the service fetches too (the fetch is cached)."""
    try:
        return await fetch_voice_list(endpoint.url, endpoint.api_key)
    except VoiceListUnavailable:
        return None  # The service says so itself, as a warning.


@asynccontextmanager
async def open_endpoint(
    url: str | None, api_key: str | None, notify: Notify
) -> AsyncIterator[Endpoint]:
    """Telnyx when a key is known, else the embedded emulator (and ``notify`` says which).

    A ``url`` without a key is taken as a self-hosted emulator that accepts any key.
    """
    key = api_key or os.environ.get("TELNYX_API_KEY")
    if key:
        target = url or DEFAULT_URL
        yield Endpoint(target, key, False, "Telnyx" if target == DEFAULT_URL else target)
        return
    if url:
        notify(f"TELNYX_API_KEY is not set: connecting to {url} without a real key.")
        yield Endpoint(url, "no-key", True, url)
        return
    from pipecat_telnyx_tts.emulator import TelnyxEmulator

    async with TelnyxEmulator(signal="auto") as emu:
        notify(
            "TELNYX_API_KEY is not set: using the embedded Telnyx emulator "
            f"({_emulator_signal()}), not Telnyx's voices. "
            "Set TELNYX_API_KEY (or pass --api-key) to hear Telnyx."
        )
        yield Endpoint(emu.url, "emulator", True, f"the embedded emulator at {emu.url}")


class _FirstTextClock(FrameProcessor):
    """Notes when the reply's first text enters the TTS (placed right before it)."""

    def __init__(self) -> None:
        super().__init__(name="first-text-clock")
        self.first_text_at: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame) and self.first_text_at is None:
            self.first_text_at = time.perf_counter()
        await self.push_frame(frame, direction)


class _AudioSink(FrameProcessor):
    """Collects what leaves the TTS: the audio, when the first of it came, and its sentences
    (put together from the words the service pushes as they are heard)."""

    def __init__(self, on_sentence: Callable[[int, str], None]) -> None:
        super().__init__(name="audio-sink")
        self.pcm = bytearray()
        self.sample_rate: int | None = None
        self.first_audio_at: float | None = None
        self.sentences: list[str] = []
        self._words: list[str] = []
        self._on_sentence = on_sentence

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            if self.first_audio_at is None:
                self.first_audio_at = time.perf_counter()
            self.sample_rate = frame.sample_rate
            self.pcm.extend(frame.audio)
        elif isinstance(frame, TTSTextFrame) and frame.text.strip():
            self._words.append(frame.text.strip())
            if _SENTENCE_END.search(self._words[-1]):
                self.finish_sentence()
        await self.push_frame(frame, direction)

    def finish_sentence(self) -> None:
        """Report the words heard since the last sentence, if any."""
        if self._words:
            self.sentences.append(" ".join(self._words))
            self._words = []
            self._on_sentence(len(self.sentences), self.sentences[-1])


_SENTENCE_END = re.compile(r"[.!?\u2026][\"')\]\u201d\u2019]*$")


def reply_tokens(text: str) -> list[str]:
    """Split text the way an LLM streams it: word-sized pieces with their trailing space."""
    return re.findall(r"\S+\s*", text)


async def speak(
    text: str,
    out: Path | str,
    *,
    voice: str = DEFAULT_VOICE,
    sample_rate: int = DEFAULT_RATE,
    speed: float | None = None,
    url: str | None = None,
    api_key: str | None = None,
    token_delay: float = 0.0,
    check_voice_list: bool = True,
    notify: Notify = lambda _: None,
) -> SpeakResult:
    """Speak ``text`` as one agent reply and write it to ``out`` as 16-bit mono WAV.

    With ``check_voice_list``, a voice the endpoint's voice list lacks is refused before
    speaking; without it, it is tried as given.

    Raises:
        SpeakError: bad settings, a refusal or an unreachable server, an unlisted voice, no
            audio, or an unwritable output path; the message says what to fix.
    """
    if not text.strip():
        raise SpeakError("nothing to say: the text is empty")
    if url is not None:
        check_url(url)
    out = Path(out)
    if not out.parent.is_dir():
        raise SpeakError(f"cannot write {out}: the folder {out.parent} does not exist")
    try:
        # Before any server starts, refuse what can never work. Unknown providers are left to
        # the service, which warns about them (once) and lets the server decide.
        if family_of(voice) is not None:
            check_voice(voice)
    except ValueError as e:
        raise SpeakError(str(e)) from None
    tokens = reply_tokens(text)
    budget = BUDGET_S + len(tokens) * token_delay + len(text) / 5.0
    async with open_endpoint(url, api_key, notify) as endpoint:
        # The service reports a voice its list lacks as an error and carries on; a run stops at
        # its first error, so the report is made here first, saying how to skip it, and skipped
        # in the pipeline when asked.
        voices = await listed_voices(endpoint)
        skipped_report = voices.unlisted(voice) if voices else None
        if voices and skipped_report and check_voice_list:
            raise SpeakError(voices.unlisted(voice, SKIP_CHECK_ADVICE) or skipped_report)
        if skipped_report:
            notify(f"{voice} is not in the voice list: trying it anyway, as asked.")
        tts = TelnyxTTSService(
            api_key=endpoint.api_key,
            url=endpoint.url,
            settings=TelnyxTTSService.Settings(voice=voice, speed=speed),
        )
        notify(
            f"Speaking {counted(len(text), 'character')} with {voice} at {sample_rate} Hz via "
            f"{endpoint.description}"
        )
        clock = _FirstTextClock()

        def on_sentence(n: int, sentence: str) -> None:
            # Seconds from the reply's first text, the origin of the time to first audio too. A
            # sentence is reported when its last word leaves the TTS: the service releases a word
            # once enough of its audio has arrived, which is faster than it would play.
            assert clock.first_text_at is not None  # words come only after text
            elapsed = time.perf_counter() - clock.first_text_at
            notify(f"  [{elapsed:5.2f} s] sentence {n}: {sentence}")

        sink = _AudioSink(on_sentence)
        worker = PipelineWorker(
            Pipeline([clock, tts, sink]),
            params=PipelineParams(
                audio_in_sample_rate=sample_rate, audio_out_sample_rate=sample_rate
            ),
            enable_rtvi=False,
            idle_timeout_secs=None,
        )
        errors: list[str] = []
        pipeline_started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def _on_started(_worker: PipelineWorker, _frame: Frame) -> None:
            pipeline_started.set()

        @worker.event_handler("on_pipeline_error")
        async def _on_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:
            if frame.error == skipped_report:
                return
            # The run has failed whatever comes next; stop now rather than wait for retries.
            errors.append(describe_failure(frame, endpoint.url))
            await worker.cancel(reason=frame.error)

        async def reply() -> None:
            await pipeline_started.wait()
            await asyncio.sleep(LEAD_IN_S)
            await worker.queue_frame(LLMFullResponseStartFrame())
            for token in tokens:
                await worker.queue_frame(LLMTextFrame(token))
                if token_delay:
                    await asyncio.sleep(token_delay)
            await worker.queue_frames([LLMFullResponseEndFrame(), EndFrame()])

        timed_out = asyncio.Event()

        async def watchdog() -> None:
            # Not asyncio.timeout around runner.run(): the runner absorbs the cancellation.
            await asyncio.sleep(budget)
            timed_out.set()
            await worker.cancel(reason="no complete answer in time")

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        helpers = [asyncio.create_task(reply()), asyncio.create_task(watchdog())]
        try:
            await runner.run()
        finally:
            for helper in helpers:
                helper.cancel()
        if timed_out.is_set():
            raise SpeakError(
                f"no complete answer from {endpoint.description} within {budget:.0f} s: "
                "check the URL and your network"
            )

    if errors:
        raise SpeakError(errors[0])
    if not sink.pcm or sink.sample_rate is None:
        raise SpeakError(f"no audio came back from {endpoint.description}")
    try:
        with wave.open(str(out), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(sink.sample_rate)
            wav.writeframes(bytes(sink.pcm))
    except OSError as e:
        raise SpeakError(f"cannot write {out}: {e.strerror or e}") from None
    sink.finish_sentence()
    first_ms = None
    if sink.first_audio_at is not None and clock.first_text_at is not None:
        first_ms = (sink.first_audio_at - clock.first_text_at) * 1000
    return SpeakResult(
        path=out,
        sample_rate=sink.sample_rate,
        audio_seconds=len(sink.pcm) / 2 / sink.sample_rate,
        first_audio_ms=first_ms,
        sentences=sink.sentences,
        endpoint=endpoint.description,
    )


async def run_demo(
    out: Path | str = "demo.wav",
    *,
    voice: str = DEFAULT_VOICE,
    sample_rate: int = DEFAULT_RATE,
    url: str | None = None,
    api_key: str | None = None,
    check_voice_list: bool = True,
    notify: Notify = lambda _: None,
) -> SpeakResult:
    """The scripted reply, streamed at an LLM's pace."""
    return await speak(
        DEMO_REPLY,
        out,
        voice=voice,
        sample_rate=sample_rate,
        url=url,
        api_key=api_key,
        token_delay=DEMO_TOKEN_DELAY_S,
        check_voice_list=check_voice_list,
        notify=notify,
    )
