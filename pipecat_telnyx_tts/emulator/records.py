"""What the emulator saw and did, kept for tests and benchmarks to assert on.

Times are ``time.perf_counter()`` values so that a test can compare them with its own clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat_telnyx_tts.protocol import ClientMessage, ConnectParams, ServerMessage

REDACTED = "REDACTED"


@dataclass
class FrameRecord:
    """One WebSocket frame; ``message`` is None when the frame did not parse."""

    t: float
    raw: str
    message: ClientMessage | ServerMessage | None


@dataclass(frozen=True)
class WordSpan:
    """Where one word lies in a synthesis's audio, so that a benchmark can tell which words a
    caller heard before a barge-in cut the audio.

    ``word`` is a whitespace-separated token of the spoken text (``synth.spoken_text``),
    punctuation attached; ``start`` and ``end`` are seconds from the start of the synthesis's
    PCM, before any MP3 encoder delay or padding.
    """

    word: str
    start: float
    end: float


@dataclass
class SynthesisRecord:
    """One synthesis, from the frame that triggered it to its last frame out."""

    text: str
    started_at: float
    """When the triggering frame arrived; ``timeToFirstAudioFrameMs`` counts from here."""
    first_audio_at: float | None = None
    finished_at: float | None = None
    chunks_sent: int = 0
    """Frames carrying audio that went out (the text-bearing frame counts if it carries audio)."""
    audio_seconds: float = 0.0
    """Length of the synthesized PCM, before any MP3 encoder delay or padding."""
    cached: bool = False
    forced: bool = False
    """Interrupted by ``{"force": true}``, or dropped from the queue by it before it started."""
    frames_after_force_sent: int = 0
    """Frames of this synthesis that went out after the force that interrupted it."""
    mp3: bool = False
    sample_rate: int = 0
    words: list[WordSpan] = field(default_factory=list)
    """Every spoken word with its place in the audio, in order; empty until rendered."""
    words_source: str = ""
    """How ``words`` were found: "signal" when they follow from the text (tone and marker
    signals, exact), "espeak" when from espeak-ng's word events; "" before rendering."""


@dataclass
class ConnectionRecord:
    """One upgrade request to anything but the voices endpoint, accepted or refused."""

    index: int
    """1-based, in accept order; also the sample value of the marker signal on this socket."""
    path: str
    query: str
    params: ConnectParams | None
    headers: dict[str, str]
    """Request headers; the Authorization credential is replaced by ``REDACTED``."""
    status: int
    """101 when upgraded, else the refusal status; 0 while the upgrade is pending, and for good
    when it was never answered (``Faults.hang_upgrades``)."""
    opened_at: float
    closed_at: float | None = None
    close_code: int | None = None
    """The code of the closing handshake (the server's when it closed first); 1006 for an
    abrupt end without one; None for refused upgrades."""
    close_reason: str | None = None
    received: list[FrameRecord] = field(default_factory=list)
    sent: list[FrameRecord] = field(default_factory=list)
    syntheses: list[SynthesisRecord] = field(default_factory=list)
