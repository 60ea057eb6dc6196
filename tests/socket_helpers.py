"""Pieces shared by the tests of the socket lifecycle that run without pipecat."""

from __future__ import annotations

from pipecat_telnyx_tts.request import Request, build_request


def default_request() -> Request:
    """What a 16 kHz pipeline asks of the default voice."""
    return build_request(
        voice="Telnyx.NaturalHD.astra",
        out_rate=16000,
        audio_format=None,
        speed=None,
        voice_settings=None,
        language=None,
    )
