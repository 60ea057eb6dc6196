"""One STT session's rules without I/O: utterances found by the audio's own energy, and the
results each engine sends for them.

Everything runs on the audio's clock (samples received), never on timers: endpointing is so many
milliseconds of silent audio, a partial is due every so many milliseconds of speech. A test that
sends the same audio gets the same results however loaded the machine is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipecat_telnyx_tts.emulator.stt_config import SttBehaviour
from pipecat_telnyx_tts.emulator.stt_recognize import (
    AudioLibrary,
    Pcm,
    Recognition,
    Script,
    script_words,
)
from pipecat_telnyx_tts.stt_protocol import Engine, Transcript, UtteranceEnd

FRAME_MS = 10
Result = Transcript | UtteranceEnd

LIBRARY_CONFIDENCE = 0.99
SCRIPT_CONFIDENCE = 0.9


@dataclass
class UtteranceRecord:
    """One utterance the session found, for tests to assert on (seconds on the audio clock)."""

    start: float
    end: float
    text: str
    source: str
    """"library", "script", or "" when nothing recognized it."""
    ended_by: str
    """"endpointing", "finalize", "close_stream", or "too_soon" (a Finalize without enough
    trailing silence, ``SttBehaviour.finalize_needs_silence_ms``)."""


@dataclass(frozen=True)
class SessionSpec:
    """What a session was opened with, after the server read its query."""

    engine: Engine
    model: str | None
    sample_rate: int
    interim_results: bool
    endpointing_ms: int | None
    """None: endpointing off; utterances end only at ``Finalize`` or ``CloseStream``."""


@dataclass
class _Utterance:
    start: int
    samples: list[Pcm] = field(default_factory=list)
    loud_end: int = 0
    """Samples from the utterance start to the end of its last loud frame."""
    silence_ms: int = 0
    last_partial_at: int = 0
    last_partial: str = ""
    line: str | None = None
    line_taken: bool = False

    def pcm(self, upto: int) -> Pcm:
        return np.concatenate(self.samples)[:upto] if self.samples else np.zeros(0, np.int16)


class SttSession:
    """Feed audio and control messages in; results come out in the order the server sends them."""

    def __init__(
        self,
        spec: SessionSpec,
        behaviour: SttBehaviour,
        library: AudioLibrary,
        script: Script,
    ) -> None:
        self.spec = spec
        self.behaviour = behaviour
        self.library = library
        self.script = script
        self.frame = spec.sample_rate * FRAME_MS // 1000
        self.samples_in = 0
        self._framed = 0
        """Samples cut into frames so far: where the next frame starts."""
        self.utterances: list[UtteranceRecord] = []
        self._rest = np.zeros(0, np.int16)
        self._current: _Utterance | None = None
        self._since_final_ms: int | None = None
        """Silence since an endpointing final that still owes an ``utterance_end``."""

    @property
    def audio_seconds(self) -> float:
        return self.samples_in / self.spec.sample_rate

    def feed(self, pcm: Pcm) -> list[Result]:
        """Audio in; whatever results it completes out."""
        self.samples_in += len(pcm)
        data = np.concatenate((self._rest, pcm)) if len(self._rest) else pcm
        whole = len(data) - len(data) % self.frame
        self._rest = data[whole:].copy()
        out: list[Result] = []
        for i in range(0, whole, self.frame):
            out += self._frame(data[i : i + self.frame])
        return out

    def finalize(self) -> list[Result]:
        """``Finalize``: the utterance under way ends now. Nothing pending: nothing is sent."""
        u = self._current
        if u is None:
            return []
        needed = self.behaviour.finalize_needs_silence_ms
        if needed and u.silence_ms < needed:
            self._current = None
            self._record(u, Recognition((), ""), "too_soon")
            return [Transcript("", True, confidence=0.0)]
        return self._finish("finalize")

    def close_stream(self) -> list[Result]:
        """``CloseStream``: the last final, if an utterance is under way."""
        return self._finish("close_stream") if self._current is not None else []

    # ------------------------------------------------------------------ frames

    def _frame(self, frame: Pcm) -> list[Result]:
        loud = int(np.max(np.abs(frame.astype(np.int32)))) > self.behaviour.silence_level
        u = self._current
        if u is None and not loud:
            self._framed += len(frame)
            return self._quiet_between()
        if u is None:
            u = self._current = _Utterance(start=self._framed)
            self._since_final_ms = None
        self._framed += len(frame)
        u.samples.append(frame)
        length = sum(len(s) for s in u.samples)
        if loud:
            u.loud_end = length
            u.silence_ms = 0
        else:
            u.silence_ms += FRAME_MS
            endpointing = self.spec.endpointing_ms
            if endpointing is not None and u.silence_ms >= endpointing:
                return self._finish("endpointing")
        return self._partial(u, length)

    def _quiet_between(self) -> list[Result]:
        if self._since_final_ms is None:
            return []
        self._since_final_ms += FRAME_MS
        if self._since_final_ms < self.behaviour.utterance_end_ms:
            return []
        self._since_final_ms = None
        return [UtteranceEnd()]

    def _partial(self, u: _Utterance, length: int) -> list[Result]:
        if not self._partials_on() or length - u.last_partial_at < self._interval():
            return []
        u.last_partial_at = length
        heard = self._recognize(u, partial=True)
        if not heard.text or heard.text == u.last_partial:
            return []
        u.last_partial = heard.text
        return [Transcript(heard.text, False, confidence=0.0)]

    def _partials_on(self) -> bool:
        engine = self.spec.engine
        if not (self.spec.interim_results and engine.interim_results) or engine.finals_only:
            return False
        return engine.name != "Deepgram" or self.behaviour.deepgram_interims

    def _interval(self) -> int:
        return self.spec.sample_rate * max(self.behaviour.interim_every_ms, FRAME_MS) // 1000

    def _finish(self, ended_by: str) -> list[Result]:
        u = self._current
        if u is None:
            return []
        self._current = None
        heard = self._recognize(u, partial=False)
        self._record(u, heard, ended_by)
        engine = self.spec.engine
        speech_final = (
            ended_by == "endpointing" and engine.speech_final and self.behaviour.speech_final
        )
        if ended_by == "endpointing" and engine.utterance_end and self.behaviour.utterance_end:
            self._since_final_ms = u.silence_ms
        confidence = LIBRARY_CONFIDENCE if heard.source == "library" else SCRIPT_CONFIDENCE
        return [Transcript(heard.text, True, speech_final, confidence if heard.text else 0.0)]

    def _recognize(self, u: _Utterance, *, partial: bool) -> Recognition:
        pcm = u.pcm(u.loud_end)
        words = self.library.find(pcm, self.spec.sample_rate, whole_words_only=partial)
        if words is not None:
            return Recognition(words, "library")
        if not u.line_taken:
            u.line_taken = True
            u.line = self.script.take()
        if u.line is None:
            return Recognition((), "")
        seconds = len(pcm) / self.spec.sample_rate if partial else None
        return Recognition(script_words(u.line, seconds), "script")

    def _record(self, u: _Utterance, heard: Recognition, ended_by: str) -> None:
        rate = self.spec.sample_rate
        self.utterances.append(
            UtteranceRecord(
                u.start / rate, (u.start + u.loud_end) / rate, heard.text, heard.source, ended_by
            )
        )
