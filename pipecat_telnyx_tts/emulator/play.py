"""What the emulator does on one accepted socket: read client frames, synthesize, stream, and
inject the faults that strike mid-synthesis.

Each socket gets a receive loop (frames are handled the moment they arrive, so a force is seen
even while audio streams) and one worker task that runs its syntheses in order. Every frame is
built and parsed by ``pipecat_telnyx_tts.protocol``, the same code the client uses.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from loguru import logger
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from pipecat_telnyx_tts.emulator.catalogue import language_of
from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.connection import EmulatorConnection
from pipecat_telnyx_tts.emulator.lifecycle import Action, Finish, Synthesize, TextSession
from pipecat_telnyx_tts.emulator.plan import PlannedFrame, plan_frames
from pipecat_telnyx_tts.emulator.records import ConnectionRecord, FrameRecord, SynthesisRecord
from pipecat_telnyx_tts.emulator.synth import SynthesisRequest, output_format, render
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ClientMessage,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    InitMessage,
    ProtocolError,
    ServerMessage,
    TextMessage,
    encode_server,
    parse_client,
    parse_server,
)
from pipecat_telnyx_tts.voices import ProviderFamily, VoiceId

SPEED_RANGE = (0.5, 2.0)

CacheKey = tuple[str, ...]


@dataclass(eq=False)
class _SynthesisJob:
    """A synthesis from the moment it is queued until its last frame is out."""

    text: str
    final_after: bool
    record: SynthesisRecord
    plan: list[PlannedFrame] | None = None
    """Set once the audio is rendered: from then on the server has these frames for the client."""
    sent: int = 0
    """Planned frames handed to the connection so far."""
    forced: bool = False


class Socket:
    """One accepted WebSocket: its buffer, settings, synthesis queue and worker.

    A force cuts the current synthesis short and drops queued syntheses, but not a queued end of
    sequence: the teardown the client asked for still happens. ``frames_after_force`` more frames
    of the cut synthesis still go out, at once and before anything the client sent after the
    force is handled. A synthesis cut short gets no final frame of its own and does not enter the
    cache.
    """

    def __init__(
        self,
        ws: EmulatorConnection,
        record: ConnectionRecord,
        *,
        faults: Callable[[], Faults],
        lifecycle: Lifecycle,
        signal: Signal,
        seed: int,
        cache: set[CacheKey],
        on_render: Callable[[SynthesisRequest], None] | None = None,
    ) -> None:
        if record.params is None:
            raise RuntimeError("accepted a socket without parsed parameters")
        self.ws = ws
        self.record = record
        self.params = record.params
        self.faults = faults
        self.cache = cache
        self.on_render = on_render
        """Told of every synthesis rendered, so that the STT side can recognize it later."""
        voice = self.params.resolved_voice() or ""
        family = VoiceId.parse(voice).family
        if family is None:
            raise RuntimeError(f"accepted a socket for an unknown voice {voice!r}")
        self.voice = voice
        self.family: ProviderFamily = family
        # Resolved in the synthesis thread, so that loading espeak-ng never blocks the loop.
        self.signal = signal
        self.fmt = output_format(family, self.params, signal)
        if self.params.audio_format == "ogg_vorbis":
            logger.warning("emulator: ogg_vorbis is not emulated; this socket gets MP3")
        self.session = TextSession(lifecycle)
        self.seed = seed
        self.rng = random.Random(f"{seed}/{record.index}")
        self.initialized = False
        self.init_seen = asyncio.Event()
        self.voice_settings: dict[str, Any] = {}
        self.jobs: deque[_SynthesisJob | Finish] = deque()
        self.wakeup = asyncio.Event()
        self.interrupt = asyncio.Event()
        self.current: _SynthesisJob | None = None
        self.closing = False
        self.stalled = False
        ws.on_message = self._on_wire

    async def run(self) -> None:
        if self.voice in self.faults().invalid_voices:
            logger.info(f"emulator: socket #{self.record.index}: refusing voice {self.voice!r}")
            with suppress(ConnectionClosed):
                await self._fail("Invalid voice_id specified")
            return
        name = f"telnyx-emulator-{self.record.index}"
        tasks = [
            asyncio.create_task(self._work(), name=name),
            asyncio.create_task(self._send_idle_frames(), name=f"{name}-idle"),
        ]
        try:
            await self._receive()
        except ConnectionClosed:
            pass
        finally:
            self.ws.on_message = None
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    def _idle_timeout(self, faults: Faults) -> float | None:
        """The socket's idle window: the query's ask up to the cap, unless asks are ignored."""
        asked = None if faults.ignore_inactivity_query else self.params.inactivity_timeout
        if asked is None:
            return faults.inactivity_timeout or None
        cap = faults.inactivity_timeout_cap
        return asked if cap is None else min(asked, cap)

    # ------------------------------------------------------------------ receiving

    async def _receive(self) -> None:
        while True:
            timeout = self._idle_timeout(self.faults())
            self.record.idle_timeout = timeout
            try:
                async with asyncio.timeout(timeout):
                    raw = await self.ws.recv()
            except TimeoutError:
                logger.info(f"emulator: socket #{self.record.index} idle for {timeout} s")
                await self._close(1000, "inactivity timeout")
                return
            t = self.ws.arrivals.popleft()
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
            try:
                message = parse_client(raw, initialized=self.initialized)
            except ProtocolError as e:
                self.record.received.append(FrameRecord(t, text, None))
                logger.info(f"emulator: socket #{self.record.index}: {e}")
                await self._fail("Invalid message")
                return
            self.record.received.append(FrameRecord(t, text, message))
            if not self.closing:
                self._on_message(message, t)

    def _on_wire(self, frame: Frame) -> None:
        """A client message just read off the wire, before any later frame is parsed.

        Only a force matters here: it cuts the synthesis streaming now, so that the frames that
        still go out precede the answer to whatever the client sent next, typically its close.
        Everything else, and a force in fragments, waits for the receive loop.
        """
        job = self.current
        if job is None or job.plan is None or job.forced or frame.opcode is not Opcode.TEXT:
            return
        try:
            message = parse_client(bytes(frame.data).decode(), initialized=True)
        except (UnicodeDecodeError, ProtocolError):
            return
        if isinstance(message, ForceMessage):
            self._cut(job)

    def _on_message(self, message: ClientMessage, t: float) -> None:
        match message:
            case InitMessage(voice_settings=settings):
                self.initialized = True
                self.init_seen.set()
                self._accept_settings(settings or {})
            case ForceMessage():
                self.session.on_force()
                self._force(t)
            case TextMessage(text=text, flush=flush):
                self._enqueue(self.session.on_text(text, flush), t)
            case EndMessage():
                self._enqueue(self.session.on_end(), t)

    def _accept_settings(self, settings: dict[str, Any]) -> None:
        unknown = sorted(set(settings) - self.family.settings_keys)
        if unknown:
            logger.debug(f"emulator: {self.family.name} ignores voice_settings {unknown}")
        self.voice_settings = {k: v for k, v in settings.items() if k not in unknown}

    def _enqueue(self, actions: list[Action], t: float) -> None:
        for action in actions:
            match action:
                case Synthesize(text=text, final_after=final_after):
                    record = SynthesisRecord(text=text, started_at=t)
                    self.record.syntheses.append(record)
                    self.jobs.append(_SynthesisJob(text, final_after, record))
                case Finish():
                    self.jobs.append(action)
        self.wakeup.set()

    def _force(self, t: float) -> None:
        current = self.current
        if current is not None and not current.forced:
            self._cut(current)
        # The end of sequence, if queued, still stands: force stops audio, not the teardown.
        kept: deque[_SynthesisJob | Finish] = deque()
        for job in self.jobs:
            if isinstance(job, Finish):
                kept.append(job)
            else:
                job.record.forced = True
                job.record.finished_at = t
        self.jobs = kept
        logger.debug(f"emulator: socket #{self.record.index}: force")

    def _cut(self, job: _SynthesisJob) -> None:
        """Stop ``job`` for a force. The next ``frames_after_force`` of its planned frames, which
        the server had already produced, go out at once; a job still rendering has none."""
        job.forced = True
        job.record.forced = True
        self.interrupt.set()
        if job.plan is None or self.stalled:
            return
        # Its final frame never goes: the synthesis did not finish.
        owed = max(self.faults().frames_after_force, 0)
        late = [f for f in job.plan[job.sent :] if not f.final][:owed]
        job.sent += len(late)
        for frame in late:
            self._send_now(self._message_for(job, frame))
        job.record.frames_after_force_sent = len(late)

    # ------------------------------------------------------------------ the worker

    async def _work(self) -> None:
        try:
            while not self.closing:
                if not self.jobs:
                    self.wakeup.clear()
                    await self.wakeup.wait()
                    continue
                job = self.jobs.popleft()
                if isinstance(job, Finish):
                    if job.send_final:
                        await self._send(FinalMessage())
                    if self.faults().keep_open_after_final:
                        # Later text is not synthesized (the session has ended); only the client's
                        # close or the inactivity timeout ends the socket.
                        continue
                    await self._close(1000, "")
                    return
                await self._synthesize(job)
                if self.stalled:
                    await self.ws.wait_closed()
                    return
        except ConnectionClosed:
            return
        except Exception:
            logger.exception(f"emulator: socket #{self.record.index}: synthesis failed")
            with suppress(ConnectionClosed):
                await self._fail("Error in audio response")

    async def _synthesize(self, job: _SynthesisJob) -> None:
        record = job.record
        self.current = job
        self.interrupt.clear()
        try:
            start = time.perf_counter()
            faults = self.faults()
            key = (
                job.text,
                self.voice,
                json.dumps(self.voice_settings, sort_keys=True),
                self.fmt.encoding,
                str(self.fmt.sample_rate),
            )
            cached = not self.params.disable_cache and key in self.cache
            request = SynthesisRequest(
                text=job.text,
                fmt=self.fmt,
                signal=self.signal,
                speed=self._speed(),
                language=self.params.language or language_of(self.voice),
                ssml=self.params.text_type == "ssml",
                marker=self.record.index,
                sentence_pause_ms=faults.sentence_pause_ms,
                mp3_files=faults.mp3_files,
                mp3_info_tag=not faults.mp3_untagged,
                rate_jitter=faults.rate_jitter,
                jitter_seed=self.seed,
            )
            rendition = await asyncio.get_running_loop().run_in_executor(None, render, request)
            record.audio_seconds = rendition.audio_seconds
            record.cached = cached
            record.mp3 = self.fmt.mp3
            record.sample_rate = self.fmt.sample_rate
            record.words = list(rendition.words)
            record.words_source = rendition.words_source
            if self.on_render is not None:
                self.on_render(request)
            if job.forced:
                return
            job.plan = plan_frames(
                rendition,
                self.family.delivery,
                faults.chunk_ms,
                self.rng,
                job.text,
                job.final_after,
            )
            delay = 0.0 if cached else faults.first_audio_delay
            pace = None if cached else faults.pace
            if await self._stream(job, start + delay, pace):
                self.cache.add(key)
        finally:
            record.finished_at = time.perf_counter()
            self.current = None

    def _speed(self) -> float:
        key = self.family.speed_key
        value = self.voice_settings.get(key) if key else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 1.0
        low, high = SPEED_RANGE
        return min(max(float(value), low), high)

    async def _stream(self, job: _SynthesisJob, base: float, pace: float | None) -> bool:
        """Send the planned frames on time; False when a force or a fault cut the synthesis."""
        plan = job.plan or []
        stall_ms = self.faults().stall_ms
        stall_at = sum(bool(f.audio) for f in plan) // 2 if stall_ms > 0 else None
        while job.sent < len(plan):
            frame = plan[job.sent]
            await self._sleep_until(base + (frame.at / pace if pace else 0.0))
            if job.forced or self.closing:
                return False
            if frame.audio and job.record.chunks_sent == stall_at:
                await self._sleep_until(time.perf_counter() + stall_ms / 1000)
                base += stall_ms / 1000
                if job.forced or self.closing:
                    return False
            if job.sent == 0 and await self._inject_fault(0):
                return False
            if frame.audio and job.record.chunks_sent == self.faults().inject_after_chunks:
                await self._inject_frames()
                if job.forced:
                    return False
            job.sent += 1
            await self._send(self._message_for(job, frame))
            if frame.audio and await self._inject_fault(job.record.chunks_sent):
                return False
        return not job.forced

    async def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            with suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.interrupt.wait()

    async def _inject_fault(self, audio_chunks_sent: int) -> bool:
        """Fire the mid-synthesis fault due after this many audio chunks, if any is; True if it
        ended the synthesis."""
        faults = self.faults()
        if faults.fault_count is not None and faults.fault_count <= 0:
            return False
        due = [
            kind
            for kind, after in (
                ("error", faults.error_after_chunks),
                ("drop", faults.drop_after_chunks),
                ("close", faults.close_after_chunks),
                ("stall", faults.stall_after_chunks),
                ("deaf", faults.stop_reading_after_chunks),
            )
            if after == audio_chunks_sent
        ]
        if not due:
            return False
        if faults.fault_count is not None:
            faults.fault_count -= 1
        socket = f"emulator: socket #{self.record.index}"
        match due[0]:
            case "error":
                logger.info(f"{socket}: injected audio error")
                await self._fail("Error in audio response")
            case "drop":
                logger.info(f"{socket}: injected connection drop")
                self.closing = True
                self.ws.transport.abort()
            case "close":
                logger.info(f"{socket}: injected close {faults.close_code}")
                await self._close(faults.close_code, "")
            case "stall":
                logger.info(f"{socket}: injected stall")
                self.stalled = True
            case "deaf":
                logger.info(f"{socket}: stopped reading")
                self.ws.transport.pause_reading()
                return False
        return True

    async def _send_idle_frames(self) -> None:
        """``Faults.idle_frame``: an unknown frame on an idle socket, once or every so often."""
        await self.init_seen.wait()
        wait = self.faults().idle_frame_after
        while not self.closing:
            await asyncio.sleep(wait)
            faults = self.faults()
            raw = faults.idle_frame
            if raw is None:
                return
            if not self.closing and self.current is None and not self.jobs:
                try:
                    message: ServerMessage | None = parse_server(raw)
                except ProtocolError:
                    message = None
                logger.debug(f"emulator: socket #{self.record.index}: idle frame {raw[:40]!r}")
                self.record.sent.append(FrameRecord(time.perf_counter(), raw, message))
                with suppress(ConnectionClosed):
                    await self.ws.send(raw)
            if faults.idle_frame_every is None:
                return
            wait = faults.idle_frame_every

    async def _inject_frames(self) -> None:
        """Send the raw frames ``Faults.inject_frames`` holds, once, recorded like any other."""
        faults = self.faults()
        if not faults.inject_frames:
            return
        frames, faults.inject_frames = faults.inject_frames, []
        for raw in frames:
            if self.closing:
                return
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
            try:
                message: ServerMessage | None = parse_server(raw)
            except ProtocolError:
                message = None
            kind = "text" if isinstance(raw, str) else "binary"
            logger.info(
                f"emulator: socket #{self.record.index}: injected a raw {kind} frame "
                f"of {len(raw)} {'chars' if kind == 'text' else 'bytes'}"
            )
            self.record.sent.append(FrameRecord(time.perf_counter(), text, message))
            await self.ws.send(raw)

    # ------------------------------------------------------------------ sending

    def _message_for(self, job: _SynthesisJob, frame: PlannedFrame) -> ServerMessage:
        """The wire message of a planned frame, counted as sent in the synthesis record."""
        record = job.record
        if frame.final:
            return FinalMessage()
        ttfa = None
        if frame.audio:
            record.chunks_sent += 1
            if record.first_audio_at is None:
                record.first_audio_at = time.perf_counter()
                ttfa = round((record.first_audio_at - record.started_at) * 1000)
        return AudioMessage(frame.audio, frame.text, record.cached, ttfa)

    async def _send(self, message: ServerMessage, *, closing: bool = False) -> None:
        if self.closing and not closing:
            return
        raw = encode_server(message)
        self.record.sent.append(FrameRecord(time.perf_counter(), raw, message))
        await self.ws.send(raw)

    def _send_now(self, message: ServerMessage) -> None:
        """Send without yielding to the loop, so that nothing the client sent since is handled
        first; no flow control, which the few frames sent this way do not need."""
        if self.closing or self.ws.protocol.state is not State.OPEN:
            return
        raw = encode_server(message)
        self.record.sent.append(FrameRecord(time.perf_counter(), raw, message))
        self.ws.protocol.send_text(raw.encode())
        self.ws.send_data()

    async def _fail(self, error: str) -> None:
        """An error frame, then a close: the server's answer to anything it cannot go on with."""
        self.closing = True
        await self._send(ErrorMessage(error), closing=True)
        await self.ws.close(1011, error)

    async def _close(self, code: int, reason: str) -> None:
        self.closing = True
        await self.ws.close(code, reason)
