"""Time to first audio per turn, for the plugin and for the connect-per-segment baseline.

TTFA of a turn runs from its first ``LLMTextFrame`` entering the TTS's ``process_frame`` to the
first ``TTSAudioRawFrame`` the TTS pushes. The reply's tokens arrive back to back (an LLM that has
finished), so the sentence aggregator releases the first sentence at the first token of the
second, and no LLM time is inside the measurement.

Each turn is joined with the emulator's records through the marker signal (every sample of
socket N is N), which splits TTFA into: client to wire (text in, to the frame that started the
synthesis arriving at the server), server (synthesis start to first audio frame out, of which the
injected floor is on purpose), and wire to pipeline (first audio frame out of the server, to the
same audio leaving the TTS). Overhead = TTFA - floor. Client to wire is split once more at the
token that lets pipecat's sentence aggregator release the first sentence: before it is pipecat
taking in tokens, after it the sentence going through the service onto the socket.

Sessions alternate plugin and baseline, so both see the same machine. In half of the sessions the
first turn is sent the moment the pipeline has started (a greeting: the spare socket may still be
handshaking), in the other half after an idle pause (the user speaks first).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pipecat.services.tts_service import TTSService

from benchmarks.baseline import ConnectPerSegmentTTSService
from benchmarks.emulator_host import Connection, EmulatorProcess
from benchmarks.pipeline import NO_MARKER, Session, reply_text, tokens
from benchmarks.stats import injected_floor, percentiles
from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults

VOICE = "Telnyx.NaturalHD.astra"
API_KEY = "benchmark-key"
SERVICES = ("plugin", "baseline")
GROUPS = ("turn1_at_start", "turn1_after_idle", "later")


@dataclass(frozen=True)
class LatencyConfig:
    """What the latency run does; the defaults are the documented injected latency."""

    sessions: int = 8
    """Per service; half greet at pipeline start, half after ``idle_before_first_turn``."""
    turns: int = 5
    sentences: int = 2
    sample_rate: int = 16000
    gap: float = 0.3
    """Pause between the end of a turn's audio and the next turn."""
    idle_before_first_turn: float = 0.5
    faults: Faults = field(
        default_factory=lambda: Faults.fast(upgrade_delay=0.1, first_audio_delay=0.2, pace=1.0)
    )


@dataclass
class Turn:
    """One measured turn; times are perf_counter seconds, durations milliseconds."""

    service: str
    session: int
    turn: int
    group: str
    number: int
    start_in: float
    text_in: float
    release_in: float
    """When the token that lets the aggregator release the first sentence entered the TTS."""
    audio_out: float
    socket: int
    ttfa_ms: float = 0.0
    floor_ms: float = 0.0
    overhead_ms: float = 0.0
    to_wire_ms: float = 0.0
    aggregation_ms: float = 0.0
    """Part of ``to_wire_ms``: pipecat taking in tokens until the first sentence is complete."""
    send_ms: float = 0.0
    """Part of ``to_wire_ms``: the sentence, from that token to the server."""
    server_ms: float = 0.0
    from_wire_ms: float = 0.0
    upgrade_wait_ms: float = 0.0
    """How long the turn's text waited for its socket to be connected and initialized."""


def _make_service(kind: str, url: str) -> TTSService:
    if kind == "plugin":
        settings = TelnyxTTSService.Settings(voice=VOICE)
        return TelnyxTTSService(api_key=API_KEY, url=url, settings=settings)
    return ConnectPerSegmentTTSService(url=url, api_key=API_KEY, voice=VOICE)


async def _run_session(
    kind: str,
    index: int,
    url: str,
    config: LatencyConfig,
    numbers: Iterator[int],
) -> tuple[list[Turn], list[str]]:
    turns: list[Turn] = []
    wait_first = index % 2 == 1
    async with Session(_make_service(kind, url), sample_rate=config.sample_rate, markers=True) as s:
        if wait_first:
            await asyncio.sleep(config.idle_before_first_turn)
        for turn_no in range(1, config.turns + 1):
            number = next(numbers)
            seen_in, seen_out = len(s.entered.seen), len(s.tail.seen)
            await s.speak(reply_text(number, config.sentences), timeout=30)
            entered = s.entered.seen[seen_in:]
            texts = [x.t for x in entered if x.kind == "LLMTextFrame"]
            # The first sentence is released by the first token of the next one (or, for a
            # single sentence, by the end of the reply).
            first_sentence = tokens(reply_text(number, 1))
            ended = next(x.t for x in entered if x.kind == "LLMFullResponseEndFrame")
            audio = [x for x in s.tail.seen[seen_out:] if x.kind == "audio"]
            if not audio:
                raise RuntimeError(f"{kind} turn {turn_no} of session {index} produced no audio")
            group = "later" if turn_no > 1 else GROUPS[1] if wait_first else GROUPS[0]
            turns.append(
                Turn(
                    service=kind,
                    session=index,
                    turn=turn_no,
                    group=group,
                    number=number,
                    start_in=next(x.t for x in entered if x.kind == "LLMFullResponseStartFrame"),
                    text_in=texts[0],
                    release_in=texts[len(first_sentence)]
                    if len(texts) > len(first_sentence)
                    else ended,
                    audio_out=audio[0].t,
                    socket=audio[0].marker,
                )
            )
            await asyncio.sleep(config.gap)
        return turns, s.errors()


def _join(turn: Turn, conn: Connection, config: LatencyConfig) -> None:
    """Fill in the durations from the emulator's view of the turn's first synthesis."""
    tag = f"Reply {turn.number:05d}"
    synthesis = next((x for x in conn.syntheses if x.text.lstrip().startswith(tag)), None)
    if synthesis is None or synthesis.first_audio_at is None:
        raise RuntimeError(f"socket #{conn.index} has no synthesis of {tag!r}")
    if synthesis.cached:
        raise RuntimeError(f"{tag!r} was served from the emulator's cache: latency is not real")
    floor = injected_floor(config.faults, synthesis.sample_rate, synthesis.audio_seconds)
    turn.ttfa_ms = 1000 * (turn.audio_out - turn.text_in)
    turn.floor_ms = 1000 * floor
    turn.overhead_ms = turn.ttfa_ms - turn.floor_ms
    turn.to_wire_ms = 1000 * (synthesis.started_at - turn.text_in)
    turn.aggregation_ms = 1000 * (turn.release_in - turn.text_in)
    turn.send_ms = 1000 * (synthesis.started_at - turn.release_in)
    turn.server_ms = 1000 * (synthesis.first_audio_at - synthesis.started_at)
    turn.from_wire_ms = 1000 * (turn.audio_out - synthesis.first_audio_at)
    init_at = conn.first("init")
    assert init_at is not None
    turn.upgrade_wait_ms = max(0.0, 1000 * (init_at - turn.text_in))


def _summarize(turns: list[Turn]) -> dict[str, Any]:
    return {
        "ttfa_ms": percentiles(t.ttfa_ms for t in turns),
        "overhead_ms": percentiles(t.overhead_ms for t in turns),
        "to_wire_ms": percentiles(t.to_wire_ms for t in turns),
        "aggregation_ms": percentiles(t.aggregation_ms for t in turns),
        "send_ms": percentiles(t.send_ms for t in turns),
        "server_excess_ms": percentiles(t.server_ms - t.floor_ms for t in turns),
        "from_wire_ms": percentiles(t.from_wire_ms for t in turns),
        "upgrade_wait_ms": percentiles(t.upgrade_wait_ms for t in turns),
        "turns_that_waited_for_the_handshake": sum(t.upgrade_wait_ms > 0 for t in turns),
    }


def _ratio(baseline: float | int | None, plugin: float | int | None) -> float | None:
    if baseline is None or not plugin:
        return None
    return round(baseline / plugin, 3)


async def run_latency(
    config: LatencyConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Both services, same turns, one emulator process; returns the JSON-ready results."""
    turns: list[Turn] = []
    errors: list[str] = []
    numbers = itertools.count(1)
    async with EmulatorProcess(signal="marker", faults=config.faults) as emu:
        for index in range(config.sessions):
            for kind in SERVICES:
                got, errs = await _run_session(kind, index, emu.url, config, numbers)
                turns += got
                errors += [f"{kind}: {e}" for e in errs]
            progress(f"  latency: session {index + 1}/{config.sessions} done")
        connections = {c.index: c for c in await emu.connections()}
    for turn in turns:
        if turn.socket == NO_MARKER or turn.socket not in connections:
            raise RuntimeError(f"cannot attribute the first audio of {turn} to a socket")
        _join(turn, connections[turn.socket], config)
    groups: dict[str, dict[str, Any]] = {
        kind: {
            g: _summarize([t for t in turns if t.service == kind and t.group == g]) for g in GROUPS
        }
        for kind in SERVICES
    }
    for kind in SERVICES:
        groups[kind]["turn1"] = _summarize(
            [t for t in turns if t.service == kind and t.group != "later"]
        )
    ratios = {
        g: {
            q: _ratio(groups["baseline"][g]["ttfa_ms"][q], groups["plugin"][g]["ttfa_ms"][q])
            for q in ("p50", "p95")
        }
        for g in (*GROUPS, "turn1")
    }
    return {
        "config": asdict(config),
        "measured_from": "first LLMTextFrame entering the TTS's process_frame",
        "measured_to": "first TTSAudioRawFrame pushed by the TTS",
        "floor_ms": percentiles(t.floor_ms for t in turns),
        "services": groups,
        "ratios_baseline_over_plugin": ratios,
        "errors": errors,
        "turns": [asdict(t) for t in turns],
    }
