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
)
from pipecat.tests.utils import SleepFrame

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.policy import Limits
from tests.service_helpers import (
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


async def test_after_provider_errors_wrote_the_service_off_the_next_good_turn_revives_it(
    monkeypatch,
):
    """Item 6: three syntheses fail before any audio ("Error in audio response"), pipecat writes
    the service off; once the provider is back, a probe turn gets audio and the bot speaks."""
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", Limits(spare_cap=0.5, turn_cap=0.2))
    faults = Faults.fast(error_after_chunks=0, fault_count=3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        frames: list[Frame] = []
        for i in range(3):
            frames += [*llm_turn(f"Lost turn {i}."), SleepFrame(0.1)]
        frames += [
            Until(lambda: not tts.is_usable),
            Until(lambda: tts.is_usable, timeout=15.0),
            *llm_turn("Back again."),
        ]
        down, up = await run(gated(tts), frames)
        assert "Back again." in spoken(emu)
        assert audio_seconds(down) > 0.3
        assert tts.is_usable
        messages = " ".join(e.error for e in errors(up))
        assert "Error in audio response" in messages


# ----------------------------------------------------------------------------- 7. budget


async def test_a_turn_keeps_trying_until_the_end_of_its_budget(monkeypatch):
    """Item 7: Telnyx refuses for 2.6 s of a 3 s budget; the last try, at the deadline, works."""
    monkeypatch.setattr(TelnyxTTSService, "POLICY_LIMITS", Limits(turn_budget=3.0, turn_cap=2.0))
    faults = Faults.fast(refuse_status=503, refuse_for=2.6)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn("Spoken at the last try."))
        assert spoken(emu) == "Spoken at the last try."
        assert not errors(up)
        assert audio_seconds(down) > 0.3
