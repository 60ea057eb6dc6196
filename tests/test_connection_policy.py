"""The connection policy in real pipelines over loopback: what each fault of issue #14 costs.

Each test plays one fault the emulator stages and counts what the service did about it: sockets
opened, ErrorFrames pushed, text spoken or named. The counts are upper bounds where time passes
(a loaded machine opens fewer sockets, never more).
"""

from __future__ import annotations

import itertools

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSUpdateSettingsFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.policy import Limits
from tests.service_helpers import (
    Push,
    Until,
    audio_seconds,
    errors,
    gated,
    llm_turn,
    make_tts,
    run,
    server_ignores_the_ask,
)


def upgrades(emu: TelnyxEmulator) -> list[int]:
    return [c.status for c in emu.connections]


def spoken(emu: TelnyxEmulator) -> str:
    return " ".join(s.text.strip() for c in emu.connections for s in c.syntheses)


# ----------------------------------------------------------------------------- 1. churn


@pytest.mark.parametrize("keep_warm", [False, True])
async def test_a_server_that_closes_idle_sockets_at_once_costs_one_socket(keep_warm, monkeypatch):
    """Item 1: the server closes every socket 0.1 s after its init; the call is idle."""
    server_ignores_the_ask(monkeypatch)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(inactivity_timeout=0.1)) as emu:
        tts = make_tts(emu, keep_warm=keep_warm)
        _, up = await run(tts, [SleepFrame(3.0)])
        assert not errors(up)
        assert len(emu.connections) == 1, upgrades(emu)
        assert emu.connections[0].close_reason == "inactivity timeout"
        assert tts._policy.idle.believed() == pytest.approx(0.1, abs=0.1)


# ----------------------------------------------------------------------------- 2. refused voice


async def test_a_voice_refused_after_the_upgrade_is_reported_once_and_not_asked_again():
    """Item 2: {"error": "Invalid voice_id specified"} on the spare; nobody speaks for 2 s."""
    faults = Faults.fast(invalid_voices=["Telnyx.NaturalHD.astra"])
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        _, up = await run(gated(tts), [Until(lambda: not tts.is_usable), SleepFrame(2.0)])
        [error] = errors(up)
        assert "Invalid voice_id specified" in error.error
        assert error.category is not None and error.category.is_permanent
        assert upgrades(emu) == [101]


async def test_new_settings_after_a_refused_voice_are_tried_and_spoken():
    faults = Faults.fast(invalid_voices=["Telnyx.NaturalHD.astra"])
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        update = TTSUpdateSettingsFrame(
            delta=TelnyxTTSService.Settings(voice="Rime.ArcanaV3.astra")
        )
        frames = [Until(lambda: not tts.is_usable), update, *llm_turn("Another voice speaks.")]
        down, up = await run(gated(tts), frames)
        assert len(errors(up)) == 1
        assert spoken(emu) == "Another voice speaks."
        assert audio_seconds(down) > 0.3


# ----------------------------------------------------------------------------- unknown frames


@pytest.mark.parametrize("frame", ['{"type": "ping", "ts": 1}', '{"audio": ""}'])
async def test_an_unknown_frame_on_an_idle_spare_costs_nothing(frame):
    """The spare that heard a frame nobody asked for (one that does not parse, one that does)
    is the one the turn speaks on."""
    faults = Faults.fast(idle_frame=frame, idle_frame_after=0.05)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)

        def pinged() -> bool:
            return bool(emu.connections) and len(emu.connections[0].sent) > 0

        _, up = await run(gated(tts), [Until(pinged), *llm_turn("Spoken on the spare.")])
        assert not errors(up)
        assert upgrades(emu) == [101]
        assert spoken(emu) == "Spoken on the spare."


# ----------------------------------------------------------------------------- 3. slow LLM


async def test_a_turn_whose_llm_thinks_longer_than_the_servers_idle_window_is_spoken(monkeypatch):
    """Item 3: sockets idle out after 0.2 s; the LLM's first token comes after 1.5 s."""
    server_ignores_the_ask(monkeypatch)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(inactivity_timeout=0.2)) as emu:
        tts = make_tts(emu)
        frames: list[Frame] = [
            LLMFullResponseStartFrame(),
            SleepFrame(1.5),
            LLMTextFrame("Spoken after a long think. "),
            LLMTextFrame("Every word."),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(tts, frames)
        assert not errors(up)
        assert spoken(emu) == "Spoken after a long think. Every word."
        assert audio_seconds(down) > 0.5
        assert len(emu.connections) <= 3, upgrades(emu)


async def test_a_sentence_the_llm_writes_longer_than_the_response_timeout_is_spoken(monkeypatch):
    """The server's silence is counted from when it was asked for audio: a sentence that takes
    the LLM longer than ``RESPONSE_TIMEOUT_S`` after the last one played is not a dead server."""
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 3.0)
    # First audio takes longer than the lane's poll, so the wait for the second sentence's
    # audio is seen as quiet.
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=1.2)) as emu:
        tts = make_tts(emu)
        frames: list[Frame] = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("The first sentence plays at once. "),
            LLMTextFrame("The"),  # pipecat sends a sentence once the next one has begun
            SleepFrame(4.5),
            LLMTextFrame(" second one comes much later."),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(tts, frames)
        assert not errors(up), errors(up)
        assert spoken(emu) == "The first sentence plays at once. The second one comes much later."
        assert audio_seconds(down) > 3.0


# ----------------------------------------------------------------------------- 4. configuration


async def test_a_wrong_path_is_one_permanent_error_and_never_retried():
    """Item 4: a 404 at the upgrade; turns that follow do not knock again."""
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = TelnyxTTSService(api_key="test-key", url=emu.url.replace("/speech", "/speach"))
        frames = [
            Until(lambda: not tts.is_usable),
            *llm_turn("Never spoken."),
            SleepFrame(1.0),
            *llm_turn("Nor this."),
        ]
        _, up = await run(gated(tts), frames)
        [error] = [e for e in errors(up) if "404" in e.error]
        assert "check the url" in error.error
        assert error.category is not None and error.category.is_permanent
        assert upgrades(emu) == [404]


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/v2/text-to-speech/speech", "api.telnyx.com"])
def test_a_url_that_can_never_connect_is_refused_at_construction(url):
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        TelnyxTTSService(api_key="test-key", url=url)


# ----------------------------------------------------------------------------- 5. Retry-After


async def test_a_429_is_retried_no_sooner_than_its_retry_after_and_a_spare_reports_nothing():
    """Item 5: the emulator's 429 asks for 1 s."""
    faults = Faults.fast(refuse_status=429, refuse_count=2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        _, up = await run(gated(tts), [Until(lambda: 101 in upgrades(emu), timeout=15.0)])
        assert not errors(up), "no turn needed that spare: nothing to report"
        assert upgrades(emu) == [429, 429, 101]
        gaps = [b.opened_at - a.opened_at for a, b in itertools.pairwise(emu.connections)]
        assert min(gaps) >= 0.99, gaps


# ----------------------------------------------------------------------------- 6. provider outage


def written_off_then_probed(tts: TelnyxTTSService) -> list[Frame]:
    """Three turns that get no audio (pipecat writes the service off), then the wait for the
    service to let a turn through again."""
    frames: list[Frame] = []
    for i in range(3):
        frames += [*llm_turn(f"Lost turn {i}."), SleepFrame(0.1)]
    return [
        *frames,
        Until(lambda: not tts.is_usable),
        Until(lambda: tts.is_usable, timeout=15.0),
    ]


async def test_after_provider_errors_wrote_the_service_off_the_next_good_turn_revives_it(
    monkeypatch,
):
    """Item 6: three syntheses fail before any audio ("Error in audio response"), pipecat writes
    the service off; once the provider is back, a probe turn gets audio and the bot speaks."""
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", Limits(spare_cap=0.5, turn_cap=0.2))
    faults = Faults.fast(error_after_chunks=0, fault_count=3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [*written_off_then_probed(tts), *llm_turn("Back again.")]
        down, up = await run(gated(tts), frames)
        assert "Back again." in spoken(emu)
        assert audio_seconds(down) > 0.3
        assert tts.is_usable
        messages = " ".join(e.error for e in errors(up))
        assert "Error in audio response" in messages


async def test_a_probe_turn_that_fails_too_writes_the_service_off_again(monkeypatch):
    """Item 6, the other way: the provider is still down when the probe turn goes through."""
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", Limits(spare_cap=0.5, turn_cap=0.2))
    faults = Faults.fast(error_after_chunks=0, fault_count=4)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        frames = [
            *written_off_then_probed(tts),
            *llm_turn("The probe fails too."),
            Until(lambda: not tts.is_usable, timeout=5.0),
        ]
        _, up = await run(gated(tts), frames)
        assert not tts.is_usable
        assert "The probe fails too." in " ".join(e.error for e in errors(up))


async def test_a_settings_change_replaces_the_spare_built_with_the_old_ones():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        voice = TelnyxTTSService.Settings(voice="Rime.ArcanaV3.astra")
        frames = [
            Until(lambda: len(emu.connections) >= 1 and emu.connections[0].status == 101),
            TTSUpdateSettingsFrame(delta=voice),
            Until(lambda: emu.connections[0].closed_at is not None and len(emu.connections) >= 2),
        ]
        _, up = await run(gated(tts), frames)
        assert not errors(up)
        assert emu.connections[1].params.voice == "Rime.ArcanaV3.astra"


# ----------------------------------------------------------------------------- 7. budget


async def test_a_turn_keeps_trying_until_the_end_of_its_budget(monkeypatch):
    """Item 7: Telnyx refuses for 2.6 s of a 3 s budget; the last try, at the deadline, works."""
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", Limits(turn_budget=3.0, turn_cap=2.0))
    faults = Faults.fast(refuse_status=503, refuse_for=2.6)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn("Spoken at the last try."))
        assert spoken(emu) == "Spoken at the last try."
        [outage] = errors(up)  # the outage, once; the turn itself did not fail
        assert "HTTP 503" in outage.error and "not spoken" not in outage.error
        assert audio_seconds(down) > 0.3


# ----------------------------------------------------------------------------- a long-idle spare


async def test_a_spare_quiet_for_longer_than_the_response_timeout_still_carries_its_turn(
    monkeypatch,
):
    """The caller speaks for longer than a turn may wait for audio: the spare opened when they
    started has been silent that long when the reply binds it, which is not the turn's silence."""
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 0.5)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        frames = [
            Push(VADUserStartedSpeakingFrame()),
            SleepFrame(1.0),
            Push(VADUserStoppedSpeakingFrame()),
            *llm_turn("Spoken on the quiet spare."),
        ]
        down, up = await run(gated(tts), frames)
        assert not errors(up)
        assert spoken(emu) == "Spoken on the quiet spare."
        assert audio_seconds(down) > 0.3
