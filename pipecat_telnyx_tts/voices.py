"""Voice ids and what each Telnyx TTS provider accepts.

The facts here come from Telnyx's provider pages (see ``shared/telnyx-tts-protocol.md`` §5); the
client uses them to choose a format and rate the voice honours, and the emulator uses the same
table to refuse what the real service refuses, so both sides agree by construction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Delivery(enum.Enum):
    """How a provider hands back the audio of one synthesis."""

    STREAMED = "streamed"
    """Audio in ``text: null`` frames; the text-bearing frame has ``audio: null``."""

    CONCATENATED = "concatenated"
    """The text-bearing frame carries the whole segment's audio (AWS Polly, Azure)."""


class VoiceIdError(ValueError):
    """A voice id that is not of the form ``Provider.Model.VoiceId`` (or ``azure.Voice``)."""


@dataclass(frozen=True)
class ProviderFamily:
    """One provider (or Telnyx model line) and what it accepts on the WebSocket."""

    name: str
    formats: frozenset[str]
    sample_rates: tuple[int, ...]
    default_rate: int
    delivery: Delivery
    settings_keys: frozenset[str]
    speed_key: str | None = None
    honours_format: bool = True
    """False where the voice answers in MP3 whatever ``audio_format`` asks (KokoroTTS)."""
    mp3_rate: int | None = None
    """Decoded rate of its MP3 when it differs from the requested rate (Kokoro: 22050)."""
    websocket: bool = True
    """False for voices the WebSocket refuses with 403 (Telnyx Ultra)."""
    ssml: bool = False
    """True where ``text_type=ssml`` is read (AWS Polly, Azure); other providers would speak
    the markup or drop it."""
    pcm_settings: tuple[tuple[str, str], ...] = ()
    """Init ``voice_settings`` sent with linear16, for a provider that must be asked for PCM there
    too (Minimax: its MP3 frames do not align with messages, so Telnyx's own plugin asks for
    ``response_format: pcm`` as well; reference §9)."""

    @property
    def pcm(self) -> bool:
        """True when raw 16-bit PCM can be asked for and is honoured."""
        return self.honours_format and "linear16" in self.formats


def _family(
    name: str,
    formats: str,
    rates: tuple[int, ...],
    default_rate: int,
    delivery: Delivery,
    keys: str = "",
    **kw: object,
) -> ProviderFamily:
    return ProviderFamily(
        name=name,
        formats=frozenset(formats.split()),
        sample_rates=rates,
        default_rate=default_rate,
        delivery=delivery,
        settings_keys=frozenset(keys.split()),
        **kw,  # type: ignore[arg-type]
    )


_TELNYX_RATES = (8000, 16000, 22050, 24000, 44100, 48000, 96000)
_S, _C = Delivery.STREAMED, Delivery.CONCATENATED

# Keyed by lower-cased provider, then lower-cased model for Telnyx's own model lines.
TELNYX_MODELS: dict[str, ProviderFamily] = {
    "natural": _family(
        "Telnyx.Natural", "mp3 linear16", _TELNYX_RATES, 24000, _S, "voice_speed",
        speed_key="voice_speed",
    ),
    "naturalhd": _family(
        "Telnyx.NaturalHD", "mp3 linear16", _TELNYX_RATES, 24000, _S, "voice_speed",
        speed_key="voice_speed",
    ),
    "kokorotts": _family(
        "Telnyx.KokoroTTS", "mp3 linear16", (24000,), 24000, _S,
        honours_format=False, mp3_rate=22050,
    ),
    "qwen3tts": _family(
        "Telnyx.Qwen3TTS", "mp3 linear16", (24000,), 24000, _S, "language_boost force_xvector"
    ),
    "ultra": _family("Telnyx.Ultra", "mp3", (24000,), 24000, _S, websocket=False),
}  # fmt: skip

PROVIDERS: dict[str, ProviderFamily] = {
    "aws": _family(
        "AWS Polly", "mp3 linear16 ogg_vorbis", (8000, 16000, 22050, 24000), 24000, _C,
        "engine language_code lexicon_names text_type", ssml=True,
    ),
    "azure": _family(
        "Azure", "mp3 wav linear16 mulaw alaw", (8000, 16000, 24000, 48000), 24000, _C,
        "output_format language_code effect gender", ssml=True,
    ),
    "elevenlabs": _family(
        "ElevenLabs", "mp3 linear16 mulaw", (8000, 16000, 22050, 24000, 44100), 24000, _S,
        "model_id stability similarity_boost style use_speaker_boost",
    ),
    "minimax": _family(
        "Minimax", "mp3 linear16", (8000, 16000, 22050, 24000, 32000, 44100), 24000, _S,
        "speed vol pitch language_boost response_format", speed_key="speed",
        pcm_settings=(("response_format", "pcm"),),
    ),
    "rime": _family(
        "Rime", "mp3 linear16", (8000, 16000, 22050, 24000, 44100, 48000, 96000), 24000, _S,
        "voice_speed", speed_key="voice_speed",
    ),
    "resemble": _family(
        "Resemble", "mp3 wav", (8000, 16000, 22050, 24000, 32000, 44100, 48000), 48000, _S,
        "format precision sample_rate",
    ),
    "inworld": _family(
        "Inworld", "mp3 linear16", (8000, 16000, 22050, 24000, 32000, 44100, 48000), 24000, _S,
        "encoding sample_rate language_code delivery_mode",
    ),
    "fishaudio": _family(
        "FishAudio", "linear16 mp3 wav", (8000, 16000, 22050, 24000, 32000, 44100), 24000, _S,
        "format sample_rate",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class VoiceId:
    """A parsed voice id. ``model`` is None only for Azure's two-part ids."""

    provider: str
    model: str | None
    name: str

    @classmethod
    def parse(cls, voice: str) -> VoiceId:
        """Split ``Provider.Model.VoiceId``; the model may itself contain dots."""
        if not isinstance(voice, str) or not voice.strip():
            raise VoiceIdError("voice id is empty; expected e.g. 'Telnyx.NaturalHD.astra'")
        parts = voice.split(".")
        if any(not p for p in parts) or any(c.isspace() for c in voice):
            raise VoiceIdError(
                f"voice id {voice!r} has an empty segment or whitespace; "
                "expected 'Provider.Model.VoiceId', e.g. 'Telnyx.NaturalHD.astra'"
            )
        if parts[0].lower() == "azure":
            if len(parts) != 2:
                raise VoiceIdError(
                    f"Azure voice id {voice!r} must have two parts, "
                    "e.g. 'azure.en-US-AvaMultilingualNeural'"
                )
            return cls(parts[0], None, parts[1])
        if len(parts) < 3:
            raise VoiceIdError(
                f"voice id {voice!r} must have three parts 'Provider.Model.VoiceId', "
                "e.g. 'Telnyx.NaturalHD.astra' or 'aws.Polly.Generative.Lucia'"
            )
        return cls(parts[0], ".".join(parts[1:-1]), parts[-1])

    @property
    def family(self) -> ProviderFamily | None:
        """The provider family, matched case-insensitively; None if nobody knows it."""
        provider = self.provider.lower()
        if provider == "telnyx":
            return TELNYX_MODELS.get((self.model or "").lower())
        return PROVIDERS.get(provider)

    def __str__(self) -> str:
        return ".".join(p for p in (self.provider, self.model, self.name) if p)


def family_of(voice: str) -> ProviderFamily | None:
    """The family of a voice id string; raises ``VoiceIdError`` when it is malformed."""
    return VoiceId.parse(voice).family
