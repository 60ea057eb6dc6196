"""What the emulator does on one accepted STT socket, and the state all STT sockets share.

The upgrade always succeeds for a good key; bad parameters get an ``errors`` frame and a close,
as Telnyx answers them. Audio is decoded and fed to an ``SttSession`` in a worker thread, so
that recognition never holds up the TTS sockets on the same loop.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field, replace

import numpy as np
from loguru import logger
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts.emulator.connection import EmulatorConnection
from pipecat_telnyx_tts.emulator.records import ConnectionRecord
from pipecat_telnyx_tts.emulator.stt_config import LowerCaseEngine, SttBehaviour, SttFaults
from pipecat_telnyx_tts.emulator.stt_recognize import AudioLibrary, Pcm, Script
from pipecat_telnyx_tts.emulator.stt_session import (
    Result,
    SessionSpec,
    SttSession,
    UtteranceRecord,
)
from pipecat_telnyx_tts.stt_protocol import (
    CLOSE_STREAM,
    DEFAULT_ENGINE,
    ENGINES,
    FINALIZE,
    KEEP_ALIVE,
    Problem,
    Query,
    check_query,
    encode_errors,
    encode_transcript,
    engine_named,
    parse_control,
    parse_query,
    query_value,
)

ERROR_CLOSE_CODE = 1008
"""The close after an ``errors`` frame; the reference documents the close, not its code."""
IDLE_CLOSE_CODE = 1011


@dataclass
class SttRecord:
    """One STT socket as the emulator saw it; times are ``perf_counter`` values."""

    connection: ConnectionRecord
    spec: SessionSpec | None = None
    """None when the parameters were refused, or the socket never transcribes (lower case)."""
    audio_bytes: int = 0
    frame_sizes: Counter[int] = field(default_factory=Counter)
    """Binary frames received, by size in bytes."""
    audio_seconds: float = 0.0
    controls: list[tuple[float, str]] = field(default_factory=list)
    """Control messages received (``Finalize``, ``CloseStream``, ``KeepAlive``, or "other")."""
    results: list[tuple[float, Result]] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    sent: list[tuple[float, str]] = field(default_factory=list)
    """Every text frame the server sent, raw."""
    utterances: list[UtteranceRecord] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.connection.index


@dataclass
class SttSide:
    """Everything the STT sockets of one emulator share; the emulator holds it as ``emu.stt``."""

    behaviour: SttBehaviour = field(default_factory=SttBehaviour)
    faults: SttFaults = field(default_factory=SttFaults)
    library: AudioLibrary = field(default_factory=AudioLibrary)
    script: Script = field(default_factory=Script)
    sessions: list[SttRecord] = field(default_factory=list)
    keep: int | None = None
    """Keep only this many of the most recent session records (the emulator's
    ``keep_connections``)."""

    def session(self, index: int) -> SttRecord | None:
        return next((s for s in self.sessions if s.index == index), None)

    def open_sessions(self) -> list[SttRecord]:
        return [s for s in self.sessions if s.connection.closed_at is None]


def read_spec(query: Query, behaviour: SttBehaviour) -> tuple[SessionSpec | None, list[Problem]]:
    """The session a query opens, or what the server refuses in it.

    A lower-case engine name opens a session that never transcribes when the behaviour says so
    (the spec is then None and there are no problems).
    """
    raw_engine = query_value(query, "transcription_engine") or DEFAULT_ENGINE
    miscased = engine_named(raw_engine) is None and any(
        name.lower() == raw_engine.lower() for name in ENGINES
    )
    if miscased and behaviour.lower_case_engine is LowerCaseEngine.SILENT:
        return None, []
    checked = {k: list(v) for k, v in query.items() if k not in ("model", "transcription_model")}
    model = next(
        (query_value(query, k) for k in behaviour.model_keys if query_value(query, k)), None
    )
    if model is not None:
        checked["model"] = [model]
    problems = check_query(checked)
    if problems:
        return None, problems
    engine = ENGINES[raw_engine]
    fmt = query_value(checked, "input_format") or "mp3"
    rate = query_value(checked, "sample_rate")
    raw_endpointing = query_value(checked, "endpointing") or ""
    endpointing: int | None = behaviour.default_endpointing_ms
    if raw_endpointing == "false":
        endpointing = None
    elif engine.endpointing and raw_endpointing.isdigit() and int(raw_endpointing) > 0:
        endpointing = int(raw_endpointing)
    return (
        SessionSpec(
            engine=engine,
            model=model or engine.default_model,
            sample_rate=int(rate) if rate and fmt != "wav" else 16000,
            interim_results=query_value(checked, "interim_results") == "true",
            endpointing_ms=endpointing,
        ),
        [],
    )


class WavStream:
    """``input_format=wav``: a RIFF header (its data size open-ended, as streaming clients send
    it), then PCM. Strict: a byte before ``RIFF`` is an error, as Telnyx's benchmark found."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.rate: int | None = None
        self.in_data = False
        """Past the header: every byte from here on is PCM."""
        self._head = bytearray()

    def feed(self, data: bytes) -> bytes:
        """The PCM in ``data`` once the header is past; raises ValueError for a bad stream."""
        if self.in_data:
            return data
        self._head += data
        if self.strict:
            if not b"RIFF".startswith(bytes(self._head[:4])):
                raise ValueError("audio before the RIFF header: send the WAV header first")
        else:
            start = self._head.find(b"RIFF")
            del self._head[: start if start >= 0 else max(len(self._head) - 3, 0)]
        if len(self._head) < 12:
            return b""
        if self._head[8:12] != b"WAVE":
            raise ValueError("the stream is not WAVE audio")
        pos = 12
        while len(self._head) >= pos + 8:
            kind = bytes(self._head[pos : pos + 4])
            (size,) = struct.unpack("<I", self._head[pos + 4 : pos + 8])
            if kind == b"data":
                if self.rate is None:
                    raise ValueError("the WAV data chunk comes before its fmt chunk")
                rest = bytes(self._head[pos + 8 :])
                self._head.clear()
                self.in_data = True
                return rest
            if len(self._head) < pos + 8 + size:
                return b""
            if kind == b"fmt ":
                channels, rate, _, _, bits = struct.unpack(
                    "<HIIHH", self._head[pos + 10 : pos + 24]
                )
                if channels != 1 or bits != 16:
                    raise ValueError(f"the emulator hears mono 16-bit WAV, not {channels}x{bits}")
                self.rate = rate
            pos += 8 + size + size % 2
        return b""


class SttSocket:
    """One accepted STT socket: its checks, its session, its faults."""

    def __init__(self, ws: EmulatorConnection, record: ConnectionRecord, side: SttSide) -> None:
        self.ws = ws
        self.side = side
        self.record = SttRecord(record)
        side.sessions.append(self.record)
        if side.keep is not None:
            del side.sessions[: -max(side.keep, 1)]
        self.query = parse_query(record.query)
        self.session: SttSession | None = None
        self.wav: WavStream | None = None
        self._odd = b""
        self.stalled = False

    async def run(self) -> None:
        spec, problems = read_spec(self.query, self.side.behaviour)
        injected, self.side.faults.refuse_with = self.side.faults.refuse_with, []
        if injected:
            problems = [
                Problem(parameter, f"injected refusal of {parameter}", code)
                for code, parameter in injected
            ]
        if problems:
            await self._refuse(problems)
            return
        self.record.spec = spec
        if query_value(self.query, "input_format") == "wav":
            self.wav = WavStream(self.side.behaviour.wav_strict)
        with suppress(ConnectionClosed):
            await self._receive()

    async def _refuse(self, problems: list[Problem]) -> None:
        self.record.errors = problems
        logger.info(f"emulator: STT socket #{self.record.index} refused: {problems[0].detail}")
        raw = encode_errors(problems, singular=self.side.behaviour.singular_error)
        await self._send_raw(raw)
        await self.ws.close(ERROR_CLOSE_CODE, "invalid parameters")

    async def _receive(self) -> None:
        while True:
            timeout = self.side.behaviour.idle_timeout or None
            try:
                async with asyncio.timeout(timeout):
                    raw = await self._recv_counted()
            except TimeoutError:
                logger.info(f"emulator: STT socket #{self.record.index} idle for {timeout} s")
                await self.ws.close(IDLE_CLOSE_CODE, "idle timeout")
                return
            if raw is None or self.stalled:
                continue
            if not await self._handle(raw):
                return

    async def _recv_counted(self) -> str | bytes | None:
        """The next frame that resets the idle timeout; other frames come back as None."""
        while True:
            raw = await self.ws.recv()
            t = self.ws.arrivals.popleft()
            if isinstance(raw, bytes):
                return raw
            kind = parse_control(raw)
            self.record.controls.append((t, kind or "other"))
            spec = self.record.spec
            if kind is None or (
                kind == KEEP_ALIVE and (spec is None or not spec.engine.keep_alive)
            ):
                continue
            if kind == KEEP_ALIVE:
                return None
            return raw

    async def _handle(self, raw: str | bytes) -> bool:
        """Act on one frame; False once the socket is done."""
        spec = self.record.spec
        if spec is None:
            return True
        loop = asyncio.get_running_loop()
        if isinstance(raw, bytes):
            try:
                pcm = self._decode(raw)
            except ValueError as e:
                await self._refuse([Problem("input_format", str(e))])
                return False
            self.record.audio_bytes += len(raw)
            self.record.frame_sizes[len(raw)] += 1
            session = self._session(spec)
            if session is None:
                return True
            results = await loop.run_in_executor(None, session.feed, pcm)
            self.record.audio_seconds = session.audio_seconds
            await self._send_results(results)
            return await self._inject_fault()
        kind = parse_control(raw)
        engine = spec.engine
        session = self.session
        if session is None:
            if kind == CLOSE_STREAM and (
                engine.close_stream or self.side.behaviour.close_stream_everywhere
            ):
                await self.ws.close(1000, "")
                return False
            return True
        if kind == FINALIZE and engine.finalize:
            await self._send_results(await loop.run_in_executor(None, session.finalize))
        elif kind == CLOSE_STREAM and (
            engine.close_stream or self.side.behaviour.close_stream_everywhere
        ):
            await self._send_results(await loop.run_in_executor(None, session.close_stream))
            await self.ws.close(1000, "")
            return False
        return True

    def _session(self, spec: SessionSpec) -> SttSession | None:
        """The session, opened at the first audio: a WAV stream's rate is in its header."""
        if self.session is None:
            if self.wav is not None:
                if self.wav.rate is None or not self.wav.in_data:
                    return None
                spec = replace(spec, sample_rate=self.wav.rate)
            self.session = SttSession(
                spec, self.side.behaviour, self.side.library, self.side.script
            )
            self.record.utterances = self.session.utterances
        return self.session

    def _decode(self, raw: bytes) -> Pcm:
        data = raw
        if self.wav is not None:
            data = self.wav.feed(raw)
        elif query_value(self.query, "input_format") != "linear16":
            # Other encodings are accepted and heard as silence: the emulator decodes PCM only.
            return np.zeros(len(raw) // 2, np.int16)
        data = self._odd + data
        whole = len(data) - len(data) % 2
        self._odd = data[whole:]
        return np.frombuffer(data[:whole], dtype="<i2").astype(np.int16)

    async def _send_results(self, results: list[Result]) -> None:
        if not results:
            return
        delay = self.side.faults.result_delay
        if delay > 0:
            await asyncio.sleep(delay)
        injected, self.side.faults.inject_frames = self.side.faults.inject_frames, []
        for raw in injected:
            logger.info(f"emulator: STT socket #{self.record.index}: injected a raw frame")
            await self.ws.send(raw)
        for result in results:
            if self.stalled:
                return
            self.record.results.append((time.perf_counter(), result))
            await self._send_raw(encode_transcript(result))

    async def _send_raw(self, raw: str) -> None:
        self.record.sent.append((time.perf_counter(), raw))
        await self.ws.send(raw)

    async def _inject_fault(self) -> bool:
        """Fire the fault due at this much audio, if any; False once the socket is done."""
        faults = self.side.faults
        if faults.fault_count is not None and faults.fault_count <= 0:
            return True
        heard = self.record.audio_seconds
        due = [
            kind
            for kind, after in (
                ("error", faults.error_after_audio),
                ("drop", faults.drop_after_audio),
                ("close", faults.close_after_audio),
                ("stall", faults.stall_after_audio),
            )
            if after is not None and heard >= after and kind not in self.record.faults
        ]
        if not due or self.stalled:
            return True
        if faults.fault_count is not None:
            faults.fault_count -= 1
        kind = due[0]
        self.record.faults.append(kind)
        logger.info(f"emulator: STT socket #{self.record.index}: injected {kind}")
        match kind:
            case "error":
                await self._send_raw('{"error":"Internal error"}')
                await self.ws.close(1011, "Internal error")
                return False
            case "drop":
                self.ws.transport.abort()
                return False
            case "close":
                await self.ws.close(faults.close_code, "")
                return False
            case _:
                self.stalled = True
                return True
