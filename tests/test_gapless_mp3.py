"""MP3 in a pipeline: a synthesis of several MP3 files plays as long as the audio that was
encoded, with no gap or click where one file meets the next, at every pipeline rate.

The reference for tagged files is FFmpeg's demuxer, which trims each file by its Info tag as a
player opening the file does; tests/test_audio.py checks the seams against the signal itself."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from service_helpers import audio_frames, errors, llm_turn, make_tts, run

from pipecat_telnyx_tts.emulator import Faults, Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.synth import (
    OutputFormat,
    SynthesisRequest,
    mpeg_frame_samples,
    render,
)

TEXT = "The first sentence is here. Then comes a second one! Is there a third? There is."
FILES = 3


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
@pytest.mark.parametrize("untagged", [False, True])
async def test_multi_file_mp3_plays_as_long_as_it_was_encoded(rate: int, untagged: bool) -> None:
    faults = Faults.fast(mp3_files=FILES, mp3_untagged=untagged)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu, audio_format="mp3", sample_rate=rate)
        down, up = await run(tts, llm_turn(TEXT), rate)
    assert not errors(up)
    syntheses = [s for c in emu.connections for s in c.syntheses]
    assert syntheses and all(s.mp3 and s.sample_rate == rate for s in syntheses)
    out = np.frombuffer(b"".join(f.audio for f in audio_frames(down)), dtype="<i2")
    encoded = sum(round(s.audio_seconds * rate) for s in syntheses)
    frame = mpeg_frame_samples(rate)
    if untagged:
        # Each file's padding, under a frame, is recorded nowhere and stays.
        assert encoded <= len(out) < encoded + FILES * len(syntheses) * frame
        return
    assert abs(len(out) - encoded) <= 2 * len(syntheses)
    # FFmpeg's own gapless decode of the very files the emulator sent, each opened as a file.
    reference = np.concatenate([ffmpeg_gapless(s.text, rate) for s in syntheses])
    assert len(out) == len(reference)
    # Sample for sample, but for the rounding between FFmpeg's float and fixed-point decoders:
    # no gap, no shift, and at each seam the same step as FFmpeg's (which is the encoder's own
    # edge error where a file was cut mid-sound, no larger than a step of the signal).
    assert np.abs(out.astype(np.int32) - reference).max() <= 2


def ffmpeg_gapless(text: str, rate: int) -> np.ndarray:
    request = SynthesisRequest(text, OutputFormat("mp3", rate), Signal.TONE, mp3_files=FILES)
    pieces = []
    for part in render(request).parts:
        with av.open(io.BytesIO(part.data), format="mp3") as container:
            for frame in container.decode(audio=0):
                pieces.append(np.round(frame.to_ndarray()[0] * 32768))
    return np.clip(np.concatenate(pieces), -32768, 32767).astype(np.int32)
