"""The example phone agent, end to end: a fake Telnyx call drives the bot's own pipeline.

What is real: the bot's transport and pipeline (``examples/phone_agent/bot.py``), pipecat's FastAPI
WebSocket transport served by uvicorn, ``parse_telephony_websocket``, ``TelnyxFrameSerializer`` at
8 kHz PCMU, Silero VAD, smart-turn, the context aggregators, and ``TelnyxTTSService`` talking to
the emulator. Stand-ins replace only the STT and the LLM, the two cloud services that cannot run
here. The caller is a WebSocket client speaking Telnyx's media-streaming messages in real time;
its "voice" for the barge-in is the bot's own greeting played back, which is real speech when the
emulator speaks with espeak-ng. The one-key test keeps the real STT too: ``TelnyxSTTService``
against the emulator's STT endpoint, which recognizes the caller's synthesized question exactly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib.util
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
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
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.types import WebSocketRunnerArguments
from pipecat.utils.time import time_now_iso8601
from stt_helpers import caller_says
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts.emulator import Faults, Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.synth import encode_mulaw, resolve_signal
from pipecat_telnyx_tts.protocol import ForceMessage, TextMessage

BOT_PATH = Path(__file__).resolve().parents[1] / "examples" / "phone_agent" / "bot.py"

GREETING = (
    "Hello, and thanks for calling Riverside Dental, this is Astra. "
    "I can book, move or cancel an appointment, and tell you about our opening hours. "
    "The team is in every weekday from nine in the morning until five in the evening. "
    "What can I do for you today?"
)
QUESTION = "What time do you open tomorrow?"
ANSWER = "We open at nine tomorrow morning."

FRAME_MS = 20
FRAME_BYTES = 8000 * FRAME_MS // 1000
"""One Telnyx media frame: 20 ms of 8 kHz PCMU, one byte a sample."""
ULAW_SILENCE = b"\xff" * FRAME_BYTES
SPEECH_RMS = 300.0
"""Decoded int16 RMS above which a stretch counts as sound; line noise-free silence is 0."""


def load_bot() -> ModuleType:
    """Import the example as the runner would find it: a script, not a package."""
    spec = importlib.util.spec_from_file_location("phone_agent_bot", BOT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law to int16, written out so the test does not lean on the code it checks."""
    u = ~np.frombuffer(data, dtype=np.uint8)
    exponent = (u >> 4) & 0x07
    mantissa = (u & 0x0F).astype(np.int32)
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


def frames_of(samples: np.ndarray) -> list[np.ndarray]:
    """20 ms pieces, so that a short burst cannot hide in a long quiet stretch."""
    return [samples[i : i + FRAME_BYTES] for i in range(0, len(samples), FRAME_BYTES)]


def one_utterance(ulaw: bytes) -> bytes:
    """The recording with its quiet 20 ms frames taken out.

    The caller's words must be one user turn to the VAD. A recording of the bot's audio can hold
    a pause as long as the VAD's stop time (between sentences, or where a loaded machine delivered
    the bot's audio late), and the caller then speaks two turns: the second one interrupts the
    answer to the first and, with nothing transcribed, leaves the LLM nothing to answer.
    """
    pieces = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
    return b"".join(p for p in pieces if rms(ulaw_decode(p)) > SPEECH_RMS)


# --------------------------------------------------------------------------- stand-ins


class ScriptedSTT(FrameProcessor):
    """Stands in for Deepgram: when the VAD says the caller stopped, the line is "transcribed".

    Deepgram finalizes on the same signal (``VADUserStoppedSpeakingFrame``), which the user
    aggregator broadcasts upstream to the STT.
    """

    def __init__(self, lines: list[str]) -> None:
        super().__init__(name="scripted-stt")
        self._lines = list(lines)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self._lines:
            line = self._lines.pop(0)
            await self.push_frame(TranscriptionFrame(line, "caller", time_now_iso8601()))


class ScriptedLLM(FrameProcessor):
    """Stands in for the LLM: answers each context with the next scripted reply.

    The reply is streamed token by token from ``process_frame`` as an LLM service does, so an
    interruption cancels it mid-reply exactly as it would cancel a real completion.
    """

    def __init__(self, replies: list[str], token_delay: float = 0.02) -> None:
        super().__init__(name="scripted-llm")
        self._replies = list(replies)
        self._token_delay = token_delay
        self.contexts: list[list[dict[str, Any]]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        self.contexts.append([dict(m) for m in frame.context.get_messages()])
        if not self._replies:
            return
        await self.push_frame(LLMFullResponseStartFrame())
        for token in re.findall(r"\S+\s*", self._replies.pop(0)):
            await self.push_frame(LLMTextFrame(token))
            await asyncio.sleep(self._token_delay)
        await self.push_frame(LLMFullResponseEndFrame())


# --------------------------------------------------------------------------- the caller


@dataclass
class Caller:
    """Telnyx's side of the media stream: sends a 20 ms frame every 20 ms, records the answer."""

    ws: ClientConnection
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    _speech: bytearray = field(default_factory=bytearray)
    _sequence: int = 1

    async def _send(self, event: str, **body: Any) -> None:
        self._sequence += 1
        message = {"event": event, "sequence_number": str(self._sequence), **body}
        await self.ws.send(json.dumps(message))

    async def dial(self, call_control_id: str) -> None:
        """The two messages a Telnyx stream opens with (shape from Telnyx's docs)."""
        await self.ws.send(json.dumps({"event": "connected", "version": "1.0.0"}))
        await self._send(
            "start",
            start={
                "user_id": str(uuid.uuid4()),
                "call_control_id": call_control_id,
                "client_state": None,
                "from": "+15550001111",
                "to": "+15550002222",
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
            stream_id=self.stream_id,
        )

    def say(self, ulaw: bytes) -> None:
        """Play these bytes into the call next, then fall back to silence."""
        self._speech.extend(ulaw)

    @property
    def speaking(self) -> bool:
        return bool(self._speech)

    async def microphone(self) -> None:
        """Real-time media, as a phone line sends it: the VAD's timing depends on that."""
        chunk, start = 0, time.perf_counter()
        while True:
            chunk += 1
            payload = bytes(self._speech[:FRAME_BYTES]).ljust(FRAME_BYTES, b"\xff")
            del self._speech[:FRAME_BYTES]
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(chunk * FRAME_MS),
                "payload": base64.b64encode(payload).decode(),
            }
            await self._send("media", media=media, stream_id=self.stream_id)
            await asyncio.sleep(max(0.0, start + chunk * FRAME_MS / 1000 - time.perf_counter()))

    async def listen(self) -> None:
        async for raw in self.ws:
            self.received.append((time.perf_counter(), json.loads(raw)))

    async def hang_up(self) -> None:
        # The bot may already be gone (a failing test); that must not hide why.
        with contextlib.suppress(ConnectionClosed):
            await self._send("stop", stop={"call_control_id": "test"}, stream_id=self.stream_id)
        await self.ws.close()

    def events(self, name: str, since: float = 0.0, until: float = float("inf")) -> list[Any]:
        return [(t, m) for t, m in self.received if m.get("event") == name and since <= t < until]

    def audio(self, since: float = 0.0, until: float = float("inf")) -> bytes:
        return b"".join(
            base64.b64decode(m["media"]["payload"]) for _, m in self.events("media", since, until)
        )


@contextlib.asynccontextmanager
async def phone_call(url: str) -> AsyncIterator[Caller]:
    """Dial the bot: the stream's opening messages, then a live microphone until hang-up."""
    async with connect(url) as ws:
        caller = Caller(ws)
        listener = asyncio.create_task(caller.listen())
        await caller.dial(call_control_id="v3:test-call")
        microphone = asyncio.create_task(caller.microphone())
        try:
            yield caller
        finally:
            microphone.cancel()
            await caller.hang_up()
            listener.cancel()


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.perf_counter() + timeout
    while not (value := predicate()):
        if time.perf_counter() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return value


def first_text(emu: TelnyxEmulator, words: str) -> tuple[int, float] | None:
    """The socket on which ``words`` were sent to the emulator, and when the last of them came."""
    for conn in emu.connections:
        sent = ""
        for frame in conn.received:
            if isinstance(frame.message, TextMessage):
                sent += frame.message.text
                if words in sent:
                    return conn.index, frame.t
    return None


# --------------------------------------------------------------------------- the server


@contextlib.asynccontextmanager
async def serve_bot(
    handler: Callable[[WebSocket], Any],
) -> AsyncIterator[str]:
    """The bot behind a real uvicorn server on a free loopback port, as the runner serves it."""
    app = FastAPI()

    @app.websocket("/ws")
    async def telephony(websocket: WebSocket) -> None:
        # What pipecat's runner does for -t telnyx: accept, then hand the socket to bot().
        await websocket.accept()
        await handler(websocket)

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, 10, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


# --------------------------------------------------------------------------- the test


async def test_a_call_hears_speech_and_barge_in_clears_the_line_and_forces_the_tts():
    bot = load_bot()
    stt = ScriptedSTT([QUESTION])
    llm = ScriptedLLM([GREETING, ANSWER])
    outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # Real-time pacing keeps the greeting's synthesis running while the caller barges in, as a
    # live server does; speech, so that the caller's echo of it is speech to Silero.
    async with TelnyxEmulator(signal="speech", faults=Faults.fast(pace=1.0)) as emu:
        config = bot.AgentConfig(
            telnyx_api_key="test-key",
            tts_api_key="test-key",
            telnyx_tts_url=emu.url,
            # The auto hang-up would call Telnyx's REST API when the call ends.
            hang_up_on_end=False,
        )

        async def handle(websocket: WebSocket) -> None:
            try:
                await bot.run_call(
                    WebSocketRunnerArguments(websocket=websocket), config, stt=stt, llm=llm
                )
            except BaseException as e:
                outcome.set_exception(e)
                raise
            outcome.set_result(None)

        async with serve_bot(handle) as url:
            async with phone_call(url) as caller:
                # 1. The greeting arrives as PCMU media, and it is sound, not silence.
                await until(lambda: len(caller.audio()) >= 8000 * 1.5, 20, "1.5 s of greeting")
                greeting_audio = ulaw_decode(caller.audio())
                assert rms(greeting_audio) > SPEECH_RMS, "the greeting came back silent"
                found = first_text(emu, "Riverside Dental")
                assert found, "the greeting's text never reached the emulator"
                greeting_conn = found[0]

                # 2. The caller talks over it (its own recording of the greeting, real speech).
                barge_in_at = time.perf_counter()
                caller.say(one_utterance(caller.audio()[: 8000 * 2]))
                clear_at, _ = await until(
                    lambda: next(iter(caller.events("clear", since=barge_in_at)), None),
                    5,
                    "the serializer's clear event",
                )
                assert not caller.events("clear", until=barge_in_at), "cleared before barge-in"

                # 3. ... and the TTS told the emulator to stop, on the greeting's socket.
                await emu.wait_for(
                    lambda: any(
                        isinstance(m, ForceMessage) for m in emu.received_messages(greeting_conn)
                    ),
                    timeout=5,
                )
                greeting_record = next(c for c in emu.connections if c.index == greeting_conn)
                assert any(s.forced for s in greeting_record.syntheses)

                # 4. The caller's question is answered on a fresh socket.
                answer_conn, answer_sent_at = await until(
                    lambda: first_text(emu, "We open at"),
                    15,
                    "the answer's text at the emulator",
                )
                assert answer_conn != greeting_conn
                await until(
                    lambda: rms(ulaw_decode(caller.audio(since=answer_sent_at))) > SPEECH_RMS,
                    10,
                    "the answer's audio",
                )
                # Nothing of the interrupted greeting is heard after the clear.
                stale = ulaw_decode(caller.audio(since=clear_at, until=answer_sent_at))
                loudest = max((rms(f) for f in frames_of(stale)), default=0.0)
                assert loudest < SPEECH_RMS, "greeting audio played after the barge-in"
                assert any(
                    m["role"] == "user" and QUESTION in str(m["content"]) for m in llm.contexts[-1]
                ), "the transcription did not reach the LLM's context"

            # Hanging up ends the bot's pipeline without an error.
            await asyncio.wait_for(outcome, 10)


async def test_one_key_call_the_telnyx_stt_hears_the_caller_word_for_word():
    """The default STT (``STT_SERVICE=telnyx``) against the emulator's STT on the same port: the
    caller's question is speech the emulator synthesized, sent as PCMU over the phone line, and
    the bot's LLM gets its exact words from the transcript."""
    bot = load_bot()
    llm = ScriptedLLM(["Hello, Riverside Dental.", ANSWER])
    async with TelnyxEmulator(signal="speech", faults=Faults.fast()) as emu:
        question = caller_says(emu, QUESTION, signal=resolve_signal(Signal.SPEECH))
        config = bot.AgentConfig.from_env(
            {
                "TELNYX_API_KEY": "test-key",
                "TELNYX_TTS_URL": emu.url,
                "TELNYX_STT_URL": emu.stt_url,
                "HANG_UP_ON_END": "false",
            }
        )
        assert config.stt_service == "telnyx" and config.missing() == []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def handle(websocket: WebSocket) -> None:
            try:
                await bot.run_call(WebSocketRunnerArguments(websocket=websocket), config, llm=llm)
            finally:
                done.set_result(None)

        async with serve_bot(handle) as url, phone_call(url) as caller:
            await until(lambda: first_text(emu, "Riverside Dental"), 20, "the greeting")
            await until(lambda: emu.stt.sessions, 10, "the STT socket")
            caller.say(encode_mulaw(np.concatenate([question, np.zeros(4000, np.int16)])))
            await until(lambda: first_text(emu, "We open at"), 20, "the answer at the TTS")
            users = [m for m in llm.contexts[-1] if m["role"] == "user"]
            assert QUESTION in str(users[-1]["content"]), users
            (stt_session,) = emu.stt.sessions
            assert "transcription_engine=Deepgram" in stt_session.connection.query
            assert "sample_rate=8000" in stt_session.connection.query
            assert any(u.text == QUESTION and u.source == "library" for u in stt_session.utterances)
        await asyncio.wait_for(done, 10)
        await emu.wait_for(lambda: all(c.closed_at for c in emu.connections), timeout=10)
