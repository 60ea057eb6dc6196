"""Client CPU per second of audio, and how many real-time sessions one core carries.

The emulator runs in its own process, so ``time.process_time()`` here is the client alone: the
pipeline, the service, websockets, JSON and base64, decoding and resampling.

1. CPU per audio second, per format: one pipeline speaks ``turns`` long turns from an unpaced
   emulator (pacing adds wall time, not work); CPU over the turns divided by the audio that left
   the TTS; median of ``repeats`` pipelines. The same bytes are also fed to the decoder alone,
   which tells how much of the cost is decoding. One MP3 repeat runs under cProfile, and its time
   is split by where it is spent.
2. Sessions per core: derived as 1000 / CPU-ms-per-audio-second, and measured: N concurrent
   pipelines streaming real-time paced audio (``benchmarks.sessions``, a fresh process per N),
   N rising until the client's core is saturated (or a session fails) or the cap is reached.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.emulator_host import REPO_ROOT, EmulatorProcess
from benchmarks.latency import API_KEY
from benchmarks.pipeline import Session, long_reply
from benchmarks.stats import percentiles
from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.emulator import Faults, Signal
from pipecat_telnyx_tts.emulator.synth import SynthesisRequest, output_format, render, split_chunks
from pipecat_telnyx_tts.request import build_request
from pipecat_telnyx_tts.voices import VoiceId


@dataclass(frozen=True)
class CpuCase:
    """A voice and pipeline rate that lead the service down one decoding path."""

    key: str
    label: str
    voice: str
    sample_rate: int


CASES = (
    CpuCase("pcm", "PCM at the output rate (NaturalHD, 16 kHz)", "Telnyx.NaturalHD.astra", 16000),
    CpuCase(
        "pcm_resampled",
        "PCM resampled (Qwen3TTS 24 kHz -> 16 kHz)",
        "Telnyx.Qwen3TTS.Ethan",
        16000,
    ),
    CpuCase("mp3", "MP3 (KokoroTTS 22.05 kHz -> 16 kHz)", "Telnyx.KokoroTTS.af_heart", 16000),
    CpuCase("mp3_phone", "MP3 (KokoroTTS 22.05 kHz -> 8 kHz)", "Telnyx.KokoroTTS.af_heart", 8000),
)
MP3_CASES = ("mp3", "mp3_phone")

# Where profiled time goes, by the file a function lives in (first match wins).
_BUCKETS = (
    ("decode: PyAV/MP3", ("/av/", "'av.", "pipecat_telnyx_tts/audio.py")),
    ("resample: soxr", ("/soxr/",)),
    ("websockets", ("/websockets/",)),
    ("json + base64", ("/json/", "base64", "pipecat_telnyx_tts/protocol.py")),
    ("plugin", ("pipecat_telnyx_tts/",)),
    ("pipecat", ("/pipecat/",)),
    ("asyncio + selectors", ("/asyncio/", "selectors.py", "{method 'poll'")),
    ("loguru", ("/loguru/",)),
)


@dataclass(frozen=True)
class CpuConfig:
    """What the CPU and capacity runs do."""

    turns: int = 8
    turn_seconds: float = 6.0
    repeats: int = 5
    chunk_ms: int = 250
    sweep: tuple[int, ...] = (25, 50, 100, 150, 200)
    sweep_cases: tuple[str, ...] = ("pcm", "mp3")
    sweep_warmup: float = 3.0
    sweep_seconds: float = 8.0
    max_cpu_utilization: float = 0.9
    """Above this share of its core the client counts as saturated."""
    paced_faults: Faults = field(
        default_factory=lambda: Faults.fast(upgrade_delay=0.1, first_audio_delay=0.2, pace=1.0)
    )


def _make_tts(url: str, case: CpuCase) -> TelnyxTTSService:
    settings = TelnyxTTSService.Settings(voice=case.voice)
    return TelnyxTTSService(api_key=API_KEY, url=url, settings=settings)


async def _one_pipeline(
    url: str, case: CpuCase, config: CpuConfig, first_number: int
) -> tuple[float, float, list[str]]:
    """CPU seconds and audio seconds of ``turns`` turns through one pipeline."""
    async with Session(_make_tts(url, case), sample_rate=case.sample_rate) as s:
        start_cpu = time.process_time()
        for number in range(first_number, first_number + config.turns):
            await s.speak(long_reply(number, config.turn_seconds))
        cpu = time.process_time() - start_cpu
        audio_bytes = sum(x.audio_bytes for x in s.tail.seen if x.kind == "audio")
        return cpu, audio_bytes / 2 / case.sample_rate, s.errors()


def _decoder_only(case: CpuCase, config: CpuConfig) -> float:
    """CPU ms per audio second of the decoder alone, fed the bytes the emulator sends."""
    request = build_request(
        voice=case.voice,
        out_rate=case.sample_rate,
        audio_format=None,
        speed=None,
        voice_settings=None,
        language=None,
    )
    family = VoiceId.parse(case.voice).family
    assert family is not None
    fmt = output_format(family, request.params, Signal.TONE)
    rng = random.Random(0)
    renditions = [
        render(SynthesisRequest(long_reply(n, config.turn_seconds), fmt, Signal.TONE))
        for n in range(config.turns)
    ]
    chunks = [split_chunks(r, config.chunk_ms, rng) for r in renditions]
    samples = []
    for _ in range(config.repeats):
        start = time.process_time()
        out = 0
        for synthesis in chunks:
            decoder = AudioDecoder(pcm_rate=request.pcm_rate, out_rate=case.sample_rate)
            out += sum(len(decoder.feed(c.data)) for c in synthesis) + len(decoder.flush())
        samples.append(1000 * (time.process_time() - start) / (out / 2 / case.sample_rate))
    return statistics.median(samples)


_Func = tuple[str, int, str]
_OTHER = "other"


def _own_bucket(func: _Func) -> str:
    filename, _line, name = func
    where = f"{filename} {name}"
    for label, needles in _BUCKETS:
        if any(n in where for n in needles):
            return label
    return _OTHER


def _bucket(func: _Func, table: dict[_Func, Any], depth: int = 3) -> str:
    """A function's bucket; builtins, numpy and the like count for the caller that spent the
    most time in them (``isinstance`` called by pipecat is pipecat's cost)."""
    own = _own_bucket(func)
    if own != _OTHER or depth == 0 or func not in table:
        return own
    callers: dict[_Func, tuple[int, int, float, float]] = table[func][4]
    if not callers:
        return own
    caller = max(callers, key=lambda c: callers[c][2])
    return _bucket(caller, table, depth - 1)


def _profile_split(profile: cProfile.Profile) -> dict[str, Any]:
    """Own CPU time (tottime) per bucket, and the functions that cost the most."""
    stats = pstats.Stats(profile)
    table: dict[_Func, tuple[int, int, float, float, Any]]
    table = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in table.values()) or 1.0
    buckets: dict[str, float] = {}
    for func, row in table.items():
        key = _bucket(func, table)
        buckets[key] = buckets.get(key, 0.0) + row[2]
    top = sorted(table.items(), key=lambda item: -item[1][2])[:12]
    return {
        "share_by_bucket": {
            k: round(v / total, 4) for k, v in sorted(buckets.items(), key=lambda kv: -kv[1])
        },
        "top_functions": [
            {
                "function": f"{filename.split('site-packages/')[-1]}:{line}({name})",
                "share": round(row[2] / total, 4),
                "calls": row[1],
            }
            for (filename, line, name), row in top
        ],
    }


async def _cpu_per_audio_second(
    config: CpuConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    unpaced = Faults.fast(chunk_ms=config.chunk_ms)
    results: dict[str, Any] = {}
    async with EmulatorProcess(signal="tone", faults=unpaced, keep_connections=16) as emu:
        number = 500_000
        for case in CASES:
            samples = []
            audio = 0.0
            errors: list[str] = []
            for _ in range(config.repeats):
                cpu, audio, errs = await _one_pipeline(emu.url, case, config, number)
                number += config.turns
                samples.append(1000 * cpu / audio)
                errors += errs
            median = statistics.median(samples)
            results[case.key] = {
                "label": case.label,
                "voice": case.voice,
                "sample_rate": case.sample_rate,
                "cpu_ms_per_audio_second": round(median, 4),
                "repeats_ms": [round(x, 4) for x in samples],
                "audio_seconds_per_repeat": round(audio, 2),
                "decoder_only_ms_per_audio_second": round(_decoder_only(case, config), 4),
                "sessions_per_core_derived": round(1000 / median, 1),
                "errors": errors,
            }
            progress(f"  cpu: {case.key}: {median:.3f} ms CPU per audio second")
        # CPU time, not wall time: waiting in epoll is not a cost.
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        await _one_pipeline(emu.url, CASES[2], config, number)
        profile.disable()
        results["mp3_profile"] = {"case": "mp3", **_profile_split(profile)}
    return results


def _cpus() -> tuple[int | None, int | None]:
    """A CPU for the client and another for the emulator, when there are two.

    "Sessions per core" is then literally one core. Unpinned, the emulator's MP3 encoder threads
    (LAME releases the GIL) run on both cores in bursts and stall the client, which would be
    counted as the client's lateness.
    """
    cpus = sorted(os.sched_getaffinity(0))
    return (cpus[0], cpus[-1]) if len(cpus) >= 2 else (None, None)


async def _sessions_step(case: CpuCase, n: int, config: CpuConfig, markers: bool) -> dict[str, Any]:
    """One N, against a fresh emulator process (so its records hold this step alone)."""
    client_cpu, emulator_cpu = _cpus()
    async with EmulatorProcess(
        signal="marker" if markers else "tone",
        faults=config.paced_faults,
        keep_connections=None if markers else 64,
        cpu=emulator_cpu,
    ) as emu:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.sessions",
            f"--url={emu.url}",
            f"--n={n}",
            f"--voice={case.voice}",
            f"--rate={case.sample_rate}",
            f"--warmup={config.sweep_warmup}",
            f"--seconds={config.sweep_seconds}",
            f"--emulator-pid={emu.pid}",
            f"--seed={n}",
            *(["--markers"] if markers else []),
            *([f"--cpu={client_cpu}"] if client_cpu is not None else []),
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
            limit=1 << 28,
        )
        try:
            async with asyncio.timeout(config.sweep_warmup + config.sweep_seconds + 60):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"benchmarks.sessions with {n} sessions did not finish") from None
        if proc.returncode != 0:
            raise RuntimeError(f"benchmarks.sessions with {n} sessions failed ({proc.returncode})")
        step: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        step["emulator_loop_lag_ms"] = await emu.loop_lag()
        marked = step.pop("marked_frames")
        if markers:
            sent = {c.index: c.audio_sent_at for c in await emu.connections()}
            delays = [
                1000 * (t - sent[socket][k])
                for t, socket, k in marked
                if socket in sent and k < len(sent[socket])
            ]
            step["client_delay_ms"] = percentiles(delays)
            step["unpaired_frames"] = len(marked) - len(delays)
    return step


def _real_time(step: dict[str, Any], config: CpuConfig) -> bool:
    """The client keeps N sessions in real time while its core is not saturated and nothing
    failed. Lateness is reported beside it but not judged: on a shared machine it also
    measures the neighbours (see the run-queue wait) and the emulator's own slips."""
    return bool(
        step["cpu_utilization"] < config.max_cpu_utilization
        and step["error_count"] == 0
        and step["speakers_stopped_early"] == 0
        and step["audio_seconds"] > 0
    )


async def _sweep(
    case: CpuCase, config: CpuConfig, progress: Callable[[str], None]
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for n in config.sweep:
        step = await _sessions_step(case, n, config, markers=case.key == "pcm")
        step["real_time"] = _real_time(step, config)
        steps.append(step)
        delay = step.get("client_delay_ms", {}).get("p99")
        progress(
            f"  sessions: {case.key} N={n}: client CPU {step['cpu_utilization']:.0%}, "
            f"emulator CPU {step['emulator_cpu_utilization']:.0%}, "
            f"waited for a CPU {step['run_queue_wait_share']:.1%}, client loop lag p99 "
            f"{step['loop_lag_ms']['p99']:.0f} ms (max {step['loop_lag_ms']['max']:.0f} ms)"
            + (f", client delay p99 {delay:.0f} ms" if delay is not None else "")
            + f": {'real time' if step['real_time'] else 'SATURATED or failing'}"
        )
        if not step["real_time"]:
            break
    kept = [s["sessions"] for s in steps if s["real_time"]]
    return {
        "label": case.label,
        "steps": steps,
        "max_real_time_sessions": max(kept) if kept else 0,
        "reached_cap": bool(steps and steps[-1]["real_time"] and len(steps) == len(config.sweep)),
    }


async def run_cpu(config: CpuConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Both parts; returns the JSON-ready results."""
    per_second = await _cpu_per_audio_second(config, progress)
    sweeps = {}
    for key in config.sweep_cases:
        case = next(c for c in CASES if c.key == key)
        sweeps[key] = await _sweep(case, config, progress)
    return {"config": asdict(config), "per_audio_second": per_second, "sessions": sweeps}
