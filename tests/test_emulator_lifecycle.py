"""The per-socket state machine: init first, both lifecycle readings, the queue, force, idling."""

from __future__ import annotations

import json

import pytest
from test_emulator_support import (
    SENTENCE,
    audio_frames,
    drain,
    open_socket,
    receive,
    receive_all,
    receive_until_final,
    send,
    silent_for,
    speak,
    text_frames,
)
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts.emulator import Faults, Lifecycle, TelnyxEmulator
from pipecat_telnyx_tts.emulator.lifecycle import Finish, Synthesize, TextSession
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    InitMessage,
    TextMessage,
)


async def expect_invalid_message(emu: TelnyxEmulator, *frames: str | bytes) -> None:
    async with open_socket(emu, init=False) as ws:
        for frame in frames:
            await ws.send(frame)
        messages = await receive_all(ws)
        assert messages == [ErrorMessage("Invalid message")]
        assert ws.close_code == 1011
    record = await emu.wait_for(lambda: emu.connections[-1].closed_at and emu.connections[-1])
    assert record.received[-1].message is None
    assert record.syntheses == []


@pytest.mark.parametrize(
    "first",
    [
        json.dumps({"text": "Hello there."}),
        json.dumps({"text": ""}),
        json.dumps({"text": " ", "flush": "yes"}),
        json.dumps({"force": True}),
        "not json",
        b"\x00\x01binary",
    ],
    ids=["text", "end", "bad-flush", "force", "not-json", "binary"],
)
async def test_anything_but_init_first_is_an_invalid_message(first: str | bytes) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        await expect_invalid_message(emu, first)


@pytest.mark.parametrize(
    "second",
    [
        json.dumps({"text": "Hi.", "voice_settings": {"voice_speed": 1.2}}),
        json.dumps({"flush": True}),
        json.dumps([1, 2]),
        b"binary",
    ],
    ids=["late-settings", "no-text", "array", "binary"],
)
async def test_malformed_frame_after_init_is_an_invalid_message(second: str | bytes) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        await expect_invalid_message(emu, json.dumps({"text": " "}), second)


async def test_voice_settings_are_accepted_per_provider_and_unknown_keys_ignored() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        settings = {"voice_speed": 1.5, "no_such_knob": 3}
        async with open_socket(emu, settings=settings) as ws:
            await speak(ws)
            messages = await receive_all(ws)
        assert isinstance(messages[-1], FinalMessage)
        assert audio_frames(messages)
        assert emu.received_messages(1)[0] == InitMessage(settings)


async def test_observed_synthesizes_only_at_flush_and_finals_only_at_the_end() -> None:
    async with TelnyxEmulator(signal="tone", lifecycle="observed", faults=Faults.fast()) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage("First sentence. "), TextMessage("Second one! "))
            assert await silent_for(ws, 0.3), "observed: text alone must not be synthesized"
            await send(ws, TextMessage("And a third?", flush=True))
            flushed = await drain(ws)
            assert audio_frames(flushed)
            assert not any(isinstance(m, FinalMessage) for m in flushed), "final before the end"
            await send(ws, EndMessage())
            messages = [*flushed, *await receive_all(ws)]
            assert ws.close_code == 1000
        finals = [m for m in messages if isinstance(m, FinalMessage)]
        assert finals == [FinalMessage()]
        assert messages[-1] == FinalMessage()
        assert [m.text for m in text_frames(messages)] == [
            "First sentence. Second one! And a third?"
        ]


async def test_observed_end_synthesizes_the_rest_then_final_then_close() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage("Unflushed text."), EndMessage())
            messages = await receive_all(ws)
            assert ws.close_code == 1000
        assert [m.text for m in text_frames(messages)] == ["Unflushed text."]
        assert messages[-1] == FinalMessage()


async def test_documented_synthesizes_at_sentence_ends_with_a_final_each_and_stays_open() -> None:
    async with (
        TelnyxEmulator(signal="tone", lifecycle="documented", faults=Faults.fast()) as emu,
        open_socket(emu) as ws,
    ):
        await send(ws, TextMessage("Hello there. How are"))
        first = await receive_until_final(ws)
        assert [m.text for m in text_frames(first)] == ["Hello there."]
        assert audio_frames(first)
        await send(ws, TextMessage(" you? Fine"))
        second = await receive_until_final(ws)
        assert [m.text for m in text_frames(second)] == ["How are you?"]
        assert await silent_for(ws, 0.2), "'Fine' has no sentence end yet"
        await send(ws, TextMessage(" thanks", flush=True))
        third = await receive_until_final(ws)
        assert [m.text for m in text_frames(third)] == ["Fine thanks"]
        await send(ws, EndMessage())
        rest = await receive_all(ws)
        assert rest == [FinalMessage()]
        assert ws.close_code == 1000


async def test_documented_end_with_text_left_gives_one_final() -> None:
    async with TelnyxEmulator(signal="tone", lifecycle="documented", faults=Faults.fast()) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage("No sentence end"), EndMessage())
            messages = await receive_all(ws)
        assert [m.text for m in text_frames(messages)] == ["No sentence end"]
        assert sum(isinstance(m, FinalMessage) for m in messages) == 1
        assert messages[-1] == FinalMessage()


async def test_lifecycle_is_read_when_a_socket_opens() -> None:
    async with (
        TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu,
        open_socket(emu) as observed,
    ):
        emu.lifecycle = "documented"
        async with open_socket(emu) as documented:
            await send(documented, TextMessage("Now. "))
            assert isinstance((await receive_until_final(documented))[-1], FinalMessage)
        await send(observed, TextMessage("Now. "))
        assert await silent_for(observed, 0.3)


async def test_syntheses_of_a_socket_run_one_after_another_in_order() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.05)) as emu:
        texts = ["One one one.", "Two two.", "Three three three three."]
        async with open_socket(emu) as ws:
            await send(ws, *(TextMessage(t, flush=True) for t in texts), EndMessage())
            await receive_all(ws)
        record = emu.connections[0]
        assert [s.text for s in record.syntheses] == texts
        for before, after in zip(record.syntheses, record.syntheses[1:], strict=False):
            assert before.finished_at is not None and after.first_audio_at is not None
            assert before.finished_at <= after.first_audio_at
        bearing = [f.message.text for f in record.sent if isinstance(f.message, AudioMessage)]
        assert [t for t in bearing if t is not None] == texts


@pytest.mark.parametrize("frames_after_force", [0, 3])
async def test_force_stops_the_synthesis_and_keeps_the_socket(frames_after_force: int) -> None:
    faults = Faults.fast(pace=4.0, chunk_ms=100, frames_after_force=frames_after_force)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage(SENTENCE * 3, flush=True))
            assert isinstance(await receive(ws), AudioMessage)
            await send(ws, ForceMessage())
            await emu.wait_for(lambda: emu.connections[0].syntheses[0].finished_at)
            await send(ws, TextMessage("After the force.", flush=True), EndMessage())
            messages = await receive_all(ws)
            assert ws.close_code == 1000
        record = emu.connections[0]
        interrupted, fresh = record.syntheses
        assert interrupted.forced and not fresh.forced
        force_at = next(f.t for f in record.received if isinstance(f.message, ForceMessage))
        late = [f for f in record.sent if force_at < f.t and isinstance(f.message, AudioMessage)]
        late_of_interrupted = [f for f in late if f.t < fresh.started_at]
        assert len(late_of_interrupted) == frames_after_force
        assert [m.text for m in text_frames(messages)][-1] == "After the force."
        assert messages[-1] == FinalMessage()
        assert not any(isinstance(m, ErrorMessage) for m in messages)


async def test_force_drops_queued_syntheses_and_buffered_text() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.5)) as emu:
        async with open_socket(emu) as ws:
            await send(
                ws,
                TextMessage("First.", flush=True),
                TextMessage("Second.", flush=True),
                TextMessage("Buffered, never flushed. "),
            )
            await emu.wait_for(lambda: len(emu.connections[0].syntheses) == 2)
            await send(ws, ForceMessage())
            emu.faults.first_audio_delay = 0
            await send(ws, TextMessage("Third.", flush=True), EndMessage())
            messages = await receive_all(ws)
        assert [m.text for m in text_frames(messages)] == ["Third."]
        first, second, third = emu.connections[0].syntheses
        assert first.forced and second.forced and not third.forced
        assert (first.chunks_sent, second.chunks_sent) == (0, 0)


async def test_inactivity_closes_cleanly_after_idle_seconds() -> None:
    async with (
        TelnyxEmulator(signal="tone", faults=Faults.fast(inactivity_timeout=0.3)) as emu,
        open_socket(emu) as ws,
    ):
        await send(ws, TextMessage("Keep me", flush=True))
        messages = await receive_all(ws)
        assert audio_frames(messages)
        assert ws.close_code == 1000
        assert ws.close_reason == "inactivity timeout"
        assert not any(isinstance(m, FinalMessage) for m in messages)


async def test_inactivity_timeout_query_parameter_overrides_the_fault() -> None:
    async with (
        TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu,
        open_socket(emu, inactivity_timeout=0.3) as ws,
    ):
        with pytest.raises(ConnectionClosed):
            await receive(ws, timeout=3)
        assert ws.close_code == 1000
        assert ws.close_reason == "inactivity timeout"


async def test_text_after_end_of_sequence_is_not_synthesized() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.2)) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage("Last.", flush=True), EndMessage())
            await send(ws, TextMessage("Too late.", flush=True))
            messages = await receive_all(ws)
        assert [m.text for m in text_frames(messages)] == ["Last."]


def test_text_session_rules_without_a_socket() -> None:
    documented = TextSession(Lifecycle.DOCUMENTED)
    assert documented.on_text("Pi is 3.14 and e", flush=False) == []
    assert documented.on_text(" is 2.71. Next", flush=False) == [
        Synthesize("Pi is 3.14 and e is 2.71.", final_after=True)
    ]
    documented.on_force()
    assert documented.on_end() == [Finish(send_final=True)]
    assert documented.on_text("More.", flush=True) == []
    observed = TextSession(Lifecycle.OBSERVED)
    assert observed.on_text("A. B! ", flush=False) == []
    assert observed.on_end() == [Synthesize("A. B! ", final_after=False), Finish(True)]


async def test_inactivity_timeout_zero_never_closes() -> None:
    async with (
        TelnyxEmulator(signal="tone", faults=Faults.fast(inactivity_timeout=0)) as emu,
        open_socket(emu) as ws,
    ):
        assert await silent_for(ws, 0.3)
        await speak(ws)
        assert (await receive_all(ws))[-1] == FinalMessage()
