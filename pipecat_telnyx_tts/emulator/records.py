"""What the emulator saw and did, kept for tests and benchmarks to assert on.

Times are ``time.perf_counter()`` values so that a test can compare them with its own clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

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
    """When the upgrade request arrived."""
    answered_at: float | None = None
    """When the HTTP answer (the 101 or the refusal) went out; None while pending or hung."""
    closed_at: float | None = None
    close_code: int | None = None
    """The code of the closing handshake (the server's when it closed first); 1006 for an
    abrupt end without one; None for refused upgrades."""
    close_reason: str | None = None
    idle_timeout: float | None = None
    """The idle window this socket got (the query's ask up to the cap, or the fault's), as last
    applied; None for refused upgrades and for sockets that never time out."""
    received: list[FrameRecord] = field(default_factory=list)
    sent: list[FrameRecord] = field(default_factory=list)
    syntheses: list[SynthesisRecord] = field(default_factory=list)


# --------------------------------------------------------------------------- counting


class Upgrade(Protocol):
    """What the counts below read of a connection: ``ConnectionRecord``, or the benchmarks' copy
    of one from another process."""

    @property
    def status(self) -> int: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def closed_at(self) -> float | None: ...


@dataclass
class UpgradeSecond:
    """Upgrades answered within one second."""

    accepted: int = 0
    refused: int = 0


def upgrades_per_second(records: Iterable[Upgrade], start: float) -> list[UpgradeSecond]:
    """Upgrades accepted (101) and refused (any other answer) in each whole second from
    ``start``, by when they were answered; unanswered ones and those before ``start`` are left
    out."""
    seconds: list[UpgradeSecond] = []
    for record in records:
        if record.answered_at is None or record.status == 0 or record.answered_at < start:
            continue
        i = math.floor(record.answered_at - start)
        seconds += [UpgradeSecond() for _ in range(i + 1 - len(seconds))]
        if record.status == 101:
            seconds[i].accepted += 1
        else:
            seconds[i].refused += 1
    return seconds


@dataclass(frozen=True)
class OpenSockets:
    """How many upgraded sockets were open over a time span."""

    peak: int
    mean: float
    """Time-weighted: socket-seconds open within the span over its length."""


def open_sockets(records: Iterable[Upgrade], start: float, end: float) -> OpenSockets:
    """Sockets open (from their 101 to their close; still open counts as open until ``end``)
    within ``[start, end]``."""
    if end <= start:
        raise ValueError(f"the span must have a length, got {start} to {end}")
    events: list[tuple[float, int]] = []
    for record in records:
        if record.status != 101 or record.answered_at is None:
            continue
        opened = max(record.answered_at, start)
        closed = min(end if record.closed_at is None else record.closed_at, end)
        if closed > opened:
            # Closes sort before opens at the same instant: a socket replaced by another in
            # that instant is not two sockets at once.
            events += [(opened, 1), (closed, -1)]
    peak = open_now = 0
    area = 0.0
    last = start
    for t, change in sorted(events):
        area += open_now * (t - last)
        last = t
        open_now += change
        peak = max(peak, open_now)
    return OpenSockets(peak=peak, mean=area / (end - start))
