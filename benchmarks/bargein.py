"""Randomized barge-ins against the plugin: force latency, audio stop and stale frames.

One pipeline speaks a chain of replies and each is interrupted at a random moment, from before
its first audio to near its end. The emulator sends up to ``max_frames_after_force`` frames of the
interrupted synthesis after the force arrives (frames a real server had already produced), and
sometimes the next reply starts the instant the interruption is sent. Pacing (4-8x) and chunk
size change every ``block`` barge-ins.

Measured per barge-in, all on one perf_counter clock (the emulator is another process, on the
same CLOCK_MONOTONIC):

- force: the emulator's receive time of ``{"force": true}`` on the interrupted turn's socket,
  minus the moment the ``InterruptionFrame`` entered the TTS's ``process_frame``;
- audio stop: the last audio frame of the interrupted socket leaving the TTS, minus that moment
  (0 when none left after it);
- stale frames: audio of the interrupted socket (told by the marker signal) that reaches the
  pipeline after the ``InterruptionFrame`` does, which a transport would play after it flushed.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pipecat.frames.frames import InterruptionFrame

from benchmarks.emulator_host import Connection, EmulatorProcess
from benchmarks.latency import API_KEY, VOICE
from benchmarks.pipeline import NO_MARKER, Seen, Session, llm_turn, reply_text
from benchmarks.stats import percentiles
from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults
from pipecat_telnyx_tts.emulator.synth import speech_seconds, spoken_text


@dataclass(frozen=True)
class BargeInConfig:
    """What the barge-in run does."""

    barge_ins: int = 200
    block: int = 25
    """Barge-ins per pacing and chunk-size setting."""
    paces: tuple[float, ...] = (4.0, 6.0, 8.0)
    chunk_ms: tuple[int, ...] = (20, 40, 100, 250)
    max_frames_after_force: int = 50
    next_turn_at_once: float = 0.35
    """Share of barge-ins followed by the next reply with no pause at all."""
    sentences: int = 3
    sample_rate: int = 16000
    seed: int = 5
    faults: Faults = field(
        default_factory=lambda: Faults.fast(upgrade_delay=0.1, first_audio_delay=0.2)
    )


@dataclass
class BargeIn:
    """One interrupted turn; durations in milliseconds."""

    number: int
    pace: float
    chunk_ms: int
    frames_after_force: int
    planned_at_ms: float
    """When the interruption was sent, after the reply was."""
    next_turn_at_once: bool
    interrupted_at: float = 0.0
    socket: int | None = None
    outcome: str = ""
    """force_sent, nothing_on_the_wire (text still waiting for its socket), or already_over."""
    force_ms: float | None = None
    audio_stop_ms: float | None = None
    had_audio: bool = False
    stale_frames: int = 0
    late_after_entry: int = 0
    """Audio of the socket that left the TTS after the interruption entered it (by time)."""
    dropped_by_client: int = 0
    """Audio frames the emulator sent after the force, which the client had to drop."""


_REPLY = re.compile(r"Reply (\d+)\.")


def _length(text: str) -> float:
    """Seconds of marker audio the emulator makes for ``text`` (its ``speech_seconds``)."""
    return speech_seconds(spoken_text(text))


async def _drive(
    session: Session, emu: EmulatorProcess, config: BargeInConfig, rng: random.Random
) -> tuple[list[BargeIn], int]:
    plans: list[BargeIn] = []
    numbers = itertools.count(100_000)
    pace, chunk_ms = config.paces[0], config.chunk_ms[0]
    for i in range(config.barge_ins):
        if i % config.block == 0:
            pace, chunk_ms = rng.choice(config.paces), rng.choice(config.chunk_ms)
            await emu.set_faults(pace=pace, chunk_ms=chunk_ms)
        number = next(numbers)
        text = reply_text(number, config.sentences)
        frames_after_force = rng.randint(0, config.max_frames_after_force)
        at_once = rng.random() < config.next_turn_at_once
        # Anywhere from before the first audio to the end of the reply: every sentence is a
        # synthesis of its own, each delayed by first_audio_delay.
        delays = config.sentences * config.faults.first_audio_delay
        moment = rng.uniform(0.0, delays + _length(text) / pace)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await session.send(llm_turn(text))
        await emu.set_faults(frames_after_force=frames_after_force)
        await asyncio.sleep(max(0.0, moment - (loop.time() - sent)))
        plans.append(BargeIn(number, pace, chunk_ms, frames_after_force, 1000 * moment, at_once))
        await session.send([InterruptionFrame()])
        if not at_once:
            await asyncio.sleep(rng.uniform(0.05, 0.3))
    # A last reply that plays out, so the last barge-in is followed by a turn too.
    last = next(numbers)
    await session.speak(reply_text(last, 1))
    return plans, last


def _analyse(
    plan: BargeIn, entered_at: float, tail: list[Seen], cut: int, conn: Connection | None
) -> None:
    plan.interrupted_at = entered_at
    if conn is None:
        # The text never reached a socket: it was still waiting for the handshake.
        plan.outcome = "nothing_on_the_wire"
        return
    plan.socket = conn.index
    ours = [(i, s) for i, s in enumerate(tail) if s.kind == "audio" and s.marker == conn.index]
    plan.had_audio = any(i < cut for i, _ in ours)
    plan.stale_frames = sum(i > cut for i, _ in ours)
    plan.late_after_entry = sum(s.t > entered_at for _, s in ours)
    if ours:
        plan.audio_stop_ms = max(0.0, 1000 * (ours[-1][1].t - entered_at))
    force_at = conn.first("force")
    if force_at is not None:
        plan.outcome = "force_sent"
        plan.force_ms = 1000 * (force_at - entered_at)
        plan.dropped_by_client = sum(t > force_at for t in conn.audio_sent_at)
        return
    end_at = conn.first("end")
    over = conn.closed_at is not None and conn.closed_at < entered_at and end_at is not None
    plan.outcome = "already_over" if over else "force_missing"


async def run_bargein(
    config: BargeInConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the chain of barge-ins and return the JSON-ready results."""
    rng = random.Random(config.seed)
    settings = TelnyxTTSService.Settings(voice=VOICE)
    async with EmulatorProcess(signal="marker", faults=config.faults) as emu:
        tts = TelnyxTTSService(api_key=API_KEY, url=emu.url, settings=settings)
        async with Session(tts, sample_rate=config.sample_rate, markers=True) as session:
            plans, last = await _drive(session, emu, config, rng)
            errors = session.errors()
        connections = await emu.connections()
    progress(f"  barge-in: {len(plans)} barge-ins done")
    entered = [s.t for s in session.entered.seen if s.kind == "InterruptionFrame"]
    tail = session.tail.seen
    cuts = [i for i, s in enumerate(tail) if s.kind == "InterruptionFrame"]
    if len(entered) != len(plans) or len(cuts) != len(plans):
        raise RuntimeError(
            f"{len(plans)} interruptions sent, {len(entered)} reached the TTS, "
            f"{len(cuts)} came out of it"
        )
    by_tag = {int(n): conn for conn in connections for n in _REPLY.findall(conn.text)}
    for plan, entered_at, cut in zip(plans, entered, cuts, strict=True):
        _analyse(plan, entered_at, tail, cut, by_tag.get(plan.number))
    unattributed = sum(s.kind == "audio" and s.marker == NO_MARKER for s in tail)
    last_conn = by_tag.get(last)
    last_spoke = last_conn is not None and any(
        s.kind == "audio" and s.marker == last_conn.index for s in tail
    )
    forced = [p for p in plans if p.outcome == "force_sent"]
    outcomes = {k: sum(p.outcome == k for p in plans) for k in sorted({p.outcome for p in plans})}
    return {
        "config": asdict(config),
        "force_ms": percentiles(p.force_ms for p in forced if p.force_ms is not None),
        "audio_stop_ms": percentiles(p.audio_stop_ms for p in plans if p.audio_stop_ms is not None),
        "stale_frames": sum(p.stale_frames for p in plans),
        "audio_after_interruption_entered": sum(p.late_after_entry for p in plans),
        "dropped_by_client": sum(p.dropped_by_client for p in plans),
        "outcomes": outcomes,
        "interrupted_before_first_audio": sum(not p.had_audio for p in plans),
        "next_turn_at_once": sum(p.next_turn_at_once for p in plans),
        "unattributed_audio_frames": unattributed,
        "final_turn_spoke": last_spoke,
        "errors": errors,
        "barge_ins": [asdict(p) for p in plans],
    }
