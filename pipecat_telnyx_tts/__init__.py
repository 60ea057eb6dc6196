"""Telnyx text-to-speech and speech-to-text for Pipecat, and a local emulator of both WebSockets.

The services are imported on first use, so the CLI and the emulator start without loading pipecat.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pipecat_telnyx_tts.protocol import DEFAULT_URL, ConnectParams, ProtocolError
from pipecat_telnyx_tts.voices import Delivery, ProviderFamily, VoiceId, VoiceIdError

if TYPE_CHECKING:
    from pipecat_telnyx_tts.service import TelnyxTTSService, TelnyxTTSSettings
    from pipecat_telnyx_tts.stt_service import TelnyxSTTService, TelnyxSTTSettings

__version__ = "0.1.0"
"""The package's version; pyproject.toml reads it from here at build time (one source)."""

_LAZY = {
    "TelnyxTTSService": "pipecat_telnyx_tts.service",
    "TelnyxTTSSettings": "pipecat_telnyx_tts.service",
    "TelnyxSTTService": "pipecat_telnyx_tts.stt_service",
    "TelnyxSTTSettings": "pipecat_telnyx_tts.stt_service",
}

__all__ = [
    "DEFAULT_URL",
    "ConnectParams",
    "Delivery",
    "ProtocolError",
    "ProviderFamily",
    "TelnyxSTTService",
    "TelnyxSTTSettings",
    "TelnyxTTSService",
    "TelnyxTTSSettings",
    "VoiceId",
    "VoiceIdError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipecat_telnyx_tts' has no attribute {name!r}")
