"""Many calls in one process against a Telnyx that rate-limits upgrades: no storm, no turn lost
without a word, and every call speaks again once the limit lifts."""

from __future__ import annotations

import asyncio
import os
import time

from pipecat.frames.frames import Frame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.records import upgrades_per_second
from pipecat_telnyx_tts.policy import HandshakeLimiter
from tests.service_helpers import Gate, Until, errors, llm_turn, make_tts, run

CALLS = int(os.environ.get("TELNYX_LOAD_CALLS", "50"))
"""Pipelines in the process. 50 in the suite, which runs on loaded machines; the issue's 200 with
``TELNYX_LOAD_CALLS=200`` (about 20 s on an idle 2-core machine, minutes beside busy loops)."""
LIMIT = 10
"""Upgrades a second the emulator accepts per key: a fifth of what one process may attempt."""


class TurnsEnded(FrameProcessor):
    """Counts the TTS's stop frames: one per turn that ended, spoken or failed."""

    def __init__(self, ended: list[int]) -> None:
        super().__init__()
        self._ended = ended

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSStoppedFrame):
            self._ended[0] += 1
        await self.push_frame(frame, direction)


async def test_many_calls_against_a_rate_limit_neither_storm_nor_lose_a_turn(monkeypatch):
    # A limiter of this test's own, so that other tests' handshakes to other ports do not count.
    limiter = HandshakeLimiter(
        TelnyxTTSService.HANDSHAKES_PER_SECOND, TelnyxTTSService.HANDSHAKE_BURST
    )
    monkeypatch.setattr("pipecat_telnyx_tts.service.shared_limiter", lambda *a, **k: limiter)
    faults = Faults.fast(rate_limit=LIMIT, inactivity_timeout=None)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        ended = [0]
        lifted: list[float] = []
        lift_event = asyncio.Event()

        def lift() -> None:
            emu.faults.rate_limit = None
            lifted.append(time.perf_counter())
            lift_event.set()

        async def call(i: int) -> tuple[list[Frame], list[Frame]]:
            tts = make_tts(emu)
            frames = [
                *llm_turn(f"Call {i} turn one."),
                Until(event=lift_event, timeout=600.0),
                *llm_turn(f"Call {i} turn two."),
            ]
            return await run(Pipeline([Gate(), tts, TurnsEnded(ended)]), frames)

        start = time.perf_counter()
        calls = asyncio.gather(*(call(i) for i in range(CALLS)))
        try:
            await emu.wait_for(lambda: ended[0] >= CALLS, timeout=300.0)
        finally:
            # Always, so that every pipeline can end: pipecat's runner does not end on a cancel,
            # and a pipeline left waiting would hold the test's event loop open for good.
            lift()
            done, _ = await asyncio.wait({calls}, timeout=300.0)
        assert done, "the calls did not end within 300 s of the limit lifting"
        outcomes = calls.result()

    spoken = {s.text.strip() for c in emu.connections for s in c.syntheses}
    named = " ".join(e.error for _, up in outcomes for e in errors(up))
    for i in range(CALLS):
        first = f"Call {i} turn one."
        assert first in spoken or first in named, f"call {i}'s first turn vanished"
        second = f"Call {i} turn two."
        assert second in spoken, (
            f"call {i} did not recover: {[e.error for e in errors(outcomes[i][1])]}"
        )
    seconds = upgrades_per_second(emu.connections, start)
    limited = seconds[: int(lifted[0] - start)]
    refused = sum(s.refused for s in limited)
    accepted = sum(s.accepted for s in limited)
    # Attempts stay near what Telnyx takes: at least half are accepted while the limit holds
    # (without the process's limiter every call knocks on its own, and most are refused).
    assert refused <= accepted, [(s.accepted, s.refused) for s in seconds]
    assert max(s.refused for s in seconds) <= 2 * TelnyxTTSService.HANDSHAKE_BURST
