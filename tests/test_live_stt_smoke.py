"""Telnyx STT against the live service, for the first developer with a key: what each engine
sends (partials or not, speech_final, utterance_end) and what a Finalize and a CloseStream bring
back, where the reference (``telnyx-stt-protocol.md``) has only conflicting reports.

Skipped unless TELNYX_API_KEY is set and TELNYX_LIVE_TESTS=1 opts in, and always under CI. It
prints one JSON line per engine to paste into an issue.
"""

import asyncio
import json
import os
import time

import pytest

pytestmark = pytest.mark.skipif(
    not os.environ.get("TELNYX_API_KEY")
    or os.environ.get("TELNYX_LIVE_TESTS") != "1"
    or bool(os.environ.get("CI")),
    reason="live Telnyx test: set TELNYX_API_KEY and TELNYX_LIVE_TESTS=1 (never under CI)",
)

RATE = 8000
SAY = "Hello, I would like to book an appointment for Friday morning."
ENGINES = [
    ("Deepgram", "nova-3", True),
    ("Deepgram", "flux", True),
    ("Speechmatics", None, True),
    ("Soniox", None, True),
    ("Telnyx", None, False),
    ("Google", None, False),
]


@pytest.mark.parametrize(("engine", "model", "interims"), ENGINES)
async def test_what_each_engine_sends(engine: str, model: str | None, interims: bool) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from pipecat_telnyx_tts import stt_protocol as sp
    from pipecat_telnyx_tts.emulator import Signal
    from pipecat_telnyx_tts.emulator.synth import (
        ESPEAK,
        OutputFormat,
        SynthesisRequest,
        synthesize_audio,
    )

    if not ESPEAK.available():
        pytest.skip("needs espeak-ng for real speech to send")
    pcm = synthesize_audio(SynthesisRequest(SAY, OutputFormat("linear16", RATE), Signal.SPEECH)).pcm
    audio = pcm.astype("<i2").tobytes() + bytes(RATE // 2 * 2)
    params = sp.SttParams(
        transcription_engine=engine, model=model, sample_rate=RATE, interim_results=interims
    )
    assert sp.check_params(params) == []
    seen: list[tuple[float, str, str]] = []
    start = time.perf_counter()

    async def read(ws) -> None:
        try:
            async for raw in ws:
                seen.append((round(time.perf_counter() - start, 3), phase, str(raw)[:300]))
        except ConnectionClosed:
            pass

    phase = "audio"
    async with connect(
        f"{sp.DEFAULT_STT_URL}?{params.to_query()}",
        additional_headers={"Authorization": f"Bearer {os.environ['TELNYX_API_KEY']}"},
    ) as ws:
        reader = asyncio.create_task(read(ws))
        step = RATE * 2 * 40 // 1000
        for i in range(0, len(audio), step):
            await ws.send(audio[i : i + step])
            await asyncio.sleep(0.04)
        phase = "after_finalize"
        await ws.send(sp.control_frame(sp.FINALIZE))
        await asyncio.sleep(2.0)
        phase = "after_close_stream"
        await ws.send(sp.control_frame(sp.CLOSE_STREAM))
        try:
            async with asyncio.timeout(5.0):
                await reader
        except TimeoutError:
            reader.cancel()
        close = (ws.close_code, ws.close_reason)
    parsed = []
    for t, when, raw in seen:
        try:
            parsed.append((t, when, sp.parse_server(raw)))
        except sp.SttProtocolError:
            parsed.append((t, when, None))
    results = [m for _, _, m in parsed if isinstance(m, sp.Transcript)]

    print(
        json.dumps(
            {
                "engine": engine,
                "model": model,
                "partials": sum(not r.is_final for r in results),
                "finals": [r.text for r in results if r.is_final],
                "speech_final": any(r.speech_final for r in results),
                "utterance_end": any(isinstance(m, sp.UtteranceEnd) for _, _, m in parsed),
                "after_finalize": [raw for _, when, raw in seen if when == "after_finalize"],
                "after_close_stream": [
                    raw for _, when, raw in seen if when == "after_close_stream"
                ],
                "close": close,
                "unparsed": [
                    raw for (_, _, raw), (_, _, m) in zip(seen, parsed, strict=True) if not m
                ],
            }
        )
    )
    assert not any(isinstance(m, sp.Errors) for _, _, m in parsed), seen
    assert any(r.text for r in results if r.is_final), "no transcript at all"
