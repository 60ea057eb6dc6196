"""One socket and its turn, without pipecat: what a Lane passes on, over a real loopback socket."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect

from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.lane import Lane
from pipecat_telnyx_tts.protocol import AudioMessage, ProtocolError, ServerMessage
from pipecat_telnyx_tts.request import Request
from pipecat_telnyx_tts.turn import Turn
from tests.socket_helpers import default_request


class Recorder:
    """A lane's owner that writes down what it is told."""

    def __init__(self) -> None:
        self.messages: list[ServerMessage] = []
        self.ended: list[str] = []

    async def lane_ready(self, lane: Lane) -> None:
        pass

    async def lane_message(self, lane: Lane, message: ServerMessage) -> None:
        self.messages.append(message)

    async def lane_malformed(self, lane: Lane, error: ProtocolError) -> None:
        pass

    async def lane_quiet(self, lane: Lane, seconds: float) -> None:
        pass

    async def lane_ended(self, lane: Lane, *, clean: bool, detail: str) -> None:
        self.ended.append(detail)

    async def lane_next_attempt(self, lane: Lane) -> float | None:
        return 0.0

    async def lane_connect_failed(self, lane: Lane, error: Exception) -> None:
        raise AssertionError(f"could not connect: {error}")


async def test_nothing_read_after_this_client_began_closing_is_passed_on():
    """The server still sends 30 frames after the force, before it answers the close."""
    faults = Faults.fast(pace=2.0, chunk_ms=40, frames_after_force=30)
    async with TelnyxEmulator(signal="marker", faults=faults) as emu:

        async def open_socket(req: Request) -> ClientConnection:
            query = req.params.to_query()
            headers = {"Authorization": "Bearer k"}
            return await connect(f"{emu.url}?{query}", additional_headers=headers)

        owner = Recorder()
        lane = Lane(default_request(), owner, open_socket, send_timeout=5.0)
        turn = Turn(token_mode=False)
        lane.bind("turn-1", turn, AudioDecoder(pcm_rate=16000, out_rate=16000))
        lane.task = asyncio.create_task(lane.run())
        await lane.send(turn.text("A long answer that is cut off by the caller early on."))

        def audio_heard() -> int:
            return sum(isinstance(m, AudioMessage) and bool(m.audio) for m in owner.messages)

        await emu.wait_for(lambda: audio_heard() >= 2)
        await lane.send(turn.interrupt())
        heard_before_close = len(owner.messages)
        assert lane.begin_close()
        await lane.finish_close()

        [record] = [c for c in emu.connections if c.syntheses]
        assert record.syntheses[0].frames_after_force_sent == 30
        assert len(owner.messages) == heard_before_close
        assert owner.ended == [], "a close this client started was reported as the server's"
