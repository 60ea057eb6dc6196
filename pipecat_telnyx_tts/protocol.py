"""The Telnyx TTS WebSocket protocol as plain values: no sockets, no asyncio.

Both the client service and the emulator build and parse every frame here, so a change to the wire
format is made once and both sides are tested against the same code.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qs, urlencode

from pipecat_telnyx_tts.voices import VoiceId, VoiceIdError

DEFAULT_URL = "wss://api.telnyx.com/v2/text-to-speech/speech"
VOICES_PATH = "/v2/text-to-speech/voices"
SPEECH_PATH = "/v2/text-to-speech/speech"

AUDIO_FORMATS = frozenset({"mp3", "linear16", "wav", "mulaw", "alaw", "ogg_vorbis"})
FORMAT_ALIASES = {"pcm": "linear16"}
TEXT_TYPES = frozenset({"text", "ssml"})
INIT_TEXT = " "
"""The init frame's text: exactly one space, as the server requires."""


class ProtocolError(ValueError):
    """A frame or query string that does not follow the protocol; the message says what is off."""


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class ConnectParams:
    """Query parameters, fixed for the life of one socket."""

    voice: str | None = None
    provider: str | None = None
    model_id: str | None = None
    voice_id: str | None = None
    audio_format: str | None = None
    sample_rate: int | None = None
    language: str | None = None
    text_type: str | None = None
    disable_cache: bool | None = None
    pronunciation_dict_id: str | None = None
    socket_id: str | None = None
    inactivity_timeout: float | None = None

    def to_query(self) -> str:
        """Encode the parameters that are set, in declaration order."""
        items: list[tuple[str, str]] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
            items.append((f.name, str(value)))
        return urlencode(items)

    @classmethod
    def from_query(cls, query: str) -> ConnectParams:
        """Parse a query string strictly; unknown parameters are ignored, as Telnyx seems to."""
        raw = parse_qs(query, keep_blank_values=True)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, given in raw.items():
            if name not in known:
                continue
            if len(given) != 1:
                raise ProtocolError(f"query parameter {name!r} is given {len(given)} times")
            values[name] = _parse_param(name, given[0])
        return cls(**values)

    def resolved_voice(self) -> str | None:
        """The compound voice id; ``voice`` wins over the split form when both are given."""
        if self.voice:
            return self.voice
        if not self.voice_id:
            return None
        provider = self.provider or "telnyx"
        if provider.lower() == "azure" or not self.model_id:
            return f"{provider}.{self.voice_id}"
        return f"{provider}.{self.model_id}.{self.voice_id}"


def _parse_param(name: str, value: str) -> Any:
    if name == "sample_rate":
        if not (value.isascii() and value.isdigit()) or int(value) <= 0:
            raise ProtocolError(f"sample_rate must be a positive integer, got {value!r}")
        return int(value)
    if name == "inactivity_timeout":
        try:
            seconds = float(value)
        except ValueError:
            raise ProtocolError(f"inactivity_timeout must be a number, got {value!r}") from None
        if not math.isfinite(seconds) or seconds <= 0:
            raise ProtocolError(f"inactivity_timeout must be positive, got {value!r}")
        return seconds
    if name == "disable_cache":
        if value.lower() not in ("true", "false"):
            raise ProtocolError(f"disable_cache must be 'true' or 'false', got {value!r}")
        return value.lower() == "true"
    if name == "audio_format":
        fmt = FORMAT_ALIASES.get(value.lower(), value.lower())
        if fmt not in AUDIO_FORMATS:
            raise ProtocolError(
                f"audio_format {value!r} is not one of {', '.join(sorted(AUDIO_FORMATS))}"
            )
        return fmt
    if name == "text_type" and value not in TEXT_TYPES:
        raise ProtocolError(f"text_type must be 'text' or 'ssml', got {value!r}")
    return value


@dataclass(frozen=True)
class Rejection:
    """Why the server refuses an upgrade: the HTTP status and a reason for a person."""

    status: int
    reason: str


def check_connect(params: ConnectParams) -> Rejection | None:
    """What the service answers at the upgrade for these parameters (None: accepted).

    The emulator refuses with it, and the client uses it to fail early with the same words.
    """
    voice = params.resolved_voice()
    if voice is None:
        return Rejection(400, "no voice given: set the 'voice' query parameter")
    try:
        vid = VoiceId.parse(voice)
    except VoiceIdError as e:
        return Rejection(400, str(e))
    family = vid.family
    if family is None:
        return Rejection(400, f"unknown provider or model in voice id {voice!r}")
    if not family.websocket:
        return Rejection(403, f"voice {voice!r} ({family.name}) is not available on the WebSocket")
    if params.audio_format and params.audio_format not in family.formats:
        return Rejection(
            400,
            f"audio_format {params.audio_format!r} is not supported by {family.name}; "
            f"use one of {', '.join(sorted(family.formats))}",
        )
    if params.sample_rate is not None and params.sample_rate not in family.sample_rates:
        return Rejection(
            400,
            f"sample_rate {params.sample_rate} is not supported by {family.name}; "
            f"use one of {', '.join(map(str, family.sample_rates))}",
        )
    return None


# --------------------------------------------------------------------------- client frames


@dataclass(frozen=True)
class InitMessage:
    """Must be first on a socket; locks ``voice_settings`` for the socket's life."""

    voice_settings: dict[str, Any] | None = None


@dataclass(frozen=True)
class TextMessage:
    """Text appended to the server's buffer; ``flush`` asks for synthesis now."""

    text: str
    flush: bool = False


@dataclass(frozen=True)
class ForceMessage:
    """Stop the current synthesis and start afresh with the same settings."""


@dataclass(frozen=True)
class EndMessage:
    """End of sequence: synthesize what remains, send a final frame, then the server closes."""


ClientMessage = InitMessage | TextMessage | ForceMessage | EndMessage


def encode_client(message: ClientMessage) -> str:
    """The JSON text frame for a client message."""
    match message:
        case InitMessage(voice_settings=vs):
            body: dict[str, Any] = {"text": INIT_TEXT}
            if vs:
                body["voice_settings"] = vs
        case TextMessage(text=text, flush=flush):
            if not text:
                # An empty text is end of sequence on the wire: sending one by accident would end
                # the socket's life, so it is never a text message.
                raise ProtocolError("a text message must not be empty; send EndMessage to finish")
            body = {"text": text, "flush": True} if flush else {"text": text}
        case ForceMessage():
            body = {"force": True}
        case EndMessage():
            body = {"text": ""}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def parse_client(raw: str | bytes, *, initialized: bool) -> ClientMessage:
    """Parse a client frame, knowing whether the socket has had its init frame.

    Before init only ``{"text": " "}`` is valid; after it ``" "`` is ordinary text.
    """
    obj = _json_object(raw, "client frame")
    if "force" in obj:
        if obj["force"] is not True:
            raise ProtocolError(f"'force' must be true, got {obj['force']!r}")
        if not initialized:
            raise ProtocolError("force before the init frame")
        return ForceMessage()
    if "text" not in obj:
        raise ProtocolError(f"client frame has neither 'text' nor 'force': keys {sorted(obj)}")
    text = obj["text"]
    if not isinstance(text, str):
        raise ProtocolError(f"'text' must be a string, got {type(text).__name__}")
    flush = obj.get("flush", False)
    if not isinstance(flush, bool):
        raise ProtocolError(f"'flush' must be a boolean, got {flush!r}")
    settings = obj.get("voice_settings")
    if settings is not None and not isinstance(settings, dict):
        raise ProtocolError(f"'voice_settings' must be an object, got {type(settings).__name__}")
    if not initialized:
        if text != INIT_TEXT:
            raise ProtocolError(
                f"the first frame must be the init frame {{'text': ' '}}, got {text!r}"
            )
        return InitMessage(settings)
    if settings is not None:
        raise ProtocolError("'voice_settings' is only accepted in the init frame")
    if text == "":
        return EndMessage()
    return TextMessage(text, flush)


# --------------------------------------------------------------------------- server frames


@dataclass(frozen=True)
class AudioMessage:
    """An audio chunk. ``text`` is set on the text-bearing frame, None on streamed chunks."""

    audio: bytes | None
    text: str | None = None
    cached: bool = False
    time_to_first_audio_ms: float | None = None


@dataclass(frozen=True)
class FinalMessage:
    """The last frame of a synthesis (or of the socket, under the observed reading)."""

    audio: bytes | None = None


@dataclass(frozen=True)
class ErrorMessage:
    """A server error; the server closes shortly after."""

    error: str


ServerMessage = AudioMessage | FinalMessage | ErrorMessage


def encode_server(message: ServerMessage) -> str:
    """The JSON text frame for a server message. No ``type`` field: the wire has none."""
    match message:
        case AudioMessage(audio=audio, text=text, cached=cached, time_to_first_audio_ms=ttfa):
            body: dict[str, Any] = {
                "audio": _b64(audio),
                "text": text,
                "isFinal": False,
                "cached": cached,
            }
            if ttfa is not None:
                body["timeToFirstAudioFrameMs"] = ttfa
        case FinalMessage(audio=audio):
            body = {"audio": _b64(audio), "text": "", "isFinal": True}
        case ErrorMessage(error=error):
            body = {"error": error}
    return json.dumps(body, separators=(",", ":"))


def parse_server(raw: str | bytes) -> ServerMessage:
    """Parse a server frame by its keys; unknown keys are ignored, known keys are type-checked."""
    obj = _json_object(raw, "server frame")
    if "error" in obj:
        error = obj["error"]
        if not isinstance(error, str):
            raise ProtocolError(f"'error' must be a string, got {error!r}")
        return ErrorMessage(error)
    is_final = obj.get("isFinal", False)
    if not isinstance(is_final, bool):
        raise ProtocolError(f"'isFinal' must be a boolean, got {is_final!r}")
    if "audio" not in obj and not is_final:
        raise ProtocolError(
            f"server frame has no 'audio', 'isFinal' or 'error': keys {sorted(obj)}"
        )
    audio = _unb64(obj.get("audio"))
    if is_final:
        return FinalMessage(audio)
    text = obj.get("text")
    if text is not None and not isinstance(text, str):
        raise ProtocolError(f"'text' must be a string or null, got {type(text).__name__}")
    cached = obj.get("cached", False)
    if not isinstance(cached, bool):
        raise ProtocolError(f"'cached' must be a boolean, got {cached!r}")
    ttfa = obj.get("timeToFirstAudioFrameMs")
    if ttfa is not None and (isinstance(ttfa, bool) or not isinstance(ttfa, int | float)):
        raise ProtocolError(f"'timeToFirstAudioFrameMs' must be a number, got {ttfa!r}")
    return AudioMessage(audio, text, cached, ttfa)


def _json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    if isinstance(raw, bytes):
        # The protocol uses text frames only; a binary frame means a proxy or server fault.
        raise ProtocolError(f"{what} is a binary frame of {len(raw)} bytes; expected JSON text")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        detail = f"{e.msg} at char {e.pos}"
        raise ProtocolError(f"{what} is not valid JSON ({detail}): {raw[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def _b64(audio: bytes | None) -> str | None:
    return base64.b64encode(audio).decode("ascii") if audio else None


def _unb64(value: Any) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ProtocolError(f"'audio' must be a base64 string or null, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ProtocolError(f"'audio' is not valid base64 ({e}); length {len(value)}") from None
