"""One real turn against Telnyx, for a developer with a key.

Skipped unless TELNYX_API_KEY is set and TELNYX_LIVE_TESTS=1 opts in, and always skipped when CI
is set: tests and CI never call the live API by accident.
"""

import os

import pytest

from tests.service_helpers import audio_seconds, errors, llm_turn, run

pytestmark = pytest.mark.skipif(
    not os.environ.get("TELNYX_API_KEY")
    or os.environ.get("TELNYX_LIVE_TESTS") != "1"
    or bool(os.environ.get("CI")),
    reason="live Telnyx test: set TELNYX_API_KEY and TELNYX_LIVE_TESTS=1 (never under CI)",
)


@pytest.mark.parametrize("voice", ["Telnyx.NaturalHD.astra", "Telnyx.KokoroTTS.af_heart"])
async def test_one_turn_speaks_on_the_live_service(voice):
    from pipecat_telnyx_tts import TelnyxTTSService

    tts = TelnyxTTSService(settings=TelnyxTTSService.Settings(voice=voice))
    down, up = await run(tts, llm_turn("Hello from the live smoke test. ", "Goodbye."), 8000)
    assert not errors(up)
    assert audio_seconds(down) > 1.0


IDLE_PROBE_S = 150.0
"""How long the idle probe holds its sockets: past the 120 s it asks for."""


@pytest.mark.skipif(
    os.environ.get("TELNYX_LIVE_IDLE_PROBE") != "1",
    reason="the idle probe takes 2.5 minutes: set TELNYX_LIVE_IDLE_PROBE=1 as well",
)
async def test_idle_window_probe():
    """Which idle sockets Telnyx keeps, and for how long: asked for 120 s, kept alive with
    WebSocket pings, or left alone. Prints a line to paste into an issue; the service's
    policy (``INACTIVITY_TIMEOUT_S``, ``keep_warm``) should follow what it shows."""
    import asyncio
    import json
    import time

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from pipecat_telnyx_tts.protocol import DEFAULT_URL, encode_client
    from pipecat_telnyx_tts.request import build_request

    modes = {"asked_120": (120.0, None), "pings_10s": (None, 10.0), "nothing": (None, None)}
    key = os.environ["TELNYX_API_KEY"]

    async def hold(ask: float | None, ping: float | None) -> dict[str, object]:
        request = build_request(
            voice="Telnyx.NaturalHD.astra",
            out_rate=8000,
            audio_format=None,
            speed=None,
            voice_settings=None,
            language=None,
            inactivity_timeout=ask,
        )
        started = time.monotonic()
        async with connect(
            f"{DEFAULT_URL}?{request.params.to_query()}",
            additional_headers={"Authorization": f"Bearer {key}"},
            ping_interval=ping,
            ping_timeout=ping,
        ) as ws:
            connected = time.monotonic() - started
            await ws.send(encode_client(request.init))
            inited = time.monotonic()
            frames: list[str] = []
            try:
                async with asyncio.timeout(IDLE_PROBE_S):
                    async for raw in ws:
                        frames.append(str(raw)[:120])
            except TimeoutError:
                return {"connect_s": round(connected, 2), "survived_s": IDLE_PROBE_S}
            except ConnectionClosed:
                pass
            return {
                "connect_s": round(connected, 2),
                "closed_after_s": round(time.monotonic() - inited, 1),
                "close_code": ws.close_code,
                "close_reason": ws.close_reason,
                "frames": frames,
            }

    results = await asyncio.gather(*(hold(*mode) for mode in modes.values()))
    line = json.dumps(dict(zip(modes, results, strict=True)))
    print(f"\nTelnyx idle probe (paste into an issue): {line}")
    assert all("connect_s" in r for r in results)
