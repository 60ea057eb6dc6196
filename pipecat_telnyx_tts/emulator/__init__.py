"""A faithful local emulator of Telnyx's TTS WebSocket, for tests, benchmarks and offline demos.

Where the real service is ambiguous, the emulator plays the case that is harder for a client.

By default it keeps live-like time: first audio 250 ms after the text, audio released at 2.4x
real time, a short pause between sentences. ``Faults.fast()`` removes all of that for tests that
wait on ``emu.connections`` rather than on the clock. ``Faults`` also injects, and can change
while the emulator runs: at the upgrade, a delay, refusals with any HTTP status (for a number of
attempts or seconds, a 429 with ``Retry-After`` in seconds or as a date), a per-key rate limit
and requests left unanswered; after it, a voice refused, an idle window of any size (the
``inactivity_timeout`` ask honoured up to a cap, or ignored) and unknown frames on idle sockets;
mid-synthesis, an error frame (for a number of syntheses, then recovery), a dropped TCP
connection, a close with a chosen code, or a stall; and in the stream, frames still sent after a
force, a socket kept open after its final frame, MP3 split into several files, raw frames.
``records`` counts upgrades per second and sockets open over a span.

The same port and key serve speech-to-text at ``/v2/speech-to-text/transcription``
(``emu.stt_url``; ``emu.stt`` holds its knobs, faults, known audio, script and records): it
finds utterances by the audio's energy and answers each with the words the emulator's own TTS
placed there, or with the next line of a script.

Inside: ``server`` (the emulator's life and records), ``admission`` (the HTTP side of an
upgrade), ``connection`` (frame-by-frame reading), ``play`` (one socket), ``lifecycle`` (when
text becomes a synthesis), ``plan`` (the frames of a synthesis), ``synth`` (its audio);
``stt_socket`` (one STT socket), ``stt_session`` (utterances and results, without I/O),
``stt_recognize`` (known audio and scripts), ``stt_config`` (knobs and faults).
"""

from pipecat_telnyx_tts.emulator.catalogue import VOICES, Voice
from pipecat_telnyx_tts.emulator.cli import (
    add_arguments,
    emulator_from_args,
    faults_from_args,
    main,
)
from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.records import (
    ConnectionRecord,
    FrameRecord,
    OpenSockets,
    SynthesisRecord,
    UpgradeSecond,
    open_sockets,
    upgrades_per_second,
)
from pipecat_telnyx_tts.emulator.server import TelnyxEmulator

__all__ = [
    "VOICES",
    "ConnectionRecord",
    "Faults",
    "FrameRecord",
    "Lifecycle",
    "OpenSockets",
    "Signal",
    "SynthesisRecord",
    "TelnyxEmulator",
    "UpgradeSecond",
    "Voice",
    "add_arguments",
    "emulator_from_args",
    "faults_from_args",
    "main",
    "open_sockets",
    "upgrades_per_second",
]
