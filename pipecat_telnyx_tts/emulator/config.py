"""What the emulator plays: the lifecycle reading, the audio signal and the injected faults."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Lifecycle(enum.StrEnum):
    """Which reading of the protocol's lifecycle a socket follows (reference §4)."""

    OBSERVED = "observed"
    """What live clients saw: synthesis only at flush or end, one final frame, then a close."""

    DOCUMENTED = "documented"
    """What the docs say: synthesis at sentence ends too, a final after each synthesis."""


class Signal(enum.StrEnum):
    """What the audio sounds like."""

    AUTO = "auto"
    """Speech when espeak-ng loads, else tone."""

    SPEECH = "speech"
    """Real speech from espeak-ng, so a person (or an STT model) can check it."""

    TONE = "tone"
    """A deterministic voiced-sounding signal whose length follows the text."""

    MARKER = "marker"
    """Raw PCM whose every sample is the connection's index: tells apart sockets downstream."""


@dataclass
class Faults:
    """Latency and failures to inject. Mutable: tests change it between turns.

    Every field is read when it takes effect (at the upgrade, at the start of a synthesis, at each
    audio chunk), so a change applies to whatever happens next, also on sockets already open.
    """

    upgrade_delay: float = 0.0
    """Seconds before the HTTP answer to an upgrade (101 or a refusal)."""

    first_audio_delay: float = 0.0
    """Seconds from the start of a synthesis to its first audio; cached syntheses skip it."""

    pace: float | None = None
    """Chunk release speed as a multiple of real time (1.0 real time, 2.4 as seen live);
    None or 0 sends as fast as the socket takes it. Cached syntheses are never paced."""

    inactivity_timeout: float | None = 20.0
    """Idle seconds since the last client frame before the server closes (None or 0: never);
    the ``inactivity_timeout`` query parameter overrides it per socket. Audio still streaming
    does not count as activity: only client frames do."""

    error_after_chunks: int | None = None
    """Send ``{"error": "Error in audio response"}`` once a synthesis has sent this many audio
    chunks, then close with 1011."""

    drop_after_chunks: int | None = None
    """Abort the TCP connection (no close frame) once a synthesis has sent this many audio
    chunks."""

    fault_count: int | None = None
    """How many more times the two mid-synthesis faults above may fire; decremented each time
    one fires, so a client that reconnects eventually gets through. None: every time."""

    frames_after_force: int = 0
    """How many frames of the interrupted synthesis still go out after a force arrives: frames
    the server had already produced, which a client must drop on its own."""

    chunk_ms: int = 250
    """Audio per streamed chunk; Telnyx sends few, large frames."""

    inject_frames: list[str | bytes] = field(default_factory=list)
    """Raw frames sent as they are, just before the first audio chunk of the next synthesis that
    has audio; the list is emptied once they are out. For malformed or unexpected server frames
    (bad JSON, bad base64, unknown keys, huge or binary frames) that ``encode_server`` would
    never build; a ``bytes`` item goes out as a binary frame."""
