"""The STT protocol module without sockets: tables, queries, validation and frames."""

from __future__ import annotations

import json

import pytest

from pipecat_telnyx_tts import stt_protocol as sp
from pipecat_telnyx_tts.stt_protocol import (
    Errors,
    Problem,
    SttError,
    SttParams,
    SttProtocolError,
    Transcript,
    UtteranceEnd,
    check_params,
    check_query,
    parse_query,
    parse_server,
)


def codes(query: str) -> list[str | None]:
    return [p.code for p in check_query(parse_query(query))]


# --------------------------------------------------------------------------- tables


def test_engine_names_keep_telnyx_case() -> None:
    assert list(sp.ENGINES) == [
        "Deepgram",
        "Telnyx",
        "Google",
        "Azure",
        "xAI",
        "AssemblyAI",
        "Speechmatics",
        "Soniox",
        "Parakeet",
        "Humain",
        "Reson8",
    ]
    assert sp.engine_named("deepgram") is None
    assert sp.ENGINES["Deepgram"].default_model == "nova-3"


def test_linear16_is_the_one_format_every_engine_takes() -> None:
    common = frozenset.intersection(*(e.formats for e in sp.ENGINES.values()), sp.FLUX_FORMATS)
    assert common >= {"linear16"}
    assert "mulaw" not in sp.ENGINES["Telnyx"].formats
    assert sp.ENGINES["Reson8"].formats == sp.RAW_FORMATS


def test_only_deepgram_takes_finalize_and_keepalive() -> None:
    assert [e.name for e in sp.ENGINES.values() if e.finalize] == ["Deepgram"]
    assert [e.name for e in sp.ENGINES.values() if e.keep_alive] == ["Deepgram"]
    assert [e.name for e in sp.ENGINES.values() if e.interim_results] == [
        "Deepgram",
        "Speechmatics",
        "Soniox",
    ]


# --------------------------------------------------------------------------- query


def test_query_sends_model_and_repeats_keyterm() -> None:
    params = SttParams(
        model="nova-3",
        sample_rate=8000,
        interim_results=True,
        endpointing=300,
        keyterm=("Telnyx", "Pipecat"),
        redact=("pci", "ssn"),
    )
    q = parse_query(params.to_query())
    assert q["transcription_engine"] == ["Deepgram"]
    assert q["model"] == ["nova-3"]
    assert "transcription_model" not in q
    assert q["input_format"] == ["linear16"]
    assert q["sample_rate"] == ["8000"]
    assert q["interim_results"] == ["true"]
    assert q["endpointing"] == ["300"]
    assert q["keyterm"] == ["Telnyx", "Pipecat"]
    assert q["redact"] == ["pci,ssn"]
    assert check_params(params) == []


def test_endpointing_false_is_sent_as_the_string() -> None:
    assert parse_query(SttParams(endpointing=False).to_query())["endpointing"] == ["false"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("transcription_engine=deepgram&input_format=linear16&sample_rate=8000", ["40007"]),
        ("transcription_engine=Whisper&input_format=linear16&sample_rate=8000", ["40007"]),
        ("input_format=pcm16&sample_rate=8000", ["40001"]),
        ("transcription_engine=Telnyx&input_format=mulaw&sample_rate=8000", ["40002"]),
        ("transcription_engine=Reson8&input_format=wav", ["40002"]),
        ("input_format=linear16", ["40003"]),
        ("input_format=linear16&sample_rate=-8", ["40004"]),
        ("input_format=linear16&sample_rate=abc", ["40004"]),
        ("input_format=mulaw&sample_rate=16000", ["40005"]),
        ("model=flux&input_format=mp3", ["40006"]),
        ("transcription_model=flux&input_format=wav", ["40006"]),
        ("model=nova-3&input_format=linear16&sample_rate=8000&eot_threshold=0.8", [None]),
        ("model=flux&input_format=linear16&sample_rate=8000&eot_threshold=0.8", []),
        ("input_format=wav", []),
        ("", []),
    ],
)
def test_check_query_answers_the_documented_codes(query: str, expected: list[str | None]) -> None:
    assert codes(query) == expected


def test_check_query_names_the_parameter_and_the_fix() -> None:
    (problem,) = check_query(parse_query("transcription_engine=deepgram"))
    assert problem.parameter == "transcription_engine"
    assert "'Deepgram'" in problem.detail


@pytest.mark.parametrize(
    ("params", "fix"),
    [
        (SttParams(transcription_engine="deepgram"), "use 'Deepgram'"),
        (SttParams(transcription_engine="Telnyx", interim_results=True), "no interim results"),
        (SttParams(transcription_engine="Parakeet", interim_results=True), "no interim results"),
        (SttParams(model="nova-3", eot_threshold=0.7), "Flux models only"),
        (SttParams(transcription_engine="Azure", endpointing=200), "takes no endpointing"),
        (SttParams(model="nova-2", keyterm=("x",)), "keyterm"),
        (SttParams(transcription_engine="Google", redact=("pci",)), "redact"),
        (SttParams(model="nova-9"), "not a Deepgram model"),
        (SttParams(transcription_engine="Telnyx", input_format="mulaw", sample_rate=8000), "40002"),
        (SttParams(model="flux", eot_threshold=1.5), "eot_threshold must be"),
        (SttParams(endpointing=0), "endpointing must be positive"),
    ],
)
def test_check_params_says_what_to_fix(params: SttParams, fix: str) -> None:
    fixes = check_params(params)
    assert fixes, params
    if fix == "40002":
        assert "does not take mulaw" in fixes[0]
    else:
        assert any(fix in f for f in fixes), fixes


def test_every_documented_model_passes() -> None:
    for engine in sp.ENGINES.values():
        for model in engine.models:
            params = SttParams(transcription_engine=engine.name, model=model, sample_rate=8000)
            assert check_params(params) == [], (engine.name, model)


# --------------------------------------------------------------------------- frames


def test_control_frames_round_trip() -> None:
    for kind in (sp.FINALIZE, sp.CLOSE_STREAM, sp.KEEP_ALIVE):
        frame = sp.control_frame(kind)
        assert json.loads(frame) == {"type": kind}
        assert sp.parse_control(frame) == kind
    assert sp.parse_control('{"type":"Flush"}') is None
    assert sp.parse_control("not json") is None
    with pytest.raises(SttProtocolError):
        sp.control_frame("Flush")


def test_results_parse_with_or_without_confidence() -> None:
    assert parse_server('{"transcript":"hel","is_final":false,"confidence":0.0}') == Transcript(
        "hel", False, False, 0.0
    )
    assert parse_server(
        '{"transcript":"hello","is_final":true,"speech_final":true,"confidence":null}'
    ) == Transcript("hello", True, True, None)
    assert parse_server('{"transcript":"hi","is_final":true}') == Transcript("hi", True)
    assert parse_server('{"transcript":"","is_final":true,"utterance_end":true}') == UtteranceEnd()


def test_encoded_results_parse_back() -> None:
    for message in (Transcript("a b", False, confidence=0.0), Transcript("a", True, True, 0.9)):
        assert parse_server(sp.encode_transcript(message)) == message
    assert parse_server(sp.encode_transcript(UtteranceEnd())) == UtteranceEnd()


def test_errors_list_and_singular_error_both_parse() -> None:
    listed = parse_server(
        '{"errors":[{"code":"40002","title":"Unsupported","detail":"no mulaw",'
        '"source":{"parameter":"input_format"}}]}'
    )
    assert listed == Errors((SttError("40002", "Unsupported", "no mulaw", "input_format"),))
    assert isinstance(listed, Errors) and listed.configuration
    assert "40002" in listed.describe() and "'input_format'" in listed.describe()
    singular = parse_server('{"error":{"code":40007,"title":"Bad engine"}}')
    assert singular == Errors((SttError("40007", "Bad engine", ""),))
    text = parse_server('{"error":"Internal error"}')
    assert text == Errors((SttError(None, "Internal error", ""),))
    assert isinstance(text, Errors) and not text.configuration


def test_encoded_errors_parse_back_both_ways() -> None:
    problems = [Problem("sample_rate", "sample_rate is required for linear16", "40003")]
    for singular in (False, True):
        parsed = parse_server(sp.encode_errors(problems, singular=singular))
        assert parsed == Errors(
            (SttError("40003", "Invalid parameter", problems[0].detail, "sample_rate"),)
        )


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x01",
        "nope",
        "[1]",
        '{"is_final":true}',
        '{"transcript":"a","is_final":"yes"}',
        '{"transcript":"a","confidence":"high"}',
    ],
)
def test_malformed_server_frames_raise(raw: str | bytes) -> None:
    with pytest.raises(SttProtocolError):
        parse_server(raw)


def test_held_audio_keeps_the_latest_and_puts_unsent_frames_back_in_front() -> None:
    from pipecat_telnyx_tts.stt_buffer import Framer, HeldAudio

    framer = Framer(4)
    assert framer.add(b"abcdef") == [b"abcd"] and framer.add(b"gh") == [b"efgh"]
    assert framer.add(b"ijk") == [] and framer.flush() == b"ij"
    held = HeldAudio(max_bytes=8)
    for frame in (b"1111", b"2222", b"3333"):
        held.hold(frame)
    assert held.held_bytes == 8 and held.dropped_bytes == 4
    frames, dropped = held.take()
    assert (frames, dropped) == ([b"2222", b"3333"], 4)
    held.hold(b"4444")
    held.put_back(frames)
    assert held.take() == ([b"3333", b"4444"], 4), "the bound drops the oldest, put back or not"
