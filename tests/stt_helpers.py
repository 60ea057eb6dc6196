"""Shared pieces for the STT tests: caller audio the emulator knows the words of, a raw client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts.emulator import Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.stt_recognize import Pcm
from pipecat_telnyx_tts.emulator.synth import OutputFormat, SynthesisRequest, synthesize_audio
from pipecat_telnyx_tts.stt_protocol import SttServerMessage, parse_server

AUTH = {"Authorization": "Bearer k"}
PHONE_RATE = 8000
FRAME_SECONDS = 0.04


def caller_says(
    emu: TelnyxEmulator | None, text: str, rate: int = PHONE_RATE, signal: Signal = Signal.TONE
) -> Pcm:
    """The PCM of a caller saying ``text``, registered with the emulator's STT when given."""
    audio = synthesize_audio(SynthesisRequest(text, OutputFormat("linear16", rate), signal))
    if emu is not None:
        emu.stt.library.add(audio.pcm, rate, audio.words)
    return audio.pcm


def silence(seconds: float, rate: int = PHONE_RATE) -> Pcm:
    return np.zeros(round(seconds * rate), np.int16)


def noise(seconds: float, rate: int = PHONE_RATE, seed: int = 1) -> Pcm:
    """Loud audio the emulator has never synthesized: it answers it from its script."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(round(seconds * rate)) * 4000).astype(np.int16)


def frames_of(pcm: Pcm, rate: int = PHONE_RATE) -> list[bytes]:
    """``pcm`` cut into 40 ms binary frames, as the service streams it."""
    step = round(FRAME_SECONDS * rate)
    data = pcm.astype("<i2")
    return [data[i : i + step].tobytes() for i in range(0, len(data), step)]


def stt_url(emu: TelnyxEmulator, **params: Any) -> str:
    from urllib.parse import urlencode

    defaults: dict[str, Any] = {"input_format": "linear16", "sample_rate": PHONE_RATE}
    merged = {k: v for k, v in (defaults | params).items() if v is not None}
    items: list[tuple[str, str]] = []
    for k, v in merged.items():
        items += [(k, str(x)) for x in v] if isinstance(v, list | tuple) else [(k, str(v))]
    return f"{emu.stt_url}?{urlencode(items)}"


@asynccontextmanager
async def stt_socket(emu: TelnyxEmulator, **params: Any) -> AsyncIterator[ClientConnection]:
    async with connect(stt_url(emu, **params), additional_headers=AUTH, close_timeout=2) as ws:
        yield ws


async def send_pcm(ws: ClientConnection, *pieces: Pcm) -> None:
    for piece in pieces:
        for frame in frames_of(piece):
            await ws.send(frame)


async def receive_all(ws: ClientConnection, timeout: float = 15.0) -> list[SttServerMessage]:
    """Every frame until the server closes."""
    out: list[SttServerMessage] = []
    async with asyncio.timeout(timeout):
        try:
            async for raw in ws:
                assert "type" not in json.loads(raw), raw
                out.append(parse_server(raw))
        except ConnectionClosed:
            pass
    return out
