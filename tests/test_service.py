"""TelnyxTTSService in real pipecat pipelines, against the emulator over loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import random
import time

import pytest
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData, TTSUsageMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.tts_service import TextAggregationMode
from pipecat.tests.utils import SleepFrame, run_test

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.policy import Limits
from pipecat_telnyx_tts.protocol import ForceMessage, InitMessage
from tests.service_helpers import (
    audio_frames,
    audio_seconds,
    ended,
    errors,
    llm_turn,
    make_tts,
    markers,
    run,
    started_and_stopped,
    wire_texts,
)

LIFECYCLES = ["observed", "documented"]


def spoken(emu: TelnyxEmulator) -> list:
    """Every synthesis the emulator performed, across sockets."""
    return [s for c in emu.connections for s in c.syntheses]


def spoken_text(emu: TelnyxEmulator, index: int) -> str:
    return "".join(t for t, _ in wire_texts(emu.received_messages(index)))


def turn_connections(emu: TelnyxEmulator) -> list:
    """Sockets that carried text (spares that were never used are left out)."""
    return [c for c in emu.connections if wire_texts(emu.received_messages(c.index))]


# ----------------------------------------------------------------------------- the happy path


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_a_turn_speaks_every_sentence_and_ends_on_the_server_signal(lifecycle):
    async with TelnyxEmulator(lifecycle=lifecycle, signal="tone", faults=Faults.fast()) as emu:
        # With pipecat's idle timeout out of reach, only the server's signal can end the turn.
        tts = make_tts(emu, stop_frame_timeout_s=60)
        turn = llm_turn("Hello there. ", "How are you today? ", "Good.")
        down, up = await asyncio.wait_for(run(tts, turn), 15)
        assert not errors(up)
        assert started_and_stopped(down) == (1, 1)
        frames = audio_frames(down)
        assert frames and all(f.sample_rate == 16000 and f.num_channels == 1 for f in frames)
        synthesized = sum(s.audio_seconds for s in spoken(emu))
        assert audio_seconds(down) == pytest.approx(synthesized, abs=0.01)
        texts = [f.text for f in down if isinstance(f, TTSTextFrame)]
        assert " ".join(texts).split() == [
            "Hello",
            "there.",
            "How",
            "are",
            "you",
            "today?",
            "Good.",
        ]
        [conn] = turn_connections(emu)
        messages = emu.received_messages(conn.index)
        assert isinstance(messages[0], InitMessage)
        assert all(flush for _, flush in wire_texts(messages))
        assert ended(messages)
        assert conn.params.audio_format == "linear16" and conn.params.sample_rate == 16000


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_token_mode_streams_tokens_and_flushes_at_sentence_ends(lifecycle):
    async with TelnyxEmulator(lifecycle=lifecycle, signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, text_aggregation_mode=TextAggregationMode.TOKEN)
        tokens = ["Hello", " there", ".", " How", " are", " you", "?"]
        down, up = await run(tts, llm_turn(*tokens))
        assert not errors(up)
        [conn] = turn_connections(emu)
        texts = wire_texts(emu.received_messages(conn.index))
        assert "".join(t for t, _ in texts) == "".join(tokens)
        assert len(texts) >= 4, "tokens must go out as they come, not as one segment"
        assert ("Hello", False) in texts
        assert [t for t, f in texts if f] == [". ", "?"]
        assert audio_seconds(down) > 0.5


async def test_first_audio_needs_only_the_first_sentence_under_the_observed_reading():
    # The LLM pauses after the first sentence; its audio must not wait for the rest.
    async with TelnyxEmulator(lifecycle="observed", signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("First sentence here. "),
            LLMTextFrame("Second"),
            SleepFrame(1.0),
            LLMTextFrame(" sentence."),
            LLMFullResponseEndFrame(),
        ]
        await run(tts, frames)
        first = spoken(emu)[0]
        assert first.text.strip() == "First sentence here."
        second_text_at = min(
            f.t
            for c in emu.connections
            for f in c.received
            if f.message is not None and getattr(f.message, "text", "") == "Second sentence."
        )
        assert first.first_audio_at < second_text_at - 0.5


@pytest.mark.parametrize(
    ("voice", "mp3"),
    [
        ("Telnyx.NaturalHD.astra", False),
        ("Telnyx.KokoroTTS.af_heart", True),
        ("aws.Polly.Neural.Joanna", False),
        ("Resemble.Turbo.Aaron_en-US", True),
    ],
)
async def test_pcm_and_mp3_voices_streamed_and_concatenated(voice, mp3):
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice=voice)
        down, up = await run(tts, llm_turn("This is a test of the voice. ", "And one more."), 8000)
        assert not errors(up)
        syntheses = spoken(emu)
        assert {s.mp3 for s in syntheses} == {mp3}
        frames = audio_frames(down)
        assert all(f.sample_rate == 8000 for f in frames)
        expected = sum(s.audio_seconds for s in syntheses)
        # MP3 files are trimmed of their encoder delay and padding: exact, but for the
        # resampler's rounding of each synthesis.
        tolerance = 0.001 * len(syntheses) if mp3 else 0.01
        assert audio_seconds(down) == pytest.approx(expected, abs=tolerance)


async def test_explicit_mp3_on_a_pcm_voice_is_decoded():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, audio_format="mp3")
        down, up = await run(tts, llm_turn("Decode me please."), 24000)
        assert not errors(up)
        [conn] = turn_connections(emu)
        assert conn.params.audio_format == "mp3"
        assert audio_seconds(down) == pytest.approx(spoken(emu)[0].audio_seconds, abs=0.12)


async def test_speak_frame_is_its_own_turn():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, [TTSSpeakFrame("Welcome to the demo."), SleepFrame(0.2)])
        assert not errors(up)
        assert started_and_stopped(down) == (1, 1)
        assert audio_seconds(down) > 0.5


class TextClock(FrameProcessor):
    """Stands before the TTS and notes when each ``LLMTextFrame`` was pushed into it."""

    def __init__(self) -> None:
        super().__init__(name="text-clock")
        self.pushed_at: list[float] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMTextFrame):
            self.pushed_at.append(time.perf_counter())
        await self.push_frame(frame, direction)


async def test_back_to_back_turns_each_get_their_own_socket_with_no_handshake_wait():
    # Each upgrade takes UPGRADE_S; the turns are spaced so that a spare has time to connect
    # (GAP_S, twice that and more) whatever the machine's load. A turn whose text reaches the
    # wire sooner after it was pushed than an upgrade takes cannot have waited for a handshake.
    upgrade_s, gap_s = 1.0, 2.5
    faults = Faults.fast(upgrade_delay=upgrade_s)
    async with TelnyxEmulator(signal="marker", faults=faults) as emu:
        tts = make_tts(emu)
        clock = TextClock()
        frames: list[Frame] = []
        for i in range(4):
            frames.append(SleepFrame(gap_s))
            frames += llm_turn(f"Turn number {i} is here. ")
        frames.append(SleepFrame(0.3))
        down, up = await run(Pipeline([clock, tts]), frames)
        assert not errors(up)
        assert started_and_stopped(down) == (4, 4)
        used = turn_connections(emu)
        assert len(used) == 4
        # Each turn's audio comes only from its own socket, in order.
        order = []
        for f in audio_frames(down):
            [m] = markers(f)
            if not order or order[-1] != m:
                order.append(m)
        assert order == [c.index for c in used]
        # Every turn's text reached the wire less than an upgrade after it was pushed: its socket
        # was connected before the text came (emulator and test share perf_counter).
        assert len(clock.pushed_at) == 4
        for conn, pushed_at in zip(used, clock.pushed_at, strict=True):
            on_wire = next(
                f.t
                for f in conn.received
                if f.message is not None and not isinstance(f.message, InitMessage)
            )
            assert 0 < on_wire - pushed_at < upgrade_s, (conn.index, on_wire - pushed_at)


async def test_a_turn_with_no_text_returns_its_socket_without_errors():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, [*llm_turn(), *llm_turn("Now I speak.")])
        assert not errors(up)
        assert started_and_stopped(down) == (1, 1)


# ----------------------------------------------------------------------------- barge-in


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_barge_in_sends_force_and_no_stale_audio_reaches_the_next_turn(lifecycle):
    faults = Faults.fast(pace=4.0, frames_after_force=50, chunk_ms=40)
    async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [
            *llm_turn("This is a long answer that will be interrupted. ", "It goes on and on. "),
            SleepFrame(0.35),
            InterruptionFrame(),
            *llm_turn("Second turn."),
            SleepFrame(0.5),
        ]
        down, up = await run(tts, frames)
        assert not errors(up)
        first, second = turn_connections(emu)[:2]
        assert any(isinstance(m, ForceMessage) for m in emu.received_messages(first.index))
        cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
        after = [m for f in audio_frames(down[cut:]) for m in markers(f)]
        assert first.index not in after
        assert after and set(after) == {second.index}


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
async def test_randomized_barge_ins_never_leak_a_stale_frame(lifecycle):
    """Barge in at random moments, sometimes with the next turn right behind the interruption."""
    rng = random.Random(1234)
    stale = 0
    checked = 0
    for _ in range(12):
        faults = Faults.fast(
            pace=rng.choice([2.0, 4.0, 8.0]), frames_after_force=rng.randint(0, 40)
        )
        faults.chunk_ms = rng.choice([20, 40, 100])
        async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
            tts = make_tts(emu, text_aggregation_mode=rng.choice(list(TextAggregationMode)))
            frames = [*llm_turn("A reply that runs long enough. ", "It keeps on going here. ")]
            frames.append(SleepFrame(rng.uniform(0.0, 0.6)))
            frames.append(InterruptionFrame())
            if rng.random() < 0.5:
                frames.append(SleepFrame(rng.uniform(0.0, 0.1)))
            frames += [*llm_turn("Next turn."), SleepFrame(0.4)]
            down, up = await asyncio.wait_for(run(tts, frames), 20)
            assert not errors(up)
            cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
            used = turn_connections(emu)
            second = next(c for c in used if "Next turn." in spoken_text(emu, c.index))
            for f in audio_frames(down[cut:]):
                checked += 1
                stale += bool(markers(f) - {second.index})
            assert any(second.index in markers(f) for f in audio_frames(down[cut:]))
    assert checked > 0 and stale == 0


async def test_interruption_before_any_text_abandons_the_bound_socket_quietly():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        frames = [
            LLMFullResponseStartFrame(),
            InterruptionFrame(),
            *llm_turn("After."),
            SleepFrame(0.2),
        ]
        down, up = await run(tts, frames)
        assert not errors(up)
        assert audio_seconds(down) > 0.2


# ----------------------------------------------------------------------------- errors


async def test_upgrade_401_is_a_permanent_error_that_says_what_to_fix():
    async with TelnyxEmulator(api_key="right-key", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, [*llm_turn("Hello."), SleepFrame(0.3)])
        [error, *_] = errors(up)
        assert "HTTP 401" in error.error and "TELNYX_API_KEY" in error.error
        assert "test-key" not in error.error
        assert error.exception is not None
        assert not tts.is_usable
        assert not audio_frames(down)


async def test_upgrade_400_names_the_voice_to_fix():
    async with TelnyxEmulator(faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice="Acme.Model.voice")
        _, up = await run(tts, [*llm_turn("Hello."), SleepFrame(0.3)])
        # The voice list check reports the voice too, in its own words and its own time.
        [error, *_] = [e for e in errors(up) if "HTTP" in e.error]
        assert "HTTP 400" in error.error and "'Acme.Model.voice'" in error.error
        # A voice of an unknown provider is asked for Telnyx's default format and rate: the
        # message names only what was asked.
        assert "None" not in error.error
        assert not tts.is_usable


async def test_upgrade_403_says_the_voice_is_not_allowed():
    async with TelnyxEmulator(faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        # The constructor refuses Ultra voices outright; force one past it to see the wire path.
        tts._settings.voice = "Telnyx.Ultra.x"
        _, up = await run(tts, [*llm_turn("Hello."), SleepFrame(0.3)])
        [error, *_] = [e for e in errors(up) if "HTTP" in e.error]
        assert "HTTP 403" in error.error and "choose another voice" in error.error


def test_ultra_voice_is_refused_at_construction():
    with pytest.raises(ValueError, match="does not serve on the streaming WebSocket"):
        TelnyxTTSService(api_key="k", settings=TelnyxTTSService.Settings(voice="Telnyx.Ultra.x"))


async def test_an_output_rate_the_provider_lacks_is_asked_higher_and_resampled():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn("Resample me."), 11025)
        assert not errors(up)
        [conn] = turn_connections(emu)
        assert conn.params.sample_rate == 16000
        assert all(f.sample_rate == 11025 for f in audio_frames(down))
        assert audio_seconds(down) == pytest.approx(spoken(emu)[0].audio_seconds, abs=0.02)


@pytest.mark.parametrize(
    ("faults", "words"),
    [
        (Faults.fast(error_after_chunks=1, fault_count=1), "Error in audio response"),
        (
            Faults.fast(drop_after_chunks=1, fault_count=1),
            "connection ended before the turn finished",
        ),
    ],
    ids=["error-frame", "tcp-drop"],
)
async def test_a_turn_lost_mid_way_ends_with_an_error_and_the_next_turn_works(faults, words):
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [
            *llm_turn("First turn fails midway through."),
            SleepFrame(0.3),
            *llm_turn("Second works."),
        ]
        down, up = await run(tts, frames)
        [error] = errors(up)
        assert words in error.error
        assert started_and_stopped(down) == (2, 2)
        assert tts.is_usable


async def test_server_closing_after_every_turn_never_trips_quick_failure():
    async with TelnyxEmulator(lifecycle="observed", signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        frames = []
        for i in range(5):
            frames += [*llm_turn(f"Quick turn {i}."), SleepFrame(0.05)]
        down, up = await run(tts, frames)
        assert not errors(up)
        assert tts.is_usable
        assert started_and_stopped(down) == (5, 5)


async def test_spares_are_replaced_before_the_inactivity_timeout(monkeypatch):
    # A window shorter than the spare upkeep's one-second beat: the upkeep must wake when a
    # spare is due, not on the beat, or the server closes spares first.
    limits = Limits(quick_close=0.3, bind_margin=0.1, refresh_margin=0.3)
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", limits)
    monkeypatch.setattr(TelnyxTTSService, "INACTIVITY_TIMEOUT_S", 0.8)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, keep_warm=True)
        down, up = await run(tts, [SleepFrame(2.0), *llm_turn("Still here.")])
        assert not errors(up)
        assert audio_seconds(down) > 0.3
        assert len(emu.connections) >= 3
        idled_out = [c.index for c in emu.connections if c.close_reason == "inactivity timeout"]
        assert idled_out == [], "the server closed a spare the service should have replaced"


# ----------------------------------------------------------------------------- settings


async def test_settings_update_applies_from_the_next_turn():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(pace=4.0)) as emu:
        tts = make_tts(emu)
        update = TTSUpdateSettingsFrame(
            delta=TelnyxTTSService.Settings(voice="Rime.ArcanaV3.astra", speed=1.3)
        )
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("The first turn keeps its voice. "),
            update,
            LLMTextFrame("Even after the update."),
            LLMFullResponseEndFrame(),
            SleepFrame(0.3),
            *llm_turn("The second turn uses the new one."),
        ]
        _, up = await run(tts, frames)
        assert not errors(up)
        # Ordered by text, not by socket: the first turn binds its socket at its first text.
        first, second = sorted(
            turn_connections(emu), key=lambda c: wire_texts(emu.received_messages(c.index))
        )
        assert first.params.voice == "Telnyx.NaturalHD.astra"
        assert len(wire_texts(emu.received_messages(first.index))) == 2
        assert second.params.voice == "Rime.ArcanaV3.astra"
        assert emu.received_messages(second.index)[0] == InitMessage({"voice_speed": 1.3})


def test_missing_api_key_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    with pytest.raises(ValueError, match="TELNYX_API_KEY"):
        TelnyxTTSService()


def test_undecodable_format_is_refused():
    with pytest.raises(ValueError, match="cannot be decoded"):
        TelnyxTTSService(api_key="k", audio_format="mulaw")


def test_api_key_falls_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("TELNYX_API_KEY", "from-env")
    assert TelnyxTTSService()._api_key == "from-env"


async def test_audio_frames_are_never_empty():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice="Telnyx.KokoroTTS.af_heart")
        down, _ = await run(tts, llm_turn("Short."), 16000)
        assert all(isinstance(f, TTSAudioRawFrame) and f.audio for f in audio_frames(down))
        await asyncio.sleep(0)


async def test_the_api_key_never_reaches_any_log(caplog):
    secret = "KEY0123456789SECRET"
    lines: list[str] = []
    handle = logger.add(lines.append, level="TRACE")
    caplog.set_level(logging.DEBUG)
    try:
        async with TelnyxEmulator(api_key="another-key", faults=Faults.fast()) as emu:
            tts = TelnyxTTSService(api_key=secret, url=emu.url)
            _, up = await run(tts, [*llm_turn("Hello."), SleepFrame(0.3)])
    finally:
        logger.remove(handle)
    assert errors(up), "the refused key must surface as an error"
    assert lines and caplog.records
    assert not [line for line in lines if secret in line]
    assert not [r for r in caplog.records if secret in r.getMessage()]
    assert all(secret not in e.error for e in errors(up))


async def test_ttfb_and_character_usage_go_through_pipecat_metrics():
    lines: list[str] = []
    handle = logger.add(lines.append, level="DEBUG")
    try:
        async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.05)) as emu:
            tts = make_tts(emu)
            params = PipelineParams(
                audio_out_sample_rate=16000, enable_metrics=True, enable_usage_metrics=True
            )
            down, _ = await run_test(
                tts,
                frames_to_send=llm_turn("Count these words. ", "And these."),
                pipeline_params=params,
            )
    finally:
        logger.remove(handle)
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    # pipecat reports a zero TTFB at start; the turn's own measurement follows.
    ttfb = [d.value for d in data if isinstance(d, TTFBMetricsData) and d.value > 0]
    usage = [d.value for d in data if isinstance(d, TTSUsageMetricsData)]
    assert len(ttfb) == 1 and 0.05 <= ttfb[0] < 2.0
    assert sum(usage) == len("Count these words.") + len("And these.")
    assert any("timeToFirstAudioFrameMs" in line for line in lines)


async def test_slow_first_audio_is_not_mistaken_for_silence():
    # pipecat's own idle timeout is 3 s; a turn whose audio takes 4 s must still play whole.
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=4.0)) as emu:
        tts = make_tts(emu)
        down, up = await asyncio.wait_for(run(tts, llm_turn("Slow but sure.")), 20)
        assert not errors(up)
        assert started_and_stopped(down) == (1, 1)
        assert audio_seconds(down) == pytest.approx(spoken(emu)[0].audio_seconds, abs=0.01)
