"""What the STT emulator plays where the reference leaves a choice, and the faults it injects.

Each knob is one reading of ``telnyx-stt-protocol.md`` that a client must survive. Both dataclasses
are read when they take effect (at the upgrade, at each audio frame), so a test may change them
while sockets are open.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class LowerCaseEngine(enum.StrEnum):
    """What a wrongly cased ``transcription_engine`` (``deepgram``) gets."""

    REFUSE = "refuse"
    """Error 40007, as the docs say of a bad engine name."""

    SILENT = "silent"
    """The socket opens and never transcribes anything, as a live client saw (OBS)."""


@dataclass
class SttBehaviour:
    """Per-engine behaviour where the sources disagree (reference §2-§4)."""

    deepgram_interims: bool = True
    """Deepgram sends partials when asked (Telnyx's benchmark); False: finals only (another
    client's report)."""
    interim_every_ms: int = 200
    """Audio between two partials of one utterance, on the audio's own clock."""
    speech_final: bool = True
    """Deepgram marks the final that ends an utterance with ``speech_final``."""
    utterance_end: bool = True
    """Deepgram sends ``utterance_end`` after an endpointing final."""
    utterance_end_ms: int = 1000
    """Silence after an endpointing final before the ``utterance_end`` frame (audio clock)."""
    model_keys: tuple[str, ...] = ("model", "transcription_model")
    """Query keys read as the model, first found wins; ``("transcription_model",)`` plays a server
    that ignores ``model``."""
    lower_case_engine: LowerCaseEngine = LowerCaseEngine.REFUSE
    singular_error: bool = False
    """Send ``{"error": {...}}`` instead of the documented ``{"errors": [...]}``."""
    wav_strict: bool = True
    """With ``input_format=wav``, any byte before the RIFF header is an error (OBS)."""
    close_stream_everywhere: bool = False
    """Every engine honours ``CloseStream`` (one page); False: Deepgram, Speechmatics and Soniox
    only, and the others ignore it, so that a client must bound its wait (the other page)."""
    finalize_needs_silence_ms: int = 0
    """A ``Finalize`` that comes with less trailing silence than this returns an empty final,
    as Deepgram did with short answers (OBS); 0: no such minimum."""
    idle_timeout: float | None = 10.0
    """Seconds without a client frame that counts (audio; ``KeepAlive`` on Deepgram) before the
    server closes with 1011; None: never. The value live is not documented."""
    silence_level: int = 300
    """Peak sample magnitude at or below which a 10 ms frame is silent (about -40 dBFS)."""
    default_endpointing_ms: int = 100


@dataclass
class SttFaults:
    """Failures to inject into STT sessions; counted on the audio each session received."""

    refuse_with: list[tuple[str | None, str]] = field(default_factory=list)
    """Answer the next socket with an ``errors`` frame of these ``(code, parameter)`` entries
    whatever its query, then close; emptied once used. For codes a client's own checks keep
    it from provoking (a server whose tables changed)."""
    inject_frames: list[str | bytes] = field(default_factory=list)
    """Raw frames sent as they are just before the next result, then forgotten: malformed or
    unexpected server frames (bad JSON, binary, unknown keys)."""
    result_delay: float = 0.0
    """Seconds between deciding a result and sending it: the recognizer's latency."""
    error_after_audio: float | None = None
    """After this many seconds of received audio, ``{"error": "Internal error"}`` and close 1011."""
    drop_after_audio: float | None = None
    """After this many seconds of received audio, abort the TCP connection."""
    close_after_audio: float | None = None
    """After this many seconds of received audio, close with ``close_code``."""
    close_code: int = 1011
    stall_after_audio: float | None = None
    """After this many seconds of received audio, send nothing more and do not close."""
    fault_count: int | None = None
    """How many more times these faults may fire, decremented as they do; None: always."""
