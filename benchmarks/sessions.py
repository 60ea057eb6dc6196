"""N concurrent sessions in one client process, streaming paced audio: where does a core run out?

Run by ``benchmarks.cpu`` as a fresh child process per N, so that each N starts from the same
memory and nothing from earlier runs is counted. Each session is a whole pipeline with its own
``TelnyxTTSService`` speaking one long sentence after another, started at random moments so that
their chunks do not arrive in lockstep. After a warm-up, the child measures over a window:

- CPU: ``time.process_time()`` of this process over wall time (1.0 = one core busy);
- memory: VmRSS at its highest in the window, minus VmRSS before the sessions started (after a
  throwaway session has loaded everything a session needs), divided by N;
- timeliness: the event loop's lag (a 10 ms ticker), how late each audio frame leaves the TTS
  compared with its place in the emulator's pacing (within a synthesis frame k is due at
  ``t0 + audio_before_k``; this includes the emulator's own slips), and TTFA under load;
- the share of the window the event loop spent waiting for a CPU while ready to run, which
  tells a machine busy with other work apart from a saturated client;
- the emulator's CPU over the same window (from /proc), to tell which side ran out first;
- with ``--markers``: every audio frame that left the TTS in the window, as its socket and its
  ordinal on that socket, so that the parent can pair it with the emulator's send time.

Prints one JSON object on standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Any

from loguru import logger

from benchmarks.pipeline import Seen, Session, long_reply, reply_text
from benchmarks.stats import percentiles
from pipecat_telnyx_tts import TelnyxTTSService

TICK_S = 0.01


def rss_bytes() -> int:
    """Resident memory of this process now."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_queue_wait_seconds() -> float:
    """Time this process's main thread (the event loop) was ready to run but not running.

    A machine busy with other work shows up here, not in our CPU time: it tells a loaded
    machine apart from a saturated client.
    """
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU of another process, from /proc (10 ms resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Window:
    start: float = 0.0
    end: float = float("inf")


def _make_tts(url: str, voice: str) -> TelnyxTTSService:
    settings = TelnyxTTSService.Settings(voice=voice)
    return TelnyxTTSService(api_key="benchmark-key", url=url, settings=settings)


async def _speak_forever(
    session: Session, rng: random.Random, first_number: int, seconds: float
) -> None:
    await asyncio.sleep(rng.uniform(0.0, 1.0))
    for number in itertools.count(first_number):
        await session.speak(long_reply(number, seconds))
        await asyncio.sleep(rng.uniform(0.05, 0.15))


def _turns(session: Session) -> list[tuple[float, list[Seen]]]:
    """Each turn's first text entering the TTS, with the audio frames of that turn."""
    entered = session.entered.seen
    text_starts = [
        entered[i + 1].t
        for i, s in enumerate(entered[:-1])
        if s.kind == "LLMFullResponseStartFrame" and entered[i + 1].kind == "LLMTextFrame"
    ]
    audio: list[list[Seen]] = []
    for s in session.tail.seen:
        if s.kind == "TTSStartedFrame":
            audio.append([])
        elif s.kind == "audio" and audio:
            audio[-1].append(s)
    return list(zip(text_starts, audio, strict=False))


def _marked_frames(session: Session, window: _Window) -> list[tuple[float, int, int]]:
    """``(t, socket, k)`` for each audio frame in the window: it is the socket's k-th audio frame,
    which pairs it with the k-th audio frame the emulator sent on that socket."""
    out: list[tuple[float, int, int]] = []
    ordinal: dict[int, int] = {}
    for s in session.tail.seen:
        if s.kind != "audio":
            continue
        k = ordinal.get(s.marker, 0)
        ordinal[s.marker] = k + 1
        if window.start <= s.t <= window.end:
            out.append((s.t, s.marker, k))
    return out


def _timing(session: Session, rate: int, window: _Window) -> tuple[list[float], list[float], float]:
    """Frame lateness and TTFA (ms) of the turns that started speaking inside the window, and
    the audio seconds that left the TTS inside it."""
    late: list[float] = []
    ttfa: list[float] = []
    audio_s = 0.0
    for text_at, frames in _turns(session):
        audio_s += sum(f.audio_bytes for f in frames if window.start <= f.t <= window.end)
        if not frames or not window.start <= frames[0].t <= window.end:
            continue
        ttfa.append(1000 * (frames[0].t - text_at))
        # Frame k is released at (schedule start + audio before k); the schedule start is
        # estimated by the earliest frame, since no frame can leave before its release.
        offsets: list[float] = []
        before = 0.0
        for f in frames:
            if f.t > window.end:
                break
            offsets.append(f.t - before)
            before += f.audio_bytes / 2 / rate
        start = min(offsets)
        late += [1000 * (o - start) for o in offsets]
    return late, ttfa, audio_s / 2 / rate


async def _measure(ns: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(ns.seed)
    # A throwaway session first: imports and caches a session needs are not per-session memory.
    async with Session(_make_tts(ns.url, ns.voice), sample_rate=ns.rate) as warm:
        await warm.speak(reply_text(ns.seed * 10_000_000, 1))
    gc.collect()
    rss_before = rss_bytes()
    sessions = [
        Session(_make_tts(ns.url, ns.voice), sample_rate=ns.rate, markers=ns.markers)
        for _ in range(ns.n)
    ]
    await asyncio.gather(*(s.__aenter__() for s in sessions))
    speakers = [
        asyncio.create_task(_speak_forever(s, rng, (ns.seed * 1000 + i) * 10_000, ns.turn_seconds))
        for i, s in enumerate(sessions)
    ]
    lags: list[float] = []
    window = _Window()

    async def tick() -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(TICK_S)
            now = time.perf_counter()
            if window.start <= now <= window.end:
                lags.append(1000 * (now - before - TICK_S))

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(ns.warmup)
    window.start = time.perf_counter()
    cpu0 = time.process_time()
    waited0 = run_queue_wait_seconds()
    emu0 = process_cpu_seconds(ns.emulator_pid) if ns.emulator_pid else 0.0
    rss_peak = rss_bytes()
    while time.perf_counter() - window.start < ns.seconds:
        await asyncio.sleep(0.25)
        rss_peak = max(rss_peak, rss_bytes())
    window.end = time.perf_counter()
    cpu = time.process_time() - cpu0
    waited = run_queue_wait_seconds() - waited0
    emu = (process_cpu_seconds(ns.emulator_pid) - emu0) if ns.emulator_pid else None
    wall = window.end - window.start
    failed = [t for t in speakers if t.done()]
    ticker.cancel()
    for t in speakers:
        t.cancel()
    late: list[float] = []
    ttfa: list[float] = []
    audio_s = 0.0
    for s in sessions:
        lt, tt, au = _timing(s, ns.rate, window)
        late += lt
        ttfa += tt
        audio_s += au
    errors = [e for s in sessions for e in s.errors()]
    marked = [f for s in sessions for f in _marked_frames(s, window)] if ns.markers else []
    await asyncio.gather(*(s.close(graceful=False) for s in sessions))
    return {
        "sessions": ns.n,
        "voice": ns.voice,
        "sample_rate": ns.rate,
        "window_s": round(wall, 3),
        "cpu_utilization": round(cpu / wall, 4),
        "run_queue_wait_share": round(waited / wall, 4),
        "emulator_cpu_utilization": round(emu / wall, 4) if emu is not None else None,
        "audio_seconds": round(audio_s, 3),
        "audio_per_session_per_second": round(audio_s / ns.n / wall, 4),
        "cpu_ms_per_audio_second": round(1000 * cpu / audio_s, 4) if audio_s else None,
        "rss_before_mib": round(rss_before / 2**20, 2),
        "rss_peak_mib": round(rss_peak / 2**20, 2),
        "rss_per_session_mib": round((rss_peak - rss_before) / ns.n / 2**20, 4),
        "frame_lateness_ms": percentiles(late),
        "ttfa_ms": percentiles(ttfa),
        "loop_lag_ms": percentiles(lags),
        "speakers_stopped_early": len(failed),
        "marked_frames": marked,
        "errors": errors[:5],
        "error_count": len(errors),
    }


def main(argv: list[str] | None = None) -> int:
    """Measure N sessions and print the result as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sessions")
    parser.add_argument("--url", required=True)
    parser.add_argument("--n", type=int, required=True, help="concurrent sessions")
    parser.add_argument("--voice", default="Telnyx.NaturalHD.astra")
    parser.add_argument("--rate", type=int, default=16000, help="pipeline output rate")
    parser.add_argument("--turn-seconds", type=float, default=5.0, help="audio per turn")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=8.0, help="measurement window")
    parser.add_argument(
        "--markers", action="store_true", help="the emulator plays the marker signal"
    )
    parser.add_argument("--emulator-pid", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None, help="run on this CPU only")
    ns = parser.parse_args(argv)
    if ns.cpu is not None:
        os.sched_setaffinity(0, {ns.cpu})
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    result = asyncio.run(_measure(ns))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
