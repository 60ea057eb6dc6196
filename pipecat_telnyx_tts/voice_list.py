"""Is the configured voice one that Telnyx lists? Asked once, before the first turn.

A typo in a voice id's last segment (``Telnyx.NaturalHD.astraa``) passes every check that can be
made offline, and the emulator speaks it; live, it is only found when the first turn is refused.
Telnyx's voice list (``GET /v2/text-to-speech/voices``) names the right voice before that. The
list is advice, not a gate: it may lack voices that work, so a miss is reported, never enforced.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from pipecat_telnyx_tts.protocol import VOICES_PATH
from pipecat_telnyx_tts.voices import VoiceId, VoiceIdError

FETCH_TIMEOUT_S = 5.0
"""The whole request; the list is only advice, so it is never waited for longer."""


IGNORE_IF_CLONED = "a voice cloned for your account may be missing from the list: then ignore this"
"""The service carries on after reporting an unlisted voice, so ignoring the report is all a
pipeline's owner has to do when the voice is right."""


class VoiceListUnavailable(Exception):
    """The voice list could not be fetched or read; the message says why."""


def rest_base(ws_url: str) -> str:
    """The REST API's base URL for a TTS WebSocket URL: same host, HTTP(S) instead of WS(S)."""
    parts = urlsplit(ws_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme.lower(), parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def canonical(voice: str) -> str:
    """The provider prefix lower-cased: Telnyx's own pages spell it both ways (reference §5)."""
    provider, dot, rest = voice.partition(".")
    return f"{provider.lower()}{dot}{rest}"


@dataclass(frozen=True)
class VoiceList:
    """The voice ids Telnyx lists, by canonical form, as Telnyx spells them."""

    voices: Mapping[str, str]
    providers: frozenset[str]

    @classmethod
    def from_body(cls, body: Any) -> VoiceList:
        """Read ``{"voices": [...]}``; items name their id ``voice_id`` (docs) or ``id`` (seen)."""
        items = body.get("voices") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise VoiceListUnavailable("the answer has no 'voices' list")
        voices: dict[str, str] = {}
        for item in items:
            voice = (item.get("voice_id") or item.get("id")) if isinstance(item, dict) else None
            if not isinstance(voice, str):
                continue
            try:
                VoiceId.parse(voice)
            except VoiceIdError:
                # A bare name cannot be told apart from a typo of a compound id.
                continue
            voices[canonical(voice)] = voice
        if not voices:
            raise VoiceListUnavailable("no item in it has a 'Provider.Model.VoiceId' id")
        return cls(voices, frozenset(v.partition(".")[0] for v in voices))

    def unlisted(self, voice: str, advice: str = IGNORE_IF_CLONED) -> str | None:
        """What is wrong with ``voice``, naming close matches; None when it is listed.

        A provider this plugin knows but the list has no voice of is not judged: its voices come
        from elsewhere (ElevenLabs voices are from the user's own ElevenLabs account). ``advice``
        says what to do if the voice is right after all, which depends on who reads it.
        """
        key = canonical(voice)
        if key in self.voices:
            return None
        if key.partition(".")[0] not in self.providers and _known_provider(voice):
            return None
        close = _closest(key, list(self.voices))
        if close:
            hint = "did you mean " + " or ".join(repr(self.voices[c]) for c in close) + "?"
        else:
            hint = "`pipecat-telnyx-tts voices` lists the voices your account has."
        return (
            f"voice {voice!r} is not in Telnyx's voice list; {hint} Telnyx will most likely "
            f"refuse it ({advice})"
        )


def _closest(key: str, candidates: list[str]) -> list[str]:
    """The candidates nearly as close as the closest: ids of one model share a long prefix, so
    every voice of the model would otherwise come out as close as the one meant."""
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.8)
    if not close:
        return []
    scores = [difflib.SequenceMatcher(None, key, c).ratio() for c in close]
    return [c for c, score in zip(close, scores, strict=True) if score >= scores[0] - 0.05]


def _known_provider(voice: str) -> bool:
    try:
        return VoiceId.parse(voice).family is not None
    except VoiceIdError:
        return False


_CACHE: dict[tuple[str, str], VoiceList] = {}
"""Fetched lists by (URL, API key): services of one process share a list; failures are not kept,
so a later service tries again."""


async def fetch_voice_list(
    ws_url: str, api_key: str, *, timeout: float = FETCH_TIMEOUT_S
) -> VoiceList:
    """The voice list of the REST API beside ``ws_url``, fetched once per URL and key.

    Raises ``VoiceListUnavailable`` for anything but a readable 200 answer.
    """
    url = rest_base(ws_url) + VOICES_PATH
    cached = _CACHE.get((url, api_key))
    if cached is not None:
        return cached
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, headers=headers) as response,
        ):
            if response.status != 200:
                raise VoiceListUnavailable(f"HTTP {response.status} from {url}")
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise VoiceListUnavailable(f"{detail} from {url}") from e
    try:
        voices = VoiceList.from_body(body)
    except VoiceListUnavailable as e:
        raise VoiceListUnavailable(f"{e} from {url}") from None
    _CACHE[(url, api_key)] = voices
    return voices
