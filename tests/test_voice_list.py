"""The voice id checked against Telnyx's voice list: plain reading and matching, then the service
against the emulator's list, a list that cannot be had, and a settings update."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from pipecat.frames.frames import TTSUpdateSettingsFrame
from pipecat.tests.utils import SleepFrame

from pipecat_telnyx_tts import TelnyxTTSService, voice_list
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.catalogue import voice_list as emulator_voice_list
from pipecat_telnyx_tts.protocol import VOICES_PATH
from pipecat_telnyx_tts.voice_list import (
    VoiceList,
    VoiceListUnavailable,
    fetch_voice_list,
    rest_base,
)
from tests.service_helpers import audio_seconds, errors, llm_turn, make_tts, run
from tests.test_fault_support import captured_logs

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ports are reused between tests, so a list cached by an earlier test must not answer."""
    monkeypatch.setattr(voice_list, "_CACHE", {})


@contextlib.asynccontextmanager
async def rest_server(handler: Handler) -> AsyncIterator[str]:
    """A local HTTP server answering the voice list path; yields its base URL."""
    app = web.Application()
    app.router.add_get(VOICES_PATH, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


# ----------------------------------------------------------------------------- plain


def test_the_rest_base_is_the_websocket_host_over_http():
    assert rest_base("wss://api.telnyx.com/v2/text-to-speech/speech") == "https://api.telnyx.com"
    assert rest_base("ws://127.0.0.1:8765/v2/text-to-speech/speech") == "http://127.0.0.1:8765"


def test_items_are_read_by_voice_id_or_id_and_bare_names_are_left_out():
    body = {
        "voices": [
            {"provider": "telnyx", "voice_id": "Telnyx.NaturalHD.astra"},
            {"provider": "rime", "id": "Rime.ArcanaV3.astra"},
            {"provider": "telnyx", "voice_id": "astra"},
            "not an item",
        ]
    }
    listed = VoiceList.from_body(body)
    assert set(listed.voices.values()) == {"Telnyx.NaturalHD.astra", "Rime.ArcanaV3.astra"}


@pytest.mark.parametrize(
    "body",
    [[], {"data": []}, {"voices": "x"}, {"voices": [{"voice_id": "astra"}]}],
    ids=["list", "no-voices", "not-a-list", "bare-names-only"],
)
def test_a_list_that_cannot_be_compared_is_unavailable(body):
    with pytest.raises(VoiceListUnavailable):
        VoiceList.from_body(body)


def test_the_provider_prefix_is_compared_case_insensitively():
    listed = VoiceList.from_body(emulator_voice_list())
    assert listed.unlisted("AWS.Polly.Generative.Lucia") is None
    assert listed.unlisted("aws.Polly.Neural.Joanna") is None
    assert listed.unlisted("telnyx.NaturalHD.astra") is None


def test_a_typo_names_the_voice_meant_and_only_it():
    listed = VoiceList.from_body(emulator_voice_list())
    problem = listed.unlisted("Telnyx.NaturalHD.astraa")
    assert problem is not None
    assert "'Telnyx.NaturalHD.astraa'" in problem
    assert "did you mean 'Telnyx.NaturalHD.astra'?" in problem
    assert "orion" not in problem


def test_a_provider_the_list_lacks_is_not_judged():
    # ElevenLabs voices come from the user's own ElevenLabs account, not from Telnyx's list.
    listed = VoiceList.from_body({"voices": [{"voice_id": "Telnyx.NaturalHD.astra"}]})
    assert listed.unlisted("elevenlabs.v3.MyOwnVoice") is None
    # A provider nobody knows is judged: it is most likely a misspelt one.
    problem = listed.unlisted("Telnx.NaturalHD.astra")
    assert problem is not None and "did you mean 'Telnyx.NaturalHD.astra'?" in problem


# ----------------------------------------------------------------------------- fetching


async def test_the_list_is_fetched_with_the_key_once_per_url_and_key():
    seen: list[str | None] = []

    async def voices(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"voices": [{"voice_id": "Telnyx.NaturalHD.astra"}]})

    async with rest_server(voices) as base:
        ws_url = base.replace("http", "ws", 1) + "/v2/text-to-speech/speech"
        first = await fetch_voice_list(ws_url, "k1")
        assert await fetch_voice_list(ws_url, "k1") is first
        await fetch_voice_list(ws_url, "k2")
    assert seen == ["Bearer k1", "Bearer k2"]


async def test_the_emulator_serves_the_list():
    async with TelnyxEmulator(api_key="k", faults=Faults.fast()) as emu:
        listed = await fetch_voice_list(emu.url, "k")
        assert listed.unlisted("Telnyx.NaturalHD.astra") is None
        with pytest.raises(VoiceListUnavailable, match="HTTP 401"):
            await fetch_voice_list(emu.url, "wrong")


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (lambda: web.Response(status=500, text="boom"), "HTTP 500"),
        (lambda: web.Response(text="<html>not json</html>"), "JSONDecodeError"),
    ],
    ids=["http-500", "bad-json"],
)
async def test_an_unusable_answer_is_unavailable(answer, words):
    async def voices(request: web.Request) -> web.Response:
        return answer()

    async with rest_server(voices) as base:
        ws_url = base.replace("http", "ws", 1) + "/speech"
        with pytest.raises(VoiceListUnavailable, match=words):
            await fetch_voice_list(ws_url, "k")
        # A failure is not cached: the next service asks again.
        assert not voice_list._CACHE


async def test_a_closed_port_is_unavailable():
    with pytest.raises(VoiceListUnavailable, match=r"127\.0\.0\.1:9\b"):
        await fetch_voice_list("ws://127.0.0.1:9/v2/text-to-speech/speech", "k")


# ----------------------------------------------------------------------------- the service


async def test_a_voice_typo_is_an_error_naming_the_voice_meant_and_the_turn_goes_on():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        # The emulator, like any offline check, speaks a voice of a known model happily.
        tts = make_tts(emu, voice="Telnyx.NaturalHD.astraa")
        down, up = await run(tts, [SleepFrame(0.3), *llm_turn("Spoken all the same.")])
        [error] = errors(up)
        assert "'Telnyx.NaturalHD.astraa'" in error.error
        assert "did you mean 'Telnyx.NaturalHD.astra'?" in error.error
        assert tts.is_usable
        assert audio_seconds(down) > 0.3


async def test_a_listed_voice_gets_no_error():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice="aws.Polly.Generative.Lucia")
        down, up = await run(tts, [SleepFrame(0.3), *llm_turn("Hola.")])
        assert not errors(up)
        assert tts._voice_list is not None, "the list was never fetched"
        assert audio_seconds(down) > 0.1


async def test_a_list_that_cannot_be_fetched_is_one_warning_and_the_turn_is_spoken(monkeypatch):
    async def voices(request: web.Request) -> web.Response:
        return web.Response(status=500, text="internal error")

    async with (
        rest_server(voices) as base,
        TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu,
    ):
        monkeypatch.setattr(voice_list, "rest_base", lambda ws_url: base)
        tts = make_tts(emu, voice="Telnyx.NaturalHD.astraa")
        with captured_logs() as logs:
            down, up = await run(tts, [SleepFrame(0.3), *llm_turn("Spoken unchecked.")])
        assert not errors(up)
        said = [line.message for line in logs if "voice list" in line.message]
        assert len(said) == 1 and "HTTP 500" in said[0], said
        assert [line.level for line in logs if "voice list" in line.message] == ["WARNING"]
        assert audio_seconds(down) > 0.3


async def test_a_voice_update_is_checked_against_the_list_too():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        typo = TelnyxTTSService.Settings(voice="Rime.ArcanaV3.astro")
        update = TTSUpdateSettingsFrame(delta=typo)
        _, up = await run(tts, [SleepFrame(0.3), update, SleepFrame(0.1)])
        [error] = errors(up)
        assert "did you mean 'Rime.ArcanaV3.astra'?" in error.error
        # Advice only: the update is applied, and Telnyx has the last word at the upgrade.
        assert tts._settings.voice == "Rime.ArcanaV3.astro"
