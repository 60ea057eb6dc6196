"""What to ask the server for, from settings: query parameters and the init frame.

Kept apart from the service so the choices (format, rate, provider keys) can be tested without
pipecat or a socket.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from loguru import logger

from pipecat_telnyx_tts.protocol import TEXT_TYPES, ConnectParams, InitMessage, encode_client
from pipecat_telnyx_tts.voices import ProviderFamily, VoiceId

DECODABLE_FORMATS = ("linear16", "mp3", "wav")
"""Formats the client can turn into PCM; the others Telnyx offers (mulaw, alaw, ogg) it cannot."""


@dataclass(frozen=True)
class Request:
    """Everything fixed for the life of one socket."""

    params: ConnectParams
    init: InitMessage
    pcm_rate: int
    """The rate raw PCM arrives at, if raw PCM is what arrives."""

    @property
    def key(self) -> tuple[str, str]:
        """Two sockets built from equal keys are interchangeable."""
        return (self.params.to_query(), encode_client(self.init))


def check_voice(voice: str) -> VoiceId:
    """Parse a voice id, failing with what to fix for ids the WebSocket will never accept."""
    vid = VoiceId.parse(voice)
    family = vid.family
    if family is not None and not family.websocket:
        raise ValueError(
            f"voice {voice!r} is a {family.name} voice, which Telnyx does not serve on the "
            "streaming WebSocket (it answers 403); choose e.g. a Telnyx.NaturalHD voice"
        )
    if family is None:
        logger.warning(
            f"voice {voice!r}: provider/model not known to this plugin; "
            "asking for Telnyx's default format and relying on audio detection"
        )
    return vid


def check_text_options(
    voice: str,
    *,
    text_type: str | None,
    pronunciation_dict_id: str | None,
    disable_cache: object,
) -> None:
    """Refuse, saying what to fix, query options the voice's provider has no use for.

    Telnyx documents ``text_type=ssml`` for AWS Polly and Azure only; elsewhere the markup would
    be spoken or dropped, which is worse than an error before the first turn. Pronunciation
    dictionaries and the audio cache are Telnyx's own, applied ahead of any provider, and the
    reference ties neither to a provider, so every provider takes them: only values are checked.
    """
    if text_type is not None and text_type not in TEXT_TYPES:
        raise ValueError(f"text_type must be 'text' or 'ssml' (or None), got {text_type!r}")
    if text_type == "ssml" and not reads_ssml(voice, text_type):
        family = VoiceId.parse(voice).family
        what = f"a {family.name} voice" if family else "of a provider this plugin does not know"
        raise ValueError(
            f"text_type='ssml' is read only by AWS Polly and Azure voices, and {voice!r} is "
            f"{what}: use text_type='text' (or None), or an 'aws.Polly...' or 'azure...' voice"
        )
    if pronunciation_dict_id is not None:
        try:
            uuid.UUID(str(pronunciation_dict_id))
        except ValueError:
            raise ValueError(
                f"pronunciation_dict_id {pronunciation_dict_id!r} is not a UUID; use the 'id' "
                "Telnyx gave the dictionary (GET /v2/pronunciation_dicts lists them)"
            ) from None
    if not isinstance(disable_cache, bool):
        raise ValueError(f"disable_cache must be True or False, got {disable_cache!r}")


def reads_ssml(voice: str, text_type: str | None) -> bool:
    """True when text for ``voice`` is read as SSML, so markup such as ``<phoneme>`` works."""
    family = VoiceId.parse(voice).family
    return text_type == "ssml" and family is not None and family.ssml


def choose_format(
    family: ProviderFamily | None, out_rate: int, audio_format: str | None
) -> tuple[str | None, int | None, int]:
    """Pick ``(audio_format, sample_rate, pcm_rate)`` for a voice and the pipeline's output rate.

    Raw PCM at the output rate costs nothing to deliver, so it is asked for wherever the voice
    honours it; elsewhere MP3, decoded as it streams. A rate the provider does not accept is a
    400 at the upgrade, so only accepted rates are ever sent.
    """
    if family is None:
        return audio_format, None, out_rate
    fmt = audio_format or ("linear16" if family.pcm else "mp3")
    if fmt not in family.formats:
        raise ValueError(
            f"audio_format {fmt!r} is not offered by {family.name}; "
            f"use one of {', '.join(sorted(f for f in family.formats if f in DECODABLE_FORMATS))}"
        )
    if out_rate in family.sample_rates:
        rate = out_rate
    else:
        higher = [r for r in family.sample_rates if r >= out_rate]
        rate = min(higher) if higher else max(family.sample_rates)
    return fmt, rate, rate


def ignored_speed(voice: str, speed: float | None) -> str | None:
    """Why ``speed`` has no effect on ``voice``, or None when it applies.

    Said once per settings change by the caller: requests are rebuilt for every spare socket.
    """
    family = VoiceId.parse(voice).family
    if speed is None or (family is not None and family.speed_key):
        return None
    name = family.name if family else "this provider"
    return f"{name} has no speed setting; speed={speed} is ignored"


def voice_settings_for(
    family: ProviderFamily | None,
    fmt: str | None,
    speed: float | None,
    voice_settings: dict[str, Any] | None,
) -> dict[str, Any] | None:
    """Map ``speed`` onto the provider's own key; explicit ``voice_settings`` win.

    Where a provider needs an init key as well as ``audio_format`` to send PCM, it is added for
    linear16 (the user's own value for it still wins).
    """
    merged: dict[str, Any] = dict(family.pcm_settings) if family and fmt == "linear16" else {}
    if speed is not None and family is not None and family.speed_key:
        merged[family.speed_key] = speed
    if voice_settings:
        merged.update(voice_settings)
    return merged or None


def build_request(
    *,
    voice: str,
    out_rate: int,
    audio_format: str | None,
    speed: float | None,
    voice_settings: dict[str, Any] | None,
    language: str | None,
    text_type: str | None = None,
    pronunciation_dict_id: str | None = None,
    disable_cache: bool = False,
    inactivity_timeout: float | None = None,
) -> Request:
    """The request for the current settings.

    ``disable_cache=False`` is Telnyx's default, so it is left off the query.
    ``inactivity_timeout`` asks for an idle window; whether it is granted is learned from closes.
    """
    family = VoiceId.parse(voice).family
    fmt, rate, pcm_rate = choose_format(family, out_rate, audio_format)
    params = ConnectParams(
        voice=voice,
        audio_format=fmt,
        sample_rate=rate,
        language=language,
        text_type=text_type,
        disable_cache=disable_cache or None,
        pronunciation_dict_id=pronunciation_dict_id,
        inactivity_timeout=inactivity_timeout,
    )
    init = InitMessage(voice_settings_for(family, fmt, speed, voice_settings))
    return Request(params, init, pcm_rate)
