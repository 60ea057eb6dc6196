"""``TelnyxTTSSettings``: the runtime-updatable settings of the TTS service, and their checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipecat.services.settings import TTSSettings
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given

from pipecat_telnyx_tts.request import check_text_options


@dataclass
class TelnyxTTSSettings(TTSSettings):
    """Runtime-updatable settings of :class:`TelnyxTTSService`.

    Parameters:
        speed: Speaking rate, mapped onto the provider's own key (``voice_speed`` for Telnyx and
            Rime, ``speed`` for Minimax). ``None`` leaves the provider's default.
        voice_settings: Provider-specific init keys, sent verbatim; they win over ``speed``.
        text_type: ``"text"`` or ``"ssml"``; ``None`` leaves Telnyx's default (text). SSML is
            read by AWS Polly and Azure voices only, so ``"ssml"`` with any other voice is
            refused. With it, the text sent must be valid SSML content, and
            ``pronunciation_transform_ipa`` works.
        pronunciation_dict_id: UUID of a Telnyx pronunciation dictionary. Telnyx applies it
            before any provider sees the text, so every provider takes it.
        disable_cache: True asks Telnyx to synthesize afresh rather than serve identical text
            from its audio cache; the cache sits in front of every provider, so all take it.
    """

    speed: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    voice_settings: dict[str, Any] | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    text_type: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pronunciation_dict_id: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    disable_cache: bool | NotGiven = field(default_factory=lambda: NOT_GIVEN)


QUERY_FIELDS = ("voice", "text_type", "pronunciation_dict_id", "disable_cache")
"""Settings checked together: whether one is accepted can depend on another (SSML on the voice)."""


def given(value: Any) -> Any:
    """None for a field that was never given a value."""
    return value if is_given(value) else None


def check_settings(settings: TelnyxTTSSettings) -> None:
    """Raise ValueError, saying what to fix, for settings Telnyx would refuse together."""
    assert isinstance(settings.voice, str)
    check_text_options(
        settings.voice,
        text_type=given(settings.text_type),
        pronunciation_dict_id=given(settings.pronunciation_dict_id),
        disable_cache=settings.disable_cache,
    )
