"""How the STT emulator knows what was said, without a speech recognizer.

Audio the emulator synthesized itself is recognized exactly: the TTS side registers each synthesis
here (``AudioLibrary.add_request``), and an utterance is found in it by normalized
cross-correlation of the waveforms at the session's rate; the words are those the synthesis placed
inside the matched stretch. Any other audio is answered from a ``Script``, one line per utterance.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pipecat_telnyx_tts.emulator.records import WordSpan
from pipecat_telnyx_tts.emulator.synth import CHARS_PER_SECOND, SynthesisRequest, synthesize_audio

Pcm = npt.NDArray[np.int16]

MATCH_SCORE = 0.8
"""Normalized correlation above which an utterance is taken to be a stretch of a known clip:
resampling by another resampler and mu-law coding keep a true match above 0.95, while two
different texts stay far below."""
LIBRARY_SIZE = 64
"""Known clips kept, most recent first: a long-running emulator must not grow without bound."""


@dataclass(frozen=True)
class Recognition:
    """What an utterance said: its words, and where they came from ("library", "script" or "")."""

    words: tuple[str, ...]
    source: str

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class _Clip:
    request: SynthesisRequest | None
    pcm: Pcm | None
    rate: int
    words: tuple[WordSpan, ...]
    by_rate: dict[int, npt.NDArray[np.float64]] = field(default_factory=dict)

    def at(self, rate: int) -> tuple[npt.NDArray[np.float64], tuple[WordSpan, ...]]:
        if self.pcm is None and self.request is not None:
            audio = synthesize_audio(self.request)
            self.pcm, self.words = audio.pcm, audio.words
        pcm = self.pcm if self.pcm is not None else np.zeros(0, dtype=np.int16)
        if rate not in self.by_rate:
            samples = pcm.astype(np.float64)
            if rate != self.rate and len(samples):
                import soxr

                samples = soxr.resample(samples, self.rate, rate)
            self.by_rate[rate] = samples
        return self.by_rate[rate], self.words


class AudioLibrary:
    """Clips the emulator may hear again: its own syntheses, and audio a test registers.

    A synthesis is rendered again only when an STT session first needs it, so the TTS side pays
    nothing for it. Thread-safe: sessions recognize in worker threads.
    """

    def __init__(self, size: int = LIBRARY_SIZE) -> None:
        self._clips: deque[_Clip] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add_request(self, request: SynthesisRequest) -> None:
        """A synthesis the TTS side made; rendered again on first use."""
        with self._lock:
            self._clips.appendleft(_Clip(request, None, request.fmt.sample_rate, ()))

    def add(self, pcm: Pcm, rate: int, words: tuple[WordSpan, ...]) -> None:
        """Audio whose words are known, such as a simulated caller's."""
        with self._lock:
            self._clips.appendleft(_Clip(None, pcm, rate, words))

    def __len__(self) -> int:
        return len(self._clips)

    def find(self, pcm: Pcm, rate: int, *, whole_words_only: bool) -> tuple[str, ...] | None:
        """The words of the known clip ``pcm`` is a stretch of, or None when it is none of them.

        A word belongs to the stretch its middle lies in; partials (``whole_words_only``) leave
        out a last word not yet heard to its end.
        """
        with self._lock:
            clips = list(self._clips)
        heard = pcm.astype(np.float64)
        if not len(heard) or not np.any(heard):
            return None
        for clip in clips:
            samples, words = clip.at(rate)
            found = best_match(heard, samples)
            if found is None:
                continue
            start = found / rate
            end = start + len(heard) / rate
            slack = 0.02
            return tuple(
                w.word
                for w in words
                if start <= (w.start + w.end) / 2 < end
                and (not whole_words_only or w.end <= end + slack)
            )
        return None


def best_match(
    heard: npt.NDArray[np.float64], clip: npt.NDArray[np.float64], score: float = MATCH_SCORE
) -> int | None:
    """The offset in ``clip`` (in samples, negative when ``heard`` starts before it) where
    ``heard`` correlates best, if above ``score``. ``heard`` may run past either end of the clip:
    the silence around an utterance is part of what was heard, not of the synthesis."""
    n = len(heard)
    if n == 0 or not len(clip):
        return None
    padded = np.concatenate((np.zeros(n), clip, np.zeros(n)))
    m = len(padded)
    size = 1 << math.ceil(math.log2(n + m))
    corr = np.fft.irfft(np.fft.rfft(padded, size) * np.conj(np.fft.rfft(heard, size)), size)
    corr = corr[: m - n + 1]
    energy = np.concatenate(([0.0], np.cumsum(padded * padded)))
    window = energy[n:] - energy[: m - n + 1]
    norm = np.sqrt(np.maximum(window, 1e-9) * float(np.dot(heard, heard)))
    scores = corr / norm
    best = int(np.argmax(scores))
    return best - n if scores[best] >= score else None


class Script:
    """What a caller says when the audio is not the emulator's own: one line per utterance,
    in order. Partials reveal a line's words as fast as a person would say them."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self._lines: deque[str] = deque(lines or ())
        self._lock = threading.Lock()

    def extend(self, lines: list[str]) -> None:
        with self._lock:
            self._lines.extend(lines)

    def take(self) -> str | None:
        with self._lock:
            return self._lines.popleft() if self._lines else None

    def __len__(self) -> int:
        return len(self._lines)


def script_words(line: str, seconds: float | None) -> tuple[str, ...]:
    """The words of ``line`` heard after ``seconds`` of speaking (None: all of them)."""
    words = tuple(line.split())
    if seconds is None:
        return words
    spoken = 0
    heard = 0
    for word in words:
        spoken += len(word) + 1
        if spoken / CHARS_PER_SECOND > seconds:
            break
        heard += 1
    return words[:heard]
