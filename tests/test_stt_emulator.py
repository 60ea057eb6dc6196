"""The emulator's STT endpoint over real sockets: validation, per-engine behaviour, recognition
of its own speech and of scripted callers, the idle timeout and injected faults."""

from __future__ import annotations

import argparse
import asyncio
from contextlib import suppress
from pathlib import Path

import numpy as np
import pytest
import soxr
from stt_helpers import (
    AUTH,
    caller_says,
    noise,
    receive_all,
    send_pcm,
    silence,
    stt_socket,
    stt_url,
)
from test_emulator_support import open_socket, refused, speak
from test_emulator_support import receive_all as receive_all_tts
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts import stt_protocol as sp
from pipecat_telnyx_tts.emulator import (
    Faults,
    Signal,
    TelnyxEmulator,
    add_arguments,
    emulator_from_args,
)
from pipecat_telnyx_tts.emulator.stt_config import LowerCaseEngine
from pipecat_telnyx_tts.emulator.stt_recognize import best_match
from pipecat_telnyx_tts.emulator.stt_socket import WavStream
from pipecat_telnyx_tts.emulator.synth import ESPEAK
from pipecat_telnyx_tts.stt_protocol import Errors, SttError, Transcript, UtteranceEnd

HELLO = "Hello there, my friend."


@pytest.fixture
async def emu() -> TelnyxEmulator:
    async with TelnyxEmulator(api_key="k", faults=Faults.fast()) as server:
        yield server


def finals(messages: list[sp.SttServerMessage]) -> list[Transcript]:
    return [m for m in messages if isinstance(m, Transcript) and m.is_final]


def partials(messages: list[sp.SttServerMessage]) -> list[Transcript]:
    return [m for m in messages if isinstance(m, Transcript) and not m.is_final]


async def closed(emu: TelnyxEmulator) -> None:
    """Until every socket's handler is done with what it received."""
    await emu.wait_for(lambda: all(c.closed_at for c in emu.connections))


async def say(emu: TelnyxEmulator, pcm: np.ndarray, tail: float = 1.5, **params: object) -> list:
    """Silence, ``pcm``, silence, then CloseStream; every frame the server sent."""
    async with stt_socket(emu, **params) as ws:
        await send_pcm(ws, silence(0.3), pcm, silence(tail))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        return await receive_all(ws)


# --------------------------------------------------------------------------- recognition


async def test_own_audio_comes_back_word_for_word(emu: TelnyxEmulator) -> None:
    out = await say(emu, caller_says(emu, HELLO))
    assert finals(out) == [Transcript(HELLO, True, True, 0.99)]
    assert out[-1] == UtteranceEnd()
    (utterance,) = emu.stt.sessions[0].utterances
    assert (utterance.source, utterance.ended_by) == ("library", "endpointing")
    assert utterance.start == pytest.approx(0.3, abs=0.011)


async def test_tts_socket_audio_is_recognized_after_resampling(emu: TelnyxEmulator) -> None:
    emu.signal = Signal.TONE
    async with open_socket(emu, audio_format="linear16", sample_rate=16000) as ws:
        await speak(ws, "Book a table for two at eight.")
        audio = b"".join(m.audio for m in await receive_all_tts(ws) if m.audio)
    pcm16 = np.frombuffer(audio, "<i2")
    pcm8 = soxr.resample(pcm16, 16000, 8000).astype(np.int16)
    out = await say(emu, pcm8)
    assert [f.text for f in finals(out)] == ["Book a table for two at eight."]


@pytest.mark.skipif(not ESPEAK.available(), reason="espeak-ng is not usable here")
async def test_real_speech_is_recognized_across_pauses(emu: TelnyxEmulator) -> None:
    text = "Yes, please. I would like the soup."
    out = await say(emu, caller_says(emu, text, signal=Signal.SPEECH), endpointing=300)
    assert " ".join(f.text for f in finals(out) if f.text) == text


def test_a_match_may_start_before_or_end_after_the_clip() -> None:
    clip = caller_says(None, HELLO).astype(float)
    heard = np.concatenate((np.zeros(80), clip[:4000]))
    assert best_match(heard, clip) == -80
    assert best_match(np.concatenate((clip[-3000:], np.zeros(500))), clip) == len(clip) - 3000
    assert (
        best_match(caller_says(None, "Something else entirely.").astype(float)[:4000], clip) is None
    )


async def test_partials_grow_word_by_word_then_the_final(emu: TelnyxEmulator) -> None:
    out = await say(emu, caller_says(emu, HELLO), interim_results="true")
    texts = [p.text for p in partials(out)]
    assert texts and all(p.confidence == 0.0 for p in partials(out))
    assert texts == sorted(texts, key=len) and HELLO.startswith(texts[0])
    assert out.index(finals(out)[0]) > out.index(partials(out)[-1])


async def test_finals_only_deepgram_reading(emu: TelnyxEmulator) -> None:
    emu.stt.behaviour.deepgram_interims = False
    out = await say(emu, caller_says(emu, HELLO), interim_results="true")
    assert partials(out) == [] and [f.text for f in finals(out)] == [HELLO]


@pytest.mark.parametrize(
    ("engine", "model", "interims", "speech_final", "utterance_end"),
    [
        ("Deepgram", "nova-3", True, True, True),
        ("Deepgram", "flux", True, True, True),
        ("Speechmatics", None, True, False, False),
        ("Soniox", None, True, False, False),
        ("Telnyx", None, False, False, False),
        ("Parakeet", None, False, False, False),
        ("Google", None, False, False, False),
    ],
)
async def test_engine_behaviour(
    emu: TelnyxEmulator,
    engine: str,
    model: str | None,
    interims: bool,
    speech_final: bool,
    utterance_end: bool,
) -> None:
    emu.stt.behaviour.close_stream_everywhere = True
    out = await say(
        emu,
        caller_says(emu, HELLO),
        transcription_engine=engine,
        model=model,
        interim_results="true",
    )
    assert bool(partials(out)) is interims
    (final,) = finals(out)
    assert (final.text, final.speech_final) == (HELLO, speech_final)
    assert (UtteranceEnd() in out) is utterance_end


async def test_scripted_lines_answer_other_audio_in_order(emu: TelnyxEmulator) -> None:
    emu.stt.script.extend(["I need a plumber", "tomorrow morning"])
    out = await say(emu, np.concatenate([noise(0.8), silence(0.5), noise(0.8, seed=2)]))
    assert [f.text for f in finals(out)] == ["I need a plumber", "tomorrow morning"]
    assert {u.source for u in emu.stt.sessions[0].utterances} == {"script"}


async def test_unknown_audio_without_a_script_gets_an_empty_final(emu: TelnyxEmulator) -> None:
    out = await say(emu, noise(0.5))
    assert finals(out) == [Transcript("", True, True, 0.0)]


async def test_endpointing_false_waits_for_finalize(emu: TelnyxEmulator) -> None:
    async with stt_socket(emu, endpointing="false") as ws:
        await send_pcm(ws, silence(0.2), caller_says(emu, HELLO), silence(1.5))
        await ws.send(sp.control_frame(sp.FINALIZE))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        out = await receive_all(ws)
    assert finals(out) == [Transcript(HELLO, True, False, 0.99)]
    assert emu.stt.sessions[0].utterances[0].ended_by == "finalize"


async def test_finalize_is_ignored_where_the_engine_has_none(emu: TelnyxEmulator) -> None:
    async with stt_socket(emu, transcription_engine="Azure", endpointing=None) as ws:
        await send_pcm(ws, caller_says(emu, HELLO)[:4000])
        await ws.send(sp.control_frame(sp.FINALIZE))
        await ws.send(sp.control_frame(sp.KEEP_ALIVE))
        await ws.close()
    await closed(emu)
    session = emu.stt.sessions[0]
    assert [k for _, k in session.controls] == [sp.FINALIZE, sp.KEEP_ALIVE]
    assert session.results == []


async def test_finalize_too_soon_after_a_short_answer_is_empty(emu: TelnyxEmulator) -> None:
    emu.stt.behaviour.finalize_needs_silence_ms = 300
    pcm = caller_says(emu, "Yes.")
    async with stt_socket(emu, endpointing="false") as ws:
        await send_pcm(ws, pcm, silence(0.1))
        await ws.send(sp.control_frame(sp.FINALIZE))
        await send_pcm(ws, pcm, silence(0.4))
        await ws.send(sp.control_frame(sp.FINALIZE))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        out = await receive_all(ws)
    assert [f.text for f in finals(out)] == ["", "Yes."]


async def test_close_stream_sends_the_last_final_then_closes(emu: TelnyxEmulator) -> None:
    async with stt_socket(emu, endpointing="false") as ws:
        await send_pcm(ws, caller_says(emu, HELLO))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        out = await receive_all(ws)
        assert ws.close_code == 1000
    assert [f.text for f in finals(out)] == [HELLO]


@pytest.mark.parametrize("everywhere", [False, True])
async def test_close_stream_on_other_engines_follows_the_reading(
    emu: TelnyxEmulator, everywhere: bool
) -> None:
    emu.stt.behaviour.close_stream_everywhere = everywhere
    async with stt_socket(emu, transcription_engine="Telnyx") as ws:
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        try:
            async with asyncio.timeout(1.0):
                await ws.wait_closed()
        except TimeoutError:
            assert not everywhere, "the broad reading closes at CloseStream"
        else:
            assert everywhere, "the narrow reading ignores CloseStream on the Telnyx engine"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("params", "code", "parameter"),
    [
        ({"input_format": "pcm16"}, "40001", "input_format"),
        ({"transcription_engine": "Telnyx", "input_format": "mulaw"}, "40002", "input_format"),
        ({"sample_rate": None}, "40003", "sample_rate"),
        ({"sample_rate": "0"}, "40004", "sample_rate"),
        ({"input_format": "mulaw", "sample_rate": 16000}, "40005", "sample_rate"),
        ({"model": "flux", "input_format": "mp3"}, "40006", "input_format"),
        ({"transcription_engine": "Whisper"}, "40007", "transcription_engine"),
        ({"transcription_engine": "deepgram"}, "40007", "transcription_engine"),
        ({"model": "nova-3", "eot_threshold": "0.8"}, None, "eot_threshold"),
    ],
)
@pytest.mark.parametrize("singular", [False, True])
async def test_bad_parameters_get_an_error_frame_then_a_close(
    emu: TelnyxEmulator, params: dict, code: str | None, parameter: str, singular: bool
) -> None:
    emu.stt.behaviour.singular_error = singular
    async with stt_socket(emu, **params) as ws:
        out = await receive_all(ws)
        assert ws.close_code == 1008
    (errors,) = out
    assert isinstance(errors, Errors)
    (error,) = errors.errors
    assert (error.code, error.parameter) == (code, parameter)
    assert ('"error":' in emu.stt.sessions[0].sent[0][1]) is singular
    assert emu.connections[0].status == 101


async def test_lower_case_engine_can_fail_silently(emu: TelnyxEmulator) -> None:
    emu.stt.behaviour.lower_case_engine = LowerCaseEngine.SILENT
    async with stt_socket(emu, transcription_engine="deepgram") as ws:
        await send_pcm(ws, caller_says(emu, HELLO), silence(1.5))
        await ws.close()
    await closed(emu)
    assert emu.stt.sessions[0].spec is None and emu.stt.sessions[0].results == []


@pytest.mark.parametrize(
    ("keys", "param", "refused_"),
    [
        (("model", "transcription_model"), "model", False),
        (("model", "transcription_model"), "transcription_model", False),
        (("transcription_model",), "model", True),
    ],
)
async def test_model_or_transcription_model(
    emu: TelnyxEmulator, keys: tuple[str, ...], param: str, refused_: bool
) -> None:
    emu.stt.behaviour.model_keys = keys
    async with stt_socket(emu, **{param: "flux"}, eot_threshold="0.8") as ws:
        with suppress(ConnectionClosed):
            await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        out = await receive_all(ws)
    assert bool(out and isinstance(out[0], Errors)) is refused_


def wav_header(rate: int) -> bytes:
    import struct

    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0x7FFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", 0x7FFFFFFF)
    )


async def test_wav_stream_with_its_header_first(emu: TelnyxEmulator) -> None:
    async with stt_socket(emu, input_format="wav", sample_rate=None) as ws:
        await ws.send(wav_header(8000))
        await send_pcm(ws, caller_says(emu, HELLO), silence(0.5))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        out = await receive_all(ws)
    assert [f.text for f in finals(out)] == [HELLO]


@pytest.mark.parametrize("strict", [True, False])
async def test_bytes_before_the_riff_header(emu: TelnyxEmulator, strict: bool) -> None:
    emu.stt.behaviour.wav_strict = strict
    async with stt_socket(emu, input_format="wav", sample_rate=None) as ws:
        await ws.send(b"\x00\x01" + wav_header(8000))
        await send_pcm(ws, caller_says(emu, HELLO), silence(0.5))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        out = await receive_all(ws)
    if strict:
        assert isinstance(out[0], Errors) and out[0].errors[0].parameter == "input_format"
        assert "before the RIFF header" in out[0].errors[0].detail
    else:
        assert [f.text for f in finals(out)] == [HELLO]


def test_wav_stream_takes_its_header_in_pieces() -> None:
    wav = WavStream(strict=True)
    header = wav_header(16000)
    assert [wav.feed(header[i : i + 5]) for i in range(0, len(header), 5)][-1] == b""
    assert wav.rate == 16000
    assert wav.feed(b"\x01\x00") == b"\x01\x00"


# --------------------------------------------------------------------------- the socket


async def test_wrong_key_is_refused_at_the_upgrade(emu: TelnyxEmulator) -> None:
    e = await refused(stt_url(emu), headers={"Authorization": "Bearer nope"})
    assert e.response.status_code == 401


async def test_upgrade_refusals_apply_to_stt_too(emu: TelnyxEmulator) -> None:
    emu.faults.refuse_status = 503
    emu.faults.refuse_count = 1
    e = await refused(stt_url(emu))
    assert e.response.status_code == 503
    async with stt_socket(emu) as ws:
        await ws.close()


async def test_idle_timeout_and_keep_alive(emu: TelnyxEmulator) -> None:
    emu.stt.behaviour.idle_timeout = 0.5
    async with stt_socket(emu) as deepgram, stt_socket(emu, transcription_engine="Azure") as azure:
        for _ in range(100):
            if azure.close_code is not None:
                break
            await deepgram.send(sp.control_frame(sp.KEEP_ALIVE))
            with suppress(ConnectionClosed):
                await azure.send(sp.control_frame(sp.KEEP_ALIVE))
            await asyncio.sleep(0.05)
        assert azure.close_code == 1011 and azure.close_reason == "idle timeout"
        assert deepgram.close_code is None, "KeepAlive holds a Deepgram socket open"
        async with asyncio.timeout(5):
            await deepgram.wait_closed()
        assert deepgram.close_code == 1011
    kept = [k for _, k in emu.stt.sessions[0].controls]
    assert len(kept) >= 5 and set(kept) == {sp.KEEP_ALIVE}


@pytest.mark.parametrize(
    ("fault", "code"),
    [("error_after_audio", 1011), ("drop_after_audio", 1006), ("close_after_audio", 1011)],
)
async def test_faults_after_some_audio(emu: TelnyxEmulator, fault: str, code: int) -> None:
    setattr(emu.stt.faults, fault, 0.5)
    emu.stt.faults.fault_count = 1
    async with stt_socket(emu) as ws:
        with suppress(ConnectionClosed):
            await send_pcm(ws, silence(5.0))
        out = await receive_all(ws)
        assert ws.close_code == code
    if fault == "error_after_audio":
        assert out == [Errors((SttError(None, "Internal error", ""),))]
        assert not out[0].configuration
    await closed(emu)
    assert emu.stt.sessions[0].audio_seconds == pytest.approx(0.52, abs=0.03)
    assert emu.stt.faults.fault_count == 0
    async with stt_socket(emu) as ws:
        await send_pcm(ws, silence(1.0))
        await ws.close()
    await closed(emu)
    assert emu.stt.sessions[1].faults == []


async def test_stall_sends_nothing_more(emu: TelnyxEmulator) -> None:
    emu.stt.faults.stall_after_audio = 0.1
    async with stt_socket(emu) as ws:
        await send_pcm(ws, caller_says(emu, HELLO), silence(1.5))
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        await ws.close()
    await closed(emu)
    session = emu.stt.sessions[0]
    assert session.faults == ["stall"] and session.results == []
    assert [k for _, k in session.controls] == [sp.CLOSE_STREAM], "read, not answered"


async def test_result_delay_holds_each_result(emu: TelnyxEmulator) -> None:
    emu.stt.faults.result_delay = 0.3
    async with stt_socket(emu) as ws:
        await send_pcm(ws, caller_says(emu, HELLO), silence(0.3))
        sent_at = asyncio.get_running_loop().time()
        raw = await ws.recv()
        assert asyncio.get_running_loop().time() - sent_at >= 0.0
        assert sp.parse_server(raw) == Transcript(HELLO, True, True, 0.99)
    session = emu.stt.sessions[0]
    ((t, _),) = session.results
    assert t - session.connection.opened_at >= 0.3


async def test_headers_are_recorded_without_the_key(emu: TelnyxEmulator) -> None:
    async with connect(stt_url(emu), additional_headers=AUTH) as ws:
        await ws.close()
    assert emu.connections[0].headers["Authorization"] == "Bearer REDACTED"


async def test_the_command_line_gives_the_script(tmp_path: Path) -> None:
    script = tmp_path / "caller.txt"
    script.write_text("I need a plumber\n\n  tomorrow morning \n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--port", "0", "--api-key", "k", "--stt-script", str(script)])
    async with emulator_from_args(ns, keep_connections=1) as server:
        out = await say(server, np.concatenate([noise(0.8), silence(0.5), noise(0.8, seed=2)]))
        assert [f.text for f in finals(out)] == ["I need a plumber", "tomorrow morning"]
        async with stt_socket(server) as ws:
            await ws.close()
        await closed(server)
        assert len(server.stt.sessions) == 1, "session records are bounded like connections"
