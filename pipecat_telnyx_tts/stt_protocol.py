"""The Telnyx speech-to-text WebSocket as plain values: no sockets, no asyncio.

The client service and the emulator both build, check and parse every frame and query here
(reference: ``telnyx-stt-protocol.md``). Where the sources disagree, the tables hold what is
documented, and the emulator's knobs (``emulator.stt_config``) play the other readings.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

DEFAULT_STT_URL = "wss://api.telnyx.com/v2/speech-to-text/transcription"
TRANSCRIPTION_PATH = "/v2/speech-to-text/transcription"

CONTAINER_FORMATS = frozenset({"mp3", "wav", "webm", "webm_opus", "ogg_opus", "ogg", "flac"})
TELEPHONY_FORMATS = frozenset({"mulaw", "alaw", "g729", "amr_nb", "amr_wb", "speex"})
RAW_FORMATS = frozenset({"linear16", "linear32", "opus"})
INPUT_FORMATS = CONTAINER_FORMATS | TELEPHONY_FORMATS | RAW_FORMATS

RAW_RATES: Mapping[str, frozenset[int]] = {
    # INF: the reference names the codes, not the rates each codec takes; these are the rates
    # the codecs themselves are defined for.
    "linear16": frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}),
    "linear32": frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000}),
    "opus": frozenset({8000, 12000, 16000, 24000, 48000}),
    "mulaw": frozenset({8000}),
    "alaw": frozenset({8000}),
    "g729": frozenset({8000}),
    "amr_nb": frozenset({8000}),
    "amr_wb": frozenset({16000}),
    "speex": frozenset({8000, 16000, 32000}),
}
"""Rates each headerless format takes; container formats carry their rate in their header."""

FLUX_MODELS = frozenset({"flux", "flux-multi"})
FLUX_FORMATS = frozenset({"linear16", "linear32", "mulaw", "alaw", "opus", "ogg_opus"})
"""INF: Deepgram's own Flux takes raw and telephony PCM only; 40006 refuses the rest."""
FLUX_OPTIONS = ("eot_threshold", "eager_eot_threshold", "eot_timeout_ms")

# Error codes (reference §4, DOC).
BAD_FORMAT = "40001"
FORMAT_NOT_FOR_ENGINE = "40002"
RATE_MISSING = "40003"
RATE_NOT_POSITIVE = "40004"
RATE_NOT_FOR_CODEC = "40005"
FORMAT_NOT_FOR_FLUX = "40006"
BAD_ENGINE = "40007"


class SttProtocolError(ValueError):
    """A frame or query that does not follow the protocol; the message says what is off."""


@dataclass(frozen=True)
class Engine:
    """What one ``transcription_engine`` takes and does, as the reference documents it."""

    name: str
    """The exact, case-sensitive value Telnyx takes."""
    models: tuple[str, ...]
    """Known models, the default first; empty when none is documented."""
    interim_results: bool = False
    finalize: bool = False
    """Takes ``{"type": "Finalize"}``."""
    keep_alive: bool = False
    """Takes ``{"type": "KeepAlive"}``; other engines rely on WebSocket ping/pong."""
    close_stream: bool = False
    """Documented to take ``CloseStream`` by every page (one page says all engines do)."""
    endpointing: bool = False
    speech_final: bool = False
    """Marks the final that ends an utterance with ``speech_final``."""
    utterance_end: bool = False
    """Sends ``{"utterance_end": true}`` after an endpointing final."""
    keyterm_models: frozenset[str] = frozenset()
    redact: bool = False
    formats: frozenset[str] = INPUT_FORMATS
    finals_only: bool = False
    """Sends no partials even where the engine has them (Parakeet)."""

    @property
    def default_model(self) -> str | None:
        return self.models[0] if self.models else None


ENGINES: Mapping[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            "Deepgram",
            ("nova-3", "nova-2", "flux", "flux-multi"),
            interim_results=True,
            finalize=True,
            keep_alive=True,
            close_stream=True,
            endpointing=True,
            speech_final=True,
            utterance_end=True,
            keyterm_models=frozenset({"nova-3", "flux", "flux-multi"}),
            redact=True,
        ),
        Engine("Telnyx", ("openai/whisper-tiny",), formats=INPUT_FORMATS - {"mulaw", "alaw"}),
        Engine("Google", ("latest_long",), endpointing=True),
        Engine("Azure", ("azure/fast",)),
        Engine("xAI", ("xai/grok-stt",), endpointing=True),
        Engine("AssemblyAI", ("assemblyai/universal-streaming",)),
        Engine(
            "Speechmatics",
            ("speechmatics/standard",),
            interim_results=True,
            close_stream=True,
            endpointing=True,
        ),
        Engine(
            "Soniox",
            ("soniox/stt-rt-v4",),
            interim_results=True,
            close_stream=True,
            endpointing=True,
        ),
        Engine("Parakeet", ("nvidia/parakeet-v3",), finals_only=True),
        Engine("Humain", ()),
        Engine("Reson8", ("reson8/turns",), formats=RAW_FORMATS),
    )
}
DEFAULT_ENGINE = "Deepgram"


def engine_named(name: str) -> Engine | None:
    """The engine spelled exactly ``name``; Telnyx's names are case-sensitive."""
    return ENGINES.get(name)


def is_flux(model: str | None) -> bool:
    return model in FLUX_MODELS


# --------------------------------------------------------------------------- query


@dataclass(frozen=True)
class SttParams:
    """Query parameters, fixed for the life of one session (reference §2)."""

    transcription_engine: str = DEFAULT_ENGINE
    model: str | None = None
    input_format: str = "linear16"
    sample_rate: int | None = 16000
    language: str | None = None
    interim_results: bool = False
    endpointing: int | bool | None = None
    """Milliseconds of silence that end an utterance; False turns endpointing off."""
    keyterm: tuple[str, ...] = ()
    redact: tuple[str, ...] = ()
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = None
    eot_timeout_ms: int | None = None

    def to_query(self) -> str:
        """The query string the client sends: set parameters only, ``keyterm`` repeated."""
        items: list[tuple[str, str]] = [("transcription_engine", self.transcription_engine)]
        if self.model:
            items.append(("model", self.model))
        items.append(("input_format", self.input_format))
        if self.sample_rate is not None:
            items.append(("sample_rate", str(self.sample_rate)))
        if self.language:
            items.append(("language", self.language))
        if self.interim_results:
            items.append(("interim_results", "true"))
        if self.endpointing is False:
            items.append(("endpointing", "false"))
        elif self.endpointing is not None and self.endpointing is not True:
            items.append(("endpointing", str(self.endpointing)))
        items += [("keyterm", term) for term in self.keyterm]
        if self.redact:
            items.append(("redact", ",".join(self.redact)))
        for name in FLUX_OPTIONS:
            value = getattr(self, name)
            if value is not None:
                items.append((name, _number(value)))
        return urlencode(items)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a session's parameters: what the server's ``errors`` frame says
    about it (``code`` is None where the reference documents a refusal but not its code)."""

    parameter: str
    detail: str
    code: str | None = None


Query = Mapping[str, Sequence[str]]


def parse_query(query: str) -> dict[str, list[str]]:
    """Raw values by name, blanks kept, so that validation sees what was actually sent."""
    return parse_qs(query, keep_blank_values=True)


def query_value(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def session_model(query: Query, engine: Engine) -> str | None:
    """The model a session runs: ``model``, or ``transcription_model`` as Telnyx's own
    benchmark sends it, else the engine's default."""
    return (
        query_value(query, "model")
        or query_value(query, "transcription_model")
        or (engine.default_model)
    )


def check_query(query: Query) -> list[Problem]:
    """What the server refuses in a session's query, with the documented codes, in the order it
    checks them; empty when the session may run."""
    raw_engine = query_value(query, "transcription_engine") or DEFAULT_ENGINE
    engine = engine_named(raw_engine)
    if engine is None:
        return [Problem("transcription_engine", _engine_detail(raw_engine), BAD_ENGINE)]
    fmt = query_value(query, "input_format") or "mp3"
    if fmt not in INPUT_FORMATS:
        return [
            Problem(
                "input_format",
                f"input_format {fmt!r} is not one of {', '.join(sorted(INPUT_FORMATS))}",
                BAD_FORMAT,
            )
        ]
    model = session_model(query, engine)
    flux = engine.name == DEFAULT_ENGINE and is_flux(model)
    if flux and fmt not in FLUX_FORMATS:
        return [
            Problem(
                "input_format",
                f"{model} does not take {fmt}; use one of {', '.join(sorted(FLUX_FORMATS))}",
                FORMAT_NOT_FOR_FLUX,
            )
        ]
    if fmt not in engine.formats:
        return [
            Problem(
                "input_format",
                f"the {engine.name} engine does not take {fmt}; linear16 works with every engine",
                FORMAT_NOT_FOR_ENGINE,
            )
        ]
    problems = _check_rate(query, fmt)
    if not flux:
        problems += [
            Problem(name, f"{name} is for Flux models only ({', '.join(sorted(FLUX_MODELS))})")
            for name in FLUX_OPTIONS
            if query_value(query, name) is not None
        ]
    return problems


def _engine_detail(name: str) -> str:
    exact = next((e for e in ENGINES if e.lower() == name.lower()), None)
    if exact is not None:
        return f"transcription_engine is case-sensitive: use {exact!r}, not {name!r}"
    return f"transcription_engine {name!r} is not one of {', '.join(ENGINES)}"


def _check_rate(query: Query, fmt: str) -> list[Problem]:
    if fmt not in RAW_RATES:
        return []
    raw = query_value(query, "sample_rate")
    if raw is None:
        if fmt in RAW_FORMATS:
            return [Problem("sample_rate", f"sample_rate is required for {fmt}", RATE_MISSING)]
        return []
    if not (raw.isascii() and raw.isdigit()) or int(raw) <= 0:
        return [
            Problem(
                "sample_rate",
                f"sample_rate must be a positive integer, got {raw!r}",
                RATE_NOT_POSITIVE,
            )
        ]
    rate = int(raw)
    if rate not in RAW_RATES[fmt]:
        rates = ", ".join(map(str, sorted(RAW_RATES[fmt])))
        return [
            Problem(
                "sample_rate", f"{fmt} takes sample_rate {rates}, not {rate}", RATE_NOT_FOR_CODEC
            )
        ]
    return []


def check_params(params: SttParams) -> list[str]:
    """What a client must fix before it opens a session: what the server refuses, and what it
    would quietly ignore (lower-case engine names, options the engine does not take)."""
    fixes = [p.detail for p in check_query(parse_query(params.to_query()))]
    engine = engine_named(params.transcription_engine)
    if engine is None:
        return fixes
    model = params.model or engine.default_model
    if params.model and engine.models and params.model not in engine.models:
        fixes.append(
            f"model {params.model!r} is not a {engine.name} model; "
            f"use one of {', '.join(engine.models)}"
        )
    if params.interim_results and (not engine.interim_results or engine.finals_only):
        fixes.append(
            f"the {engine.name} engine sends no interim results; set interim_results=False "
            f"or use one of {', '.join(e.name for e in ENGINES.values() if e.interim_results)}"
        )
    if params.endpointing is not None and not engine.endpointing:
        fixes.append(f"the {engine.name} engine takes no endpointing; leave it unset")
    if params.keyterm and model not in engine.keyterm_models:
        fixes.append("keyterm is for Deepgram nova-3 and Flux models; leave it empty")
    if params.redact and not engine.redact:
        fixes.append(f"redact is for the Deepgram engine only, not {engine.name}")
    endpointing = params.endpointing
    if not isinstance(endpointing, bool) and endpointing is not None and endpointing <= 0:
        fixes.append(f"endpointing must be positive milliseconds, got {endpointing}")
    for name in ("eot_threshold", "eager_eot_threshold"):
        value = getattr(params, name)
        if value is not None and not (math.isfinite(value) and 0 < value <= 1):
            fixes.append(f"{name} must be in (0, 1], got {value}")
    return fixes


# --------------------------------------------------------------------------- client frames

FINALIZE = "Finalize"
CLOSE_STREAM = "CloseStream"
KEEP_ALIVE = "KeepAlive"
CONTROL_TYPES = frozenset({FINALIZE, CLOSE_STREAM, KEEP_ALIVE})


def control_frame(kind: str) -> str:
    """The text frame for a control message."""
    if kind not in CONTROL_TYPES:
        raise SttProtocolError(f"no such control message {kind!r}")
    return json.dumps({"type": kind}, separators=(",", ":"))


def parse_control(raw: str) -> str | None:
    """The control message a client text frame holds, or None for any other text, which the
    server ignores."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError:
        return None
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if kind in CONTROL_TYPES else None


# --------------------------------------------------------------------------- server frames


@dataclass(frozen=True)
class Transcript:
    """A result: a partial (``is_final`` False) or a final; ``speech_final`` marks the final
    that ends an utterance (Deepgram only)."""

    text: str
    is_final: bool
    speech_final: bool = False
    confidence: float | None = None


@dataclass(frozen=True)
class UtteranceEnd:
    """Deepgram's marker after an endpointing final; carries no words."""


@dataclass(frozen=True)
class SttError:
    """One entry of an ``errors`` frame (or a singular ``error``)."""

    code: str | None
    title: str
    detail: str
    parameter: str | None = None

    def describe(self) -> str:
        """One line for a person: the code, what is wrong and the parameter to fix."""
        head = f"Telnyx STT error {self.code}" if self.code else "Telnyx STT error"
        body = " - ".join(t for t in (self.title, self.detail) if t)
        where = f" (parameter {self.parameter!r})" if self.parameter else ""
        return f"{head}: {body}{where}" if body else head + where


@dataclass(frozen=True)
class Errors:
    """An error frame; the server closes after it."""

    errors: tuple[SttError, ...] = field(default_factory=tuple)

    @property
    def configuration(self) -> bool:
        """Whether the session's parameters are at fault: a retry with the same ones fails the
        same way (a 400xx code or a named parameter)."""
        return any((e.code or "").startswith("400") or e.parameter is not None for e in self.errors)

    def describe(self) -> str:
        return "; ".join(e.describe() for e in self.errors) or "Telnyx STT error"


SttServerMessage = Transcript | UtteranceEnd | Errors


def encode_transcript(message: Transcript | UtteranceEnd) -> str:
    """A result frame as the server sends it (no ``type`` field)."""
    if isinstance(message, UtteranceEnd):
        body: dict[str, Any] = {"transcript": "", "is_final": True, "utterance_end": True}
    else:
        body = {"transcript": message.text, "is_final": message.is_final}
        if message.speech_final:
            body["speech_final"] = True
        body["confidence"] = message.confidence
    return json.dumps(body, separators=(",", ":"))


def encode_errors(problems: Sequence[Problem], *, singular: bool = False) -> str:
    """An error frame: the documented ``errors`` list, or the singular ``error`` some clients
    also handle."""
    entries = []
    for p in problems:
        entry: dict[str, Any] = {"title": "Invalid parameter", "detail": p.detail}
        if p.code is not None:
            entry["code"] = p.code
        entry["source"] = {"parameter": p.parameter}
        entries.append(entry)
    body = {"error": entries[0]} if singular and entries else {"errors": entries}
    return json.dumps(body, separators=(",", ":"))


def parse_server(raw: str | bytes) -> SttServerMessage:
    """Parse a server frame by its keys; unknown keys are ignored, known keys type-checked."""
    if isinstance(raw, bytes):
        raise SttProtocolError(f"server frame is binary ({len(raw)} bytes); expected JSON text")
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SttProtocolError(f"server frame is not valid JSON ({e.msg}): {raw[:80]!r}") from None
    if not isinstance(obj, dict):
        raise SttProtocolError(f"server frame must be a JSON object, got {type(obj).__name__}")
    if "errors" in obj or "error" in obj:
        return _parse_errors(obj.get("errors", obj.get("error")))
    if obj.get("utterance_end") is True:
        return UtteranceEnd()
    text = obj.get("transcript")
    if not isinstance(text, str):
        raise SttProtocolError(
            f"server frame has no string 'transcript' or 'errors': keys {sorted(obj)}"
        )
    is_final = obj.get("is_final", False)
    speech_final = obj.get("speech_final", False)
    if not isinstance(is_final, bool) or not isinstance(speech_final, bool | None):
        raise SttProtocolError(f"'is_final'/'speech_final' must be booleans: {raw[:120]!r}")
    confidence = obj.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool) or not isinstance(confidence, int | float)
    ):
        raise SttProtocolError(f"'confidence' must be a number or null, got {confidence!r}")
    return Transcript(
        text,
        is_final,
        bool(speech_final),
        None if confidence is None else float(confidence),
    )


def _parse_errors(value: Any) -> Errors:
    items = value if isinstance(value, list) else [value]
    return Errors(tuple(_parse_error(item) for item in items))


def _parse_error(item: Any) -> SttError:
    if isinstance(item, str):
        return SttError(None, item, "")
    if not isinstance(item, dict):
        return SttError(None, json.dumps(item)[:200], "")
    code = item.get("code")
    source = item.get("source")
    parameter = source.get("parameter") if isinstance(source, dict) else None
    return SttError(
        None if code is None else str(code),
        _text(item.get("title")),
        _text(item.get("detail", item.get("message"))),
        parameter if isinstance(parameter, str) else None,
    )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
