"""Audio for the emulator: text clean-up, PCM synthesis, encoding and chunking. No I/O.

Everything here is plain and synchronous; the server runs ``render`` in a thread so that the
event loop keeps serving while espeak-ng or LAME work.
"""

from __future__ import annotations

import bisect
import ctypes
import io
import itertools
import math
import random
import re
import threading
import unicodedata
import wave
import zlib
from dataclasses import dataclass
from typing import Literal

import lameenc
import numpy as np
import numpy.typing as npt
from loguru import logger

from pipecat_telnyx_tts.emulator.config import Signal
from pipecat_telnyx_tts.emulator.records import WordSpan
from pipecat_telnyx_tts.protocol import ConnectParams
from pipecat_telnyx_tts.voices import ProviderFamily

Encoding = Literal["mp3", "linear16", "wav", "mulaw", "alaw"]
Pcm = npt.NDArray[np.int16]

MPEG_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
CHARS_PER_SECOND = 14.5
"""Speaking rate of the tone and marker signals, in the 13-16 characters per second of speech."""
TAIL_SECONDS = 0.15
"""Trailing near-silence after the last syllable, as real TTS leaves."""
SPEECH_LEAD_SECONDS = 0.08
SPEECH_TAIL_SECONDS = 0.2
"""Silence before and after each synthesis of the speech signal. espeak-ng leaves only about 14
ms before its first sound and 10 ms after its last (measured on five sentences), so syntheses
played back to back ran together; a neural TTS voice opens with a short breath of silence and
ends a sentence with a longer one, and these figures (chosen in that range: about 0.3 s between
two syntheses) make every sentence end audible. The tone signal keeps its own ``TAIL_SECONDS``;
the marker signal has no silence to add."""
ID3_ENCODER = "pipecat-telnyx-tts emulator (LAME)"
SILENCE_LEVEL = 300
"""Sample magnitude at or below which speech counts as silent, about -40 dBFS: espeak-ng's pauses
are near zero, its quietest sounds well above this."""

# --------------------------------------------------------------------------- text

_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HEADER = re.compile(r"(^|\s)#{1,6}(?=\s|$)", re.MULTILINE)
_EMPHASIS = re.compile(r"\*\*|__|~~|`+|\*")
_SSML_TAG = re.compile(r"<[^>]*>")
_SENTENCE_BREAK = re.compile(r"(?<=[.?!])\s+")
_TOKEN = re.compile(r"\S+")


def strip_markdown(text: str) -> str:
    """What Telnyx removes before synthesis: links (keeping their text), headers, emphasis,
    code ticks and emoji."""
    text = _LINK.sub(r"\1", text)
    text = _HEADER.sub(r"\1", text)
    text = _EMPHASIS.sub("", text)
    # Emoji and pictographs are "other symbol"; joiners and variation selectors glue them.
    return "".join(
        c for c in text if unicodedata.category(c) != "So" and c not in "\u200d\ufe0e\ufe0f"
    )


def spoken_text(text: str, ssml: bool = False) -> str:
    """The words that will be voiced; empty when there is nothing to say."""
    plain = _SSML_TAG.sub(" ", text) if ssml else strip_markdown(text)
    return " ".join(plain.split())


def split_sentences(spoken: str) -> list[str]:
    """The sentences of ``spoken``: each ends at ``.``, ``?`` or ``!`` followed by whitespace,
    or at the end of the text."""
    return _SENTENCE_BREAK.split(spoken) if spoken else []


def speech_seconds(spoken: str, speed: float = 1.0) -> float:
    """Length of the tone and marker signals: a function of the text alone, plus speed."""
    if not spoken:
        return 0.0
    return len(spoken) / CHARS_PER_SECOND / speed + TAIL_SECONDS


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class OutputFormat:
    """What goes on the wire for a socket: decided once at connect from the voice and query."""

    encoding: Encoding
    sample_rate: int

    @property
    def mp3(self) -> bool:
        return self.encoding == "mp3"

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.encoding in ("mulaw", "alaw") else 2


def mp3_rate(rate: int) -> int:
    """The MPEG rate an encoder would use for ``rate``: MP3 has no 96 kHz, for one."""
    return max((r for r in MPEG_RATES if r <= rate), default=MPEG_RATES[0])


def output_format(family: ProviderFamily, params: ConnectParams, signal: Signal) -> OutputFormat:
    """The format the service answers in, which is not always the one asked for."""
    rate = params.sample_rate or family.default_rate
    if signal is Signal.MARKER:
        # The marker value must reach the client sample for sample; a lossy codec would blur it.
        return OutputFormat("linear16", rate)
    if not family.honours_format:
        return OutputFormat("mp3", mp3_rate(family.mp3_rate or rate))
    match params.audio_format:
        case "linear16" if family.pcm:
            return OutputFormat("linear16", rate)
        case "wav":
            return OutputFormat("wav", rate)
        case "mulaw":
            return OutputFormat("mulaw", rate)
        case "alaw":
            return OutputFormat("alaw", rate)
        case _:
            # mp3, no format, and ogg_vorbis, which needs an encoder this package does not ship:
            # MP3 then, which a client that sniffs what arrives (as it must, reference §5) plays.
            return OutputFormat("mp3", mp3_rate(rate))


# --------------------------------------------------------------------------- signals


def tone_pcm(spoken: str, rate: int, seconds: float) -> Pcm:
    """A voiced-sounding signal: a gliding pitch with a few harmonics, pulsed at syllable rate.

    It depends on the text only, so equal text gives equal audio, and it is loud enough for a
    voice-activity detector to call it speech.
    """
    n = round(seconds * rate)
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    t = np.arange(n) / rate
    phase = (zlib.crc32(spoken.encode()) % 628) / 100
    f0 = 120.0 + 25.0 * np.sin(2 * np.pi * 0.8 * t + phase)
    pitch_phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(0.6**k * np.sin((k + 1) * pitch_phase) for k in range(4))
    syllables = 0.55 - 0.45 * np.cos(2 * np.pi * 4.0 * t)
    speaking = np.clip((seconds - TAIL_SECONDS - t) / 0.05, 0.0, 1.0)
    signal = voiced * syllables * speaking
    peak = float(np.max(np.abs(signal))) or 1.0
    return (signal / peak * 0.3 * 32767).astype(np.int16)


def marker_pcm(rate: int, seconds: float, value: int) -> Pcm:
    """Every sample is ``value``: the connection index, so bytes can be traced to their socket."""
    return np.full(round(seconds * rate), value, dtype=np.int16)


class _EspeakEventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _EspeakEvent(ctypes.Structure):
    """``espeak_EVENT`` of espeak-ng's ``speak_lib.h``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EspeakEventId),
    ]


@dataclass(frozen=True)
class EspeakWord:
    """One espeak-ng word event. espeak splits text its own way ("42" is two words, "don't" is
    one that it reports as "don"), so these are anchors, not the words themselves."""

    char: int
    """0-based character offset of the word in the text given to espeak-ng."""
    seconds: float
    """Where the word starts in the audio of that call."""


class _Espeak:
    """espeak-ng through ctypes, from the espeakng-loader wheel.

    The library keeps global state (voice, rate, callback), so calls are serialized with a lock;
    it is loaded lazily, once, so that servers that never speak start fast.
    """

    _OUTPUT_SYNCHRONOUS = 0x02
    _CHARS_UTF8 = 0x01
    _SSML = 0x10
    _RATE = 1
    _WORDS_PER_MINUTE = 145
    _EVENT_LIST_TERMINATED = 0
    _EVENT_WORD = 1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self._rate = 0
        self._failed = False
        self._pieces: list[bytes] = []
        self._words: list[EspeakWord] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_short),
            ctypes.c_int,
            ctypes.POINTER(_EspeakEvent),
        )
        # Held on the instance: ctypes callbacks must outlive every call into the library.
        self._callback = callback_type(self._collect)

    def _collect(
        self,
        wav: ctypes._Pointer[ctypes.c_short],
        count: int,
        events: ctypes._Pointer[_EspeakEvent],
    ) -> int:
        if count > 0:
            self._pieces.append(ctypes.string_at(wav, count * 2))
        # An array ended by a LIST_TERMINATED event. Its text positions count characters (not
        # UTF-8 bytes) from 1; its audio positions are milliseconds from the start of the call.
        i = 0
        while events and (event := events[i]).type != self._EVENT_LIST_TERMINATED:
            if event.type == self._EVENT_WORD:
                self._words.append(EspeakWord(event.text_position - 1, event.audio_position / 1000))
            i += 1
        return 0

    def _load(self) -> ctypes.CDLL | None:
        if self._lib is not None or self._failed:
            return self._lib
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            lib.espeak_Initialize.argtypes = [
                ctypes.c_int,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
            ]
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            data = espeakng_loader.get_data_path().encode()
            rate = lib.espeak_Initialize(self._OUTPUT_SYNCHRONOUS, 0, data, 0)
            if rate <= 0:
                raise RuntimeError(f"espeak_Initialize returned {rate}")
            lib.espeak_SetSynthCallback(self._callback)
        except Exception as e:
            logger.warning(f"espeak-ng is not usable ({e}); the emulator falls back to a tone")
            self._failed = True
            return None
        self._lib, self._rate = lib, rate
        return lib

    def available(self) -> bool:
        with self._lock:
            return self._load() is not None

    def synthesize(
        self, text: str, language: str | None, speed: float, ssml: bool
    ) -> tuple[Pcm, list[EspeakWord]]:
        """Speech for ``text`` at the library's own rate (see ``rate``), and its word events."""
        with self._lock:
            lib = self._load()
            if lib is None:
                raise RuntimeError("espeak-ng is not available")
            self._select_voice(lib, language)
            lib.espeak_SetParameter(self._RATE, round(self._WORDS_PER_MINUTE * speed), 0)
            self._pieces, self._words = [], []
            data = text.encode() + b"\0"
            flags = self._CHARS_UTF8 | (self._SSML if ssml else 0)
            status = lib.espeak_Synth(data, len(data), 0, 0, 0, flags, None, None)
            lib.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            pcm = np.frombuffer(b"".join(self._pieces), dtype=np.int16).copy()
            return pcm, self._words

    @property
    def rate(self) -> int:
        return self._rate

    @staticmethod
    def _select_voice(lib: ctypes.CDLL, language: str | None) -> None:
        tag = (language or "en").lower()
        for name in (tag, tag.split("-")[0], "en"):
            if lib.espeak_SetVoiceByName(name.encode()) == 0:
                return


ESPEAK = _Espeak()


def resolve_signal(signal: Signal) -> Signal:
    """``auto`` becomes speech if espeak-ng works here, else tone."""
    if signal is Signal.AUTO:
        return Signal.SPEECH if ESPEAK.available() else Signal.TONE
    return signal


# --------------------------------------------------------------------------- encoding


def syncsafe(n: int) -> bytes:
    """ID3v2 size: four bytes of seven bits each, so no byte looks like an MPEG sync."""
    return bytes((n >> shift) & 0x7F for shift in (21, 14, 7, 0))


def id3v24_tag(encoder: str = ID3_ENCODER) -> bytes:
    """A minimal ID3v2.4 tag with one TSSE (encoder settings) frame, UTF-8."""
    payload = b"\x03" + encoder.encode()
    frame = b"TSSE" + syncsafe(len(payload)) + b"\x00\x00" + payload
    return b"ID3\x04\x00\x00" + syncsafe(len(frame)) + frame


def mp3_bitrate(rate: int) -> int:
    """kbit/s: modest, like a telephony-minded TTS, and valid for the MPEG version of ``rate``."""
    return 64 if rate >= 32000 else 48


LAME_ENCODER_DELAY = 576
"""Samples of silence LAME puts before the audio of every file it encodes."""


def encode_mp3(pcm: Pcm, rate: int, *, info_tag: bool = True) -> bytes:
    """One complete MP3 file: its own ID3v2.4 tag, then LAME's frames, mono.

    ``info_tag``: open the frames with an Info frame (LAME's tag for constant bitrate) that
    records the encoder delay and end padding, as the LAME tool and FFmpeg write it into a file;
    without it the file is what lameenc's streaming API gives, which tells neither.
    """
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(mp3_bitrate(rate))
    encoder.set_in_sample_rate(rate)
    # Pinned, or LAME picks a lower output rate for low bitrates and the rate would not be the
    # one the voice is documented to use.
    encoder.set_out_sample_rate(rate)
    encoder.set_channels(1)
    encoder.set_quality(5)
    body = bytes(encoder.encode(pcm.astype("<i2").tobytes())) + bytes(encoder.flush())
    if info_tag:
        body = info_frame(body, len(pcm), rate) + body
    return id3v24_tag() + body


def mpeg_frame_samples(rate: int) -> int:
    """Samples per Layer III frame: 1152 for MPEG-1 (32 kHz and up), 576 below."""
    return 1152 if rate >= 32000 else 576


def _mpeg_frame_bytes(rate: int, padded: bool) -> int:
    return mpeg_frame_samples(rate) // 8 * mp3_bitrate(rate) * 1000 // rate + padded


def info_frame(frames: bytes, samples: int, rate: int) -> bytes:
    """The Info frame (a silent MPEG frame holding the Xing/LAME tag) for LAME's ``frames``,
    which encode ``samples`` samples at ``rate``: frame count, byte count, and the encoder delay
    and end padding in the LAME extension, the fields decoders read to play the file gaplessly.
    The tag's CRC is left 0: decoders use it only to trust the ReplayGain fields, which are
    empty here."""
    count, position = 0, 0
    while position + 4 <= len(frames):
        position += _mpeg_frame_bytes(rate, bool(frames[position + 2] & 0x02))
        count += 1
    padding = count * mpeg_frame_samples(rate) - samples - LAME_ENCODER_DELAY
    header = bytearray(frames[:4])
    header[2] &= ~0x02  # the tag frame needs no padding byte
    side_info = 17 if rate >= 32000 else 9  # mono
    lame = (
        b"LAME3.100"
        + bytes(12)  # revision, lowpass, peak, ReplayGain, flags, bitrate: not used here
        + ((LAME_ENCODER_DELAY << 12) | padding).to_bytes(3, "big")
        + bytes(4)  # misc, MP3 gain, preset
        + (len(frames) + _mpeg_frame_bytes(rate, False)).to_bytes(4, "big")
        + bytes(4)  # music CRC, tag CRC
    )
    tag = b"Info" + (3).to_bytes(4, "big") + count.to_bytes(4, "big")
    tag += (len(frames) + _mpeg_frame_bytes(rate, False)).to_bytes(4, "big") + lame
    frame = bytes(header) + bytes(side_info) + tag
    return frame + bytes(_mpeg_frame_bytes(rate, False) - len(frame))


def encode_wav(pcm: Pcm, rate: int) -> bytes:
    """One RIFF/WAVE file per synthesis, like the MP3 case: a header at a frame start."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()


def encode_mulaw(pcm: Pcm) -> bytes:
    """G.711 mu-law (the classic segment encoder)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def encode_alaw(pcm: Pcm) -> bytes:
    """G.711 A-law (the classic segment encoder)."""
    x = pcm.astype(np.int32) >> 3
    mask = np.where(x >= 0, 0xD5, 0x55)
    magnitude = np.where(x >= 0, x, -x - 1)
    segment = np.where(magnitude < 32, 0, np.floor(np.log2(np.maximum(magnitude, 1))) - 4)
    segment = segment.astype(np.int32)
    shift = np.where(segment < 2, 1, segment)
    value = (segment << 4) | ((magnitude >> shift) & 0x0F)
    return ((value ^ mask) & 0xFF).astype(np.uint8).tobytes()


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class SynthesisRequest:
    """Everything that decides the audio of one synthesis."""

    text: str
    fmt: OutputFormat
    signal: Signal
    speed: float = 1.0
    language: str | None = None
    ssml: bool = False
    marker: int = 1
    sentence_pause_ms: int = 0
    """Silence after each sentence end but the last (not in SSML, whose author places pauses)."""
    mp3_files: int = 1
    """Separately encoded MP3 files the audio is made of; other encodings are one piece."""
    mp3_info_tag: bool = True
    """Whether each MP3 file opens with an Info frame recording its delay and padding."""
    rate_jitter: float = 0.0
    """Each sentence at ``speed`` times its own factor within ``1 ± rate_jitter``."""
    jitter_seed: int = 0
    """Seeds ``sentence_speed`` with the sentence's text."""


@dataclass(frozen=True)
class Part:
    """A piece of a rendition that starts a frame of its own: a whole MP3 file, or all of it."""

    data: bytes
    end_seconds: float
    """Audio complete at the end of this part, counted from the start of the synthesis."""


@dataclass(frozen=True)
class Rendition:
    """The encoded audio of one synthesis (no parts when there was nothing to say)."""

    parts: tuple[Part, ...]
    audio_seconds: float
    fmt: OutputFormat
    words: tuple[WordSpan, ...] = ()
    """Where each spoken word lies in the audio, before encoding (see ``SynthesizedAudio``)."""
    words_source: str = ""
    """"signal" or "espeak", as in ``SynthesizedAudio``; "" when there was nothing to say."""

    @property
    def data(self) -> bytes:
        return b"".join(part.data for part in self.parts)


@dataclass(frozen=True)
class SynthesizedAudio:
    """The PCM of one synthesis, and where its sentences and words lie in it."""

    pcm: Pcm
    """Mono int16 at the output rate."""
    sentence_ends: list[int]
    """Sample offsets where a sentence (and its pause) ends: where an MP3 file may end without
    cutting a word."""
    words: tuple[WordSpan, ...] = ()
    """Every whitespace-separated token of the spoken text, in order."""
    words_source: str = ""
    """"signal" when the word places follow from the text (tone, marker), "espeak" when they come
    from espeak-ng's word events."""


def synthesize_pcm(request: SynthesisRequest) -> tuple[Pcm, list[int]]:
    """The PCM and sentence ends of ``synthesize_audio``, for callers that need no words."""
    audio = synthesize_audio(request)
    return audio.pcm, audio.sentence_ends


def synthesize_audio(request: SynthesisRequest) -> SynthesizedAudio:
    """Synthesize ``request`` sentence by sentence (when pauses or MP3 files need the breaks),
    keeping track of where each word of each sentence ends up in the whole."""
    spoken = spoken_text(request.text, request.ssml)
    if not spoken:
        return SynthesizedAudio(np.zeros(0, dtype=np.int16), [])
    signal = resolve_signal(request.signal)
    by_sentence = not request.ssml and (
        request.sentence_pause_ms > 0
        or (request.fmt.mp3 and request.mp3_files > 1)
        or request.rate_jitter > 0
    )
    sentences = split_sentences(spoken) if by_sentence else [spoken]
    rate = request.fmt.sample_rate
    # The marker signal's pauses carry the marker too: every sample still names its socket.
    silence_value = request.marker if signal is Signal.MARKER else 0
    pause = max(0, round(rate * request.sentence_pause_ms / 1000))
    speech = signal is Signal.SPEECH
    lead = round(rate * SPEECH_LEAD_SECONDS) if speech else 0
    pieces: list[Pcm] = [np.zeros(lead, dtype=np.int16)]
    ends: list[int] = []
    words: list[WordSpan] = []
    offset = lead
    for i, sentence in enumerate(sentences):
        pcm, sentence_words = _sentence_audio(request, signal, sentence)
        shift = offset / rate
        words += [WordSpan(w.word, w.start + shift, w.end + shift) for w in sentence_words]
        pieces.append(pcm)
        offset += len(pcm)
        if i < len(sentences) - 1:
            pieces.append(np.full(pause, silence_value, dtype=np.int16))
            offset += pause
            ends.append(offset)
    if speech:
        pieces.append(np.zeros(round(rate * SPEECH_TAIL_SECONDS), dtype=np.int16))
    source = "espeak" if speech else "signal"
    return SynthesizedAudio(np.concatenate(pieces), ends, tuple(words), source)


def sentence_speed(speed: float, sentence: str, jitter: float, seed: int) -> float:
    """The speed ``sentence`` is spoken at under ``Faults.rate_jitter``: ``speed`` times a factor
    in ``[1 - jitter, 1 + jitter]`` that depends only on the seed and the sentence's text, so that
    a benchmark can tell in advance how long a sentence will play."""
    if jitter <= 0:
        return speed
    return speed * (1 + random.Random(f"{seed}/{sentence}").uniform(-jitter, jitter))


def _sentence_audio(
    request: SynthesisRequest, signal: Signal, spoken: str
) -> tuple[Pcm, list[WordSpan]]:
    """One piece of audio and its words, timed from the start of the piece."""
    rate = request.fmt.sample_rate
    speed = sentence_speed(request.speed, spoken, request.rate_jitter, request.jitter_seed)
    if signal is Signal.SPEECH:
        source = request.text if request.ssml else spoken
        pcm, events = ESPEAK.synthesize(source, request.language, speed, request.ssml)
        if ESPEAK.rate != rate and len(pcm):
            import soxr

            pcm = soxr.resample(pcm, ESPEAK.rate, rate).astype(np.int16)
        return pcm, speech_words(_tokens(source, request.ssml), events, pcm, rate)
    seconds = speech_seconds(spoken, speed)
    pcm = (
        marker_pcm(rate, seconds, request.marker)
        if signal is Signal.MARKER
        else tone_pcm(spoken, rate, seconds)
    )
    return pcm, signal_words(spoken, speed)


def _tokens(source: str, ssml: bool) -> list[re.Match[str]]:
    """The words of ``spoken_text(source, ssml)``, located in ``source`` itself, which is what
    espeak-ng's text positions count in: SSML tags are blanked to spaces of their own length."""
    if ssml:
        source = _SSML_TAG.sub(lambda tag: " " * len(tag.group()), source)
    return list(_TOKEN.finditer(source))


def signal_words(spoken: str, speed: float = 1.0) -> list[WordSpan]:
    """Words of the tone and marker signals, which voice ``CHARS_PER_SECOND`` characters a
    second: exact by construction, as those signals are made from the text's length alone."""
    return [
        WordSpan(
            m.group(), m.start() / CHARS_PER_SECOND / speed, m.end() / CHARS_PER_SECOND / speed
        )
        for m in _TOKEN.finditer(spoken)
    ]


def speech_words(
    tokens: list[re.Match[str]], events: list[EspeakWord], pcm: Pcm, rate: int
) -> list[WordSpan]:
    """Place ``tokens`` in espeak-ng's audio ``pcm`` (at ``rate``) from its word ``events``.

    espeak-ng splits text its own way, so a token starts at the first event inside it; a token
    with none (a dash espeak-ng does not voice, say) is interpolated between its neighbours. A
    token ends where its sound does before the next token starts: a clause pause belongs to no
    word, so a cut inside one has heard the word before it whole.
    """
    seconds = len(pcm) / rate
    token_starts = [m.start() for m in tokens]
    found: dict[int, float] = {}
    for event in events:
        i = bisect.bisect_right(token_starts, event.char) - 1
        if i >= 0 and event.char < tokens[i].end() and i not in found:
            found[i] = min(event.seconds, seconds)
    anchors = {0: 0.0} | found | {len(tokens): seconds}
    known = sorted(anchors)
    starts = np.interp(np.arange(len(tokens)), known, [anchors[i] for i in known])
    # Events come in audio order; this only guards against text positions that do not.
    bounds = [*np.maximum.accumulate(starts).tolist(), seconds]
    return [
        WordSpan(m.group(), start, _sound_end(pcm, rate, start, next_start))
        for m, (start, next_start) in zip(tokens, itertools.pairwise(bounds), strict=True)
    ]


def _sound_end(pcm: Pcm, rate: int, start: float, limit: float) -> float:
    """The end of the last sample above ``SILENCE_LEVEL`` in ``[start, limit)``, in seconds;
    ``limit`` when there is none."""
    a, b = round(start * rate), round(limit * rate)
    loud = np.flatnonzero(np.abs(pcm[a:b].astype(np.int32)) > SILENCE_LEVEL)
    return (a + int(loud[-1]) + 1) / rate if loud.size else limit


def file_cuts(sentence_ends: list[int], total: int, files: int) -> list[int]:
    """Sample offsets at which to start a new MP3 file, to make ``files`` files of ``total``
    samples: at sentence ends when there are enough of them (those nearest an even split),
    else evenly. Fewer cuts when the audio is too short to split that often."""
    wanted = min(files, total) - 1
    if wanted <= 0:
        return []
    inner = [end for end in sentence_ends if 0 < end < total]
    if len(inner) < wanted:
        return sorted({round(k * total / (wanted + 1)) for k in range(1, wanted + 1)})
    cuts: list[int] = []
    start = 0
    for k in range(1, wanted + 1):
        # Leave enough sentence ends after this cut for the cuts still to come.
        candidates = inner[start : len(inner) - (wanted - k)]
        target = k * total / (wanted + 1)
        best = min(range(len(candidates)), key=lambda i: abs(candidates[i] - target))
        cuts.append(candidates[best])
        start += best + 1
    return cuts


def render(request: SynthesisRequest) -> Rendition:
    """Synthesize and encode one synthesis: MP3 as ``mp3_files`` files, WAV as one file, the
    other encodings as one raw stream."""
    audio = synthesize_audio(request)
    pcm, words, source = audio.pcm, audio.words, audio.words_source
    fmt = request.fmt
    seconds = len(pcm) / fmt.sample_rate
    if len(pcm) == 0:
        return Rendition((), 0.0, fmt)
    if fmt.mp3:
        bounds = [0, *file_cuts(audio.sentence_ends, len(pcm), request.mp3_files), len(pcm)]
        parts = tuple(
            Part(
                encode_mp3(pcm[a:b], fmt.sample_rate, info_tag=request.mp3_info_tag),
                b / fmt.sample_rate,
            )
            for a, b in itertools.pairwise(bounds)
        )
        return Rendition(parts, seconds, fmt, words, source)
    match fmt.encoding:
        case "wav":
            data = encode_wav(pcm, fmt.sample_rate)
        case "mulaw":
            data = encode_mulaw(pcm)
        case "alaw":
            data = encode_alaw(pcm)
        case _:
            data = pcm.astype("<i2").tobytes()
    return Rendition((Part(data, seconds),), seconds, fmt, words, source)


@dataclass(frozen=True)
class Chunk:
    """A piece of a rendition for one frame, and how much audio is complete at its end."""

    data: bytes
    end_seconds: float


def split_chunks(rendition: Rendition, chunk_ms: int, rng: random.Random) -> list[Chunk]:
    """Cut a rendition into frame payloads of about ``chunk_ms`` of audio each; every part
    starts a payload of its own.

    MP3 is cut at random byte offsets, not at MPEG frame boundaries, as Telnyx does: a client
    must buffer across frames. Raw and WAV audio is cut on sample boundaries.
    """
    chunks: list[Chunk] = []
    start_seconds = 0.0
    for part in rendition.parts:
        chunks += _split_part(part, start_seconds, rendition.fmt, chunk_ms, rng)
        start_seconds = part.end_seconds
    return chunks


def _split_part(
    part: Part, start_seconds: float, fmt: OutputFormat, chunk_ms: int, rng: random.Random
) -> list[Chunk]:
    data = part.data
    if not data:
        return []
    chunk_seconds = max(chunk_ms, 1) / 1000
    if fmt.mp3:
        target = mp3_bitrate(fmt.sample_rate) * 1000 / 8 * chunk_seconds
        first = len(id3v24_tag()) + 1
        cuts: list[int] = []
        position = 0
        while True:
            position += max(first, math.ceil(target * rng.uniform(0.5, 1.5)))
            first = 1
            if position >= len(data):
                break
            cuts.append(position)
        header = 0
    else:
        header = 44 if fmt.encoding == "wav" else 0
        step = max(1, round(fmt.sample_rate * chunk_seconds)) * fmt.bytes_per_sample
        cuts = list(range(header + step, len(data), step))
    bounds = [0, *cuts, len(data)]
    body = len(data) - header
    seconds = part.end_seconds - start_seconds
    return [
        Chunk(data[a:b], start_seconds + seconds * (b - header) / body)
        for a, b in itertools.pairwise(bounds)
    ]
