"""CPU cost of turning Telnyx TTS audio into pipeline PCM, per second of audio.

A voice agent decodes every synthesis on the event loop's thread, so the decoder's CPU per
second of audio is what it steals from everything else. The budget is 5 ms per second of audio
for MP3; the script exits 1 when an MP3 case's median is over it.

Run from the repository root (lameenc, a core dependency, makes the MP3)::

    python -m benchmarks.audio_cpu
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import lameenc
import numpy as np
from loguru import logger

from pipecat_telnyx_tts.audio import AudioDecoder

MP3_BUDGET_MS_PER_AUDIO_S = 5.0
AUDIO_SECONDS = 20.0
FILES_PER_SYNTHESIS = 4  # Telnyx sends one MP3 file per segment, each with its own ID3 tag
RUNS = 9
CHUNK_SIZES = (4096, 16384)  # Telnyx sends few, large frames


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # "pcm" or "mp3"
    source_rate: int
    out_rate: int


CASES = (
    Case("PCM 24000 -> 24000 (passthrough)", "pcm", 24000, 24000),
    Case("PCM 24000 -> 8000", "pcm", 24000, 8000),
    Case("PCM 24000 -> 16000", "pcm", 24000, 16000),
    Case("MP3 22050 -> 24000", "mp3", 22050, 24000),
    Case("MP3 22050 -> 8000", "mp3", 22050, 8000),
    Case("MP3 24000 -> 24000", "mp3", 24000, 24000),
    Case("MP3 24000 -> 8000", "mp3", 24000, 8000),
)


def speech_like(rate: int, seconds: float) -> np.ndarray:
    """A gliding two-tone signal with noise: busier than silence so the MP3 frames are full."""
    t = np.arange(int(rate * seconds)) / rate
    glide = np.sin(2 * np.pi * (180 + 120 * np.sin(2 * np.pi * 0.7 * t)) * t)
    noise = np.random.default_rng(0).standard_normal(t.size)
    signal = 0.4 * glide + 0.2 * np.sin(2 * np.pi * 1300 * t) + 0.05 * noise
    return (signal * 26000).astype("<i2")


def id3_tag() -> bytes:
    text = b"\x03benchmark"
    frame = b"TIT2" + len(text).to_bytes(4, "big") + b"\x00\x00" + text
    return b"ID3\x04\x00\x00" + len(frame).to_bytes(4, "big") + frame  # size < 128: syncsafe


def mp3_synthesis(rate: int) -> list[bytes]:
    """The synthesis as separate tagged MP3 files, the way Telnyx splits it."""
    pcm = speech_like(rate, AUDIO_SECONDS)
    files = []
    for part in np.array_split(pcm, FILES_PER_SYNTHESIS):
        encoder = lameenc.Encoder()
        encoder.set_bit_rate(48)
        encoder.set_in_sample_rate(rate)
        encoder.set_channels(1)
        encoder.set_quality(2)
        files.append(id3_tag() + bytes(encoder.encode(part.tobytes()) + encoder.flush()))
    return files


def chunked(files: list[bytes], size: int) -> list[bytes]:
    """Cut every file into frames of ``size`` bytes; a new file always starts a new frame."""
    return [data[i : i + size] for data in files for i in range(0, len(data), size)]


def cpu_ms_per_audio_second(chunks: list[bytes], case: Case) -> tuple[float, float]:
    """Median CPU ms per audio second over RUNS runs, and the audio seconds produced."""
    samples: list[float] = []
    audio_seconds = 0.0
    for _ in range(RUNS):
        decoder = AudioDecoder(pcm_rate=case.source_rate, out_rate=case.out_rate)
        start = time.process_time()
        out_bytes = sum(len(decoder.feed(chunk)) for chunk in chunks) + len(decoder.flush())
        cpu = time.process_time() - start
        audio_seconds = out_bytes / 2 / case.out_rate
        samples.append(1000 * cpu / audio_seconds)
    return statistics.median(samples), audio_seconds


def main() -> int:
    logger.disable("pipecat_telnyx_tts")
    inputs = {
        ("pcm", 24000): [speech_like(24000, AUDIO_SECONDS).tobytes()],
        ("mp3", 22050): mp3_synthesis(22050),
        ("mp3", 24000): mp3_synthesis(24000),
    }
    print(f"{'case':34} {'chunk':>6} {'audio s':>8} {'CPU ms per audio s':>19}  (median of {RUNS})")
    over_budget = []
    for case in CASES:
        for size in CHUNK_SIZES:
            chunks = chunked(inputs[(case.kind, case.source_rate)], size)
            median, audio_seconds = cpu_ms_per_audio_second(chunks, case)
            flag = ""
            if case.kind == "mp3" and median > MP3_BUDGET_MS_PER_AUDIO_S:
                over_budget.append(f"{case.name} @ {size} B")
                flag = "  OVER BUDGET"
            print(f"{case.name:34} {size:>6} {audio_seconds:>8.2f} {median:>19.3f}{flag}")
    if over_budget:
        print(f"MP3 over {MP3_BUDGET_MS_PER_AUDIO_S} ms CPU per audio second: {over_budget}")
        return 1
    print(f"MP3 within {MP3_BUDGET_MS_PER_AUDIO_S} ms CPU per audio second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
