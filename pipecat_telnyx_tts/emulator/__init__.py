"""A faithful local emulator of Telnyx's TTS WebSocket, for tests, benchmarks and offline demos.

Where the real service is ambiguous, the emulator plays the case that is harder for a client.
"""

from pipecat_telnyx_tts.emulator.catalogue import VOICES, Voice
from pipecat_telnyx_tts.emulator.cli import (
    add_arguments,
    emulator_from_args,
    faults_from_args,
    main,
)
from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.records import ConnectionRecord, FrameRecord, SynthesisRecord
from pipecat_telnyx_tts.emulator.server import TelnyxEmulator

__all__ = [
    "VOICES",
    "ConnectionRecord",
    "Faults",
    "FrameRecord",
    "Lifecycle",
    "Signal",
    "SynthesisRecord",
    "TelnyxEmulator",
    "Voice",
    "add_arguments",
    "emulator_from_args",
    "faults_from_args",
    "main",
]
