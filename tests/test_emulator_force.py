"""A force followed at once by a close: the frames the server owed at the force still arrive, and
before the answer to the close."""

from __future__ import annotations

import pytest
from test_emulator_support import SENTENCE, open_socket, parse, send
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosedOK

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.connection import frame_length
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ForceMessage,
    ServerMessage,
    TextMessage,
    encode_client,
)

OWED = 3
HELD = 60.0
"""A first-audio delay no test waits out: every planned frame is still owed at the force."""


def force_and_close_in_one_write(ws: ClientConnection) -> None:
    """``{"force": true}`` and a close frame in a single TCP write, as a client that closes right
    after its force may well send them."""
    ws.protocol.send_text(encode_client(ForceMessage()).encode())
    ws.protocol.send_close(1000)
    ws.transport.write(b"".join(ws.protocol.data_to_send()))


async def until_closed(ws: ClientConnection) -> list[ServerMessage]:
    messages = []
    with pytest.raises(ConnectionClosedOK):
        while True:
            messages.append(parse(await ws.recv()))
    return messages


def planned(emu: TelnyxEmulator) -> bool:
    """Whether the socket's synthesis has its audio, hence its frames: from then on they are
    owed. The worker plans in the same step that records the audio length."""
    syntheses = emu.connections[0].syntheses
    return bool(syntheses) and syntheses[0].audio_seconds > 0


async def test_frames_owed_at_a_force_arrive_before_the_close_that_follows_it() -> None:
    faults = Faults.fast(first_audio_delay=HELD, frames_after_force=OWED)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu, audio_format="linear16") as ws:
            await send(ws, TextMessage(SENTENCE * 4, flush=True))
            await emu.wait_for(lambda: planned(emu))
            force_and_close_in_one_write(ws)
            late = await until_closed(ws)
            assert ws.close_code == 1000
        record = await emu.wait_for(lambda: emu.connections[0].closed_at and emu.connections[0])
        (synthesis,) = record.syntheses
        assert synthesis.forced
        assert synthesis.frames_after_force_sent == OWED
        assert len(late) == OWED
        assert all(isinstance(m, AudioMessage) for m in late)
        # Recorded like any other frame, after the force arrived.
        force_at = next(f.t for f in record.received if isinstance(f.message, ForceMessage))
        assert [f.message for f in record.sent if f.t > force_at] == late
        audio = [m for m in late if isinstance(m, AudioMessage) and m.audio]
        assert synthesis.chunks_sent == len(audio) >= OWED - 1
        assert audio[0].time_to_first_audio_ms is not None


async def test_owed_frames_are_audio_frames_one_per_mp3_file() -> None:
    """A concatenated voice sends one frame per MP3 file, so every owed frame carries audio, and
    each of them opens with its file's ID3 tag."""
    faults = Faults.fast(first_audio_delay=HELD, frames_after_force=OWED, mp3_files=OWED + 1)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu, "aws.Polly.Neural.Joanna") as ws:
            await send(ws, TextMessage(" ".join([SENTENCE] * 5), flush=True))
            await emu.wait_for(lambda: planned(emu))
            force_and_close_in_one_write(ws)
            late = await until_closed(ws)
        audio = [m.audio for m in late if isinstance(m, AudioMessage) and m.audio]
        assert len(late) == len(audio) == OWED
        assert all(chunk.startswith(b"ID3") for chunk in audio)
        assert emu.connections[0].syntheses[0].frames_after_force_sent == OWED


async def test_no_frames_are_owed_without_the_fault() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=HELD)) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage(SENTENCE, flush=True))
            await emu.wait_for(lambda: planned(emu))
            force_and_close_in_one_write(ws)
            assert await until_closed(ws) == []
        synthesis = emu.connections[0].syntheses[0]
        assert synthesis.forced and synthesis.frames_after_force_sent == 0


def test_frame_length_reads_the_header_of_masked_and_unmasked_frames() -> None:
    assert frame_length(b"") is None
    assert frame_length(b"\x81") is None
    assert frame_length(b"\x81\x05hello") == 7
    assert frame_length(b"\x81\x85" + b"mask" + b"hello") == 11
    assert frame_length(b"\x81\xfe\x01") is None, "16-bit length incomplete"
    assert frame_length(b"\x81\xfe\x01\x00") == 4 + 4 + 256
    assert frame_length(b"\x82\x7f" + (70_000).to_bytes(8, "big")) == 10 + 70_000
    assert frame_length(b"\x88\x82mask\x03\xe8") == 2 + 4 + 2
