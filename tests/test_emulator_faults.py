"""Injected faults and latency, and a prompt shutdown whatever is in flight."""

from __future__ import annotations

import asyncio
import itertools
import math
import socket
import time

import pytest
from test_emulator_support import (
    AUTH,
    SENTENCE,
    audio_frames,
    audio_of,
    open_socket,
    receive,
    receive_all,
    receive_until_final,
    send,
    speak,
    ws_url,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    InitMessage,
    TextMessage,
)

LONG = SENTENCE * 4
"""About 12 s of audio: 48 chunks of 250 ms."""


async def test_error_after_chunks_sends_the_error_then_closes_1011() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(error_after_chunks=2)) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, LONG)
            messages = await receive_all(ws)
            assert ws.close_code == 1011
        assert messages[-1] == ErrorMessage("Error in audio response")
        assert len(audio_frames(messages)) == 2
        assert not any(isinstance(m, FinalMessage) for m in messages)


async def test_error_after_zero_chunks_comes_before_any_audio() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(error_after_chunks=0)) as emu:
        async with open_socket(emu, "aws.Polly.Generative.Lucia") as ws:
            await speak(ws)
            messages = await receive_all(ws)
        assert messages == [ErrorMessage("Error in audio response")]


async def test_drop_after_chunks_ends_the_connection_without_a_close_frame() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(drop_after_chunks=1)) as emu:
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
    faults = Faults.fast(error_after_chunks=1, fault_count=1)
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
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
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
        TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.3)) as emu,
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
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(pace=1.0)) as emu:
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
    emu = TelnyxEmulator(signal="tone", faults=Faults.fast(pace=0.5))
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


async def test_close_after_chunks_closes_with_the_code_and_no_error_frame() -> None:
    faults = Faults.fast(close_after_chunks=2, close_code=1008)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, LONG)
            messages = await receive_all(ws)
            assert ws.close_code == 1008
        assert len(audio_frames(messages)) == 2
        assert not any(isinstance(m, ErrorMessage | FinalMessage) for m in messages)
        record = await emu.wait_for(lambda: emu.connections[0].closed_at and emu.connections[0])
        assert record.close_code == 1008
        assert emu.faults.close_code == 1008


async def test_stall_after_chunks_goes_silent_but_answers_the_clients_close() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(stall_after_chunks=2)) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, LONG)
            record = emu.connections[0]
            # The stream ends at the stall; the end of sequence behind it never gets its turn.
            synthesis = await emu.wait_for(
                lambda: record.syntheses and record.syntheses[0].finished_at and record.syntheses[0]
            )
            assert synthesis.chunks_sent == 2 and not synthesis.forced
            await send(ws, TextMessage("Anything?", flush=True))
            await emu.wait_for(lambda: len(record.received) == 4)
            assert record.closed_at is None
            assert not any(isinstance(f.message, FinalMessage) for f in record.sent)
            await ws.close()
            assert ws.close_code == 1000
        closed = await emu.wait_for(lambda: record.closed_at and record)
        assert closed.close_code == 1000
        assert len(record.syntheses) == 1
        assert (
            sum(isinstance(f.message, AudioMessage) and bool(f.message.audio) for f in record.sent)
            == 2
        )


def audio_sends(record) -> list[float]:
    """When each audio chunk of a connection left the emulator."""
    return [f.t for f in record.sent if isinstance(f.message, AudioMessage) and f.message.audio]


async def test_stall_ms_pauses_once_halfway_then_carries_on_at_the_same_pace() -> None:
    # Paced at 8x: 48 chunks of 250 ms leave over 1.5 s; the stall adds 0.6 s halfway, and the
    # chunks after it keep their pace rather than catching up.
    faults = Faults.fast(pace=8.0, stall_ms=600)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu, open_socket(emu) as ws:
        await speak(ws, LONG)
        messages = await receive_all(ws)
    record = emu.connections[0]
    (synthesis,) = record.syntheses
    sends = audio_sends(record)
    n = synthesis.chunks_sent
    assert len(sends) == n >= 40 and not synthesis.forced
    assert any(isinstance(m, FinalMessage) for m in messages), "the synthesis completes"
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    # The one long gap is before chunk n // 2 (the gap list's index n // 2 - 1).
    assert max(range(len(gaps)), key=gaps.__getitem__) == n // 2 - 1
    assert gaps[n // 2 - 1] >= 0.6
    # The chunks after the stall still come at 8x: they span what their audio allows at that pace.
    after = synthesis.audio_seconds * (n - n // 2 - 1) / n / 8.0
    assert sends[-1] - sends[n // 2] >= 0.8 * after
    assert len(audio_of(messages)) > 0


async def test_a_force_during_a_stall_ends_it_and_sends_nothing_more() -> None:
    faults = Faults.fast(stall_ms=20_000)
    async with (
        TelnyxEmulator(signal="tone", faults=faults) as emu,
        open_socket(emu, audio_format="linear16", sample_rate=16000) as ws,
    ):
        await speak(ws, LONG)
        record = emu.connections[0]
        synthesis = await emu.wait_for(lambda: record.syntheses and record.syntheses[0])
        await emu.wait_for(lambda: synthesis.audio_seconds > 0)
        half = math.ceil(synthesis.audio_seconds * 16000 / 4000) // 2
        await emu.wait_for(lambda: synthesis.chunks_sent == half)
        await send(ws, ForceMessage())
        await emu.wait_for(lambda: synthesis.finished_at)
        assert synthesis.forced and synthesis.chunks_sent == half
        assert synthesis.finished_at - synthesis.started_at < 20


async def test_stall_ms_delays_the_only_chunk_of_a_one_chunk_synthesis() -> None:
    # Concatenated delivery sends a synthesis as one frame: halfway through one chunk is before
    # it, so its first audio comes that much later.
    faults = Faults.fast(stall_ms=500)
    async with (
        TelnyxEmulator(signal="tone", faults=faults) as emu,
        open_socket(emu, "aws.Polly.Generative.Lucia") as ws,
    ):
        start = time.perf_counter()
        await speak(ws, "Delayed once.")
        messages = await receive_all(ws)
        record = emu.connections[0]
    (first,) = audio_sends(record)
    assert first - start >= 0.5
    assert len(audio_frames(messages)) == 1
    assert audio_frames(messages)[0].time_to_first_audio_ms >= 500


async def test_stop_reading_after_chunks_streams_on_but_reads_nothing_more() -> None:
    faults = Faults.fast(stop_reading_after_chunks=2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu, open_socket(emu) as ws:
        await send(ws, TextMessage(LONG, flush=True))
        record = emu.connections[0]
        # The synthesis already under way plays out; the text sent after the stop, however
        # much of it, is never read: sends back up once the path is full.
        synthesis = await emu.wait_for(
            lambda: record.syntheses and record.syntheses[0].finished_at and record.syntheses[0]
        )
        assert synthesis.chunks_sent > 40 and not synthesis.forced
        ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                for _ in range(10_000):
                    await send(ws, TextMessage("Never read. " * 10, flush=True))
        assert len(record.received) == 2
        assert len(record.syntheses) == 1
        ws.transport.abort()  # no close handshake: the server would never read it


async def test_inject_after_chunks_puts_the_frames_among_the_audio() -> None:
    faults = Faults.fast(inject_frames=['{"x": 1}'], inject_after_chunks=2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await speak(ws, LONG)
            async for _ in ws:
                pass
        sent = [f.raw for f in emu.connections[0].sent]
        at = sent.index('{"x": 1}')
        audio = [f for f in emu.connections[0].sent[:at] if isinstance(f.message, AudioMessage)]
        assert len([f for f in audio if f.message.audio]) == 2
        assert faults.inject_frames == []


@pytest.mark.parametrize("fault", ["close_after_chunks", "stall_after_chunks"])
async def test_fault_count_governs_closes_and_stalls_too(fault: str) -> None:
    faults = Faults.fast(fault_count=1, **{fault: 1})
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await speak(ws)
            await emu.wait_for(lambda: faults.fault_count == 0)
        async with open_socket(emu) as ws:
            await speak(ws)
            messages = await receive_all(ws)
            assert ws.close_code == 1000
        assert messages[-1] == FinalMessage()


async def test_keep_open_after_final_leaves_the_close_to_the_inactivity_timeout() -> None:
    faults = Faults.fast(keep_open_after_final=True, inactivity_timeout=0.3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await speak(ws)
            messages = await receive_all(ws)
            assert messages[-1] == FinalMessage()
            assert (ws.close_code, ws.close_reason) == (1000, "inactivity timeout")
        record = await emu.wait_for(lambda: emu.connections[0].closed_at and emu.connections[0])
        final_at = next(f.t for f in record.sent if isinstance(f.message, FinalMessage))
        end_at = record.received[-1].t
        assert record.closed_at is not None and record.closed_at - end_at >= 0.3
        assert final_at < record.closed_at


async def test_keep_open_after_final_still_answers_the_clients_close() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(keep_open_after_final=True)) as emu:
        async with open_socket(emu) as ws:
            await speak(ws)
            assert (await receive_until_final(ws))[-1] == FinalMessage()
            # Text after the end of sequence is still not spoken, on a socket that stays open.
            await send(ws, TextMessage("Still there?", flush=True))
            record = emu.connections[0]
            await emu.wait_for(lambda: len(record.received) == 4)
            assert record.closed_at is None and len(record.syntheses) == 1
        assert ws.close_code == 1000
        closed = await emu.wait_for(lambda: record.closed_at and record)
        assert closed.close_code == 1000


async def test_inactivity_closes_a_socket_that_had_its_init_and_no_text() -> None:
    faults = Faults.fast(inactivity_timeout=0.3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            assert await receive_all(ws) == []
            assert (ws.close_code, ws.close_reason) == (1000, "inactivity timeout")
        record = await emu.wait_for(lambda: emu.connections[0].closed_at and emu.connections[0])
        assert [type(f.message) for f in record.received] == [InitMessage]
        assert record.syntheses == []
        assert record.closed_at - record.received[0].t >= 0.3


@pytest.mark.parametrize("untagged", [False, True])
async def test_mp3_files_decode_to_the_length_of_the_synthesis(untagged: bool) -> None:
    text = "The first sentence is here. Then comes a second one! Is there a third? There is."
    faults = Faults.fast(mp3_files=3, mp3_untagged=untagged)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu, open_socket(emu) as ws:
        await speak(ws, text)
        messages = await receive_all(ws)
    chunks = [m.audio for m in audio_frames(messages) if m.audio]
    assert sum(chunk.startswith(b"ID3") for chunk in chunks) == 3
    assert b"".join(chunks).count(b"ID3") == 3, "every tag opens a frame"
    assert b"".join(chunks).count(b"Info") == (0 if untagged else 3), "an Info frame a file"
    assert len(chunks) > 3, "files span several frames"
    synthesis = emu.connections[0].syntheses[0]
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    pcm = b"".join(decoder.feed(chunk) for chunk in chunks) + decoder.flush()
    decoded = len(pcm) / 2 - round(synthesis.audio_seconds * 24000)
    # Tagged: exactly the synthesized audio. Untagged: each file's padding, under a frame (576
    # samples at 24 kHz), stays, as nothing records it.
    assert (0 <= decoded < 3 * 576) if untagged else decoded == 0


async def test_default_faults_are_live_like_timing_and_fast_drops_it() -> None:
    fast = Faults.fast(chunk_ms=100)
    assert (fast.upgrade_delay, fast.first_audio_delay, fast.pace, fast.sentence_pause_ms) == (
        0.0,
        0.0,
        None,
        0,
    )
    assert fast.chunk_ms == 100 and fast.inactivity_timeout == Faults().inactivity_timeout == 20.0
    text = "Hello there. How are you today?"
    async with TelnyxEmulator(signal="tone") as emu:
        assert emu.faults == Faults()
        async with open_socket(emu, audio_format="linear16", disable_cache=True) as ws:
            start = time.perf_counter()
            await speak(ws, text)
            messages = await receive_all(ws)
            took = time.perf_counter() - start
        emu.faults = Faults.fast()
        async with open_socket(emu, audio_format="linear16", disable_cache=True) as ws:
            await speak(ws, text)
            plain = await receive_all(ws)
    realistic, quick = (c.syntheses[0] for c in emu.connections)
    first = audio_frames(messages)[0]
    assert first.time_to_first_audio_ms is not None and first.time_to_first_audio_ms >= 250
    # Released at 2.4x real time after the first-audio delay.
    assert took >= 0.25 + realistic.audio_seconds / 2.4 * 0.9
    # One 200 ms pause between the two sentences.
    assert realistic.audio_seconds > quick.audio_seconds
    assert len(audio_of(messages)) > len(audio_of(plain))
