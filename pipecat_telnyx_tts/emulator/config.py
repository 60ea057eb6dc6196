"""What the emulator plays: the lifecycle reading, the audio signal and the injected faults."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Self


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

    The defaults are the timing a client meets live: first audio after 250 ms, audio released at
    2.4x real time, short pauses between sentences. ``Faults.fast()`` drops all of it, for tests
    that wait on records rather than on the clock. Every field is read when it takes effect (at
    the upgrade, at the start of a synthesis, at each audio chunk), so a change applies to
    whatever happens next, also on sockets already open. Counters (``fault_count``,
    ``refuse_count``, ``hang_upgrades``) count down as their faults fire.
    """

    # ------------------------------------------------------------------ the upgrade

    upgrade_delay: float = 0.0
    """Seconds before the HTTP answer to an upgrade (101 or a refusal)."""

    refuse_status: int | None = None
    """Refuse upgrades with this standard HTTP status (429, 500, 503...) and Telnyx's REST error
    JSON; a 429 carries ``Retry-After`` (see ``retry_after``). Checked before the key and the
    parameters, as an overloaded front door would. None: no such refusals."""

    refuse_count: int | None = None
    """How many upgrade attempts ``refuse_status`` refuses; decremented per refusal, and at 0
    upgrades succeed again. None: no limit by count."""

    refuse_for: float | None = None
    """Refuse for this many seconds from the first refused attempt, then accept again; the
    fault is then spent (``refuse_status`` goes back to None). None: no limit by time. With
    neither limit, every attempt is refused while ``refuse_status`` is set."""

    retry_after: int = 1
    """Seconds the ``Retry-After`` of a ``refuse_status`` 429 asks the client to wait."""

    retry_after_date: bool = False
    """Send every ``Retry-After`` as an HTTP date (the wall clock plus the wait, rounded up to a
    whole second) instead of as seconds; both forms are valid HTTP."""

    rate_limit: int | None = None
    """Upgrades accepted per API key (the bearer token as sent) in any ``rate_window`` seconds;
    an upgrade past it gets 429 with ``Retry-After``, the whole seconds until the oldest accepted
    one leaves the window. Only accepted upgrades count; checked after the path, the key and the
    parameters. None: no limit."""

    rate_window: float = 1.0
    """The window of ``rate_limit``, in seconds."""

    hang_upgrades: int = 0
    """This many upgrade requests get no HTTP answer at all: the TCP connection stays open
    until the client gives up or the emulator stops. Decremented per hung request."""

    # ------------------------------------------------------------------ timing

    first_audio_delay: float = 0.25
    """Seconds from the start of a synthesis to its first audio; cached syntheses skip it."""

    pace: float | None = 2.4
    """Chunk release speed as a multiple of real time (1.0 real time, 2.4 as seen live);
    None or 0 sends as fast as the socket takes it. Cached syntheses are never paced."""

    sentence_pause_ms: int = 200
    """Silence rendered after each sentence end (``.?!``) inside a synthesis but the last, so
    that sentences synthesized together do not run on into each other; 0: none."""

    inactivity_timeout: float | None = 20.0
    """Idle seconds since the last client frame before the server closes (None or 0: never);
    the ``inactivity_timeout`` query parameter overrides it per socket, up to
    ``inactivity_timeout_cap``. Audio still streaming does not count as activity, nor do frames
    the server sends: only client frames do. Works at any size, 0.05 s too."""

    inactivity_timeout_cap: float | None = 120.0
    """The longest idle window the ``inactivity_timeout`` query parameter gets; a longer ask gets
    this. None: no cap."""

    ignore_inactivity_query: bool = False
    """Accept the ``inactivity_timeout`` query parameter but do not honour it: every socket gets
    ``inactivity_timeout``, as a server that dropped the old parameter would."""

    chunk_ms: int = 250
    """Audio per streamed chunk; Telnyx sends few, large frames."""

    rate_jitter: float = 0.0
    """Speak each sentence of a synthesis at the voice's speed times ``1 + u``, ``u`` drawn in
    ``[-rate_jitter, rate_jitter]`` from the emulator's seed and the sentence's text (the same
    sentence always gets the same rate, so records are reproducible), as a voice's rate drifts
    between sentences. The synthesis is then rendered sentence by sentence, and the recorded
    word places follow each sentence's rate. 0: every sentence at the voice's speed."""

    stall_ms: int = 0
    """Once per synthesis, halfway through its audio chunks (after ``n // 2`` of ``n``, so before
    the only chunk of a one-chunk synthesis), send nothing for this many milliseconds, then
    carry on at the same pace, every later frame that much later: a server briefly slower than
    real time. Unlike ``stall_after_chunks``, the synthesis completes. 0: never."""

    # ------------------------------------------------------------------ mid-synthesis

    error_after_chunks: int | None = None
    """Send ``{"error": "Error in audio response"}`` once a synthesis has sent this many audio
    chunks, then close with 1011."""

    drop_after_chunks: int | None = None
    """Abort the TCP connection (no close frame) once a synthesis has sent this many audio
    chunks."""

    close_after_chunks: int | None = None
    """Close with ``close_code`` and no error frame once a synthesis has sent this many audio
    chunks."""

    close_code: int = 1011
    """The code of the ``close_after_chunks`` close (1011 or 1008 typically)."""

    stall_after_chunks: int | None = None
    """Send nothing more once a synthesis has sent this many audio chunks, and do not close:
    later syntheses, final frames and frames owed after a force never come. The socket still
    answers the client's close, and the inactivity timeout still applies."""

    stop_reading_after_chunks: int | None = None
    """Stop reading the socket once a synthesis has sent this many audio chunks: the client's
    frames back up until its sends block, as over a path that stopped taking data (on loopback
    only once the kernel buffers, which grow to megabytes, are full: a test pins the client's
    ``SO_SNDBUF``). The audio already synthesized still goes out; text the client sends from
    then on is never read, so never synthesized."""

    fault_count: int | None = None
    """How many more times the five mid-synthesis faults above may fire; decremented each time
    one fires, so a client that reconnects eventually gets through. None: every time."""

    # ------------------------------------------------------------------ shape of the stream

    frames_after_force: int = 0
    """How many frames of the interrupted synthesis still go out after a force arrives: frames
    the server had already produced, which a client must drop on its own. They go out at once,
    before anything the client sent after the force (its close, say) is handled; never the
    synthesis's final frame, and none for a synthesis still rendering its audio."""

    keep_open_after_final: bool = False
    """After the final frame that answers end of sequence (``{"text": ""}``), keep the socket
    open instead of closing with 1000. Text sent after it is still not synthesized; the client's
    close or the inactivity timeout ends the socket."""

    mp3_files: int = 1
    """A synthesis's MP3 audio is this many separately encoded MP3 files back to back, as seen
    live: split at sentence ends where the text has enough of them, else evenly. Each file opens
    with its own ID3v2 tag at the start of a frame and may span several frames. MP3 output only."""

    invalid_voices: list[str] = field(default_factory=list)
    """Voices (compound ids, as the query resolves them) whose upgrade is accepted but whose
    socket then gets ``{"error": "Invalid voice_id specified"}`` at once, then a close 1011, as
    Telnyx answers a voice it does not know."""

    idle_frame: str | None = None
    """A raw text frame (``{"type": "ping", "ts": 1}``, ``{"status": "ok"}``...) sent on an idle
    socket: ``idle_frame_after`` seconds after its init frame, then every ``idle_frame_every``
    seconds; a tick when a synthesis is queued or streaming sends nothing. Read at each tick:
    None then ends the ticks of that socket. Not client activity: it does not hold off the
    inactivity close. None: never."""

    idle_frame_after: float = 0.5
    """Seconds from the init frame to the first ``idle_frame``."""

    idle_frame_every: float | None = None
    """Seconds between later ``idle_frame`` ticks; None: the frame goes out once."""

    mp3_untagged: bool = False
    """Send MP3 files without the Info frame that records the encoder's delay and padding: what
    a streaming encoder (lameenc's, say) gives, rather than a file written whole by LAME or
    FFmpeg. The client then has to assume LAME's delay and keeps each file's padding."""

    inject_frames: list[str | bytes] = field(default_factory=list)
    """Raw frames sent as they are, just before the first audio chunk of the next synthesis that
    has audio; the list is emptied once they are out. For malformed or unexpected server frames
    (bad JSON, bad base64, unknown keys, huge or binary frames) that ``encode_server`` would
    never build; a ``bytes`` item goes out as a binary frame."""

    inject_after_chunks: int = 0
    """How many audio chunks of that synthesis go out before ``inject_frames``: 0 puts them
    before its first audio, more puts them in the middle of its audio (a corrupt chunk after
    some that played, say)."""

    @classmethod
    def fast(cls, **overrides: Any) -> Self:
        """No injected latency: no delays, unlimited pace, no sentence pauses; everything else
        at its default, then ``overrides``."""
        fast = cls(upgrade_delay=0.0, first_audio_delay=0.0, pace=None, sentence_pause_ms=0)
        return replace(fast, **overrides)
