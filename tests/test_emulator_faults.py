"""Injected faults and latency, and a prompt shutdown whatever is in flight."""

from __future__ import annotations

import asyncio
import time

import pytest
from test_emulator_support import (
    AUTH,
    SENTENCE,
    audio_frames,
    open_socket,
    receive,
    receive_all,
    send,
    speak,
    ws_url,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ErrorMessage,
    FinalMessage,
    InitMessage,
    TextMessage,
)

LONG = SENTENCE * 4
"""About 12 s of audio: 48 chunks of 250 ms."""


async def test_error_after_chunks_sends_the_error_then_closes_1011() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults(error_after_chunks=2)) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, LONG)
            messages = await receive_all(ws)
            assert ws.close_code == 1011
        assert messages[-1] == ErrorMessage("Error in audio response")
        assert len(audio_frames(messages)) == 2
        assert not any(isinstance(m, FinalMessage) for m in messages)


async def test_error_after_zero_chunks_comes_before_any_audio() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults(error_after_chunks=0)) as emu:
        async with open_socket(emu, "aws.Polly.Generative.Lucia") as ws:
            await speak(ws)
            messages = await receive_all(ws)
        assert messages == [ErrorMessage("Error in audio response")]


async def test_drop_after_chunks_ends_the_connection_without_a_close_frame() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults(drop_after_chunks=1)) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, LONG)
            messages = []
            with pytest.raises(ConnectionClosedError) as caught:
                while True:
                    messages.append(await receive(ws))
            assert caught.value.rcvd is None, "an abrupt drop has no close frame"
        assert len(audio_frames(messages)) == 1
        record = await emu.wait_for(lambda: emu.connections[0].closed_at and emu.connections[0])
        assert record.close_code == 1006


async def test_fault_count_limits_how_often_faults_fire() -> None:
    faults = Faults(error_after_chunks=1, fault_count=1)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await speak(ws)
            assert isinstance((await receive_all(ws))[-1], ErrorMessage)
        assert faults.fault_count == 0
        async with open_socket(emu) as ws:
            await speak(ws)
            messages = await receive_all(ws)
            assert ws.close_code == 1000
        assert messages[-1] == FinalMessage()


async def test_faults_can_change_between_turns() -> None:
    async with TelnyxEmulator(signal="tone") as emu:
        async with open_socket(emu) as ws:
            await speak(ws)
            assert (await receive_all(ws))[-1] == FinalMessage()
        emu.faults.drop_after_chunks = 0
        async with open_socket(emu) as ws:
            await speak(ws)
            assert await receive_all(ws) == []
            assert ws.close_code == 1006


async def test_first_audio_delay_holds_back_each_uncached_synthesis() -> None:
    async with (
        TelnyxEmulator(signal="tone", faults=Faults(first_audio_delay=0.3)) as emu,
        open_socket(emu) as ws,
    ):
        start = time.perf_counter()
        await send(ws, TextMessage("Delayed once.", flush=True))
        first = await receive(ws)
        while not (isinstance(first, AudioMessage) and first.audio):
            first = await receive(ws)
        assert time.perf_counter() - start >= 0.3
        assert first.time_to_first_audio_ms is not None
        assert first.time_to_first_audio_ms >= 300


async def paced_turn_seconds(emu: TelnyxEmulator) -> tuple[float, float]:
    """(seconds from flush to the last audio, seconds of audio) for one sentence."""
    async with open_socket(emu, disable_cache=True) as ws:
        start = time.perf_counter()
        await speak(ws, "A sentence of about one second.")
        last = start
        for message in await receive_all(ws):
            if isinstance(message, AudioMessage) and message.audio:
                last = time.perf_counter()
    synthesis = emu.connections[-1].syntheses[0]
    return last - start, synthesis.audio_seconds


async def test_pace_one_streams_in_about_real_time_and_none_much_faster() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults(pace=1.0)) as emu:
        paced, seconds = await paced_turn_seconds(emu)
        assert seconds >= 1.0
        assert paced >= 0.8 * seconds
        emu.faults.pace = 2.0
        double, _ = await paced_turn_seconds(emu)
        assert 0.4 * seconds <= double < paced
        emu.faults.pace = None
        unpaced, _ = await paced_turn_seconds(emu)
        assert unpaced < 0.3 * seconds


async def test_shutdown_is_prompt_with_sockets_open_and_audio_in_flight() -> None:
    emu = TelnyxEmulator(signal="tone", faults=Faults(pace=0.5))
    await emu.start()
    client = await connect(ws_url(emu), additional_headers=AUTH)
    await send(client, InitMessage(), TextMessage(LONG, flush=True))
    assert isinstance(await receive(client), AudioMessage)
    emu.faults.upgrade_delay = 60
    pending = asyncio.create_task(connect(ws_url(emu), additional_headers=AUTH).__aenter__())
    await emu.wait_for(lambda: len(emu.connections) == 2)
    start = time.perf_counter()
    await emu.stop()
    assert time.perf_counter() - start < 3.0
    await receive_all(client)
    assert client.close_code == 1001
    with pytest.raises(InvalidStatus) as refused:
        await pending
    assert refused.value.response.status_code == 503
    leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert leftovers == []
    assert all(c.closed_at is not None for c in emu.connections)
