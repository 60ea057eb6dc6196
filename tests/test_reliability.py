"""The service's promises through the faults a live call meets, in real pipelines over loopback.

Never silently dead, no text lost without a word, nothing left running: each test below plays
one fault the emulator can stage and checks what the caller would have heard and what is left.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import socket
import time

import pytest
from pipecat.frames.frames import (
    CancelFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSStoppedFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.services.tts_service import TextAggregationMode
from pipecat.tests.utils import SleepFrame

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.policy import Limits
from pipecat_telnyx_tts.protocol import EndMessage, TextMessage
from tests.service_helpers import (
    Push,
    Until,
    audio_frames,
    audio_seconds,
    errors,
    gated,
    llm_turn,
    make_tts,
    markers,
    run,
    started_and_stopped,
    wire_texts,
)
from tests.test_fault_support import captured_logs

QUICK = Limits(quick_close=0.3, bind_margin=0.1, refresh_margin=0.3)
"""Margins for a server that closes idle sockets after 0.6 s: kept-warm spares turn over fast."""


def quick_spares(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service asks for a 0.6 s idle window, which the emulator grants, and keeps spares."""
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", QUICK)
    monkeypatch.setattr(TelnyxTTSService, "INACTIVITY_TIMEOUT_S", 0.6)


def held(tts: TelnyxTTSService) -> list[object]:
    """Every socket and close the service still holds."""
    s = tts._sockets
    return [*s.turns.values(), *s.spares, *s.closing]


def texts_on(emu: TelnyxEmulator, index: int) -> str:
    return "".join(m.text for m in emu.received_messages(index) if isinstance(m, TextMessage))


def synthesized(emu: TelnyxEmulator) -> str:
    return " ".join(s.text.strip() for c in emu.connections for s in c.syntheses)


def emulated_seconds(emu: TelnyxEmulator) -> float:
    return sum(s.audio_seconds for c in emu.connections for s in c.syntheses)


def open_sockets(emu: TelnyxEmulator) -> list[int]:
    return [c.index for c in emu.connections if c.status == 101 and c.closed_at is None]


# ----------------------------------------------------------------------------- 1. shutdown


@pytest.mark.parametrize("ending", ["end", "cancel"])
async def test_after_the_pipeline_nothing_is_opened_left_open_or_pushed(ending, monkeypatch):
    """Spares turn over (retired by this client) during the call; afterwards the server's idle
    timeout would close anything left and any reconnect loop would open a socket."""
    quick_spares(monkeypatch)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, keep_warm=True)
        late: list[ErrorFrame] = []
        frames: list[Frame] = [*llm_turn("One sentence."), SleepFrame(1.2)]
        if ending == "cancel":
            frames.append(CancelFrame())
        with captured_logs() as logs:
            _, up = await run(tts, frames)
            ended_at = time.perf_counter()
            count = len(emu.connections)

            original = tts.push_error_frame

            async def record(error, force_treat_as_permanent=False):
                late.append(error)
                await original(error, force_treat_as_permanent)

            tts.push_error_frame = record  # type: ignore[method-assign]
            await emu.wait_for(lambda: not open_sockets(emu), timeout=5.0)
            # Longer than the server's idle timeout: a socket left behind would be closed by the
            # server by now, and a service still listening would have reconnected.
            await asyncio.sleep(1.0)
        assert not errors(up)
        assert len(emu.connections) == count >= 3, "spares should have turned over"
        assert all(c.opened_at < ended_at for c in emu.connections)
        assert open_sockets(emu) == []
        assert late == []
        assert held(tts) == []
        assert tts._policy.backoff.failures == 0, "a retired spare was counted as a failure"
        assert not [line for line in logs if "dangling" in line.message.lower()]


async def test_many_pipelines_with_barge_ins_and_mid_turn_ends_leave_nothing_behind():
    """20 services x 3 turns: a barge-in, a turn that completes, and an EndFrame mid-turn."""
    async with TelnyxEmulator(signal="marker", faults=Faults.fast(pace=4.0, chunk_ms=40)) as emu:
        with captured_logs() as logs:
            for _ in range(20):
                tts = make_tts(emu)
                frames: list[Frame] = [
                    LLMFullResponseStartFrame(),
                    LLMTextFrame("This answer is cut off by the caller. "),
                    LLMTextFrame("It would have gone on. "),
                    Until(lambda: any(s.chunks_sent for c in emu.connections for s in c.syntheses)),
                    Push(InterruptionFrame()),
                    *llm_turn("A full answer."),
                    LLMFullResponseStartFrame(),
                    LLMTextFrame("The call ends in the middle of this one. "),
                    LLMTextFrame("And these last words"),
                ]
                _, up = await asyncio.wait_for(run(gated(tts), frames), 15.0)
                assert not errors(up)
                assert held(tts) == []
            await emu.wait_for(lambda: not open_sockets(emu), timeout=5.0)
        assert not [line for line in logs if "dangling" in line.message.lower()]
        assert "these last words" in synthesized(emu)


async def test_text_that_arrives_after_shutdown_opens_no_socket_and_is_named():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        await run(tts, llm_turn("Spoken before the end."))
        count = len(emu.connections)
        with captured_logs() as logs:
            async for _ in tts.run_tts("Too late to speak.", "a-late-context"):
                pass
        assert len(emu.connections) == count
        assert any(
            line.level == "WARNING" and "not spoken: [Too late to speak.]" in line.message
            for line in logs
        )


# ----------------------------------------------------------------------------- 2. EndFrame


async def test_an_end_frame_mid_turn_speaks_the_rest_then_stops(monkeypatch):
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(pace=8.0)) as emu:
        tts = make_tts(emu)
        stop_called: list[float] = []
        original_stop = tts.stop

        async def stop(frame):
            stop_called.append(time.perf_counter())
            await original_stop(frame)

        monkeypatch.setattr(tts, "stop", stop)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("The first sentence is spoken. "),
            LLMTextFrame("And the last words"),
        ]
        start = time.perf_counter()
        down, up = await run(tts, frames)
        elapsed = time.perf_counter() - start
        assert not errors(up)
        turn = next(c for c in emu.connections if texts_on(emu, c.index))
        assert [t for t, _ in wire_texts(emu.received_messages(turn.index))] == [
            "The first sentence is spoken.",
            "And the last words",
        ]
        assert isinstance(emu.received_messages(turn.index)[-1], EndMessage)
        assert "And the last words" in synthesized(emu)
        assert audio_seconds(down) == pytest.approx(emulated_seconds(emu), abs=0.01)
        assert started_and_stopped(down) == (1, 1)
        assert all(c.opened_at < stop_called[0] for c in emu.connections)
        # Paced at 8x, the turn plays out in well under a second; waiting for pipecat's idle
        # timeout (12 s) is what this replaced.
        assert elapsed < 6.0


# ----------------------------------------------------------------------------- 3. outages


@pytest.mark.parametrize("refusal", [429, 500, 503])
async def test_a_short_outage_is_ridden_out_within_the_turn(refusal):
    async with TelnyxEmulator(
        signal="tone", faults=Faults.fast(refuse_status=refusal, refuse_count=3)
    ) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn("Spoken once Telnyx answers."))
        assert synthesized(emu) == "Spoken once Telnyx answers."
        assert audio_seconds(down) == pytest.approx(emulated_seconds(emu), abs=0.01)
        assert [c.status for c in emu.connections][:3] == [refusal] * 3
        assert not errors(up), "a turn that was spoken after all owes the app no error"
        assert tts.is_usable


async def test_a_spare_refused_for_a_passing_reason_is_retried_quietly():
    """No turn is affected: a 503 is logged and retried with backoff, and nothing is pushed."""
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(refuse_status=503)) as emu:
        tts = make_tts(emu)
        _, up = await run(gated(tts), [Until(lambda: len(emu.connections) >= 3)])
        assert not errors(up)
        assert tts.is_usable
        gaps = [b.opened_at - a.opened_at for a, b in itertools.pairwise(emu.connections)]
        assert gaps[1] > gaps[0] * 0.9, f"the retries did not back off: {gaps}"


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_a_spare_refused_for_good_is_reported_once_and_never_retried(status):
    """A turn would fail the same way: the app hears of it at once, and Telnyx is not asked
    again until the settings change."""
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(refuse_status=status)) as emu:
        tts = make_tts(emu)
        _, up = await run(gated(tts), [Until(lambda: not tts.is_usable), SleepFrame(0.5)])
        reported = [e for e in errors(up) if f"HTTP {status}" in e.error]
        assert len(reported) == 1, [e.error for e in errors(up)]
        assert reported[0].category.is_permanent
        assert len(emu.connections) == 1


@pytest.mark.parametrize("outage", ["503", "refused", "hung"])
async def test_after_an_outage_that_wrote_the_service_off_it_speaks_again(outage, monkeypatch):
    """Three turns fail to connect, pipecat writes the service off for its silent contexts;
    once Telnyx answers again, the next turn is spoken."""
    monkeypatch.setattr(
        TelnyxTTSService,
        "POLICY_LIMITS",
        Limits(turn_budget=0.4, turn_cap=0.2, spare_cap=0.5, quick_close=0.5),
    )
    monkeypatch.setattr(TelnyxTTSService, "CONNECT_TIMEOUT_S", 0.3)
    faults = Faults.fast()
    if outage == "503":
        faults = Faults.fast(refuse_status=503)
    elif outage == "hung":
        faults = Faults.fast(hang_upgrades=10_000)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        if outage == "refused":
            await emu.stop()  # nothing listens on the port: connections are refused

        def recover() -> None:
            emu.faults.refuse_status = None
            emu.faults.hang_upgrades = 0

        tts = make_tts(emu)
        frames: list[Frame] = []
        for i in range(3):
            frames += [*llm_turn(f"Lost turn {i}."), SleepFrame(0.1)]
        restarting = None
        if outage == "refused":

            async def restart() -> None:
                while tts.is_usable:
                    await asyncio.sleep(0.01)
                await emu.start()

            restarting = asyncio.create_task(restart())
            frames.append(Until(lambda: not tts.is_usable))
        else:
            frames.append(Until(lambda: not tts.is_usable, then=recover))
        frames += [Until(lambda: tts.is_usable, timeout=15.0), *llm_turn("Back again.")]
        down, up = await run(gated(tts), frames)
        if restarting is not None:
            await restarting
        assert "Back again." in synthesized(emu)
        assert "Lost turn" not in synthesized(emu)
        assert audio_seconds(down) == pytest.approx(emulated_seconds(emu), abs=0.01)
        assert tts.is_usable
        messages = " ".join(e.error for e in errors(up))
        for i in range(3):
            assert f"Lost turn {i}." in messages, "a lost turn's text must be named"


# ----------------------------------------------------------------------------- 4. idle close


async def test_a_spare_that_idles_out_before_the_turns_text_is_not_used(monkeypatch):
    """The server's idle window is shorter than the service believes (it asked for none)."""
    monkeypatch.setattr(TelnyxTTSService, "INACTIVITY_TIMEOUT_S", None)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(inactivity_timeout=0.5)) as emu:
        tts = make_tts(emu)
        frames = [
            LLMFullResponseStartFrame(),
            # The LLM thinks for longer than the server lets the bound socket idle.
            Until(lambda: emu.connections and emu.connections[0].close_reason is not None),
            LLMTextFrame("Every word "),
            LLMTextFrame("of this arrives. "),
            LLMTextFrame("And this."),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(gated(tts), frames)
        assert not errors(up)
        assert emu.connections[0].close_reason == "inactivity timeout"
        assert texts_on(emu, 1) == ""
        spoken = [c for c in emu.connections if texts_on(emu, c.index)]
        assert len(spoken) == 1
        assert [t for t, _ in wire_texts(emu.received_messages(spoken[0].index))] == [
            "Every word of this arrives.",
            "And this.",
        ]
        assert audio_seconds(down) == pytest.approx(emulated_seconds(emu), abs=0.01)


# ----------------------------------------------------------------------------- 5. slow sentence


async def test_documented_reading_a_slow_next_sentence_is_waited_for(monkeypatch):
    """The final of sentence 1 follows end of sequence; sentence 2's audio comes much later."""
    monkeypatch.setattr(TelnyxTTSService, "FINAL_GRACE_S", 0.2)
    faults = Faults.fast(first_audio_delay=0.8, keep_open_after_final=True)
    async with TelnyxEmulator(lifecycle="documented", signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn("The first one. ", "The second one."))
        assert not errors(up)
        assert synthesized(emu) == "The first one. The second one."
        assert audio_seconds(down) == pytest.approx(emulated_seconds(emu), abs=0.01)
        assert started_and_stopped(down) == (1, 1)


async def test_audio_that_never_comes_is_named_in_an_error(monkeypatch):
    monkeypatch.setattr(TelnyxTTSService, "FINAL_GRACE_S", 0.2)
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 0.8)
    faults = Faults.fast(keep_open_after_final=True)
    async with TelnyxEmulator(lifecycle="documented", signal="tone", faults=faults) as emu:
        # Tokens, so that the first sentence goes out without waiting for the second.
        tts = make_tts(emu, text_aggregation_mode=TextAggregationMode.TOKEN)

        def first_done() -> bool:
            return any(s.finished_at for c in emu.connections for s in c.syntheses)

        def stall_the_rest() -> None:
            emu.faults.stall_after_chunks = 0

        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("The first one. "),
            Until(first_done, then=stall_the_rest),
            LLMTextFrame("The second one."),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(gated(tts), frames)
        [error] = errors(up)
        assert "not played: [The second one.]" in error.error
        assert started_and_stopped(down) == (1, 1)


# ----------------------------------------------------------------------------- 7. stalled send


async def test_a_send_that_stalls_aborts_the_socket_and_fails_the_turn(monkeypatch):
    monkeypatch.setattr(TelnyxTTSService, "SEND_TIMEOUT_S", 0.5)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        # Tokens go straight to the socket (sentence aggregation would scan megabytes first),
        # and without word timestamps: pipecat's word tracker diffs each sentence's text
        # quadratically, and this one sentence is 200 KB.
        tts = make_tts(emu, text_aggregation_mode=TextAggregationMode.TOKEN, word_timestamps=False)

        def server_stops_reading() -> None:
            # Small socket buffers both ends, so that a few hundred kilobytes fill the path.
            for lane in tts._sockets.turns.values():
                sock = lane._ws.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            for connection in emu._open:
                sock = connection.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                connection.transport.pause_reading()

        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("A first sentence. "),
            Until(lambda: any(s.chunks_sent for c in emu.connections for s in c.syntheses)),
            Until(lambda: True, then=server_stops_reading),
            # Far more than the socket buffers hold while nobody reads.
            *(LLMTextFrame("word " * 2_000) for _ in range(20)),
            LLMFullResponseEndFrame(),
        ]
        with captured_logs() as logs:
            down, up = await asyncio.wait_for(run(gated(tts), frames), 15.0)
        [error] = errors(up)
        assert "stalled" in error.error
        assert started_and_stopped(down) == (1, 1)
        assert any("not spoken" in line.message for line in logs if line.level == "WARNING")
        assert not tts._sockets.turns


# ----------------------------------------------------------------------------- 8. decoder


async def test_audio_that_cannot_be_decoded_fails_the_turn_once_at_once():
    not_wave = b"RIFF\x24\x00\x00\x00WAVX" + bytes(64)
    bad = json.dumps({"audio": base64.b64encode(not_wave).decode(), "text": None})
    # Real-time pacing: the turn's three sentences take seconds to stream.
    faults = Faults.fast(pace=1.0, inject_frames=[bad])
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        with captured_logs() as logs:
            down, up = await run(tts, [*llm_turn("One. ", "Two. ", "Three."), SleepFrame(0.2)])
        [error] = [e for e in errors(up) if "Telnyx" in e.error]
        assert "cannot be decoded" in error.error
        assert audio_seconds(down) == 0
        assert started_and_stopped(down) == (1, 1)
        assert not [line for line in logs if "undecodable" in line.message]
        # The turn ended at the first bad chunk: its socket was closed before the server got to
        # the later sentences, rather than the whole turn being streamed to no one.
        [turn] = [c for c in emu.connections if c.syntheses]
        assert sum(s.chunks_sent for s in turn.syntheses[1:]) == 0


# ----------------------------------------------------------------------------- 9, 10. logs


async def test_an_ignored_setting_is_said_once_per_settings_change(monkeypatch):
    quick_spares(monkeypatch)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        with captured_logs() as logs:
            tts = make_tts(
                emu,
                settings=TelnyxTTSService.Settings(voice="Telnyx.KokoroTTS.af_heart", speed=1.3),
                keep_warm=True,
            )
            update = TTSUpdateSettingsFrame(delta=TelnyxTTSService.Settings(speed=1.4))
            await run(tts, [SleepFrame(1.5), update, SleepFrame(1.5)])
        said = [line.message for line in logs if "no speed setting" in line.message]
        assert len(emu.connections) >= 4, "spares should have turned over"
        assert len(said) == 2, said
        assert "speed=1.3" in said[0] and "speed=1.4" in said[1]


async def test_a_short_key_never_mangles_a_message():
    async with TelnyxEmulator(api_key="the-right-key", faults=Faults.fast()) as emu:
        tts = TelnyxTTSService(api_key="ny", url=emu.url)
        _, up = await run(tts, llm_turn("Hello."))
        assert errors(up)
        for error in errors(up):
            assert "***" not in error.error
            assert "Telnyx" in error.error
        assert tts._key_pattern.sub("***", "key ny was sent; Telnyx") == "key *** was sent; Telnyx"


# ----------------------------------------------------------------------------- stale audio


@pytest.mark.parametrize("lifecycle", ["observed", "documented"])
async def test_frames_already_produced_at_a_barge_in_never_play(lifecycle):
    """The server sends 30 more frames after the force, before it handles the close."""
    faults = Faults.fast(pace=2.0, chunk_ms=40, frames_after_force=30)
    async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("A long answer that the caller cuts off early on. "),
            LLMTextFrame("It goes on and on. "),
            Until(lambda: any(s.chunks_sent >= 2 for c in emu.connections for s in c.syntheses)),
            Push(InterruptionFrame()),
            *llm_turn("The next answer."),
        ]
        with captured_logs() as logs:
            down, up = await run(gated(tts), frames)
        assert not errors(up)
        # pipecat would drop audio for a context it no longer has, but say so: nothing may try.
        assert not [line for line in logs if "unable to append" in line.message]
        forced = [c for c in emu.connections for s in c.syntheses if s.forced]
        assert forced and sum(s.frames_after_force_sent for s in forced[0].syntheses) > 0
        cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
        after = audio_frames(down[cut:])
        assert after, "the next answer was not heard"
        assert not any(forced[0].index in markers(f) for f in after)
        assert any(isinstance(f, TTSStoppedFrame) for f in down[cut:])
