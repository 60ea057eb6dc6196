"""Telnyx text-to-speech for Pipecat, and a local emulator of Telnyx's TTS WebSocket."""

from pipecat_telnyx_tts.protocol import DEFAULT_URL, ConnectParams, ProtocolError
from pipecat_telnyx_tts.service import TelnyxTTSService, TelnyxTTSSettings
from pipecat_telnyx_tts.voices import Delivery, ProviderFamily, VoiceId, VoiceIdError

__all__ = [
    "DEFAULT_URL",
    "ConnectParams",
    "Delivery",
    "ProtocolError",
    "ProviderFamily",
    "TelnyxTTSService",
    "TelnyxTTSSettings",
    "VoiceId",
    "VoiceIdError",
]
