"""Which frames a synthesis goes out as, and when each may leave: planned once its audio exists,
before any of it is sent. No I/O and no clock, so every frame layout can be tested directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipecat_telnyx_tts.emulator.synth import Rendition, split_chunks
from pipecat_telnyx_tts.voices import Delivery


@dataclass(frozen=True)
class PlannedFrame:
    """One frame of a synthesis: audio, the text-bearing frame, or the final frame."""

    audio: bytes | None
    text: str | None
    final: bool
    at: float
    """Seconds of audio that must have been produced before it goes out: with pacing, the frame
    leaves at ``at / pace`` after the first-audio delay."""


def plan_frames(
    rendition: Rendition,
    delivery: Delivery,
    chunk_ms: int,
    rng: random.Random,
    text: str,
    final_after: bool,
) -> list[PlannedFrame]:
    """The frames of one synthesis of ``text``, in sending order.

    Streamed delivery: audio chunks of about ``chunk_ms`` with an ``audio: null`` text-bearing
    frame among them, at a place ``rng`` picks, since the wire does not fix it. Concatenated
    delivery: the text-bearing frame carries the audio, one frame per part so that each MP3 file
    still starts a frame. ``final_after`` ends the synthesis with a final frame.
    """
    frames: list[PlannedFrame]
    if delivery is Delivery.CONCATENATED:
        frames = [
            PlannedFrame(part.data, text if i == 0 else None, False, part.end_seconds)
            for i, part in enumerate(rendition.parts)
        ] or [PlannedFrame(None, text, False, 0.0)]
    else:
        chunks = split_chunks(rendition, chunk_ms, rng)
        frames = [PlannedFrame(c.data, None, False, c.end_seconds) for c in chunks]
        position = rng.randint(0, len(frames))
        at = frames[position - 1].at if position else 0.0
        frames.insert(position, PlannedFrame(None, text, False, at))
    if final_after:
        frames.append(PlannedFrame(None, "", True, frames[-1].at))
    return frames
