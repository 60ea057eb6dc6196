"""When each word of a turn is heard, estimated from the audio that arrives. Plain code, no I/O.

Telnyx sends no word timestamps, yet pipecat's assistant context should hold only the words the
caller heard before a barge-in. Pipecat can do that for a service that reports when each word is
played (``add_word_timestamps``): words are released by the output transport at their time and
dropped with the audio on an interruption. This module supplies those times.

What is known, and what each contributes:

- The text of every synthesis, in order: the service flushes it. A synthesis's words share its
  speech by weight (mostly letters, partly syllables): the pauses between them are where the
  audio is silent, not where punctuation predicts them.
- How long each synthesis really is, from where it starts and ends in the audio. Exact when the
  wire marks it: a concatenated provider's text-bearing frame carries the synthesis's first audio;
  a final frame ends the synthesis last announced; the end of the turn ends the last one. Bounded
  otherwise: a streamed provider's text-bearing frame lies among its own synthesis's audio frames
  (the synthesis started no later, and the one before ended no later), and audio that arrived
  before a segment was flushed cannot be that segment's. Between anchors the boundary is placed
  by the speaking rate measured on the syntheses already complete.
- The speaking rate inside a synthesis whose end is not known yet: the rate measured so far,
  corrected by the pauses its audio has so far, matched to its commas (a 45-word sentence spoken
  8 % faster than the rate says is otherwise a second out by its end). When its audio stops
  after a pause, with the speech all its words need, it has ended.
- Speech onset, found as sound after silence in the PCM: where the first word of a synthesis
  starts once its start is known.
- The playback timeline: pipecat times words from the first audio of the context and assumes the
  audio plays without pause, but a synthesis that arrives after the one before has finished
  playing starts late. Each audio chunk starts at the later of the previous chunk's end and its
  own arrival, and words are placed on that timeline.

A word is released to pipecat only when its estimate can no longer move much (its synthesis is
complete, or the audio has arrived well past it) and its playback is near: audio comes faster
than real time, and every chunk, every pause found, every boundary marked improves the estimate
of words not yet played, while a released time is final. So the owner tells the clock the time
(:meth:`WordClock.tick`) while words wait. The first word of a synthesis whose start was estimated
rather than marked is placed a little late: recording a word one beat after it was heard is
cheaper than recording a sentence that never played.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FRAME_S = 0.01
"""Resolution of the speech/silence analysis."""
PRIOR_SECONDS_PER_SYLLABLE = 0.2
"""Speaking rate assumed before any synthesis has been measured, in seconds per unit of
:func:`speaking_weight`: about 170 English words a minute (espeak-ng's default, 174, measures
0.19 with pauses and 0.19-0.21 without; the old 0.25 was 30 % slow and put every word of a long
sentence late)."""
PRIOR_WEIGHT = 12.0
"""How many syllables' worth of evidence the prior rate counts for against measured ones."""
GUARD_S = 0.4
"""A provisional word is released only once this much audio has arrived beyond it."""
RELEASE_LEAD_S = 1.0
"""A word is released no earlier than this before its estimated playback: long enough for
pipecat to have it in time on a loaded machine, short enough that the audio received by then
(2.4 times real time live) has settled the synthesis it belongs to."""
TICK_S = 0.1
"""How often the owner should call :meth:`WordClock.tick` while words wait and no audio comes."""
PAUSE_MATCH_S = 0.15
PAUSE_MATCH_SHARE = 0.06
"""A pause matches a comma when it lies within the larger of these (seconds, share of the
speech before it) of where the rate puts the comma."""
PAUSE_SNAP_S = 0.05
"""A word placed within this much speech of a pause starts at the pause's end."""
IDLE_S = 0.5
"""Audio that has not come for this long, after a pause, may be a synthesis's end."""
RATE_SEARCH = (0.8, 1.25)
"""How far from the rate so far the rate inside a synthesis is looked for."""
ESTIMATED_START_MARGIN_S = 0.2
"""Delay of the first word of a synthesis whose start in the audio was estimated, not marked."""
ONSET_SEARCH_S = 0.6
"""How far past a synthesis's start its first sound is looked for."""
SEAM_MARGIN_S = 0.06
"""Delay of the first word of a synthesis whose start was found at a frame seam."""
MIN_PAUSE_S = 0.12
"""Silence shorter than this is a stop consonant, not a pause between syntheses."""
SNAP_SHARE = 0.35
"""How far, as a share of the previous synthesis's predicted length, an estimated boundary may
move to a pause found in the audio."""
QUIET_SNAP = 1.5
"""A seam with a pause before it (a synthesis's trailing silence) is looked for this many times
further back than one without."""
VOWEL_SHARE = 0.3
"""How much of a word's weight its vowel groups give; its letters give the rest."""

_WORD = re.compile(r"\S+")
_VOWELS = re.compile(r"[aeiouyàâäéèêëîïôöùûü]+")
_MINOR_PAUSE = re.compile(r"[,;:\u2013\u2014]['\"\u2019\u201d)\]]*$")
_MAJOR_PAUSE = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]['\"\u2019\u201d)\]]*$")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
"""Scripts written without spaces between words: kana and CJK ideographs (not Hangul)."""
_UNSPACED_PIECE = re.compile(rf"[{_UNSPACED}][^\w\s]*|[^{_UNSPACED}]+")


def _letters_of(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def syllables(word: str) -> float:
    """A word's speaking length in syllables, roughly: vowel groups for Latin script, a beat per
    digit or CJK character, a character's share for anything else."""
    lower = word.lower()
    digits = sum(c.isdigit() for c in lower)
    cjk = len(_CJK.findall(lower))
    vowels = len(_VOWELS.findall(lower))
    letters = sum(c.isalpha() for c in lower)
    if cjk:
        return float(cjk)
    if vowels:
        return float(vowels) + 1.3 * digits
    if digits:
        return 1.3 * digits + 0.5
    return max(1.0, letters / 3)


def speaking_weight(word: str) -> float:
    """A word's share of its synthesis's speech, in syllable-sized units. For Latin script it is
    mostly the word's letters (a third of a unit each, which tracks its sounds) and partly its
    vowel groups: vowel groups alone overweight long made-up names, which voices speak fast,
    and miss a voice that gives every letter the same time."""
    beats = syllables(word)
    letters = sum(c.isalpha() for c in word)
    if not _VOWELS.search(word.lower()) or _CJK.search(word):
        return beats
    return VOWEL_SHARE * beats + (1 - VOWEL_SHARE) * max(1.0, (letters + 1) / 3)


def _with_prior(seconds: float, weight: float, prior: float = PRIOR_SECONDS_PER_SYLLABLE) -> float:
    """A rate measured as ``seconds`` over ``weight``, pulled toward ``prior`` by
    ``PRIOR_WEIGHT`` units of weight."""
    return (seconds + prior * PRIOR_WEIGHT) / (weight + PRIOR_WEIGHT)


def pause_after(word: str) -> float:
    """The pause a speaker leaves after ``word``, in syllables: longer at a sentence end."""
    if _MAJOR_PAUSE.search(word):
        return 1.4
    if _MINOR_PAUSE.search(word) or word in ("-", "\u2013", "\u2014"):
        return 0.8
    return 0.0


@dataclass(frozen=True)
class TimedWord:
    """A word and when it is heard, in seconds from the turn's first audio.

    ``spaced`` says the word carries its own spacing (a CJK character, written without spaces),
    so whoever joins words must not put a space before it.
    """

    word: str
    seconds: float
    spaced: bool = False


@dataclass
class _Word:
    text: str
    weight: float
    pause: float
    spaced: bool = False


@dataclass
class _Unit:
    """One synthesis: the words from ``first`` up to the next unit's first."""

    first: int
    exact: float | None = None
    """Where its audio starts, when the wire marked it."""
    lower: float = 0.0
    """Its audio starts no earlier than this."""
    upper: float | None = None
    """Its audio starts no later than this."""
    start: float = 0.0
    onset: float = 0.0
    """The latest estimate of its start and of its first sound."""
    released: bool = False
    """Its first word is out: ``start`` and ``onset`` are final, whatever audio comes later (a
    later seam inside it, an MP3 file boundary say, must not move words already placed)."""
    pace: tuple[tuple[float, int, float], float] | None = None
    """Its rate from its pauses, and what it was found from (onset, pauses, prior rate)."""


@dataclass(frozen=True)
class _Span:
    """Where one unit's speech lies in the audio, for placing its words by weight."""

    first: int
    onset: float
    """Where its first word is placed (its first sound, or later: see ``margins``)."""
    sound: float
    """Its first sound, from which its speech is counted."""
    rate: float
    """Seconds of speech per unit of weight: measured, when its end is in the audio."""
    whole: bool = False
    """All of its audio is in."""
    silent: bool = False
    """Its audio has no sound to count speech in (a test signal, a silent synthesis): its
    words share its time instead."""


@dataclass
class _Chunk:
    content: float
    """Where the chunk starts in the concatenated audio, in seconds."""
    timeline: float
    """When it starts playing, in seconds from the turn's first audio."""


@dataclass
class WordClock:
    """Places a turn's words on its audio, one turn (one socket) per instance.

    Feed it, in the order they happen: :meth:`text_sent` for every text message sent,
    :meth:`announced` for every text-bearing frame, :meth:`audio` for decoded PCM,
    :meth:`synthesis_final` for final frames and :meth:`finish` when the turn's audio is
    complete. Each returns the words that became due, with their times; every word is returned
    exactly once, in order.
    """

    sample_rate: int
    _words: list[_Word] = field(default_factory=list)
    _partial: str = ""
    _units: list[_Unit] = field(default_factory=lambda: [_Unit(0, exact=0.0)])
    _unit_open: bool = False
    _firsts: list[int] = field(default_factory=lambda: [0])
    """Each unit's first word, for bisecting."""
    _cum: list[float] = field(default_factory=lambda: [0.0])
    """Weight (syllables and pauses) of the words before each word."""
    _spoken: list[float] = field(default_factory=lambda: [0.0])
    """Weight of the words before each word, without their pauses."""
    _letters: list[int] = field(default_factory=list)
    """Letters and digits before each word, to map echoed text onto words."""
    _letter_text: str = ""
    """The letters and digits of every complete word, in order."""
    _echoed: int = 0
    _last_announced: int | None = None
    _next_exact: float | None = None
    """Where the next synthesis starts, when a final frame marked it before its text was sent."""
    _energy: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    """RMS of every 10 ms of audio, in a buffer that grows by doubling; ``_frames`` are used."""
    _frames: int = 0
    _speech: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(256))
    """Frames of speech before each 10 ms frame (a silence shorter than a pause is speech), in a
    buffer that grows by doubling; known up to ``_classified``."""
    _classified: int = 0
    """Frames classified as speech or pause: all but a silence still running at the end."""
    _pauses: list[tuple[int, int]] = field(default_factory=list)
    """Pauses (first and last-plus-one frame) among the frames classified."""
    _pause_speech: list[float] = field(default_factory=list)
    """Frames of speech before each pause."""
    _seams: list[float] = field(default_factory=list)
    """Frame boundaries where a synthesis likely ended (see :meth:`audio`)."""
    _ends: list[float] = field(default_factory=list)
    """Seams after a short raw-PCM frame: a synthesis ended there (an MP3 file may end
    mid-synthesis, so a file's start is only a seam)."""
    _frame_sizes: Counter[int] = field(default_factory=Counter)
    _last_frame: int = 0
    _remainder: bytes = b""
    _chunks: list[_Chunk] = field(default_factory=list)
    _chunk_starts: list[float] = field(default_factory=list)
    _loud: float = 0.0
    """The loudest 10 ms seen, which sets what counts as silence."""
    _spent: float = 0.0
    _spent_weight: float = 0.0
    """Seconds and weight of the syntheses measured so far, pauses included, for boundaries."""
    _talked: float = 0.0
    _talked_weight: float = 0.0
    """Speech seconds and weight without pauses of the same syntheses, for words inside one."""
    _measured: int = 0
    """Units looked at for the rate so far."""
    _received: float = 0.0
    _first_arrival: float | None = None
    _finished: bool = False
    _concatenated: bool = False
    """Text-bearing frames carry their synthesis's first audio: every start will be marked."""
    _released: int = 0
    _last_seconds: float = 0.0
    _now: float = 0.0
    """The latest time told (``audio`` or ``tick``), on the caller's clock."""
    _last_arrival: float = 0.0
    """When audio last came."""
    _stopped: bool = False
    """No more audio comes, though the turn is not complete (see :meth:`stop`)."""

    # ------------------------------------------------------------------ what happens

    def text_sent(self, text: str, *, flush: bool) -> list[TimedWord]:
        """Text went out; a flush ends the current synthesis's text."""
        if not self._unit_open and (text.strip() or self._partial):
            self._open_unit()
        self._partial += text
        pieces = _WORD.findall(self._partial)
        ends_in_space = self._partial[-1:].isspace()
        complete = pieces if (flush or ends_in_space) else pieces[:-1]
        self._partial = "" if (flush or ends_in_space) else pieces[-1] if pieces else ""
        for piece in complete:
            self._add_word(piece)
        if flush:
            # Audio that arrived before the server had this synthesis's text is not its own.
            unit = self._units[-1]
            unit.lower = max(unit.lower, self._received)
            self._unit_open = False
        return self._due()

    def announced(self, text: str, *, carries_audio: bool) -> list[TimedWord]:
        """A text-bearing frame arrived (before its own audio, if it carries any)."""
        echo = _letters_of(text)
        if not echo:
            return []
        # The server echoes each synthesis's text, less what it strips (markdown, spacing);
        # searching for it, rather than counting, survives an echo that never came.
        sent = self._letter_text + _letters_of(self._partial)
        found = sent.find(echo, self._echoed)
        if found < 0:
            found = self._echoed
        self._echoed = found + len(echo)
        first = self._word_at_letter(found)
        after = self._word_at_letter(self._echoed)
        if first is not None:
            unit = self._unit_starting_at(first)
            if carries_audio:
                unit.exact = self._received
                self._concatenated = True
            else:
                # The frame lies among its synthesis's own audio frames.
                unit.upper = (
                    self._received if unit.upper is None else min(unit.upper, self._received)
                )
            self._last_announced = first
        if after is not None:
            following = self._unit_starting_at(after)
            following.lower = max(following.lower, self._received)
        return self._due()

    def audio(self, pcm: bytes, now: float, *, new_file: bool = False) -> list[TimedWord]:
        """Decoded 16-bit mono PCM of one frame arrived at ``now`` (seconds, any monotonic clock).

        ``new_file`` says the frame opened an encoded file (an MP3's ID3 tag): a synthesis
        starts with one. For raw PCM sent in fixed-size frames, a short frame followed by more
        audio is where a synthesis ended: its audio does not share a frame with the next one's.
        """
        if not pcm:
            return []
        if new_file and self._received > 0:
            self._seams.append(self._received)
        if self._short(self._last_frame) and self._received > 0:
            self._seams.append(self._received)
            self._ends.append(self._received)
        self._frame_sizes[len(pcm)] += 1
        self._last_frame = len(pcm)
        if self._first_arrival is None:
            self._first_arrival = now
        self._now = self._last_arrival = max(self._now, now)
        previous_end = (
            self._chunks[-1].timeline + (self._received - self._chunks[-1].content)
            if self._chunks
            else 0.0
        )
        self._chunks.append(_Chunk(self._received, max(previous_end, now - self._first_arrival)))
        self._chunk_starts.append(self._received)
        self._received += len(pcm) / 2 / self.sample_rate
        self._measure(pcm)
        return self._due()

    def tick(self, now: float) -> list[TimedWord]:
        """Time passed (``now`` on the clock given to :meth:`audio`): words whose playback is near
        are due."""
        self._now = max(self._now, now)
        return self._due()

    def stop(self) -> list[TimedWord]:
        """No more audio will come, though the turn is not complete (it failed): the words the
        audio covers are due now, however far their playback is; the rest never will be."""
        self._stopped = True
        return self._due()

    def synthesis_final(self) -> list[TimedWord]:
        """A final frame: the synthesis announced last has all its audio out."""
        if self._last_announced is None:
            return []
        after = self._word_at_letter(self._echoed)
        if after is None:
            self._next_exact = self._received
        else:
            unit = self._unit_starting_at(after)
            if unit.exact is None:
                unit.exact = max(self._received, unit.lower)
        return self._due()

    def finish(self) -> list[TimedWord]:
        """The turn's audio is complete: every word left is due."""
        if self._partial:
            self._add_word(self._partial)
            self._partial = ""
        self._finished = True
        return self._due()

    @property
    def pending(self) -> int:
        """Words not released yet."""
        return len(self._words) - self._released

    @property
    def unreleased_text(self) -> str:
        """The words not released yet (their audio never arrived), for naming what was lost."""
        text = "".join(
            w.text if w.spaced else f" {w.text.strip()}" for w in self._words[self._released :]
        )
        return f"{text} {self._partial}".strip()

    # ------------------------------------------------------------------ text bookkeeping

    def _open_unit(self) -> None:
        self._unit_open = True
        if self._words:
            unit = self._unit_starting_at(len(self._words))
            if self._next_exact is not None and unit.exact is None:
                unit.exact = self._next_exact
        self._next_exact = None

    def _add_word(self, text: str) -> None:
        # Text written without spaces (Chinese, Japanese) is timed a character at a time: a
        # whole sentence as one "word" would be released only when it ends.
        pieces = _UNSPACED_PIECE.findall(text) if re.search(f"[{_UNSPACED}]", text) else [text]
        for piece in pieces:
            self._letters.append(len(self._letter_text))
            self._letter_text += _letters_of(piece)
            word = _Word(piece, speaking_weight(piece), pause_after(piece), spaced=len(pieces) > 1)
            self._words.append(word)
            self._cum.append(self._cum[-1] + word.weight + word.pause)
            self._spoken.append(self._spoken[-1] + word.weight)

    def _word_at_letter(self, letter: int) -> int | None:
        """The word that starts at or contains the ``letter``-th letter, if known yet."""
        if not self._words:
            return None
        i = bisect.bisect_right(self._letters, letter) - 1
        if i < 0:
            return 0
        last = self._letters[i + 1] if i + 1 < len(self._letters) else len(self._letter_text)
        if letter < last:
            return i
        return i + 1 if i + 1 < len(self._words) else None

    def _unit_starting_at(self, first: int) -> _Unit:
        i = bisect.bisect_left(self._firsts, first)
        if i < len(self._units) and self._units[i].first == first:
            return self._units[i]
        unit = _Unit(first)
        self._units.insert(i, unit)
        self._firsts.insert(i, first)
        return unit

    # ------------------------------------------------------------------ audio analysis

    def _measure(self, pcm: bytes) -> None:
        data = self._remainder + pcm
        step = max(1, round(self.sample_rate * FRAME_S)) * 2
        whole = len(data) // step * step
        self._remainder = data[whole:]
        if whole:
            samples = np.frombuffer(data[:whole], dtype="<i2").astype(np.float32)
            rms = np.sqrt(np.mean(samples.reshape(-1, step // 2) ** 2, axis=1))
            if self._frames + len(rms) > len(self._energy):
                grown = np.zeros(max(2 * len(self._energy), self._frames + len(rms), 256))
                grown[: self._frames] = self._energy[: self._frames]
                self._energy = grown
            self._energy[self._frames : self._frames + len(rms)] = rms
            self._frames += len(rms)
            self._loud = max(self._loud, float(rms.max()))

    def _classify(self) -> None:
        """Classify the frames not classified yet as speech or pause, up to a silence still
        running at the end (it may yet become a pause). A silence shorter than a pause is a stop
        consonant: speech."""
        start = self._classified
        if start >= self._frames:
            return
        silent = ~self._sound(start, self._frames)
        speech = ~silent
        edges = np.diff(np.concatenate(([0], silent.astype(np.int8), [0])))
        done = len(silent)
        for a, b in zip(
            np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True
        ):
            if b == len(silent):
                done = a
            elif (b - a) * FRAME_S < MIN_PAUSE_S:
                speech[a:b] = True
            else:
                self._pauses.append((start + a, start + b))
        if start + done + 1 > len(self._speech):
            grown = np.zeros(max(2 * len(self._speech), start + done + 1))
            grown[: start + 1] = self._speech[: start + 1]
            self._speech = grown
        self._speech[start + 1 : start + done + 1] = self._speech[start] + np.cumsum(speech[:done])
        self._classified = start + done
        for a, _ in self._pauses[len(self._pause_speech) :]:
            self._pause_speech.append(float(self._speech[a]))

    def _speech_at(self, position: float) -> float:
        """Seconds of speech in the audio before ``position``; past the audio received, as if
        all of it will be speech (what is received but not classified is a running silence)."""
        self._classify()
        frame = max(0, int(position / FRAME_S))
        spoken = self._speech[min(frame, self._classified)]
        return float(spoken + max(0, frame - self._frames)) * FRAME_S

    def _at_speech(self, target: float) -> float:
        """Where the speech in the audio reaches ``target`` seconds; past the audio received,
        as if all of it will be speech."""
        self._classify()
        done = self._classified
        goal = target / FRAME_S
        if goal >= self._speech[done]:
            return (self._frames + goal - self._speech[done]) * FRAME_S
        frame = int(np.searchsorted(self._speech[: done + 1], goal, side="right")) - 1
        return float(frame + goal - self._speech[frame]) * FRAME_S

    def _short(self, size: int) -> bool:
        """Whether a frame of ``size`` bytes is shorter than the frames a fixed-size stream
        sends (which most frames so far must share)."""
        if not size or sum(self._frame_sizes.values()) < 3:
            return False
        common, count = self._frame_sizes.most_common(1)[0]
        return count >= 0.6 * sum(self._frame_sizes.values()) and size < 0.9 * common

    def _sound(self, first: int, last: int) -> npt.NDArray[np.bool_]:
        """Which 10 ms frames from ``first`` to ``last`` hold sound rather than silence."""
        threshold = max(100.0, 0.05 * self._loud)
        return self._energy[max(first, 0) : min(last, self._frames)] >= threshold

    def _onset(self, start: float, limit: float) -> float:
        """The first sound at or after ``start`` (before ``limit``), else ``start``."""
        first = int(start / FRAME_S)
        sound = self._sound(first, int(min(limit, start + ONSET_SEARCH_S) / FRAME_S))
        if not sound.any():
            return start
        return max(start, (first + int(sound.argmax())) * FRAME_S)

    def _end_at(self, position: float) -> float | None:
        """A synthesis end (a short frame's seam) exactly at ``position``, if there is one."""
        i = bisect.bisect_left(self._ends, position - 1e-6)
        return self._ends[i] if i < len(self._ends) and self._ends[i] <= position + 1e-6 else None

    def _seam_near(
        self, guess: float, earliest: float, earliest_quiet: float, high: float
    ) -> float | None:
        """The frame seam nearest ``guess`` between ``earliest`` and ``high``: a frame boundary
        where one synthesis most likely ended and the next began. Searched up to ``high`` (not
        just near the guess): seams are few and mark boundaries, while the guess, from the
        speaking rate, can be off by more than a word or two."""
        quiet = [x for x in self._seams if earliest_quiet <= x <= high and self._quiet_before(x)]
        inside = quiet or [x for x in self._seams if earliest <= x <= high]
        return min(inside, key=lambda x: abs(x - guess)) if inside else None

    def _quiet_before(self, seam: float) -> bool:
        """Whether the audio just before ``seam`` is a pause: a synthesis's trailing silence,
        which a file boundary inside a synthesis does not have."""
        last = round(seam / FRAME_S)
        first = last - round(MIN_PAUSE_S / FRAME_S)
        return first >= 0 and last <= self._frames and not self._sound(first, last).any()

    def _pause_near(self, earliest: float, latest: float, low: float, high: float) -> float | None:
        """The middle of the longest pause between ``earliest`` and ``latest`` (and inside
        ``low``..``high``), where a synthesis most likely ended; None if there is none, or if
        the audio of that stretch has not all arrived (a longer pause may still come)."""
        latest = min(latest, high)
        if latest > self._frames * FRAME_S:
            return None
        first = max(int(max(low, earliest) / FRAME_S), 0)
        silent = ~self._sound(first, int(latest / FRAME_S))
        if not silent.any():
            return None
        # Runs of silence: where each starts and ends, from the edges of the boolean series.
        edges = np.diff(np.concatenate(([0], silent.astype(np.int8), [0])))
        runs = []
        for a, b in zip(
            (first + np.flatnonzero(edges == 1)).tolist(),
            (first + np.flatnonzero(edges == -1)).tolist(),
            strict=True,
        ):
            # A pause cut by the window's edge is measured to where it really starts or ends.
            if a == first:
                before = self._sound(max(0, a - round(1.0 / FRAME_S)), a)
                a -= (
                    len(before) - 1 - int(np.flatnonzero(before)[-1])
                    if before.any()
                    else len(before)
                )
            if b == first + len(silent):
                after = self._sound(b, self._frames)
                b += int(after.argmax()) if after.any() else len(after)
            runs.append((a, b))
        begin, end = max(runs, key=lambda run: run[1] - run[0])
        if (end - begin) * FRAME_S < MIN_PAUSE_S:
            return None
        return (begin + end) / 2 * FRAME_S

    def _offset(self, end: float, start: float) -> float:
        """The end of the last sound before ``end`` (not before ``start``), if the audio is in."""
        if end > self._frames * FRAME_S or not self._frames:
            return end
        # Trailing silence is short: looking back a second is enough.
        first = int(max(start, end - 1.0) / FRAME_S) + 1
        sound = self._sound(first, int(end / FRAME_S))
        if not sound.any():
            return end
        return min(end, (first + int(np.flatnonzero(sound)[-1]) + 1) * FRAME_S)

    # ------------------------------------------------------------------ the estimate

    def _weight(self, first: int, stop: int) -> float:
        """Syllables and inner pauses of words ``first`` to ``stop`` (the last one's pause is
        the synthesis's end, not speech)."""
        if stop <= first:
            return 0.0
        return self._cum[stop] - self._cum[first] - self._words[stop - 1].pause

    def _rate(self, upto: int) -> float:
        """Seconds per syllable: the prior, moved by the speech of every synthesis before unit
        ``upto`` whose start and end were both marked (each is measured once)."""
        units = self._units
        while self._measured + 1 < min(upto, len(units)):
            unit, following = units[self._measured], units[self._measured + 1]
            a, b = unit.exact, following.exact
            weight = self._weight(unit.first, following.first)
            if a is not None and b is not None and weight > 0 and b > unit.onset:
                offset = self._offset(b, unit.onset)
                self._spent += offset - unit.onset
                self._spent_weight += weight
                self._talked += self._speech_at(offset) - self._speech_at(unit.onset)
                self._talked_weight += self._spoken[following.first] - self._spoken[unit.first]
            self._measured += 1
        return _with_prior(self._spent, self._spent_weight)

    def _talk_rate(self) -> float:
        """Seconds of speech (pauses left out) per unit of weight, measured like :meth:`_rate`
        (which must run first)."""
        return _with_prior(self._talked, self._talked_weight)

    def _pace(self, unit: _Unit, stop: int, rate: float) -> float:
        """The rate inside ``unit`` (words up to ``stop``), whose end is not in the audio yet:
        ``rate``, the rate so far, corrected by the pauses its audio has so far.

        A voice's rate varies from sentence to sentence and the weights of a sentence's words
        are only roughly right, so the error grows with the sentence: a pause where a comma is
        measures it. Each pause is matched to the comma the rate puts nearest, for the rate
        within ``RATE_SEARCH`` that matches the most pauses (a wrong match would change the rate
        a lot, a right one little); the furthest match counts as much as it weighs against the
        prior. Found again only when a pause is added."""
        sound = int(unit.onset / FRAME_S)
        self._classify()
        first = bisect.bisect_right(self._pauses, (sound, sound))
        key = (unit.onset, len(self._pauses) - first, rate)
        if unit.pace is not None and unit.pace[0] == key:
            return unit.pace[1]
        pace = rate
        before = self._spoken[unit.first]
        commas = np.array(
            [
                self._spoken[k + 1] - before
                for k in range(unit.first, stop - 1)
                if self._words[k].pause
            ]
        )
        pauses = np.array(self._pause_speech[first:]) * FRAME_S - self._speech_at(unit.onset)
        if len(commas) and len(pauses):
            rates = np.linspace(RATE_SEARCH[0] * rate, RATE_SEARCH[1] * rate, 46)
            # distance[r, p, c]: pause p from comma c at rate r.
            distance = np.abs(pauses[None, :, None] - rates[:, None, None] * commas[None, None, :])
            nearest = distance.min(axis=2)
            matched = nearest <= np.maximum(PAUSE_MATCH_S, PAUSE_MATCH_SHARE * pauses)[None, :]
            counts = matched.sum(axis=1)
            errors = np.where(matched, nearest, 0.0).sum(axis=1)
            best = int(np.lexsort((errors, -counts))[0])
            if counts[best]:
                ties = commas[distance[best].argmin(axis=1)][matched[best]]
                furthest = int(ties.argmax())
                pause = pauses[matched[best]][furthest]
                pace = _with_prior(pause, ties[furthest], rate)
        unit.pace = (key, pace)
        return float(pace)

    def _layout(self, first: int) -> tuple[list[_Span], list[bool]]:
        """Where the speech of each unit from ``first`` on lies in the audio, and whether each
        unit's start is settled (marked, or found in audio that has all arrived). Units beyond
        the audio received or far from playing are left out unless the turn is finished: none
        of their words can be due. Words are placed by :meth:`_position` only when asked, so a
        chunk costs the words it releases, not every word of the synthesis."""
        units = self._units
        total = len(self._words)
        stops = [u.first for u in units[1:]] + [total]
        marks: list[float | None] = [u.exact for u in units]
        marks.append(self._received if self._finished else None)
        rate = self._rate(first)
        talk = self._talk_rate()
        following: list[int | None] = [None] * len(marks)
        nearest: int | None = None
        for j in range(len(marks) - 1, first, -1):
            following[j - 1] = nearest = j if marks[j] is not None else nearest
        starts: list[float] = []
        settled: list[bool] = []
        margins: list[float] = []
        last = first
        for k in range(first, len(units)):
            unit = units[k]
            mark = marks[k]
            margin = 0.0
            if unit.released:
                starts.append(unit.start)
                settled.append(True)
                margins.append(0.0)
                last = k
                continue
            if mark is None and unit.upper is not None and unit.upper <= unit.lower:
                # Bounded on both sides to one point: as good as marked.
                mark = unit.lower
            if mark is not None:
                start, is_settled = mark, True
            else:
                before = units[k - 1]
                spoken = self._weight(before.first, stops[k - 1])
                # The previous synthesis's speech, and the pause that ends it.
                start = before.onset + rate * (spoken + self._words[stops[k - 1] - 1].pause)
                nxt = following[k]
                end = marks[nxt] if nxt is not None else None
                if nxt is not None and end is not None:
                    # Between two marks a boundary shares the marked span by weight.
                    span = self._weight(before.first, stops[nxt - 1])
                    if span > 0:
                        start = before.onset + (end - before.onset) * spoken / span
                low = max(unit.lower, before.start)
                if self._unit_open and k == len(units) - 1:
                    # Its text is not all sent: the server has not begun it, so none of the
                    # audio so far is its own.
                    low = max(low, self._received)
                high = unit.upper if unit.upper is not None else self._received
                reach = rate * spoken * SNAP_SHARE
                # A synthesis that ended on a short frame just as this one's text went out
                # (a slow LLM) ends where this one starts.
                seam = self._end_at(unit.lower) if unit.lower > before.start else None
                seam = seam or self._seam_near(
                    start, max(low, start - reach), max(low, start - QUIET_SNAP * reach), high
                )
                pause = (
                    None if seam else self._pause_near(start - reach / 2, start + reach, low, high)
                )
                is_settled = bool(seam or pause)
                margin = SEAM_MARGIN_S if seam else ESTIMATED_START_MARGIN_S
                start = seam or pause or start
                if not is_settled and unit.upper is not None:
                    # Nothing in the audio shows the boundary, but the synthesis's own frame has
                    # come, and it started no later than that: the latest it can have started
                    # is the one start that is never early.
                    start, is_settled = unit.upper, True
                if self._concatenated:
                    # Its frame, which carries its first audio, has not come: all the audio so
                    # far is earlier syntheses', and its start will be marked.
                    start, is_settled = max(start, self._received), False
                if unit.upper is not None:
                    start = min(start, unit.upper)
                start = max(start, low)
            unit.start = start
            unit.onset = self._onset(start, start + ONSET_SEARCH_S)
            starts.append(start)
            settled.append(is_settled)
            margins.append(margin)
            last = k
            if not self._finished and (
                start > self._received
                or (k > first and not is_settled)
                or (not self._stopped and self._timeline(start) > self._playing + RELEASE_LEAD_S)
            ):
                # No word from here on can be due: past the audio, held for a start to settle,
                # or far from playing. (Laying them out would only cost time on every chunk.)
                break
        if last + 1 < len(units):
            end_of_laid = units[last + 1].start if marks[last + 1] is None else marks[last + 1]
            end_of_laid = max(end_of_laid or 0.0, starts[-1])
        elif marks[-1] is not None:
            end_of_laid = marks[-1]
        else:
            predicted = units[last].onset + rate * self._weight(units[last].first, total)
            # Audio beyond the prediction, with no later text, is still this synthesis's.
            end_of_laid = max(predicted, self._received if not self._partial else predicted)
        bounds = [*starts, max(end_of_laid, starts[-1])]
        spans: list[_Span] = []
        for n, k in enumerate(range(first, last + 1)):
            unit = units[k]
            onset, end = unit.onset, bounds[n + 1]
            if margins[n]:
                # Recording a word a beat late is cheaper than recording an unplayed sentence.
                onset = min(max(onset, starts[n] + margins[n]), max(onset, end - 0.05))
            spoken = self._spoken[stops[k]] - self._spoken[unit.first]
            # Its audio is all in once the audio reaches the settled start of the next one.
            whole = n + 1 < len(settled) and settled[n + 1] and end <= self._received
            last_of_turn = k == len(units) - 1 and marks[-1] is None
            if end > self._received and last_of_turn and self._ended_early(unit, spoken, talk):
                whole, end = True, self._received
            if end <= self._received and spoken > 0:
                # Its words share its own speech, up to its (estimated) end.
                offset = self._offset(end, onset)
                speech = self._speech_at(offset) - self._speech_at(unit.onset)
                if speech <= 0:
                    rate = (offset - onset) / spoken
                    spans.append(_Span(unit.first, onset, onset, rate, whole=whole, silent=True))
                    continue
                spans.append(_Span(unit.first, onset, unit.onset, speech / spoken, whole=whole))
            else:
                spans.append(_Span(unit.first, onset, unit.onset, self._pace(unit, stops[k], talk)))
        return spans, settled

    def _ended_early(self, unit: _Unit, spoken: float, rate: float) -> bool:
        """Whether the synthesis the audio ends in has, by all signs, ended, though nothing
        marked its end: a voice faster than the rate leaves its last words placed past the
        audio, where they would wait, unrecorded, for a mark that comes only with the next
        sentence. Its audio ends in a pause; it has as much speech as the fastest rate looked
        for gives its words (a stream that stalled mid-sentence has much less); and no audio has
        come for a while."""
        pause = (self._frames - self._classified) * FRAME_S >= MIN_PAUSE_S
        speech = self._speech_at(self._received) - self._speech_at(unit.onset)
        return (
            pause
            and speech >= RATE_SEARCH[0] * rate * spoken
            and self._now - self._last_arrival >= IDLE_S
        )

    def _position(self, span: _Span, i: int) -> float:
        """Where word ``i`` starts: where its unit's speech, at the unit's rate, reaches the
        weight of the words before it (so it follows any pause found after them)."""
        spoken = self._spoken[i] - self._spoken[span.first]
        if span.silent:
            return span.onset + span.rate * spoken
        target = self._speech_at(span.sound) + span.rate * spoken
        # A word does not start just before a pause, or just after one: one that the estimate
        # puts that near is the first word after it.
        k = bisect.bisect_left(self._pause_speech, (target - PAUSE_SNAP_S) / FRAME_S)
        if (
            k < len(self._pauses)
            and self._pause_speech[k] * FRAME_S <= target + PAUSE_SNAP_S
            and self._pauses[k][0] * FRAME_S > span.sound
        ):
            return max(span.onset, self._pauses[k][1] * FRAME_S)
        spoken_so_far = self._speech[self._classified] * FRAME_S
        if self._frames > self._classified and target > spoken_so_far - PAUSE_SNAP_S:
            # Near the silence the audio ends in: after it, wherever it ends.
            target = max(target, spoken_so_far)
        return max(span.onset, self._at_speech(target))

    def _due(self) -> list[TimedWord]:
        if self._released >= len(self._words) or (not self._chunks and not self._finished):
            return []
        first = bisect.bisect_right(self._firsts, self._released) - 1
        spans, settled = self._layout(first)
        out: list[TimedWord] = []
        for i in range(self._released, len(self._words)):
            n = bisect.bisect_right(self._firsts, i) - 1 - first
            if n >= len(spans):
                break
            position = self._position(spans[n], i)
            if not (self._finished or settled[n]) and i == self._units[first + n].first:
                # Where this synthesis starts is still only a guess that more audio will
                # improve; its words wait for it.
                break
            complete = self._finished or spans[n].whole
            if not (complete or position + GUARD_S <= self._received):
                break
            seconds = self._timeline(position)
            if not (self._finished or self._stopped) and seconds > self._playing + RELEASE_LEAD_S:
                # Its playback is far: audio still to come may place it better.
                break
            # A released time is final, so a later, better estimate may not put a word before
            # one already released.
            self._last_seconds = max(seconds, self._last_seconds)
            if i == self._units[first + n].first:
                self._units[first + n].released = True
            word = self._words[i]
            out.append(TimedWord(word.text, self._last_seconds, word.spaced))
        self._released += len(out)
        return out

    @property
    def _playing(self) -> float:
        """How far the turn's audio has played, at the latest time told: from its first arrival
        (playback starts no earlier)."""
        return self._now - self._first_arrival if self._first_arrival is not None else 0.0

    def _timeline(self, position: float) -> float:
        """Where ``position`` in the audio falls on the playback timeline."""
        if not self._chunks:
            return position
        chunk = self._chunks[max(0, bisect.bisect_right(self._chunk_starts, position) - 1)]
        return chunk.timeline + (position - chunk.content)
