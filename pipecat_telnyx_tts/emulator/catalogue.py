"""The voices the emulator lists at ``GET /v2/text-to-speech/voices``.

Ids follow the reference's examples (§5) plus plausible neighbours, so that every provider family
and several languages are present; each one passes ``check_connect``. The service checks its voice
against this list, so every voice the README, the examples and the tests speak with is here too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Voice:
    """One item of the voice list, in the documented field names."""

    provider: str
    name: str
    voice_id: str
    language: str
    gender: str


VOICES: tuple[Voice, ...] = (
    Voice("telnyx", "Astra", "Telnyx.NaturalHD.astra", "en-US", "female"),
    Voice("telnyx", "Orion", "Telnyx.NaturalHD.orion", "en-US", "male"),
    Voice("telnyx", "Lupe", "Telnyx.NaturalHD.lupe", "es-MX", "female"),
    Voice("telnyx", "Abbie", "Telnyx.Natural.abbie", "en-US", "female"),
    Voice("telnyx", "Boone", "Telnyx.Natural.boone", "en-US", "male"),
    Voice("telnyx", "Heart", "Telnyx.KokoroTTS.af_heart", "en-US", "female"),
    Voice("telnyx", "Adam", "Telnyx.KokoroTTS.am_adam", "en-US", "male"),
    Voice("telnyx", "Emma", "Telnyx.KokoroTTS.bf_emma", "en-GB", "female"),
    Voice("telnyx", "Dora", "Telnyx.KokoroTTS.ef_dora", "es-ES", "female"),
    Voice("telnyx", "Cherry", "Telnyx.Qwen3TTS.Cherry", "zh-CN", "female"),
    Voice("telnyx", "Ethan", "Telnyx.Qwen3TTS.Ethan", "en-US", "male"),
    Voice("aws", "Lucia", "aws.Polly.Generative.Lucia", "es-ES", "female"),
    Voice("aws", "Joanna", "AWS.Polly.Neural.Joanna", "en-US", "female"),
    Voice("aws", "Matthew", "AWS.Polly.Neural.Matthew", "en-US", "male"),
    Voice("aws", "Vicki", "AWS.Polly.Neural.Vicki", "de-DE", "female"),
    Voice("azure", "Ava", "azure.en-US-AvaMultilingualNeural", "en-US", "female"),
    Voice("azure", "Ava", "azure.en-US-AvaNeural", "en-US", "female"),
    Voice("azure", "Ryan", "azure.en-GB-RyanNeural", "en-GB", "male"),
    Voice("azure", "Denise", "azure.fr-FR-DeniseNeural", "fr-FR", "female"),
    Voice("azure", "Conrad", "azure.de-DE-ConradNeural", "de-DE", "male"),
    Voice("elevenlabs", "Adam", "elevenlabs.v3.Adam", "en-US", "male"),
    Voice("elevenlabs", "Rachel", "elevenlabs.eleven_multilingual_v2.Rachel", "en-US", "female"),
    Voice(
        "minimax",
        "English Expressive Narrator",
        "Minimax.speech-2.8-turbo.English_expressive_narrator",
        "en-US",
        "male",
    ),
    Voice(
        "minimax", "Serene Woman", "Minimax.speech-2.8-hd.Spanish_SereneWoman", "es-ES", "female"
    ),
    Voice("rime", "Astra", "Rime.ArcanaV3.astra", "en-US", "female"),
    Voice("rime", "Cove", "Rime.Mist.cove", "en-US", "male"),
    Voice("resemble", "Aaron", "Resemble.Turbo.Aaron_en-US", "en-US", "male"),
    Voice("inworld", "Loretta", "Inworld.Mini.Loretta", "en-US", "female"),
    Voice("inworld", "Dennis", "Inworld.Max.Dennis", "en-US", "male"),
    Voice("fishaudio", "Sarah", "FishAudio.s1.Sarah", "en-US", "female"),
    Voice("fishaudio", "Marco", "FishAudio.s1.Marco", "it-IT", "male"),
)

_BY_ID = {v.voice_id.lower(): v for v in VOICES}


def voice_list(provider: str | None = None) -> dict[str, Any]:
    """The response body, optionally for one provider (matched case-insensitively)."""
    wanted = provider.lower() if provider else None
    return {"voices": [asdict(v) for v in VOICES if wanted is None or v.provider == wanted]}


def language_of(voice_id: str) -> str | None:
    """The listed language of a voice, so that speech comes out in a fitting accent."""
    voice = _BY_ID.get(voice_id.lower())
    return voice.language if voice else None
