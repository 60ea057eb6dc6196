"""A whole phone call offline: no keys, no network.

    python fake_call.py [--wav call.wav]

The bot's own pipeline (``bot.run_call``: Telnyx's media-stream transport and serializer, Silero
VAD, the context aggregators, ``TelnyxSTTService`` and ``TelnyxTTSService``) serves a call on
127.0.0.1. The STT and the TTS talk to the local emulator on one port; a scripted stand-in
replaces only the LLM. The caller is a simulated phone line that speaks real audio (synthesized
by the emulator, which therefore recognizes its words exactly) and talks over the greeting. The
conversation is printed turn by turn with timings, and the call is written as a stereo WAV:
the caller on the left, the bot on the right.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import json
import re
import sys
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import WebSocketRunnerArguments
from websockets.asyncio.client import ClientConnection, connect

from pipecat_telnyx_tts.emulator import Faults, Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.records import WordSpan
from pipecat_telnyx_tts.emulator.synth import (
    OutputFormat,
    SynthesisRequest,
    encode_mulaw,
    resolve_signal,
    synthesize_audio,
)
from pipecat_telnyx_tts.stt_protocol import Transcript

RATE = 8000
FRAME_BYTES = RATE * 20 // 1000
"""One media frame: 20 ms of 8 kHz PCMU."""
LOUD = 300.0

REPLIES = [
    "Hello, and thanks for calling Riverside Dental, this is Astra. I can book, move or cancel "
    "an appointment, and tell you about our opening hours. What can I do for you today?",
    "We open at nine tomorrow morning, and we are in until five in the evening.",
    "You are welcome. Goodbye, and have a lovely day!",
]
CALLER = [
    "Sorry, what time do you open tomorrow?",
    "Great, thank you very much.",
]


def load_bot() -> Any:
    path = Path(__file__).with_name("bot.py")
    spec = importlib.util.spec_from_file_location("phone_agent_bot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ulaw_decode(data: bytes) -> np.ndarray:
    u = ~np.frombuffer(data, dtype=np.uint8)
    exponent = (u >> 4) & 0x07
    mantissa = (u & 0x0F).astype(np.int32)
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def loud(ulaw: bytes) -> bool:
    samples = ulaw_decode(ulaw).astype(np.float64)
    return bool(samples.size) and float(np.sqrt(np.mean(samples**2))) > LOUD


def last_user_text(frame: LLMContextFrame) -> str:
    """What the caller said last, as the context holds it ("" before the caller has spoken)."""
    for message in reversed(frame.context.get_messages()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


class ScriptedLLM(FrameProcessor):
    """The LLM's stand-in: each context gets the next reply, streamed token by token, so that an
    interruption cuts it as it would cut a real completion. It notes when each context came and
    when each reply's first sentence was out (``time.perf_counter``), for timings."""

    def __init__(self, log: Callable[[str, str], None], replies: Sequence[str] = REPLIES) -> None:
        super().__init__(name="scripted-llm")
        self.log = log
        self.replies = list(replies)
        self.contexts: list[float] = []
        self.first_sentences: list[float] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        self.contexts.append(time.perf_counter())
        said = last_user_text(frame)
        if said and said.rstrip()[-1] not in ".?!":
            # Pipecat ended the caller's turn at a pause inside a sentence ("Great, ..."): an LLM
            # would answer what it has; this stand-in, whose replies are scripted, waits for the
            # rest, which comes as the next turn with the whole sentence.
            self.log("bot", f"(LLM) waits: the caller's turn ended mid-sentence: {said!r}")
            return
        if not self.replies:
            return
        reply = self.replies.pop(0)
        self.log("bot", f"(LLM) {reply}")
        await self.push_frame(LLMFullResponseStartFrame())
        sentence_out = False
        for token in re.findall(r"\S+\s*", reply):
            await self.push_frame(LLMTextFrame(token))
            if not sentence_out and token.rstrip()[-1] in ".?!":
                sentence_out = True
                self.first_sentences.append(time.perf_counter())
            await asyncio.sleep(0.02)
        await self.push_frame(LLMFullResponseEndFrame())


class Call:
    """The phone line: 20 ms of PCMU every 20 ms each way, and what was said, when."""

    def __init__(self, ws: ClientConnection, verbose: bool = True) -> None:
        self.ws = ws
        self.verbose = verbose
        self.t0 = time.perf_counter()
        self.stream_id = str(uuid.uuid4())
        self.speech = bytearray()
        self.sent: list[tuple[float, bytes]] = []
        self.heard: list[tuple[float, bytes]] = []
        self.cleared: list[float] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def log(self, who: str, text: str) -> None:
        if self.verbose:
            print(f"[{self.now():6.2f} s] {who:>6}: {text}", flush=True)

    async def dial(self) -> None:
        await self.ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        start = {
            "call_control_id": "v3:fake-call",
            "from": "+15550001111",
            "to": "+15550002222",
            "media_format": {"encoding": "PCMU", "sample_rate": RATE, "channels": 1},
        }
        await self.ws.send(
            json.dumps({"event": "start", "start": start, "stream_id": self.stream_id})
        )

    async def microphone(self) -> None:
        chunk = 0
        while True:
            chunk += 1
            payload = bytes(self.speech[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
            del self.speech[:FRAME_BYTES]
            self.sent.append((self.now(), payload))
            media = {"track": "inbound", "chunk": str(chunk), "payload": base64.b64encode(payload)}
            media["payload"] = media["payload"].decode()
            await self.ws.send(
                json.dumps({"event": "media", "media": media, "stream_id": self.stream_id})
            )
            await asyncio.sleep(max(0.0, self.t0 + chunk * 0.02 - time.perf_counter()))

    async def listen(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message.get("event") == "media":
                self.heard.append((self.now(), base64.b64decode(message["media"]["payload"])))
            elif message.get("event") == "clear":
                self.cleared.append(self.now())
                self.log("line", "clear: the caller started speaking, the bot's audio is dropped")

    def say(self, text: str, ulaw: bytes, seconds: float) -> float:
        """Speak ``ulaw`` (``seconds`` of it is speech); returns when the speech ends."""
        self.log("caller", text)
        self.speech.extend(ulaw)
        return self.now() + seconds

    def first_bot_audio_after(self, t: float) -> float | None:
        return next((at for at, p in self.heard if at >= t and loud(p)), None)

    def first_bot_frame_after(self, t: float) -> float | None:
        """The bot's first media frame after ``t``, audible or not (a voice may open with
        silence); the bot sends media only while it speaks."""
        return next((at for at, _ in self.heard if at >= t), None)

    def speech_end_since(self, t: float) -> float | None:
        """When the end of the last frame the caller sent since ``t`` with a sample above the
        silence level left the phone."""
        ends = [
            at + len(p) / RATE
            for at, p in self.sent
            if at >= t and int(np.abs(ulaw_decode(p).astype(np.int32)).max()) > LOUD
        ]
        return ends[-1] if ends else None

    def report_turn(self, stopped: float) -> None:
        first = self.first_bot_audio_after(stopped)
        if first is not None:
            self.log("bot", f"(first audio {first - stopped:.2f} s after the caller stopped)")

    def bot_audio_since(self, t: float) -> float:
        """Seconds of audible bot audio heard since ``t``."""
        return sum(len(p) / RATE for at, p in self.heard if at >= t and loud(p))

    def bot_quiet_for(self, seconds: float) -> bool:
        recent = [p for at, p in self.heard if at >= self.now() - seconds]
        return bool(self.heard) and not any(loud(p) for p in recent)

    def stereo(self) -> np.ndarray:
        """The call on one clock: each side's audio placed where it was sent or heard, or right
        after that side's previous audio when it came in a burst (a loaded machine)."""
        placed: list[tuple[int, int, np.ndarray]] = []
        for channel, pieces in ((0, self.sent), (1, self.heard)):
            cursor = 0
            for at, payload in pieces:
                start = max(cursor, round(at * RATE))
                samples = ulaw_decode(payload)
                placed.append((channel, start, samples))
                cursor = start + len(samples)
        length = max([start + len(samples) for _, start, samples in placed] + [0])
        out = np.zeros((length + round(0.1 * RATE), 2), np.int16)
        for channel, start, samples in placed:
            out[start : start + len(samples), channel] = samples
        return out


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the fake call waited {timeout} s for {what}")
        await asyncio.sleep(0.02)


async def transcripts(emu: TelnyxEmulator, call: Call) -> None:
    """Print each final the STT sends, as it sends it."""
    shown = 0
    while True:
        finals = [
            r.text
            for s in emu.stt.sessions
            for _, r in s.results
            if isinstance(r, Transcript)
            if r.is_final and r.text
        ]
        for text in finals[shown:]:
            call.log("STT", f"final: {text!r}")
        shown = len(finals)
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class CallerLine:
    """A line as the caller's phone sends it (PCMU, then half a second of silence), its speech's
    length, and its audio and words for the STT emulator's library."""

    ulaw: bytes
    seconds: float
    pcm: np.ndarray
    words: tuple[WordSpan, ...]

    def teach(self, emu: TelnyxEmulator) -> None:
        """Put the line first in the STT emulator's library, which it searches newest first:
        the bot's own syntheses join it as the call goes on, and each costs a search."""
        emu.stt.library.add(self.pcm, RATE, self.words)


def caller_lines(
    emu: TelnyxEmulator, signal: Signal, texts: Sequence[str]
) -> dict[str, CallerLine]:
    """Each line synthesized, and taught to the emulator's STT."""
    lines: dict[str, CallerLine] = {}
    for text in texts:
        audio = synthesize_audio(SynthesisRequest(text, OutputFormat("linear16", RATE), signal))
        ulaw = encode_mulaw(np.concatenate([audio.pcm, np.zeros(RATE // 2, np.int16)]))
        lines[text] = CallerLine(ulaw, len(audio.pcm) / RATE, audio.pcm, audio.words)
        lines[text].teach(emu)
    return lines


@asynccontextmanager
async def phone_call(
    emu: TelnyxEmulator, replies: Sequence[str], *, verbose: bool = True
) -> AsyncIterator[tuple[Call, ScriptedLLM]]:
    """The bot's real pipeline serving one call on 127.0.0.1, its STT and TTS on ``emu``, its LLM
    the scripted stand-in; yields the connected phone line (dialled, its microphone running) and
    the stand-in, and hangs up on exit."""
    bot = load_bot()
    config = bot.AgentConfig.from_env(
        {
            "TELNYX_API_KEY": "offline",
            "TELNYX_STT_URL": emu.stt_url,
            "TELNYX_TTS_URL": emu.url,
            "HANG_UP_ON_END": "false",
        }
    )
    holder: dict[str, Call] = {}
    llm = ScriptedLLM(lambda who, text: holder["call"].log(who, text), replies)
    app = FastAPI()

    @app.websocket("/ws")
    async def telephony(websocket: WebSocket) -> None:
        await websocket.accept()
        await bot.run_call(WebSocketRunnerArguments(websocket=websocket), config, llm=llm)

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started, 10, "the bot's server")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            call = holder["call"] = Call(ws, verbose)
            listener = asyncio.create_task(call.listen())
            await call.dial()
            microphone = asyncio.create_task(call.microphone())
            heard = asyncio.create_task(transcripts(emu, call))
            try:
                yield call, llm
            finally:
                heard.cancel()
                call.log("caller", "(hangs up)")
                microphone.cancel()
                await ws.send(json.dumps({"event": "stop", "stream_id": call.stream_id}))
        listener.cancel()
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def fake_call(wav_path: Path) -> dict[str, Any]:
    signal = resolve_signal(Signal.SPEECH)
    # Live-like pacing: audio at real time, so the greeting is still playing at the barge-in.
    async with TelnyxEmulator(signal=signal, faults=Faults(pace=1.0)) as emu:
        lines = caller_lines(emu, signal, CALLER)
        async with phone_call(emu, REPLIES) as (call, _):
            await until(lambda: call.bot_audio_since(0) > 2.0, 30, "the greeting")
            call.log("bot", "(the greeting is playing; the caller talks over it)")
            stopped = call.say(CALLER[0], lines[CALLER[0]].ulaw, lines[CALLER[0]].seconds)
            await until(lambda: call.cleared, 10, "the barge-in")
            await until(lambda: call.bot_audio_since(stopped) > 1.0, 30, "the answer")
            call.report_turn(stopped)
            await until(lambda: call.bot_quiet_for(1.0), 30, "the answer's end")
            stopped = call.say(CALLER[1], lines[CALLER[1]].ulaw, lines[CALLER[1]].seconds)
            await until(lambda: call.bot_audio_since(stopped) > 1.0, 30, "the goodbye")
            call.report_turn(stopped)
            await until(lambda: call.bot_quiet_for(1.0), 30, "the goodbye's end")
        stereo = call.stereo()
        with wave.open(str(wav_path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(stereo.tobytes())
        print(f"wrote {wav_path}: {len(stereo) / RATE:.1f} s, caller left, bot right")
        return {
            "transcripts": [u.text for s in emu.stt.sessions for u in s.utterances if u.text],
            "cleared": call.cleared,
            "wav": str(wav_path),
        }


TURN_LINES = (
    "What time do you open tomorrow?",
    "I would like to book a cleaning.",
    "Can I come in on Friday afternoon?",
    "My name is Alex Morgan.",
)
"""What the caller says in ``caller_turns``, in turn."""
TURN_REPLIES = (
    "We open at nine. We are in until five in the evening.",
    "Of course. I can book that for you now.",
    "Friday works. I have a slot at two in the afternoon.",
    "Thank you. You are all set for Friday at two.",
)
"""The stand-in's answers in ``caller_turns``, after a short first sentence of the turn's own:
Telnyx (and the emulator) replay a text said before from a cache, at once, and an LLM seldom
repeats itself."""


@dataclass(frozen=True)
class TurnTiming:
    """One caller turn on the phone line's clock (seconds since the call began)."""

    said: str
    heard: str
    """The final transcripts the STT sent during the turn, joined."""
    stopped: float
    """The caller's end of speech: the end of the last line frame with a sample above the
    silence level (the STT emulator's, too)."""
    final: float | None
    """The STT's first final of the turn, as the emulator sent it."""
    context: float | None
    """The user's turn reached the LLM (the context aggregator's ``LLMContextFrame``)."""
    first_sentence: float | None
    """The LLM stand-in's first sentence was out."""
    first_audio: float | None
    """The bot's first media frame of its answer reached the caller's line."""


async def caller_turns(
    turns: int, faults: Faults, *, gap: float = 1.0, verbose: bool = False
) -> tuple[list[TurnTiming], list[str]]:
    """``turns`` caller turns on one call, each after the bot's previous reply ended and ``gap``
    seconds of quiet: the caller speaks, the bot answers. Returns each turn's timings and the
    transcripts the STT emulator made of the whole call."""
    signal = resolve_signal(Signal.SPEECH)
    said = [TURN_LINES[n % len(TURN_LINES)] for n in range(turns)]
    replies = ["Hello, this is Astra. How can I help?"]
    replies += [
        f"Question {n + 1}, sure. {TURN_REPLIES[n % len(TURN_REPLIES)]}" for n in range(turns)
    ]
    timings: list[TurnTiming] = []
    async with TelnyxEmulator(signal=signal, faults=faults) as emu:
        lines = caller_lines(emu, signal, sorted(set(said)))
        async with phone_call(emu, replies, verbose=verbose) as (call, llm):
            await until(lambda: call.bot_audio_since(0) > 0.5, 30, "the greeting")
            await until(lambda: call.bot_quiet_for(gap), 30, "the greeting's end")
            for text in said:
                began = call.now()
                lines[text].teach(emu)
                spoken = call.say(text, lines[text].ulaw, lines[text].seconds)
                await until(lambda at=spoken: call.bot_audio_since(at) > 0.5, 30, "the answer")
                await until(lambda: call.bot_quiet_for(gap), 30, "the answer's end")
                stopped = call.speech_end_since(began) or spoken
                finals = [
                    (at - call.t0, r.text)
                    for s in emu.stt.sessions
                    for at, r in s.results
                    if isinstance(r, Transcript) and r.is_final and r.text and at - call.t0 > began
                ]
                timings.append(
                    TurnTiming(
                        said=text,
                        heard=" ".join(t for _, t in finals),
                        stopped=stopped,
                        final=finals[0][0] if finals else None,
                        context=_first_after(llm.contexts, call.t0 + began, call.t0),
                        first_sentence=_first_after(llm.first_sentences, call.t0 + began, call.t0),
                        first_audio=call.first_bot_frame_after(stopped),
                    )
                )
        heard = [u.text for s in emu.stt.sessions for u in s.utterances if u.text]
    return timings, heard


def _first_after(times: list[float], after: float, t0: float) -> float | None:
    """The first of ``times`` (perf_counter) after ``after``, on the line's clock."""
    return next((at - t0 for at in times if at > after), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wav", type=Path, default=Path("fake_call.wav"))
    args = parser.parse_args()
    asyncio.run(fake_call(args.wav))


if __name__ == "__main__":
    main()
