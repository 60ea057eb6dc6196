"""Malformed and unexpected server frames: the emulator's ``Faults.inject_frames``, and the
service surviving each frame in a real pipeline.

Nothing documents that Telnyx never sends such frames, and proxies, SDK wrappers or a server bug
can produce them. A frame the client cannot use must be logged (with what was wrong with it) and
skipped; the turn must still complete with all of its real audio; a frame that is valid but
carries keys the client does not know must be used silently.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
from contextlib import suppress

import numpy as np
import pytest
from test_emulator_support import audio_chunks, open_socket, receive, speak
from test_fault_support import Expect, check_all, conn_with, drive, markers
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator, add_arguments, faults_from_args
from pipecat_telnyx_tts.protocol import AudioMessage, parse_server
from tests.service_helpers import audio_frames, llm_turn, make_tts

INJECTED = 0x1111
"""Sample value of injected audio; socket markers are small integers, so it stands apart."""


def pcm(samples: int, value: int = INJECTED) -> bytes:
    """Raw s16le audio whose every sample is ``value``."""
    return np.full(samples, value, dtype=np.int16).tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- the emulator


async def receive_raw(ws: ClientConnection) -> list[str | bytes]:
    """Every frame, unparsed, until the server closes."""
    frames: list[str | bytes] = []
    with suppress(ConnectionClosed):
        async with asyncio.timeout(10):
            async for raw in ws:
                frames.append(raw)
    return frames


async def test_injected_frames_go_out_once_before_the_first_audio_chunk() -> None:
    frames: list[str | bytes] = ['{"not": "json"', b"\x01\x02"]
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(inject_frames=frames)) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, "First synthesis.")
            raw = await receive_raw(ws)
        at = raw.index('{"not": "json"')
        assert raw[at + 1] == b"\x01\x02", "a bytes item must go out as a binary frame"
        before, after = raw[:at], raw[at + 2 :]
        assert all(json.loads(r)["audio"] is None for r in before), "injected after audio"
        assert json.loads(after[0])["audio"], "injected right before the first audio chunk"
        assert emu.faults.inject_frames == [], "injection is one-shot"
        [conn] = emu.connections
        injected = [f for f in conn.sent if f.message is None]
        assert [f.raw for f in injected] == ['{"not": "json"', "\x01\x02"]
        # The next synthesis gets nothing injected.
        async with open_socket(emu) as ws:
            await speak(ws, "Second synthesis.")
            message = await receive(ws)
            assert isinstance(message, AudioMessage)


async def test_an_injected_valid_frame_is_recorded_parsed() -> None:
    valid = json.dumps({"audio": b64(pcm(4)), "text": None, "isFinal": False, "extra": 1})
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(inject_frames=[valid])) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, "Hello.")
            messages = [parse_server(r) for r in await receive_raw(ws)]
        assert audio_chunks(messages)[0] == pcm(4)
        [conn] = emu.connections
        assert conn.sent[0].raw == valid
        assert conn.sent[0].message == AudioMessage(pcm(4), None, False, None)


def test_inject_frame_is_settable_from_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(["--inject-frame", "{bad", "--inject-frame", '{"type": "x"}'])
    assert faults_from_args(ns).inject_frames == ["{bad", '{"type": "x"}']
    assert faults_from_args(parser.parse_args([])).inject_frames == []


# ----------------------------------------------------------------------------- the service

UNKNOWN_KEYS = json.dumps(
    {
        "type": "audio_chunk",
        "audio": b64(pcm(160)),
        "text": None,
        "isFinal": False,
        "cached": False,
        "sequence": 7,
        "alignment": {"chars": ["a"], "start_ms": [0]},
    }
)
HUGE_SAMPLES = 4 * 1024 * 1024
"""8 MiB of audio in one frame (about 11 MB of JSON): 262 s at 16 kHz."""

# kind -> (raw frame, what the service's warning must say about it)
MALFORMED: dict[str, tuple[str | bytes, str]] = {
    "bad_json": ('{"audio": "AAAA", "isFinal": fal', "not valid JSON"),
    "bad_base64": ('{"audio": "%%% not base64 %%%", "text": null}', "not valid base64"),
    "binary_frame": (b"\x00\x01binary\xff", "binary frame"),
    "type_field_only": ('{"type": "metadata", "request_id": "r-1"}', "has no 'audio'"),
    "is_final_string": ('{"audio": null, "text": "", "isFinal": "true"}', "'isFinal' must be"),
    "json_array": ('[{"audio": null, "isFinal": true}]', "must be a JSON object"),
    "error_not_string": ('{"error": {"code": 500}}', "'error' must be a string"),
}
# kind -> (raw frame, injected samples that must be played)
USABLE: dict[str, tuple[str | bytes, int]] = {
    "unknown_keys": (UNKNOWN_KEYS, 160),
    "huge_frame": ("", HUGE_SAMPLES),  # built on demand: 11 MB is not kept in the module
}

TURN = ("The first turn is here. ", "It has two sentences.")
NEXT = "The next turn speaks."


def frame_for(kind: str) -> str | bytes:
    if kind == "huge_frame":
        return json.dumps({"audio": b64(pcm(HUGE_SAMPLES)), "text": None, "isFinal": False})
    return MALFORMED[kind][0] if kind in MALFORMED else USABLE[kind][0]


@pytest.mark.parametrize("lifecycle", ["observed", "documented"])
@pytest.mark.parametrize("kind", [*MALFORMED, *USABLE])
async def test_a_bad_or_unexpected_server_frame_is_survived(kind: str, lifecycle: str) -> None:
    faults = Faults.fast(inject_frames=[frame_for(kind)])
    async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [*llm_turn(*TURN), *llm_turn(NEXT)]
        out = await drive(tts, emu, frames)
        await check_all(
            out, emu, tts, frames, Expect(spoken_last=NEXT, allowed_markers=frozenset({INJECTED}))
        )
        assert emu.faults.inject_frames == [], "the frame was never injected"
        turn = conn_with(emu, TURN[0])
        assert turn is not None
        real = [f for f in audio_frames(out.down) if turn.index in markers(f)]
        synthesized = sum(s.audio_seconds for s in turn.syntheses)
        played = sum(len(f.audio) for f in real) / 2 / 16000
        assert played == pytest.approx(synthesized, abs=0.01), "the turn lost real audio"
        injected = sum(
            int(np.count_nonzero(np.frombuffer(f.audio, dtype=np.int16) == INJECTED))
            for f in audio_frames(out.down)
        )
        complaints = out.logged("malformed frame")
        if kind in MALFORMED:
            detail = MALFORMED[kind][1]
            assert any(detail in c for c in complaints), f"no warning says {detail!r}: {out.logs}"
            assert injected == 0
        else:
            assert complaints == [], "a usable frame must be used silently"
            assert injected == USABLE[kind][1], "the frame's audio was not played"
