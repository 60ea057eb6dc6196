"""After a turn fails mid-reply, the assistant context records the words that played, no more,
and the ErrorFrame names the text that did not play: every failure path, in real pipelines."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import TTSTextFrame

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from tests.service_helpers import audio_seconds, errors, llm_turn, make_tts, run

REPLY = (
    "The first sentence has a few words in it. ",
    "The second sentence is where the trouble starts for this reply. ",
    "A third one follows that nobody will hear. ",
    "And a last one.",
)
WORDS = "".join(REPLY).split()

FAULTS = {
    "error frame": {"error_after_chunks": 3},
    "dropped connection": {"drop_after_chunks": 3},
    "closed socket": {"close_after_chunks": 3},
    "silence": {"stall_after_chunks": 3},
}


def heard(emu: TelnyxEmulator, delivered: float) -> int:
    """Words of the reply whose audio starts within the ``delivered`` seconds."""
    count, offset = 0, 0.0
    for synthesis in (s for c in emu.connections for s in c.syntheses):
        count += sum(offset + w.start < delivered for w in synthesis.words)
        offset += synthesis.audio_seconds
    return count


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_failed_turn_records_what_played_and_names_the_rest(fault, monkeypatch):
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 1.0)
    faults = Faults.fast(pace=4.0, chunk_ms=200, fault_count=1, **FAULTS[fault])
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn(*REPLY))
    recorded = [f.text for f in down if isinstance(f, TTSTextFrame)]
    [error] = [e for e in errors(up) if "not played" in e.error]
    assert recorded == WORDS[: len(recorded)], "the context holds a prefix of the reply"
    assert 0 < len(recorded) < len(REPLY[0].split()), "the fault cut the first sentence"
    delivered = audio_seconds(down)
    assert abs(len(recorded) - heard(emu, delivered)) <= 2, (recorded, delivered)
    unplayed = error.error.split("not played: [", 1)[1].rstrip("]").split()
    assert unplayed[0] == WORDS[len(recorded)], (recorded, unplayed)
