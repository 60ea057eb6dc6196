"""TelnyxSTTService in real pipecat pipelines against the emulator over loopback: every engine
behaviour, every error code, each fault, and nothing left running afterwards."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterimTranscriptionFrame,
    MetricsFrame,
    STTMetadataFrame,
    STTUpdateSettingsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.stt_latency import DEEPGRAM_TTFS_P99
from pipecat.tests.utils import SleepFrame, run_test
from service_helpers import Gate, Push, Until
from stt_helpers import PHONE_RATE, caller_says, noise, silence
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts import TelnyxSTTService, TelnyxSTTSettings
from pipecat_telnyx_tts import stt_protocol as sp
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.stt_socket import SttRecord
from pipecat_telnyx_tts.policy import ConnectionPolicy, Limits
from pipecat_telnyx_tts.stt_buffer import HeldAudio

HELLO = "Hello there, my friend."
SECOND = "Book a table for two."
CHUNK_S = 0.02


@pytest.fixture
async def emu() -> TelnyxEmulator:
    async with TelnyxEmulator(api_key="k", faults=Faults.fast()) as server:
        yield server


def make_stt(emu: TelnyxEmulator, **settings: Any) -> TelnyxSTTService:
    kw = {k: settings.pop(k) for k in list(settings) if k in _SERVICE_ARGS}
    return TelnyxSTTService(
        api_key="k",
        url=emu.stt_url,
        settings=TelnyxSTTSettings(**settings),
        policy=ConnectionPolicy(limits=Limits(spare_cap=0.5)),
        **kw,
    )


_SERVICE_ARGS = {"held_audio_seconds", "close_wait", "frame_ms", "sample_rate", "connect_timeout"}


@dataclass
class Make(Push):
    """Pushes the frame ``make`` builds when its turn comes (a VAD stop carries a timestamp)."""

    make: Callable[[], Frame] = field(default=lambda: VADUserStartedSpeakingFrame())


class StampGate(Gate):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, Make):
            frame.frame = frame.make()
        await super().process_frame(frame, direction)


def audio(pcm: np.ndarray, rate: int = PHONE_RATE) -> list[Frame]:
    step = round(CHUNK_S * rate)
    data = pcm.astype("<i2")
    return [
        Push(frame=InputAudioRawFrame(data[i : i + step].tobytes(), rate, 1))
        for i in range(0, len(data), step)
    ]


def turn(pcm: np.ndarray, rate: int = PHONE_RATE, stop_secs: float = 0.2) -> list[Frame]:
    """A caller's turn as a VAD would mark it: start, speech, silence, stop."""
    return [
        Push(frame=VADUserStartedSpeakingFrame()),
        *audio(pcm, rate),
        *audio(silence(stop_secs, rate), rate),
        Make(make=lambda: VADUserStoppedSpeakingFrame(stop_secs=stop_secs)),
    ]


def until(predicate: Callable[[], object], timeout: float = 10.0) -> Until:
    return Until(predicate=lambda: bool(predicate()), timeout=timeout)


async def run(
    stt: TelnyxSTTService, frames: Sequence[Frame], rate: int = PHONE_RATE, **params: Any
) -> tuple[list[Frame], list[Frame]]:
    down, up = await run_test(
        Pipeline([StampGate(), stt]),
        frames_to_send=list(frames),
        pipeline_params=PipelineParams(
            audio_in_sample_rate=rate, audio_out_sample_rate=rate, **params
        ),
    )
    return list(down), list(up)


def finals(frames: Sequence[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, TranscriptionFrame)]


def interims(frames: Sequence[Frame]) -> list[str]:
    return [f.text for f in frames if isinstance(f, InterimTranscriptionFrame)]


def errors(frames: Sequence[Frame]) -> list[ErrorFrame]:
    return [f for f in frames if isinstance(f, ErrorFrame)]


def session(emu: TelnyxEmulator, n: int = 0) -> SttRecord:
    return emu.stt.sessions[n]


def controls(emu: TelnyxEmulator, n: int = 0) -> list[str]:
    return [k for _, k in session(emu, n).controls]


async def all_closed(emu: TelnyxEmulator) -> None:
    await emu.wait_for(lambda: all(c.closed_at for c in emu.connections))


# --------------------------------------------------------------------------- transcripts


async def test_a_turn_comes_back_as_one_transcription(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu)
    down, up = await run(stt, turn(caller_says(emu, HELLO)))
    assert finals(down) == [HELLO] and interims(down) == [] and errors(up) == []
    frame = next(f for f in down if isinstance(f, TranscriptionFrame))
    assert frame.timestamp and frame.result == sp.Transcript(HELLO, True, True, 0.99)
    await all_closed(emu)
    record = session(emu)
    query = sp.parse_query(record.connection.query)
    assert query["transcription_engine"] == ["Deepgram"]
    assert query["input_format"] == ["linear16"] and query["sample_rate"] == ["8000"]
    sizes = record.frame_sizes
    assert max(sizes, key=sizes.__getitem__) == 640, "40 ms frames at 8 kHz"
    assert controls(emu) == [sp.FINALIZE, sp.CLOSE_STREAM]
    assert record.connection.close_code == 1000
    assert record.connection.headers["Authorization"] == "Bearer REDACTED"
    assert stt._task is None and stt._ws is None


async def test_two_turns_and_16k_audio(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu)
    frames = [
        *turn(caller_says(emu, HELLO, rate=16000), rate=16000),
        *turn(caller_says(emu, SECOND, rate=16000), rate=16000),
    ]
    down, _ = await run(stt, frames, rate=16000)
    assert finals(down) == [HELLO, SECOND]
    assert session(emu).spec is not None and session(emu).spec.sample_rate == 16000
    assert max(session(emu).frame_sizes, key=session(emu).frame_sizes.__getitem__) == 1280


async def test_interim_results_before_the_final(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu, interim_results=True)
    down, _ = await run(stt, turn(caller_says(emu, HELLO)))
    partial = interims(down)
    assert partial and all(HELLO.startswith(p) for p in partial)
    assert finals(down) == [HELLO]
    last_interim = max(i for i, f in enumerate(down) if isinstance(f, InterimTranscriptionFrame))
    first_final = min(i for i, f in enumerate(down) if isinstance(f, TranscriptionFrame))
    assert last_interim < first_final


async def test_finals_only_reading_of_deepgram(emu: TelnyxEmulator) -> None:
    emu.stt.behaviour.deepgram_interims = False
    down, _ = await run(make_stt(emu, interim_results=True), turn(caller_says(emu, HELLO)))
    assert interims(down) == [] and finals(down) == [HELLO]


@pytest.mark.parametrize(
    ("engine", "model", "finalize"),
    [
        ("Deepgram", "flux", True),
        ("Speechmatics", None, False),
        ("Telnyx", None, False),
        ("Parakeet", None, False),
    ],
)
async def test_engines(emu: TelnyxEmulator, engine: str, model: str | None, finalize: bool) -> None:
    stt = make_stt(emu, engine=engine, model=model, close_wait=0.5)
    down, up = await run(stt, turn(caller_says(emu, HELLO)))
    assert finals(down) == [HELLO] and errors(up) == []
    assert (sp.FINALIZE in controls(emu)) is finalize
    assert controls(emu)[-1] == sp.CLOSE_STREAM
    await all_closed(emu)


async def test_finalize_ends_an_utterance_without_endpointing(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu, endpointing=False)
    down, _ = await run(stt, [*turn(caller_says(emu, HELLO)), until(lambda: session(emu).results)])
    assert finals(down) == [HELLO]
    assert session(emu).utterances[0].ended_by == "finalize"


async def test_close_stream_collects_the_last_final(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu, endpointing=False)
    frames = [Push(frame=VADUserStartedSpeakingFrame()), *audio(caller_says(emu, HELLO))]
    down, _ = await run(stt, frames)
    assert finals(down) == [HELLO]
    assert session(emu).utterances[0].ended_by == "close_stream"


async def test_close_stream_ignored_by_the_engine_is_waited_for_a_bounded_time(
    emu: TelnyxEmulator,
) -> None:
    stt = make_stt(emu, engine="Azure", close_wait=0.3)
    down, _ = await run(stt, turn(caller_says(emu, HELLO)))
    assert finals(down) == [HELLO]
    await all_closed(emu)
    assert session(emu).connection.close_code == 1000, "the client closed after its wait"


async def test_scripted_caller(emu: TelnyxEmulator) -> None:
    emu.stt.script.extend(["I need a plumber"])
    down, _ = await run(make_stt(emu), turn(noise(0.8)))
    assert finals(down) == ["I need a plumber"]


async def test_empty_finals_push_nothing(emu: TelnyxEmulator) -> None:
    down, _ = await run(make_stt(emu), turn(noise(0.5)))
    assert finals(down) == [] and session(emu).results


async def test_ttfb_runs_from_the_vad_stop_to_the_final(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu)
    down, _ = await run(stt, turn(caller_says(emu, HELLO)), enable_metrics=True)
    ttfb = [
        d
        for f in down
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, TTFBMetricsData) and d.processor == stt.name and d.value > 0
    ]
    assert len(ttfb) == 1 and ttfb[0].value < 5, "one measurement: the VAD stop to the final"


async def test_settings_update_opens_a_new_session(emu: TelnyxEmulator) -> None:
    """Without endpointing or a VAD stop, only CloseStream makes the first utterance final: the
    old session must end gracefully for it to come back."""
    stt = make_stt(emu, endpointing=False, close_wait=0.5)
    frames = [
        Push(frame=VADUserStartedSpeakingFrame()),
        *audio(caller_says(emu, HELLO)),
        until(lambda: session(emu).audio_seconds > 1.5),
        Push(frame=STTUpdateSettingsFrame(delta=TelnyxSTTSettings(engine="Speechmatics"))),
        until(lambda: len(emu.stt.sessions) == 2),
        *turn(caller_says(emu, SECOND)),
    ]
    down, up = await run(stt, frames)
    assert finals(down) == [HELLO, SECOND] and errors(up) == []
    assert session(emu).utterances[0].ended_by == "close_stream"
    query = sp.parse_query(session(emu, 1).connection.query)
    assert query["transcription_engine"] == ["Speechmatics"] and query["endpointing"] == ["false"]


async def test_a_refused_settings_update_keeps_the_session(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu)
    bad = STTUpdateSettingsFrame(delta=TelnyxSTTSettings(engine="Telnyx", interim_results=True))
    frames = [*turn(caller_says(emu, HELLO)), Push(frame=bad), *turn(caller_says(emu, SECOND))]
    down, up = await run(stt, frames)
    assert finals(down) == [HELLO, SECOND]
    (error,) = errors(up)
    assert "no interim results" in error.error
    assert len(emu.stt.sessions) == 1
    assert stt.params.transcription_engine == "Deepgram" and not stt.params.interim_results


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("settings", "fix"),
    [
        ({"engine": "deepgram"}, "use 'Deepgram'"),
        ({"engine": "Telnyx", "interim_results": True}, "no interim results"),
        ({"model": "nova-3", "eot_threshold": 0.7}, "Flux models only"),
        ({"engine": "Google", "redact": ["pci"]}, "redact"),
    ],
)
def test_bad_settings_are_refused_at_construction(settings: dict, fix: str) -> None:
    with pytest.raises(ValueError, match=fix):
        TelnyxSTTService(api_key="k", settings=TelnyxSTTSettings(**settings))


@pytest.mark.parametrize(
    ("kwargs", "fix"),
    [
        ({"url": "http://x/y"}, "not a WebSocket URL"),
        ({"frame_ms": 5}, "frame_ms"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs: dict, fix: str) -> None:
    with pytest.raises(ValueError, match=fix):
        TelnyxSTTService(api_key="k", **kwargs)


@pytest.mark.parametrize(
    ("code", "parameter"),
    [
        ("40001", "input_format"),
        ("40002", "input_format"),
        ("40003", "sample_rate"),
        ("40004", "sample_rate"),
        ("40005", "sample_rate"),
        ("40006", "input_format"),
        ("40007", "transcription_engine"),
        (None, "eot_threshold"),
    ],
)
@pytest.mark.parametrize("singular", [False, True])
async def test_an_errors_frame_is_one_permanent_error_frame(
    emu: TelnyxEmulator, code: str | None, parameter: str, singular: bool
) -> None:
    emu.stt.behaviour.singular_error = singular
    emu.stt.faults.refuse_with = [(code, parameter)]
    stt = make_stt(emu)
    frames = [*turn(caller_says(emu, HELLO)), until(lambda: not stt.is_usable)]
    _, up = await run(stt, frames)
    (error,) = errors(up)
    assert f"'{parameter}'" in error.error and (code is None or code in error.error)
    assert not stt.is_usable
    assert len(emu.connections) == 1, "configuration errors are not retried"


async def test_a_wrong_key_is_one_error_and_no_retry(emu: TelnyxEmulator) -> None:
    stt = TelnyxSTTService(api_key="wrong", url=emu.stt_url)
    _, up = await run(stt, [*turn(caller_says(emu, HELLO)), until(lambda: not stt.is_usable)])
    (error,) = errors(up)
    assert "401" in error.error and "API key" in error.error and "wrong" not in error.error
    assert [c.status for c in emu.connections] == [401]


async def test_a_wrong_path_is_permanent(emu: TelnyxEmulator) -> None:
    stt = TelnyxSTTService(api_key="k", url=emu.url.replace("/speech", "/nothing"))
    _, up = await run(stt, [until(lambda: not stt.is_usable)])
    (error,) = errors(up)
    assert "404" in error.error and len(emu.connections) == 1


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", ["drop_after_audio", "close_after_audio", "error_after_audio"])
async def test_a_lost_socket_is_reopened_and_the_next_turn_transcribed(
    emu: TelnyxEmulator, fault: str
) -> None:
    setattr(emu.stt.faults, fault, 0.3)
    emu.stt.faults.fault_count = 1
    stt = make_stt(emu)
    events: list[str] = []
    for name in ("on_connected", "on_disconnected"):
        stt.event_handler(name)(_recorder(events, name))
    frames = [
        *audio(silence(0.5)),
        until(lambda: len(emu.stt.sessions) == 2 and stt._ws is not None),
        *turn(caller_says(emu, HELLO)),
    ]
    down, up = await run(stt, frames)
    assert finals(down) == [HELLO]
    assert events[:3] == ["on_connected", "on_disconnected", "on_connected"]
    assert len(errors(up)) <= 1


async def test_a_socket_lost_while_catching_up_passes_its_audio_on() -> None:
    """Held audio that a socket did not take (it closed mid-way) waits for the next socket, in
    order; the lost socket never becomes the one audio goes to."""

    class Closing:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def send(self, data: bytes) -> None:
            if len(self.sent) == 2:
                raise ConnectionClosed(None, None)
            self.sent.append(data)

    stt = TelnyxSTTService(api_key="k")
    stt._held = HeldAudio(max_bytes=100)
    for frame in (b"aa", b"bb", b"cc", b"dd"):
        stt._held.hold(frame)
    ws = Closing()
    await stt._resume(ws)  # type: ignore[arg-type]
    assert ws.sent == [b"aa", b"bb"]
    assert stt._ws is None and not stt._ready.is_set()
    assert stt._held.take() == ([b"cc", b"dd"], 0)


def _recorder(events: list[str], name: str) -> Callable[..., Any]:
    async def record(*_: Any) -> None:
        events.append(name)

    return record


async def test_refusals_at_the_upgrade_back_off_then_connect(emu: TelnyxEmulator) -> None:
    emu.faults.refuse_status = 503
    emu.faults.refuse_count = 3
    stt = make_stt(emu)
    down, up = await run(stt, [*turn(caller_says(emu, HELLO)), until(lambda: finals_seen(emu))])
    assert finals(down) == [HELLO]
    assert [c.status for c in emu.connections] == [503, 503, 503, 101]
    gaps = [b.opened_at - a.opened_at for a, b in itertools.pairwise(emu.connections)]
    assert all(g > 0.05 for g in gaps), f"backoff between attempts: {gaps}"
    assert len(errors(up)) == 1, "one ErrorFrame for the outage, not one per attempt"
    assert stt.is_usable


def finals_seen(emu: TelnyxEmulator) -> bool:
    return any(
        isinstance(r, sp.Transcript) and r.is_final for s in emu.stt.sessions for _, r in s.results
    )


async def test_audio_held_while_reconnecting_is_bounded(emu: TelnyxEmulator) -> None:
    emu.faults.refuse_status = 503
    emu.faults.refuse_count = 2
    stt = make_stt(emu, held_audio_seconds=2.5)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m), level="WARNING", format="{message}")
    try:
        down, _ = await run(stt, [*audio(silence(3.0)), *turn(caller_says(emu, HELLO))])
    finally:
        logger.remove(sink)
    assert finals(down) == [HELLO], "the latest audio is kept: the whole turn"
    dropped = [w for w in warnings if "dropped the oldest" in w]
    assert dropped and "kept the latest 2.5 s" in dropped[0]
    assert session(emu).audio_seconds < 3.0


async def test_malformed_server_frames_are_skipped(emu: TelnyxEmulator) -> None:
    emu.stt.faults.inject_frames = ["not json", b"\x00\x01", '{"transcript": 5}', "[]"]
    down, up = await run(make_stt(emu), turn(caller_says(emu, HELLO)))
    assert finals(down) == [HELLO] and errors(up) == []
    assert emu.stt.faults.inject_frames == []


async def test_audio_sent_before_the_socket_opens_is_transcribed(emu: TelnyxEmulator) -> None:
    emu.faults.upgrade_delay = 0.3
    stt = make_stt(emu)
    down, _ = await run(stt, turn(caller_says(emu, HELLO)))
    assert finals(down) == [HELLO], "the end waits for the socket to take the held audio"


async def test_a_hung_upgrade_is_abandoned_at_the_end(emu: TelnyxEmulator) -> None:
    emu.faults.hang_upgrades = 1
    stt = make_stt(emu, close_wait=0.3)
    await run(stt, audio(silence(0.2)))
    await all_closed(emu)
    assert stt._task is None
    assert [t for t in asyncio.all_tasks() if "telnyx-stt" in t.get_name() and not t.done()] == []


async def test_the_end_waits_a_bounded_time_for_an_upgrade_that_never_answers(
    emu: TelnyxEmulator,
) -> None:
    """Every upgrade hangs and a handshake may take two minutes: the end waits ``close_wait``
    for a socket to take the held audio, says that audio is lost, and stops the connecting task;
    it does not wait for the handshake."""
    emu.faults.hang_upgrades = 1000
    stt = make_stt(emu, close_wait=0.3, connect_timeout=120.0)
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m), level="WARNING", format="{message}")
    try:
        # Waited on, not awaited: an end that waits for the handshake must fail, not hang.
        ending = asyncio.ensure_future(run(stt, audio(caller_says(emu, HELLO))))
        done, _ = await asyncio.wait([ending], timeout=60)
        if not done:
            ending.cancel()
            await stt._shut_down()  # no handshake left for the emulator's teardown to wait on
    finally:
        logger.remove(sink)
    assert done, "the end waited for a handshake that never answers"
    assert [w for w in warnings if "held audio is lost" in w]
    assert stt._task is None and len(emu.connections) == 1


async def test_a_stalled_server_does_not_hang_the_end(emu: TelnyxEmulator) -> None:
    emu.stt.faults.stall_after_audio = 0.1
    stt = make_stt(emu, close_wait=0.3)
    down, _ = await run(stt, turn(caller_says(emu, HELLO)))
    assert finals(down) == []
    await all_closed(emu)
    assert stt._task is None


async def test_cancel_closes_at_once(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu)
    frames = [*audio(caller_says(emu, HELLO)), SleepFrame(0.3), CancelFrame()]
    await run(stt, frames)
    await all_closed(emu)
    assert all(sp.CLOSE_STREAM not in [k for _, k in s.controls] for s in emu.stt.sessions)
    assert stt._task is None and stt._ws is None


async def test_nothing_runs_after_the_end(emu: TelnyxEmulator) -> None:
    stt = make_stt(emu)
    await run(stt, turn(caller_says(emu, HELLO)))
    await all_closed(emu)
    leftover = [t for t in asyncio.all_tasks() if "telnyx-stt" in t.get_name() and not t.done()]
    assert leftover == []


@pytest.mark.parametrize(("engine", "wait"), [("Deepgram", DEEPGRAM_TTFS_P99), ("Telnyx", 1.0)])
async def test_the_user_turn_waits_for_a_final_as_long_as_the_engine_takes(
    emu: TelnyxEmulator, engine: str, wait: float
) -> None:
    # pipecat's user turn waits this long after the caller stops for a final; unset, it waits
    # 1 s on every turn, though Deepgram's final comes in about 0.1 s.
    down, _ = await run(make_stt(emu, engine=engine), [])
    [metadata] = [f for f in down if isinstance(f, STTMetadataFrame)]
    assert metadata.ttfs_p99_latency == wait
