"""A local stand-in for ``wss://api.telnyx.com/v2/text-to-speech/speech`` over real sockets.

Each accepted socket gets a receive loop (frames are handled the moment they arrive, so a force is
seen even while audio streams) and one worker task that runs its syntheses in order. Every frame
is built and parsed by ``pipecat_telnyx_tts.protocol``, the same code the client uses.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import random
import time
import weakref
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import parse_qs

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from pipecat_telnyx_tts.emulator.catalogue import language_of, voice_list
from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.lifecycle import Action, Finish, Synthesize, TextSession
from pipecat_telnyx_tts.emulator.records import (
    REDACTED,
    ConnectionRecord,
    FrameRecord,
    SynthesisRecord,
)
from pipecat_telnyx_tts.emulator.synth import (
    Rendition,
    SynthesisRequest,
    output_format,
    render,
    split_chunks,
)
from pipecat_telnyx_tts.protocol import (
    SPEECH_PATH,
    VOICES_PATH,
    AudioMessage,
    ClientMessage,
    ConnectParams,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    InitMessage,
    ProtocolError,
    Rejection,
    ServerMessage,
    TextMessage,
    check_connect,
    encode_server,
    parse_client,
    parse_server,
)
from pipecat_telnyx_tts.voices import Delivery, ProviderFamily, VoiceId

CLOSE_TIMEOUT = 2.0
"""Seconds to wait for a client's closing handshake; bounds shutdown too."""
SPEED_RANGE = (0.5, 2.0)

T = TypeVar("T")


# websockets logs request headers, the bearer token among them, at DEBUG; this logger never does.
_WS_LOGGER = logging.getLogger("pipecat_telnyx_tts.emulator.websockets")
_WS_LOGGER.setLevel(logging.INFO)


class TelnyxEmulator:
    """The Telnyx TTS WebSocket and voice list, served locally.

    Use as ``async with TelnyxEmulator(...) as emu:``; ``emu.url`` is the WebSocket URL. ``faults``
    and ``lifecycle`` may be changed while it runs: the lifecycle is read when a socket opens,
    faults when they take effect. ``connections`` records every upgrade attempt; with
    ``keep_connections`` set, only that many of the most recent ones are kept (a long-running
    server would otherwise keep every frame it ever sent).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        lifecycle: Lifecycle | str = Lifecycle.OBSERVED,
        faults: Faults | None = None,
        signal: Signal | str = Signal.AUTO,
        seed: int = 0,
        keep_connections: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._lifecycle = Lifecycle(lifecycle)
        self.faults = faults if faults is not None else Faults()
        self._signal = Signal(signal)
        self.seed = seed
        self.keep_connections = keep_connections
        self.connections: list[ConnectionRecord] = []
        self._upgrades = 0
        self._pending: weakref.WeakKeyDictionary[ServerConnection, ConnectionRecord] = (
            weakref.WeakKeyDictionary()
        )
        self._open: set[ServerConnection] = set()
        self._cache: set[tuple[str, ...]] = set()
        self._server: Server | None = None
        self._closing = asyncio.Event()

    @property
    def lifecycle(self) -> Lifecycle:
        """The reading new sockets follow; sockets already open keep theirs."""
        return self._lifecycle

    @lifecycle.setter
    def lifecycle(self, value: Lifecycle | str) -> None:
        self._lifecycle = Lifecycle(value)

    @property
    def signal(self) -> Signal:
        """The audio signal new sockets get."""
        return self._signal

    @signal.setter
    def signal(self, value: Signal | str) -> None:
        self._signal = Signal(value)

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen; ``port`` then holds the real port (useful with port 0)."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._closing.clear()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            compression=None,
            # The upgrade delay fault may exceed any fixed handshake timeout; stop() bounds
            # shutdown instead, by aborting whatever is still open.
            open_timeout=None,
            close_timeout=CLOSE_TIMEOUT,
            create_connection=_tracking_connection(self._open),
            logger=_WS_LOGGER,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(f"Telnyx TTS emulator listening on {self.url}")

    async def stop(self) -> None:
        """Close every socket (1001 to open ones) and stop listening, within a few seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("emulator shutdown: aborting connections that did not close in time")
            for connection in list(self._open):
                connection.transport.abort()
            with suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await server.wait_closed()
        now = time.perf_counter()
        for record in self.connections:
            if record.closed_at is None:
                record.closed_at = now
        logger.info("Telnyx TTS emulator stopped")

    @property
    def url(self) -> str:
        """The WebSocket URL, without a query string."""
        return f"ws://{self._netloc}{SPEECH_PATH}"

    @property
    def http_url(self) -> str:
        """The HTTP base URL; the voice list is at ``http_url + VOICES_PATH``."""
        return f"http://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # ------------------------------------------------------------------ test helpers

    async def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.perf_counter() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.perf_counter() >= deadline:
                name = getattr(predicate, "__qualname__", repr(predicate))
                raise TimeoutError(
                    f"emulator: {name} still false after {timeout} s; {self._summary()}"
                )
            await asyncio.sleep(interval)

    def received_messages(self, conn_index: int | None = None) -> list[ClientMessage]:
        """Parsed client messages in arrival order, of one connection or of all."""
        return [
            frame.message
            for record in self.connections
            if conn_index is None or record.index == conn_index
            for frame in record.received
            if isinstance(frame.message, InitMessage | TextMessage | ForceMessage | EndMessage)
        ]

    def _summary(self) -> str:
        if not self.connections:
            return "no connection was made"
        parts = [
            f"#{r.index} {r.status} {'open' if r.closed_at is None else f'closed {r.close_code}'}"
            f" rx {len(r.received)} tx {len(r.sent)} syntheses {len(r.syntheses)}"
            for r in self.connections
        ]
        return "connections: " + "; ".join(parts)

    # ------------------------------------------------------------------ HTTP

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == VOICES_PATH:
            return self._voices(connection, request.headers, query)
        self._upgrades += 1
        record = ConnectionRecord(
            index=self._upgrades,
            path=path,
            query=query,
            params=None,
            headers=_redacted(request.headers),
            status=0,
            opened_at=time.perf_counter(),
        )
        self.connections.append(record)
        if self.keep_connections is not None:
            del self.connections[: -max(self.keep_connections, 1)]
        self._pending[connection] = record
        delay = self.faults.upgrade_delay
        if delay > 0:
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
        if self._closing.is_set():
            refusal: Rejection | None = Rejection(503, "the server is shutting down")
        else:
            refusal = self._admit(path, query, request.headers, record)
        if refusal is None:
            return None
        logger.info(f"emulator: refused upgrade #{record.index}: {refusal.status} {refusal.reason}")
        return _json_response(connection, refusal.status, _error_body(refusal))

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        record = self._pending.get(connection)
        if record is None:
            return
        record.status = response.status_code
        if response.status_code != 101:
            del self._pending[connection]
            record.closed_at = time.perf_counter()

    def _admit(
        self, path: str, query: str, headers: Headers, record: ConnectionRecord
    ) -> Rejection | None:
        if path != SPEECH_PATH:
            return Rejection(404, f"no such endpoint: {path}")
        refusal = self._check_auth(headers)
        if refusal is not None:
            return refusal
        try:
            record.params = ConnectParams.from_query(query)
        except ProtocolError as e:
            return Rejection(400, str(e))
        return check_connect(record.params)

    def _check_auth(self, headers: Headers) -> Rejection | None:
        values = headers.get_all("Authorization")
        if len(values) != 1:
            return Rejection(401, "send exactly one 'Authorization: Bearer <API key>' header")
        scheme, _, token = values[0].strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return Rejection(401, "the Authorization header must be 'Bearer <API key>'")
        if self.api_key is not None and not hmac.compare_digest(token, self.api_key):
            return Rejection(401, "the API key is not valid")
        return None

    def _voices(self, connection: ServerConnection, headers: Headers, query: str) -> Response:
        refusal = self._check_auth(headers)
        if refusal is not None:
            return _json_response(connection, refusal.status, _error_body(refusal))
        provider = parse_qs(query).get("provider", [None])[0]
        return _json_response(connection, 200, voice_list(provider))

    # ------------------------------------------------------------------ WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        record = self._pending.pop(ws)
        logger.info(f"emulator: socket #{record.index} open: {record.query}")
        try:
            await _Socket(self, ws, record).run()
        finally:
            if ws.state is not State.CLOSED:
                await ws.close()
            record.closed_at = time.perf_counter()
            record.close_code, record.close_reason = _close_info(ws)
            logger.info(
                f"emulator: socket #{record.index} closed: "
                f"{record.close_code} {record.close_reason!r}"
            )


@dataclass(eq=False)
class _SynthesisJob:
    text: str
    final_after: bool
    record: SynthesisRecord
    forced: bool = False
    allowance: int = 0
    """Frames still allowed out after a force."""


@dataclass(frozen=True)
class _Planned:
    """A frame of a synthesis, and the audio time that must be produced before it goes out."""

    audio: bytes | None
    text: str | None
    final: bool
    at: float


class _Socket:
    """One accepted WebSocket: its buffer, settings, synthesis queue and worker.

    A force cuts the current synthesis short (``frames_after_force`` more of its frames still go
    out, at once) and drops queued syntheses, but not a queued end of sequence: the teardown the
    client asked for still happens. A synthesis cut short gets no final frame of its own and does
    not enter the cache.
    """

    def __init__(self, emu: TelnyxEmulator, ws: ServerConnection, record: ConnectionRecord):
        if record.params is None:
            raise RuntimeError("accepted a socket without parsed parameters")
        self.emu = emu
        self.ws = ws
        self.record = record
        self.params = record.params
        voice = self.params.resolved_voice() or ""
        family = VoiceId.parse(voice).family
        if family is None:
            raise RuntimeError(f"accepted a socket for an unknown voice {voice!r}")
        self.voice = voice
        self.family: ProviderFamily = family
        # Resolved in the synthesis thread, so that loading espeak-ng never blocks the loop.
        self.signal = emu.signal
        self.fmt = output_format(family, self.params, self.signal)
        if self.params.audio_format == "ogg_vorbis":
            logger.warning("emulator: ogg_vorbis is not emulated; this socket gets MP3")
        self.session = TextSession(emu.lifecycle)
        self.rng = random.Random(f"{emu.seed}/{record.index}")
        self.initialized = False
        self.voice_settings: dict[str, Any] = {}
        self.jobs: deque[_SynthesisJob | Finish] = deque()
        self.wakeup = asyncio.Event()
        self.interrupt = asyncio.Event()
        self.current: _SynthesisJob | None = None
        self.closing = False

    async def run(self) -> None:
        worker = asyncio.create_task(self._work(), name=f"telnyx-emulator-{self.record.index}")
        try:
            await self._receive()
        except ConnectionClosed:
            pass
        finally:
            worker.cancel()
            await asyncio.wait([worker])

    # ------------------------------------------------------------------ receiving

    async def _receive(self) -> None:
        while True:
            faults = self.emu.faults
            timeout = self.params.inactivity_timeout or faults.inactivity_timeout or None
            try:
                async with asyncio.timeout(timeout):
                    raw = await self.ws.recv()
            except TimeoutError:
                logger.info(f"emulator: socket #{self.record.index} idle for {timeout} s")
                await self._close(1000, "inactivity timeout")
                return
            t = time.perf_counter()
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

    def _on_message(self, message: ClientMessage, t: float) -> None:
        match message:
            case InitMessage(voice_settings=settings):
                self.initialized = True
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
        if current is not None:
            current.forced = True
            current.record.forced = True
            current.allowance = self.emu.faults.frames_after_force
            self.interrupt.set()
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
                    await self._close(1000, "")
                    return
                await self._synthesize(job)
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
            faults = self.emu.faults
            key = (
                job.text,
                self.voice,
                json.dumps(self.voice_settings, sort_keys=True),
                self.fmt.encoding,
                str(self.fmt.sample_rate),
            )
            cached = not self.params.disable_cache and key in self.emu._cache
            request = SynthesisRequest(
                text=job.text,
                fmt=self.fmt,
                signal=self.signal,
                speed=self._speed(),
                language=self.params.language or language_of(self.voice),
                ssml=self.params.text_type == "ssml",
                marker=self.record.index,
            )
            rendition = await asyncio.get_running_loop().run_in_executor(None, render, request)
            record.audio_seconds = rendition.audio_seconds
            record.cached = cached
            record.mp3 = self.fmt.mp3
            record.sample_rate = self.fmt.sample_rate
            frames = self._plan(job, rendition, faults.chunk_ms)
            delay = 0.0 if cached else faults.first_audio_delay
            pace = None if cached else faults.pace
            if await self._stream(job, frames, start + delay, pace):
                self.emu._cache.add(key)
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

    def _plan(self, job: _SynthesisJob, rendition: Rendition, chunk_ms: int) -> list[_Planned]:
        if self.family.delivery is Delivery.CONCATENATED:
            audio = rendition.data or None
            frames = [_Planned(audio, job.text, False, rendition.audio_seconds)]
        else:
            chunks = split_chunks(rendition, chunk_ms, self.rng)
            frames = [_Planned(c.data, None, False, c.end_seconds) for c in chunks]
            # Where the text-bearing frame falls among the audio is not fixed on the wire.
            position = self.rng.randint(0, len(frames))
            at = frames[position - 1].at if position else 0.0
            frames.insert(position, _Planned(None, job.text, False, at))
        if job.final_after:
            frames.append(_Planned(None, "", True, frames[-1].at))
        return frames

    async def _stream(
        self, job: _SynthesisJob, frames: list[_Planned], base: float, pace: float | None
    ) -> bool:
        """Send the frames on time; False when a force or a fault cut the synthesis short."""
        sent_audio = 0
        for i, frame in enumerate(frames):
            if not job.forced:
                await self._sleep_until(base + (frame.at / pace if pace else 0.0))
            if job.forced:
                # Frames the server had produced before the force still reach the client.
                for late in frames[i : i + job.allowance]:
                    await self._send_planned(job, late)
                return False
            if i == 0 and await self._inject_fault(0):
                return False
            if frame.audio and not sent_audio:
                await self._inject_frames()
            await self._send_planned(job, frame)
            if frame.audio:
                sent_audio += 1
                if await self._inject_fault(sent_audio):
                    return False
        return True

    async def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.perf_counter()
        if remaining > 0:
            with suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.interrupt.wait()

    async def _inject_fault(self, audio_chunks_sent: int) -> bool:
        faults = self.emu.faults
        if faults.fault_count is not None and faults.fault_count <= 0:
            return False
        error = faults.error_after_chunks == audio_chunks_sent
        drop = faults.drop_after_chunks == audio_chunks_sent
        if not (error or drop):
            return False
        if faults.fault_count is not None:
            faults.fault_count -= 1
        if error:
            logger.info(f"emulator: socket #{self.record.index}: injected audio error")
            await self._fail("Error in audio response")
        else:
            logger.info(f"emulator: socket #{self.record.index}: injected connection drop")
            self.closing = True
            self.ws.transport.abort()
        return True

    async def _inject_frames(self) -> None:
        """Send the raw frames ``Faults.inject_frames`` holds, once, recorded like any other."""
        faults = self.emu.faults
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

    async def _send_planned(self, job: _SynthesisJob, frame: _Planned) -> None:
        record = job.record
        message: ServerMessage
        if frame.final:
            message = FinalMessage()
        else:
            ttfa = None
            if frame.audio and record.first_audio_at is None:
                record.first_audio_at = time.perf_counter()
                ttfa = round((record.first_audio_at - record.started_at) * 1000)
            message = AudioMessage(frame.audio, frame.text, record.cached, ttfa)
        await self._send(message)
        if frame.audio:
            record.chunks_sent += 1

    async def _send(self, message: ServerMessage, *, closing: bool = False) -> None:
        if self.closing and not closing:
            return
        raw = encode_server(message)
        self.record.sent.append(FrameRecord(time.perf_counter(), raw, message))
        await self.ws.send(raw)

    async def _fail(self, error: str) -> None:
        """An error frame, then a close: the server's answer to anything it cannot go on with."""
        self.closing = True
        await self._send(ErrorMessage(error), closing=True)
        await self.ws.close(1011, error)

    async def _close(self, code: int, reason: str) -> None:
        self.closing = True
        await self.ws.close(code, reason)


# --------------------------------------------------------------------------- helpers


def _tracking_connection(registry: set[ServerConnection]) -> type[ServerConnection]:
    """A connection class that registers itself from TCP accept to TCP close.

    The server's own bookkeeping only covers upgraded sockets; this also covers connections still
    in the handshake (an upgrade delay, a client that never sends its request), so that shutdown
    can abort them instead of hanging.
    """

    class TrackedConnection(ServerConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            registry.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            registry.discard(self)
            super().connection_lost(exc)

    return TrackedConnection


def _redacted(headers: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.raw_items():
        if name.lower() == "authorization":
            scheme, space, _ = value.strip().partition(" ")
            value = f"{scheme} {REDACTED}" if space else REDACTED
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _error_body(rejection: Rejection) -> dict[str, Any]:
    """Telnyx's REST error shape."""
    title = HTTPStatus(rejection.status).phrase
    return {"errors": [{"title": title, "detail": rejection.reason}]}


def _json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _close_info(ws: ServerConnection) -> tuple[int, str]:
    """The closing handshake's code and reason, as the side that started it gave them."""
    protocol = ws.protocol
    if protocol.close_rcvd_then_sent or protocol.close_sent is None:
        frame = protocol.close_rcvd
    else:
        frame = protocol.close_sent
    if frame is None:
        return 1006, ""
    return frame.code, frame.reason
