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
