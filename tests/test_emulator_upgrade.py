"""The emulator's HTTP side: upgrade refusals, the voice list, records of each attempt."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from test_emulator_support import AUTH, VOICE, open_socket, refused, ws_url

from pipecat_telnyx_tts.emulator import VOICES, Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.records import REDACTED
from pipecat_telnyx_tts.protocol import VOICES_PATH, ConnectParams, check_connect
from pipecat_telnyx_tts.voices import PROVIDERS, TELNYX_MODELS, VoiceId


def error_detail(body: bytes) -> str:
    """The Telnyx REST error shape: {"errors": [{"title", "detail"}]}."""
    (error,) = json.loads(body)["errors"]
    assert error["title"]
    return str(error["detail"])


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic azpr"}, {"Authorization": "Bearer "}, {"Authorization": "k"}],
    ids=["missing", "basic", "empty-bearer", "no-scheme"],
)
async def test_upgrade_without_bearer_token_is_401_when_a_key_is_set(
    headers: dict[str, str],
) -> None:
    async with TelnyxEmulator(api_key="k", signal="tone", faults=Faults.fast()) as emu:
        error = await refused(ws_url(emu), headers)
        assert error.response.status_code == 401
        assert "Bearer" in error_detail(error.response.body)
        assert emu.connections[0].status == 401


async def test_without_a_key_set_no_token_is_needed() -> None:
    """A first try (curl, the CLI) needs no made-up key; ``api_key`` brings Telnyx's check."""
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        async with open_socket(emu, headers={}):
            pass
        assert [c.status for c in emu.connections] == [101]
        status, body = await asyncio.to_thread(get_json, emu.http_url + VOICES_PATH, {})
        assert status == 200
        assert len(body["voices"]) == len(VOICES)


async def test_upgrade_with_another_key_is_401_when_a_key_is_set() -> None:
    async with TelnyxEmulator(api_key="right", signal="tone", faults=Faults.fast()) as emu:
        error = await refused(ws_url(emu), {"Authorization": "Bearer wrong"})
        assert error.response.status_code == 401
        async with open_socket(emu, headers={"Authorization": "Bearer right"}):
            pass
        assert [c.status for c in emu.connections] == [401, 101]


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"voice": "Telnyx.astra"}, "three parts"),
        ({"voice": "Acme.Model.voice"}, "unknown provider"),
        ({"voice": None}, "no voice"),
        ({"voice": VOICE, "sample_rate": 12345}, "sample_rate"),
        ({"voice": "Telnyx.KokoroTTS.af_heart", "sample_rate": 16000}, "sample_rate"),
        ({"voice": VOICE, "audio_format": "wav"}, "audio_format"),
        ({"voice": "aws.Polly.Generative.Lucia", "audio_format": "mulaw"}, "audio_format"),
    ],
    ids=["malformed", "provider", "none", "rate", "kokoro-rate", "format", "aws-format"],
)
async def test_bad_voice_rate_or_format_is_400(params: dict[str, Any], words: str) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        error = await refused(f"{emu.url}?{ConnectParams(**params).to_query()}")
        assert error.response.status_code == 400
        assert words in error_detail(error.response.body)


@pytest.mark.parametrize(
    "bad", ["sample_rate=fast", "sample_rate=%C2%B2", "disable_cache=maybe", "voice=x.y.z"]
)
async def test_unparseable_query_is_400(bad: str) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        error = await refused(f"{emu.url}?voice={VOICE}&{bad}")
        assert error.response.status_code == 400
        assert emu.connections[0].params is None


async def test_ultra_voice_is_403() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        error = await refused(ws_url(emu, "Telnyx.Ultra.astra"))
        assert error.response.status_code == 403
        assert "not available on the WebSocket" in error_detail(error.response.body)


async def test_other_paths_are_404() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        url = emu.url.replace("/speech", "/stream") + f"?voice={VOICE}"
        error = await refused(url)
        assert error.response.status_code == 404
        assert emu.connections[0].path == "/v2/text-to-speech/stream"


async def test_every_attempt_is_recorded_in_order_with_the_key_redacted() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        await refused(ws_url(emu, "Telnyx.Ultra.astra"), {"Authorization": "Bearer s3cret"})
        async with open_socket(emu, headers={"Authorization": "Bearer s3cret"}, socket_id="a"):
            pass
        await emu.wait_for(lambda: emu.connections[-1].closed_at)
        first, second = emu.connections
        assert (first.index, first.status, second.index, second.status) == (1, 403, 2, 101)
        assert second.params == ConnectParams(voice=VOICE, socket_id="a")
        assert second.query == f"voice={VOICE}&socket_id=a"
        assert second.headers["Authorization"] == f"Bearer {REDACTED}"
        assert "s3cret" not in repr(emu.connections)
        assert first.closed_at is not None and first.opened_at <= first.closed_at


async def test_upgrade_delay_holds_back_the_101() -> None:
    # The delay is long next to a loopback upgrade on a loaded machine, so the second, undelayed
    # upgrade is told apart by a wide margin rather than by a tight timer.
    delay = 1.5
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(upgrade_delay=delay)) as emu:
        start = time.perf_counter()
        async with open_socket(emu):
            assert time.perf_counter() - start >= delay
        emu.faults.upgrade_delay = 0
        start = time.perf_counter()
        async with open_socket(emu):
            assert time.perf_counter() - start < delay


def get_json(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


async def test_voice_list_covers_every_provider_and_each_voice_connects() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        status, body = await asyncio.to_thread(get_json, emu.http_url + VOICES_PATH, AUTH)
        assert status == 200
        voices = body["voices"]
        assert {tuple(sorted(v)) for v in voices} == {
            ("gender", "language", "name", "provider", "voice_id")
        }
        families = {VoiceId.parse(v["voice_id"]).family for v in voices}
        expected = {f for f in (*TELNYX_MODELS.values(), *PROVIDERS.values()) if f.websocket}
        assert families == expected
        assert len({v["language"] for v in voices}) >= 5
        for voice in voices:
            assert check_connect(ConnectParams(voice=voice["voice_id"])) is None, voice
        assert emu.connections == []


async def test_voice_list_filters_by_provider_case_insensitively() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        url = emu.http_url + VOICES_PATH + "?provider=AWS"
        status, body = await asyncio.to_thread(get_json, url, AUTH)
        assert status == 200
        assert body["voices"]
        assert all(v["provider"] == "aws" for v in body["voices"])
        assert len(body["voices"]) == sum(v.provider == "aws" for v in VOICES)


async def test_voice_list_needs_the_key() -> None:
    async with TelnyxEmulator(api_key="right", signal="tone", faults=Faults.fast()) as emu:
        url = emu.http_url + VOICES_PATH
        status, body = await asyncio.to_thread(get_json, url, {})
        assert status == 401
        assert body["errors"][0]["detail"]
        status, _ = await asyncio.to_thread(get_json, url, {"Authorization": "Bearer nope"})
        assert status == 401
        status, _ = await asyncio.to_thread(get_json, url, {"Authorization": "Bearer right"})
        assert status == 200
