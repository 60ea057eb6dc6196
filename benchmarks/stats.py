"""Percentiles and the floor the emulator injects, shared by every benchmark."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipecat_telnyx_tts.emulator import Faults


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    """``n``, ``p50``, ``p95``, ``p99``, ``max`` (linear interpolation); None without samples."""
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "n": int(data.size),
        **{f"p{q}": round(float(np.percentile(data, q)), 3) for q in (50, 95, 99)},
        "max": round(float(data.max()), 3),
    }


def first_chunk_seconds(chunk_ms: int, sample_rate: int, audio_seconds: float) -> float:
    """Audio time that must be produced before the first streamed raw-PCM chunk may go out.

    Mirrors the emulator exactly: ``synth.split_chunks`` cuts raw PCM every
    ``max(1, round(rate * chunk_ms / 1000))`` samples and gives each chunk the audio time at its
    end; ``server._Socket._stream`` sends chunk ``k`` at ``start + first_audio_delay +
    end_k / pace``. The text-bearing frame may come first but carries no audio. A synthesis
    shorter than one chunk is a single chunk that ends with the audio.
    """
    step = max(1, round(sample_rate * max(chunk_ms, 1) / 1000))
    samples = round(audio_seconds * sample_rate)
    return min(step, samples) / sample_rate


def injected_floor(faults: Faults, sample_rate: int, audio_seconds: float) -> float:
    """Seconds from a synthesis's trigger to its first audio frame that the emulator adds on
    purpose (``first_audio_delay`` plus the first chunk's pacing); anything above it is not the
    server's doing."""
    chunk = first_chunk_seconds(faults.chunk_ms, sample_rate, audio_seconds)
    return faults.first_audio_delay + (chunk / faults.pace if faults.pace else 0.0)
