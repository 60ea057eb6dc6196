"""What the LLM context records after a barge-in, against what the caller heard.

With ``push_text_frames=True`` pipecat queues each sentence's ``TTSTextFrame`` before that
sentence's audio, so a barge-in early in a reply can commit to the assistant context sentences the
caller never heard. ``TelnyxTTSService(word_timestamps=True)`` pushes words timed from the audio
instead. This part measures both behaviours: ``old`` (sentence-level text frames,
``word_timestamps=False``) and ``new`` (``word_timestamps=True``).

Every run is one reply through its own real pipeline::

    [caller, llm, TelnyxTTSService, PlaybackDevice, LLMAssistantAggregator(LLMContext)]

- ``caller`` stands for the user side: the driver calls its ``broadcast_interruption()``, which is
  what pipecat 1.14's user aggregator does when the user starts speaking.
- ``llm`` stands for an LLM service: on a ``ReplyFrame`` it pushes ``LLMFullResponseStartFrame``,
  the reply's word-sized tokens as ``LLMTextFrame``s at the run's token rate, and, in a
  ``finally`` as pipecat's LLM services do (also when the interruption cancels it),
  ``LLMFullResponseEndFrame``.
- ``PlaybackDevice`` is a ``BaseOutputTransport`` with pipecat's own queueing, clock queue for timed
  text frames and interruption handling; its ``write_audio_frame`` is a sound card: a chunk starts
  playing when the one before ends (or at once if the card is idle), and the write returns 200 ms
  before it starts (the card's buffer). It records when each chunk started and its bytes.
- ``LLMAssistantAggregator`` commits what it has to the ``LLMContext`` when the interruption reaches
  it, or the whole reply at ``LLMFullResponseEndFrame``.

Heard: the audio played when the ``InterruptionFrame`` reached the device (whole chunks and the
part of the one playing), as seconds of the reply's decoded audio, mapped onto the emulator's
record of that reply's socket: its syntheses in order, each with its words' places in its PCM
(``words``, from espeak-ng's word events for the speech signal, exact for the tone signal). MP3
files carry an Info tag by default and decode to exactly their PCM; untagged files
(``Faults.mp3_untagged``) keep their whole-frame padding once the decoder trims LAME's lead; both
are modelled exactly (``mp3_decoded_samples``), and checked on every complete reply by comparing
the audio played with the timeline. A word is heard when its
start is before the position. Recorded: the words of the assistant messages the context holds at
the end of the run. Both are compared as normalized words (lowercase, punctuation stripped).

The run's dimensions are drawn in balanced rotation: lifecycle reading x text aggregation x audio
format x delivery x LLM speed x speech timing (160 combinations) per round, the same draw for
both behaviours, so the two arms are paired. About one run in ten is not interrupted, to check
the complete case. The speech timings are the ones a word-time estimate can get wrong: espeak-ng
at its own rate, the tone signal (every character the same length), espeak-ng with each sentence
at its own rate (``Faults.rate_jitter``), sentences of 40 words and more, and a server that
stalls halfway through each synthesis (``Faults.stall_ms``). Each (lifecycle, emulator setting)
pair has its own emulator process. ``benchmarks.accuracy`` judges every row of the word-timestamp
behaviour against the targets.
"""

from __future__ import annotations

import asyncio
import difflib
import gc
import itertools
import math
import random
import re
import time
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pipecat.frames.frames import (
    DataFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TextAggregationMode
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from benchmarks import accuracy
from benchmarks.emulator_host import Connection, EmulatorProcess, Synthesis
from benchmarks.pipeline import tokens
from benchmarks.stats import percentiles
from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, Lifecycle
from pipecat_telnyx_tts.emulator.synth import (
    ESPEAK,
    OutputFormat,
    Signal,
    SynthesisRequest,
    file_cuts,
    sentence_speed,
    speech_seconds,
    split_sentences,
    spoken_text,
    synthesize_pcm,
)

API_KEY = "benchmark-key"
BEHAVIOURS = ("old", "new")
VOICES = {"streamed": "Telnyx.NaturalHD.astra", "concatenated": "AWS.Polly.Neural.Joanna"}
FORMATS = {"pcm": "linear16", "mp3": "mp3"}
AGGREGATIONS = {"sentence": TextAggregationMode.SENTENCE, "token": TextAggregationMode.TOKEN}
LIFECYCLES = {"observed": Lifecycle.OBSERVED, "documented": Lifecycle.DOCUMENTED}
SPEECH = ("espeak", "uniform", "varied", "long", "stalled")
"""Speech timings: ``espeak`` espeak-ng's own rate; ``uniform`` the tone signal, every character
the same length; ``varied`` espeak-ng with each sentence at its own rate
(``ContextConfig.rate_jitter``); ``long`` espeak-ng speaking sentences of 40 words and more;
``stalled`` espeak-ng from a server that stalls mid-synthesis (``ContextConfig.stall_ms``)."""
EMULATOR_OF = {
    "espeak": "espeak",
    "uniform": "uniform",
    "varied": "varied",
    "long": "espeak",
    "stalled": "stalled",
}
"""The emulator settings each speech timing needs (``long`` is a property of the text only)."""
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "lifecycle": tuple(LIFECYCLES),
    "aggregation": tuple(AGGREGATIONS),
    "audio": tuple(FORMATS),
    "delivery": tuple(VOICES),
    "llm": ("fast", "slow"),
    "speech": SPEECH,
}
MP3_LEAD_SAMPLES = 576 + 529
"""LAME's encoder delay plus the MPEG decoder's delay: where a file's audio starts once decoded."""
STARVED_LIMIT_MS = 40.0
"""A run whose device sat silent longer than this while its audio was waiting (the event loop
wrote late) measured the machine, not the service: it and its pair are left out."""


@dataclass(frozen=True)
class ContextConfig:
    """What the context benchmark runs."""

    runs_per_behaviour: int = 320
    concurrency: int = 20
    """Pipelines running at once (each plays its audio in real time)."""
    behaviours: tuple[str, ...] = BEHAVIOURS
    sample_rate: int = 16000
    fast_token_ms: tuple[float, float] = (10.0, 30.0)
    """An LLM faster than speech: per token (about a word)."""
    slow_token_ms: tuple[float, float] = (400.0, 600.0)
    """An LLM slower than speech (about 2.5 words a second)."""
    uninterrupted_every: int = 10
    """One run in this many plays its reply to the end."""
    faults: Faults = field(default_factory=lambda: Faults(mp3_files=2))
    """Live-like timing (first audio 250 ms, 2.4x pace, 200 ms sentence pauses); MP3 as two
    files per synthesis, as seen live."""
    device_chunk_ms: int = 100
    """The transport's chunk (``audio_out_10ms_chunks``): with 40 ms, pipecat's default, 20 bots
    in one process on a shared 2-core machine could not write chunks as fast as they play."""
    device_buffer_ms: int = 200
    """How far ahead of playback the device takes audio, like a phone's jitter buffer: the
    transport's writes may run late by this much (event-loop lag) before playback starves."""
    speech: tuple[str, ...] = SPEECH
    """The speech timings drawn (``SPEECH``), in rotation with the other dimensions."""
    rate_jitter: float = 0.25
    """``varied``: each sentence spoken at 1 ± up to this of the voice's rate."""
    stall_ms: int = 300
    """``stalled``: the server sends nothing this long halfway through each synthesis."""
    seed: int = 7
    run_timeout_s: float = 150.0
    """Long enough for two 45-word sentences from the slow LLM, played to the end."""
    keep_connections: int | None = None
    """Emulator records kept per emulator (None: all). They are read once, after every run, so
    all must be kept: about 0.5 MB a reply, in the emulator's process."""

    def dimensions(self) -> dict[str, tuple[str, ...]]:
        """``DIMENSIONS`` with the speech timings this run draws."""
        return DIMENSIONS | {"speech": self.speech}

    def emulator_faults(self, emulator: str) -> Faults:
        """The faults of the emulator that serves ``emulator`` (a value of ``EMULATOR_OF``)."""
        if emulator == "varied":
            return replace(self.faults, rate_jitter=self.rate_jitter)
        if emulator == "stalled":
            return replace(self.faults, stall_ms=self.stall_ms)
        return self.faults


# --------------------------------------------------------------------------- the service


def make_service(
    behaviour: str, voice: str, audio_format: str, aggregation: TextAggregationMode, url: str
) -> TelnyxTTSService:
    """The service for one run: ``new`` times words from the audio, ``old`` does not."""
    return TelnyxTTSService(
        api_key=API_KEY,
        url=url,
        audio_format=audio_format,
        settings=TelnyxTTSService.Settings(voice=voice, disable_cache=True),
        text_aggregation_mode=aggregation,
        word_timestamps=behaviour == "new",
    )


# --------------------------------------------------------------------------- replies

_TEMPLATES = (
    "Sure, the {t} order ships Monday.",
    "The courier, {t} Express, calls first.",
    "If nobody answers, {t} leaves it.",
    "Your refund, for {t}, was approved.",
    "Also, the {t} gate code changed.",
    "Okay, I moved {t} to Thursday.",
    "Thanks, {t} will email a receipt.",
    "Anything else, about {t}, today?",
)
_LONG_TEMPLATES = (
    "Sure, I checked the {t} account, and the order you placed last Tuesday, the blue one with "
    "the two extra cables, left our warehouse this morning, so it should reach you by Friday, "
    "although the courier says that rural routes can take a day or two longer.",
    "Before you go, please note that the {t} plan renews on the first of next month, that the "
    "price stays the same for the whole first year, and that you can cancel at any time from "
    "the settings page without paying a fee or calling us again.",
    "If the technician, {t} from our northern team, cannot reach you on the phone number we "
    "have on file, she will leave a note at the front desk, try again the following morning, "
    "and then send you an email with a link to book a new visit.",
    "Okay, so to recap what we agreed today, the {t} refund of forty dollars goes back to your "
    "original card within five business days, the replacement ships free of charge, and you "
    "can keep the old unit until the courier collects it next week.",
    "Thanks for waiting, I spoke with the {t} billing department, and they confirmed that the "
    "duplicate charge was a mistake on our side, that it has already been reversed, and that "
    "your next statement will show the correction within three to five days.",
    "Just so you know, the {t} gate code changes every month, so when the new one arrives by "
    "text message, please share it with anyone who delivers to your home, including the "
    "cleaning service, the dog walker, and the neighbors who collect your parcels.",
)
"""The ``long`` timing's sentences: 43 to 47 words each, clauses between commas, as an LLM
explaining something writes them."""
LONG_SENTENCES = 2
"""Sentences in a ``long`` reply (about 35 s of speech)."""
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "do")


def tag(n: int) -> str:
    """A pronounceable one-word name for ``n``: four syllables or more, unique per number."""
    digits = str(n).zfill(4)
    return "".join(_SYLLABLES[int(d)] for d in digits)


def reply(sentence_numbers: Iterable[int], templates: Iterable[int], long: bool = False) -> str:
    """A reply of whole sentences, each with its own unique name, so no synthesis repeats;
    ``long``: of the long sentences."""
    source = _LONG_TEMPLATES if long else _TEMPLATES
    return " ".join(
        source[t].format(t=tag(n)) for n, t in zip(sentence_numbers, templates, strict=True)
    )


def words(text: str) -> list[str]:
    """Normalized words: lowercase, punctuation stripped."""
    return re.sub(r"[^\w\s]", "", text.lower()).split()


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class RunPlan:
    """One run: its dimensions, its reply and when it is interrupted."""

    number: int
    draw: int
    """The draw this run shares with the other behaviour's run (paired arms)."""
    behaviour: str
    lifecycle: str
    aggregation: str
    audio: str
    delivery: str
    llm: str
    speech: str
    interrupted: bool
    fraction: float
    """Where the barge-in falls, as a share of the reply's estimated playback (wall clock)."""
    token_s: float
    text: str
    tag: str
    """The unique name in the first sentence: it finds the reply's socket in the records."""


def plan_runs(config: ContextConfig, behaviours: tuple[str, ...]) -> list[RunPlan]:
    """Balanced rotation: a round is the 32 combinations of the other dimensions in a fresh
    order, once per speech timing, the timings taking turns from one draw to the next (so every
    combination meets every timing once a round, and a short run still sees every timing). Each
    draw is used by every behaviour (paired arms), behaviours interleaved so they share the
    machine's load."""
    rng = random.Random(config.seed)
    dimensions = config.dimensions()
    speeches = dimensions.pop("speech")
    combos = list(itertools.product(*dimensions.values()))
    draws: list[tuple[tuple[str, ...], bool, float, float, list[int]]] = []
    while len(draws) < config.runs_per_behaviour:
        order = combos[:]
        rng.shuffle(order)
        for turn, (i, combo) in itertools.product(range(len(speeches)), enumerate(order)):
            if len(draws) == config.runs_per_behaviour:
                break
            speech = speeches[(i + turn) % len(speeches)]
            interrupted = len(draws) % config.uninterrupted_every != 0
            low, high = config.fast_token_ms if combo[-1] == "fast" else config.slow_token_ms
            if speech == "long":
                templates = rng.sample(range(len(_LONG_TEMPLATES)), LONG_SENTENCES)
            else:
                templates = rng.sample(range(len(_TEMPLATES)), rng.choice((3, 4)))
            draws.append(
                (
                    (*combo, speech),
                    interrupted,
                    rng.random(),
                    rng.uniform(low, high) / 1000,
                    templates,
                )
            )
    plans: list[RunPlan] = []
    sentence = itertools.count()
    for draw, (combo, interrupted, fraction, token_s, templates) in enumerate(draws):
        lifecycle, aggregation, audio, delivery, llm, speech = combo
        for behaviour in behaviours:
            numbers = [next(sentence) for _ in templates]
            plans.append(
                RunPlan(
                    len(plans),
                    draw,
                    behaviour,
                    lifecycle,
                    aggregation,
                    audio,
                    delivery,
                    llm,
                    speech,
                    interrupted=interrupted,
                    fraction=fraction,
                    token_s=token_s,
                    text=reply(numbers, templates, long=speech == "long"),
                    tag=tag(numbers[0]),
                )
            )
    return plans


# --------------------------------------------------------------------------- timeline


def mp3_decoded_samples(samples: int, rate: int, *, tagged: bool = True) -> int:
    """Samples one MP3 file of ``samples`` input samples decodes to, with the emulator's LAME
    settings and pipecat_telnyx_tts's decoder: exactly ``samples`` when the file's Info tag
    records its delay and padding; untagged, LAME's whole frames (taking in the 576 samples of
    encoder delay and the flush) less the lead the decoder trims, so the padding stays
    (measured; tests/test_context_benchmark.py checks it against both)."""
    if samples <= 0:
        return 0
    if tagged:
        return samples
    if rate >= 32000:  # MPEG-1 Layer III
        frames = 1152 * (math.ceil(samples / 1152) + 1)
    else:
        frames = 576 * (math.ceil(samples / 576) + 2)  # MPEG-2 and 2.5: half-size frames
    return frames - MP3_LEAD_SAMPLES


@dataclass(frozen=True)
class Piece:
    """A stretch of a synthesis's PCM as it sits in the decoded stream (an MP3 file, or all)."""

    decoded_start: float
    pcm_start: float
    pcm_seconds: float


def decoded_layout(
    samples: int, rate: int, *, mp3: bool, mp3_files: int, mp3_tagged: bool = True
) -> tuple[list[Piece], float]:
    """Where a synthesis's PCM lies in the audio the client decodes from it, and how long that
    audio is, in seconds. MP3 files are cut as ``synth.file_cuts`` cuts a single sentence."""
    if samples <= 0:
        return [], 0.0
    if not mp3:
        return [Piece(0.0, 0.0, samples / rate)], samples / rate
    bounds = [0, *file_cuts([], samples, mp3_files), samples]
    pieces, at = [], 0
    for a, b in itertools.pairwise(bounds):
        pieces.append(Piece(at / rate, a / rate, (b - a) / rate))
        at += mp3_decoded_samples(b - a, rate, tagged=mp3_tagged)
    return pieces, at / rate


def pcm_position(pieces: list[Piece], decoded: float) -> float:
    """The PCM position (seconds) reached after ``decoded`` seconds of a synthesis's audio."""
    position = 0.0
    for piece in pieces:
        if decoded > piece.decoded_start:
            position = piece.pcm_start + min(decoded - piece.decoded_start, piece.pcm_seconds)
    return position


@dataclass(frozen=True)
class Span:
    """A word and where it lies in its synthesis's PCM."""

    word: str
    start: float
    end: float


def synthesis_words(s: Synthesis) -> list[Span]:
    """The emulator's word places for a synthesis (seconds into its PCM)."""
    return [_span(w) for w in s.words]


def _span(w: Any) -> Span:
    if isinstance(w, dict):
        return Span(w["word"], float(w["start"]), float(w["end"]))
    if isinstance(w, list | tuple):
        return Span(str(w[0]), float(w[1]), float(w[2]))
    return Span(w.word, float(w.start), float(w.end))


@dataclass
class Timeline:
    """A reply's audio as the client decodes it: its syntheses in order."""

    syntheses: list[tuple[list[Piece], float, list[Span]]]
    """(pieces, decoded seconds, words) per synthesis that sent audio."""
    approximate: bool = False
    """An MP3 synthesis of several sentences split into several files: cut places not known."""

    @property
    def seconds(self) -> float:
        return sum(d for _, d, _ in self.syntheses)

    @property
    def words(self) -> list[str]:
        return [w for _, _, spans in self.syntheses for s in spans for w in words(s.word)]

    def heard(self, position: float) -> int:
        """Words whose start lies before ``position`` seconds of the decoded reply."""
        count, start = 0, 0.0
        for pieces, seconds, spans in self.syntheses:
            if position >= start + seconds:
                count += sum(len(words(s.word)) for s in spans)
            else:
                pcm = pcm_position(pieces, position - start)
                count += sum(len(words(s.word)) for s in spans if s.start < pcm)
                break
            start += seconds
        return count


def timeline(
    syntheses: list[Synthesis], *, rate: int, mp3_files: int, mp3_tagged: bool = True
) -> Timeline:
    """The timeline of the syntheses that sent audio (a synthesis forced before its first chunk
    sent nothing; one cut by the force lies after the barge-in anyway)."""
    out = Timeline([])
    for s in syntheses:
        if s.chunks_sent == 0 or s.audio_seconds <= 0:
            continue
        synth_rate = s.sample_rate or rate
        samples = round(s.audio_seconds * synth_rate)
        pieces, seconds = decoded_layout(
            samples, synth_rate, mp3=s.mp3, mp3_files=mp3_files, mp3_tagged=mp3_tagged
        )
        spans = synthesis_words(s)
        if s.mp3 and mp3_files > 1 and len(split_sentences(spoken_text(s.text))) > 1:
            out.approximate = True
        out.syntheses.append((pieces, seconds, spans))
    return out


# --------------------------------------------------------------------------- estimate


class PlaybackEstimate:
    """When a reply's audio should start and end playing, to spread barge-ins over it.

    Speech length per character is measured once with espeak-ng (the signal the emulator uses
    when it has espeak-ng), on the short templates and on the long ones; the tone signal's is
    exact, and a ``varied`` sentence's rate is the one the emulator draws for it
    (``synth.sentence_speed``). The rest follows the emulator: a synthesis starts when its text
    is complete and the one before has been sent; chunk ``k`` leaves ``first_audio_delay`` plus
    its audio's end at ``pace`` after that start (``stall_ms`` later from the middle chunk on,
    for ``stalled``), and the device plays each chunk once it is there and the one before has
    played.
    """

    def __init__(self, signal: str, config: ContextConfig) -> None:
        self._config = config
        self._speech = signal == "speech"
        self._per_char: dict[bool, float] = {}
        if self._speech:
            fmt = OutputFormat("linear16", config.sample_rate)
            for long, templates in ((False, _TEMPLATES), (True, _LONG_TEMPLATES)):
                chars = seconds = 0.0
                for template in templates:
                    text = template.format(t=tag(1234))
                    pcm, _ = synthesize_pcm(SynthesisRequest(text, fmt, Signal.SPEECH))
                    chars += len(text)
                    seconds += len(pcm) / config.sample_rate
                self._per_char[long] = seconds / chars

    def sentence_seconds(self, sentence: str, speech: str) -> float:
        """How long ``sentence`` plays under the ``speech`` timing."""
        config = self._config
        jitter = config.rate_jitter if speech == "varied" else 0.0
        speed = sentence_speed(1.0, sentence, jitter, config.seed)
        if speech == "uniform" or not self._speech:
            return speech_seconds(sentence, speed)
        return len(sentence) * self._per_char[speech == "long"] / speed

    def playback(self, plan: RunPlan) -> tuple[float, float]:
        """(first audio, end of playback) in seconds after the reply was sent."""
        f = self._config.emulator_faults(EMULATOR_OF[plan.speech])
        pace = f.pace or math.inf
        sentences = split_sentences(plan.text)
        token_count = 0
        server_free = 0.0
        first: float | None = None
        end = 0.0
        for j, sentence in enumerate(sentences):
            token_count += len(tokens(sentence))
            ready = token_count * plan.token_s
            if plan.aggregation == "sentence" and j < len(sentences) - 1:
                ready += plan.token_s  # the sentence ends when the next token shows it
            seconds = self.sentence_seconds(sentence, plan.speech)
            if plan.delivery == "concatenated":
                parts = f.mp3_files if plan.audio == "mp3" else 1
                ends = [seconds * (k + 1) / parts for k in range(parts)]
            else:
                step = f.chunk_ms / 1000
                ends = [min(seconds, step * (k + 1)) for k in range(math.ceil(seconds / step))]
            start = max(ready, server_free) + f.first_audio_delay
            stall_at = len(ends) // 2 if f.stall_ms > 0 else len(ends)
            played = 0.0
            for k, chunk_end in enumerate(ends):
                arrives = start + chunk_end / pace + (f.stall_ms / 1000 if k >= stall_at else 0.0)
                if first is None:
                    first = end = arrives
                end = max(end, arrives) + chunk_end - played
                played = chunk_end
            server_free = start + seconds / pace + (f.stall_ms / 1000 if f.stall_ms > 0 else 0.0)
        return first or 0.0, end


# --------------------------------------------------------------------------- the pipeline


@dataclass
class ReplyFrame(DataFrame):
    """Asks the simulated LLM for a reply: its text, streamed at ``token_s`` per token."""

    text: str
    token_s: float


@dataclass(frozen=True)
class Write:
    """One chunk given to the device: when, when it started playing, how many bytes."""

    called: float
    start: float
    size: int
    seconds: float


@dataclass
class Trace:
    """What one run saw, on the ``time.perf_counter()`` clock."""

    sent_at: float = 0.0
    tokens_sent: int = 0
    first_audio_at: float | None = None
    interruption_sent_at: float | None = None
    tts_interrupted_at: float | None = None
    device_interrupted_at: float | None = None
    aggregator_interrupted_at: float | None = None
    writes: list[Write] = field(default_factory=list)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    """(when, bytes of audio received so far), at each audio frame entering the device."""
    text_at_device: int = 0
    timed_text_at_device: int = 0
    text_at_aggregator: list[tuple[float, str]] = field(default_factory=list)
    late_text: list[str] = field(default_factory=list)
    """Text frames that reached the aggregator after the interruption did."""
    tokens_after_interruption: int = 0
    """LLM tokens the TTS processed after the interruption (it overtook them in its queue)."""
    end_after_interruption: bool = False
    """The LLM's ``LLMFullResponseEndFrame`` (pushed as its reply was cancelled) reached the TTS
    after the interruption."""
    errors: list[str] = field(default_factory=list)
    first_audio: asyncio.Event = field(default_factory=asyncio.Event)
    reply_done: asyncio.Event = field(default_factory=asyncio.Event)
    interrupted: asyncio.Event = field(default_factory=asyncio.Event)


class Caller(FrameProcessor):
    """The user's side of the pipeline: the driver barges in through it; errors land here."""

    def __init__(self, trace: Trace) -> None:
        super().__init__(enable_direct_mode=True)
        self._trace = trace

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ErrorFrame):
            self._trace.errors.append(frame.error)
        await self.push_frame(frame, direction)


class Llm(FrameProcessor):
    """An LLM service: the reply streams from its process task, which an interruption cancels."""

    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self._trace = trace

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ReplyFrame):
            await self._reply(frame)
        else:
            await self.push_frame(frame, direction)

    async def _reply(self, frame: ReplyFrame) -> None:
        await self.push_frame(LLMFullResponseStartFrame())
        try:
            for token in tokens(frame.text):
                await asyncio.sleep(frame.token_s)
                await self.push_frame(LLMTextFrame(token))
                self._trace.tokens_sent += 1
        finally:
            # As pipecat's LLM services do (OpenAI's _process_context), also when cancelled.
            await self.push_frame(LLMFullResponseEndFrame())


class PlaybackDevice(BaseOutputTransport):
    """An output transport whose device plays audio in real time, like a sound card.

    Everything but the device is pipecat's: 40 ms chunks, one queue for audio and untimed frames,
    the clock queue releasing timed ``TTSTextFrame``s at their presentation time, and the wipe of
    both on an interruption. The device plays each chunk when the one before ends, or at once
    when it ran dry; ``write_audio_frame`` returns ``buffer_s`` before the chunk starts, so the
    transport keeps that much audio ahead of playback, as a sound card's or a phone's jitter
    buffer holds it (pipecat's WebSocket transports pace writes at real time the same way, in
    ``_write_audio_sleep``). Audio taken but not started when the interruption comes is dropped,
    as a transport's clear drops it.
    """

    def __init__(self, trace: Trace, sample_rate: int, buffer_s: float, chunk_ms: int) -> None:
        super().__init__(
            TransportParams(
                audio_out_enabled=True,
                audio_out_sample_rate=sample_rate,
                audio_out_10ms_chunks=max(1, chunk_ms // 10),
                audio_out_end_silence_secs=0,
            )
        )
        self._trace = trace
        self._buffer_s = buffer_s
        self._free_at = 0.0
        self._received = 0

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InterruptionFrame) and self._trace.device_interrupted_at is None:
            self._trace.device_interrupted_at = time.perf_counter()
        elif isinstance(frame, TTSTextFrame) and direction is FrameDirection.DOWNSTREAM:
            self._trace.text_at_device += 1
            self._trace.timed_text_at_device += bool(frame.pts)
        elif isinstance(frame, OutputAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            self._received += len(frame.audio)
            self._trace.arrivals.append((time.perf_counter(), self._received))
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        now = time.perf_counter()
        start = max(now, self._free_at)
        seconds = len(frame.audio) / (2 * frame.num_channels * frame.sample_rate)
        self._free_at = start + seconds
        self._trace.writes.append(Write(now, start, len(frame.audio), seconds))
        if self._trace.first_audio_at is None:
            self._trace.first_audio_at = start
            self._trace.first_audio.set()
        if start - self._buffer_s > now:
            await asyncio.sleep(start - self._buffer_s - now)
        return True


def _watch(trace: Trace, tts: TelnyxTTSService, assistant: LLMAssistantAggregator) -> None:
    """Hooks called inline as frames enter the TTS and the aggregator."""

    def tts_frame(_processor: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, InterruptionFrame) and trace.tts_interrupted_at is None:
            trace.tts_interrupted_at = time.perf_counter()
        elif isinstance(frame, LLMTextFrame) and trace.tts_interrupted_at is not None:
            trace.tokens_after_interruption += 1
        elif isinstance(frame, LLMFullResponseEndFrame) and trace.tts_interrupted_at is not None:
            trace.end_after_interruption = True

    def text_in(_processor: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, TTSTextFrame) and frame.append_to_context:
            trace.text_at_aggregator.append((time.perf_counter(), frame.text))
            if trace.aggregator_interrupted_at is not None:
                trace.late_text.append(frame.text)

    def processed(_processor: FrameProcessor, frame: Frame) -> None:
        if isinstance(frame, InterruptionFrame) and trace.aggregator_interrupted_at is None:
            trace.aggregator_interrupted_at = time.perf_counter()
            trace.interrupted.set()
        elif isinstance(frame, LLMFullResponseEndFrame):
            trace.reply_done.set()

    tts.add_event_handler("on_before_process_frame", tts_frame)
    assistant.add_event_handler("on_before_process_frame", text_in)
    assistant.add_event_handler("on_after_process_frame", processed)


async def run_pipeline(
    plan: RunPlan, url: str, config: ContextConfig, estimate: PlaybackEstimate
) -> tuple[Trace, list[str], bool]:
    """One reply through its own pipeline; returns the trace, the assistant messages the
    context holds at the end, and whether the barge-in came after the reply had ended."""
    trace = Trace()
    tts = make_service(
        plan.behaviour,
        VOICES[plan.delivery],
        FORMATS[plan.audio],
        AGGREGATIONS[plan.aggregation],
        url,
    )
    caller = Caller(trace)
    device = PlaybackDevice(
        trace, config.sample_rate, config.device_buffer_ms / 1000, config.device_chunk_ms
    )
    context = LLMContext()
    assistant = LLMAssistantAggregator(context)
    _watch(trace, tts, assistant)
    rate = config.sample_rate
    worker = PipelineWorker(
        Pipeline([caller, Llm(trace), tts, device, assistant]),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        cancel_on_idle_timeout=False,
        idle_timeout_secs=None,
        enable_rtvi=False,
        enable_turn_tracking=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker: PipelineWorker, _frame: StartFrame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    after_end = False
    try:
        async with asyncio.timeout(config.run_timeout_s):
            await started.wait()
            trace.sent_at = time.perf_counter()
            await worker.queue_frame(ReplyFrame(plan.text, plan.token_s))
            if plan.interrupted:
                after_end = await _barge_in(plan, trace, caller, estimate)
            else:
                await trace.reply_done.wait()
    except TimeoutError:
        trace.errors.append(f"run {plan.number} timed out after {config.run_timeout_s} s")
    finally:
        await worker.queue_frame(EndFrame())
        try:
            async with asyncio.timeout(20):
                await running
        except TimeoutError:
            trace.errors.append("the pipeline did not end within 20 s")
            await worker.cancel()
            running.cancel()
    messages = [
        str(m.get("content", ""))
        for m in context.get_messages()
        if isinstance(m, dict) and m.get("role") == "assistant"
    ]
    return trace, messages, after_end


async def _barge_in(
    plan: RunPlan, trace: Trace, caller: Caller, estimate: PlaybackEstimate
) -> bool:
    """Interrupt at ``plan.fraction`` of the reply's estimated playback after its first audio;
    True when the reply was over by then (the interruption is still sent)."""
    waits = [asyncio.ensure_future(e.wait()) for e in (trace.first_audio, trace.reply_done)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
    first, end = estimate.playback(plan)
    if trace.first_audio_at is not None:
        at = trace.first_audio_at + plan.fraction * (end - first)
        done = asyncio.ensure_future(trace.reply_done.wait())
        try:
            await asyncio.wait([done], timeout=max(0.0, at - time.perf_counter()))
        finally:
            done.cancel()
    after_end = trace.reply_done.is_set()
    trace.interruption_sent_at = time.perf_counter()
    await caller.broadcast_interruption()
    await trace.interrupted.wait()
    return after_end


# --------------------------------------------------------------------------- analysis


def observe(
    plan: RunPlan, trace: Trace, messages: list[str], after_end: bool, config: ContextConfig
) -> dict[str, Any]:
    """What one run saw, without the emulator's records; small, so that a run's trace (every
    chunk the device played) can go as soon as the run ends."""
    cut = trace.device_interrupted_at if plan.interrupted else None
    bytes_per_second = 2 * config.sample_rate
    written_after = sum(w.size for w in trace.writes if cut is not None and w.called > cut)
    return {
        "number": plan.number,
        "draw": plan.draw,
        "behaviour": plan.behaviour,
        "lifecycle": plan.lifecycle,
        "aggregation": plan.aggregation,
        "audio": plan.audio,
        "delivery": plan.delivery,
        "llm": plan.llm,
        "speech": plan.speech,
        "token_ms": round(1000 * plan.token_s, 1),
        "interrupted": plan.interrupted,
        "fraction": round(plan.fraction, 3),
        "barge_in_after_end": after_end,
        "messages": len(messages),
        "recorded_text": " ".join(messages),
        "heard_position_s": played_seconds(trace, cut) if cut is not None else None,
        "played_s": round(sum(w.size for w in trace.writes) / bytes_per_second, 3),
        "written_after_interruption_ms": round(1000 * written_after / bytes_per_second, 1),
        "device_starved_ms": round(1000 * starved(trace, cut), 1),
        "text_frames_at_device": trace.text_at_device,
        "timed_text_frames_at_device": trace.timed_text_at_device,
        "text_frames_at_aggregator": len(trace.text_at_aggregator),
        "late_text_frames": len(trace.late_text),
        "tokens_after_interruption": trace.tokens_after_interruption,
        "end_after_interruption": trace.end_after_interruption,
        "first_audio_ms": _ms(trace.first_audio_at, trace.sent_at),
        "interruption_to_device_ms": _ms(trace.device_interrupted_at, trace.interruption_sent_at),
        "errors": trace.errors,
    }


def judge(
    plan: RunPlan, seen: dict[str, Any], connections: list[Connection], config: ContextConfig
) -> dict[str, Any]:
    """Heard against recorded, for one run: ``seen`` (from ``observe``) completed in place."""
    full = words(plan.text)
    sentences = split_sentences(spoken_text(plan.text))
    first_word = list(itertools.accumulate([0, *(len(words(s)) for s in sentences[:-1])]))
    ours = sorted((c for c in connections if plan.tag in words(c.text)), key=lambda c: c.index)
    syntheses = [s for c in ours for s in c.syntheses]
    tl = timeline(
        syntheses,
        rate=config.sample_rate,
        mp3_files=config.faults.mp3_files,
        mp3_tagged=not config.faults.mp3_untagged,
    )
    position = seen["heard_position_s"]
    heard = tl.heard(position) if position is not None else len(tl.words)
    recorded = words(seen["recorded_text"])
    matcher = difflib.SequenceMatcher(None, full, recorded, autojunk=False)
    matched = {i + k for i, _, n in matcher.get_matching_blocks() for k in range(n)}
    unstarted = [i for i in first_word if i >= heard]
    sources = sorted({s.words_source for s in syntheses if s.chunks_sent})
    seen |= {
        "words": len(full),
        "sentences": len(sentences),
        "heard": heard,
        "recorded": len(recorded),
        "over": max(0, len(recorded) - heard),
        "under": max(0, heard - len(recorded)),
        "abs_diff": abs(len(recorded) - heard),
        "unstarted_sentence_recorded": bool(unstarted and max(matched, default=-1) >= unstarted[0]),
        "exact": (recorded == full and seen["messages"] == 1) if not plan.interrupted else None,
        "prefix": recorded == full[: len(recorded)],
        "reply_audio_s": round(tl.seconds, 3),
        "ground_truth_aligned": tl.words == full[: len(tl.words)],
        "approximate_timeline": tl.approximate,
        "words_source": "/".join(sources) if sources else None,
        "socket_found": bool(ours),
        "syntheses": len(syntheses),
    }
    if not plan.interrupted and seen["played_s"] and not seen["errors"]:
        # Played audio against the timeline: the transport pads only the last chunk. A failed
        # turn stops playing what the emulator went on sending, so it checks nothing.
        seen["timeline_error_ms"] = round(1000 * (seen["played_s"] - tl.seconds), 1)
    return seen


def played_seconds(trace: Trace, cut: float | None) -> float:
    """Seconds of the reply's audio played when ``cut`` came: whole chunks, and the part of the
    chunk then playing."""
    total = 0.0
    for w in trace.writes:
        if cut is None or w.start + w.seconds <= cut:
            total += w.seconds
        elif w.start < cut:
            total += cut - w.start
    return total


def starved(trace: Trace, cut: float | None) -> float:
    """Seconds the device sat silent, before ``cut``, although the next chunk's audio had
    reached it: the transport wrote late (event-loop lag) by more than the device's buffer.
    Silence because the audio was not there yet is not counted."""
    total, written, i = 0.0, 0, 0
    end: float | None = None
    for w in trace.writes:
        if cut is not None and w.start >= cut:
            break
        written += w.size
        while i < len(trace.arrivals) and trace.arrivals[i][1] < written:
            i += 1
        available = trace.arrivals[i][0] if i < len(trace.arrivals) else w.called
        if end is not None and w.start > end:
            total += max(0.0, w.start - max(end, available))
        end = w.start + w.seconds
    return total


def _ms(t: float | None, since: float | None) -> float | None:
    return None if t is None or since is None else round(1000 * (t - since), 1)


def mark_valid(runs: list[dict[str, Any]]) -> None:
    """``valid``: neither this run nor its pair had a device starved by a late event loop."""
    starved_draws = {r["draw"] for r in runs if r["device_starved_ms"] > STARVED_LIMIT_MS}
    for r in runs:
        r["valid"] = r["draw"] not in starved_draws


def summarize(
    runs: list[dict[str, Any]],
    behaviours: Iterable[str],
    dimensions: dict[str, tuple[str, ...]] = DIMENSIONS,
) -> list[dict[str, Any]]:
    """One row per behaviour and slice (all runs, then each value of each dimension), over the
    valid runs; ``excluded`` counts the others."""
    rows = []
    slices: list[tuple[str, str]] = [("all", "all")]
    slices += [(d, v) for d, values in dimensions.items() for v in values]
    for behaviour in behaviours:
        for dimension, value in slices:
            every = [
                r
                for r in runs
                if r["behaviour"] == behaviour and (dimension == "all" or r[dimension] == value)
            ]
            chosen = [r for r in every if r["valid"]]
            barge = [r for r in chosen if r["interrupted"]]
            whole = [r for r in chosen if not r["interrupted"]]
            rows.append(
                {
                    "behaviour": behaviour,
                    "dimension": dimension,
                    "value": value,
                    "runs": len(chosen),
                    "excluded": len(every) - len(chosen),
                    "barge_ins": len(barge),
                    "over": percentiles(r["over"] for r in barge),
                    "under": percentiles(r["under"] for r in barge),
                    "abs_diff": percentiles(r["abs_diff"] for r in barge),
                    "unstarted_pct": _pct(r["unstarted_sentence_recorded"] for r in barge),
                    "uninterrupted": len(whole),
                    "exact_pct": _pct(r["exact"] for r in whole),
                }
            )
    return rows


def _pct(flags: Iterable[Any]) -> float | None:
    values = [bool(f) for f in flags]
    return round(100 * sum(values) / len(values), 1) if values else None


def _diagnostics(runs: list[dict[str, Any]], behaviours: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for behaviour in behaviours:
        mine = [r for r in runs if r["behaviour"] == behaviour]
        barge = [r for r in mine if r["interrupted"]]
        whole = [r for r in mine if not r["interrupted"]]
        out[behaviour] = {
            "runs_with_errors": sum(bool(r["errors"]) for r in mine),
            "runs_starved": sum(r["device_starved_ms"] > STARVED_LIMIT_MS for r in mine),
            "excluded_with_their_pair": sum(not r["valid"] for r in mine),
            "all_runs_unstarted_pct": _pct(
                r["unstarted_sentence_recorded"] for r in mine if r["interrupted"]
            ),
            "all_runs_abs_diff": percentiles(r["abs_diff"] for r in mine if r["interrupted"]),
            "barge_ins_after_end": sum(r["barge_in_after_end"] for r in barge),
            "heard_share": percentiles(r["heard"] / r["words"] for r in barge),
            "recorded_not_a_prefix": sum(not r["prefix"] for r in mine),
            "more_than_one_message": sum(r["messages"] > 1 for r in mine),
            "late_text_frames": sum(r["late_text_frames"] for r in mine),
            "runs_with_tokens_after_interruption": sum(
                r["tokens_after_interruption"] > 0 for r in barge
            ),
            "end_frame_after_interruption": sum(r["end_after_interruption"] for r in barge),
            "device_starved_ms": percentiles(r["device_starved_ms"] for r in mine),
            "written_after_interruption_ms": percentiles(
                r["written_after_interruption_ms"] for r in barge
            ),
            "interruption_to_device_ms": percentiles(
                r["interruption_to_device_ms"]
                for r in barge
                if r["interruption_to_device_ms"] is not None
            ),
            "text_frames_per_sentence_complete": percentiles(
                r["text_frames_at_device"] / r["sentences"] for r in whole
            ),
            "timeline_error_ms": percentiles(
                r["timeline_error_ms"] for r in whole if "timeline_error_ms" in r
            ),
            "ground_truth_misaligned": sum(not r["ground_truth_aligned"] for r in mine),
            "approximate_timelines": sum(r["approximate_timeline"] for r in mine),
            "socket_not_found": sum(not r["socket_found"] for r in mine),
            "ground_truth_by_speech": {
                speech: {
                    "misaligned": sum(not r["ground_truth_aligned"] for r in group),
                    "timeline_error_ms": percentiles(
                        r["timeline_error_ms"] for r in group if "timeline_error_ms" in r
                    ),
                }
                for speech in sorted({r["speech"] for r in mine})
                for group in [[r for r in mine if r["speech"] == speech]]
            },
        }
    return out


# --------------------------------------------------------------------------- the run


class _Emulator(EmulatorProcess):
    """``EmulatorProcess`` with a lifecycle reading (a command-line option of the host)."""

    def __init__(self, *, lifecycle: Lifecycle, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._args += ["--lifecycle", lifecycle.value]


async def _loop_lag(samples: list[float], tick: float = 0.01) -> None:
    """How late the client's event loop wakes up (a shared machine's load shows here)."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(tick)
        samples.append(1000 * (time.perf_counter() - before - tick))


async def run_context(
    config: ContextConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run every planned reply, ``config.concurrency`` pipelines at once."""
    behaviours = tuple(b for b in config.behaviours if b in BEHAVIOURS)
    # Speech (espeak-ng) gives realistic word timings; the emulator records the word places of
    # either signal. The ``uniform`` timing is the tone signal whatever is installed.
    signal = "speech" if ESPEAK.available() else "tone"
    estimate = await asyncio.to_thread(PlaybackEstimate, signal, config)
    plans = plan_runs(config, behaviours)
    seen: dict[int, dict[str, Any]] = {}
    lags: list[float] = []
    started = time.perf_counter()
    # One emulator process per lifecycle and per emulator setting the drawn timings need.
    keys = sorted({(p.lifecycle, EMULATOR_OF[p.speech]) for p in plans})
    async with AsyncExitStack() as stack:
        hosts = {
            (lifecycle, emulator): await stack.enter_async_context(
                _Emulator(
                    lifecycle=LIFECYCLES[lifecycle],
                    signal="tone" if emulator == "uniform" else signal,
                    faults=config.emulator_faults(emulator),
                    keep_connections=config.keep_connections,
                    seed=config.seed,
                )
            )
            for lifecycle, emulator in keys
        }
        # Long replies first (pairs kept together): they take four times as long as the others,
        # and started last they would leave most lanes idle at the end of the part.
        queue = sorted(reversed(plans), key=lambda p: p.speech == "long")
        step = max(1, len(plans) // 10)

        async def lane() -> None:
            while queue:
                plan = queue.pop()
                url = hosts[plan.lifecycle, EMULATOR_OF[plan.speech]].url
                trace, messages, after_end = await run_pipeline(plan, url, config, estimate)
                seen[plan.number] = observe(plan, trace, messages, after_end, config)
                if len(seen) % step == 0 or len(seen) == len(plans):
                    progress(
                        f"  context: {len(seen)}/{len(plans)} runs "
                        f"({time.perf_counter() - started:.0f} s)"
                    )

        lag = asyncio.create_task(_loop_lag(lags))
        # One process holds every pipeline, so its heap is many bots' worth and a full garbage
        # collection stalls them all for a fifth of a second (measured): playback would starve
        # and the words timed by the clock run ahead of it. The heap built so far (pipecat and
        # its imports) is frozen out of collections for the run.
        gc.collect()
        gc.freeze()
        try:
            await asyncio.gather(*(lane() for _ in range(min(config.concurrency, len(plans)))))
        finally:
            gc.unfreeze()
            lag.cancel()
        # Read once, after every run: reading them during the runs parses them all in the event
        # loop that plays every pipeline's audio.
        records = {key: await host.connections() for key, host in hosts.items()}
    runs = [
        judge(p, seen[p.number], records[p.lifecycle, EMULATOR_OF[p.speech]], config) for p in plans
    ]
    mark_valid(runs)
    sources = sorted({r["words_source"] for r in runs if r["words_source"]})
    summary = summarize(runs, behaviours, config.dimensions())
    return {
        "config": asdict(config),
        "behaviours": list(behaviours),
        "signal": signal,
        "ground_truth": f"emulator word places ({', '.join(sources)})",
        "voices": VOICES,
        "duration_s": round(time.perf_counter() - started, 1),
        "loop_lag_ms": percentiles(lags),
        "starved_limit_ms": STARVED_LIMIT_MS,
        "summary": summary,
        "verdicts": accuracy.verdicts(summary),
        "diagnostics": _diagnostics(runs, behaviours),
        "errors": sorted({e for r in runs for e in r["errors"]}),
        "runs": runs,
    }
