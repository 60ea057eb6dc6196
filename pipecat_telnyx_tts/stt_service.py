"""Telnyx speech-to-text for Pipecat, over the same key as the TTS.

The caller's audio goes out as ``linear16`` at the pipeline's input rate, in frames of about 40 ms;
results come back as pipecat's ``InterimTranscriptionFrame`` and ``TranscriptionFrame``. One task
owns the socket: it connects, reads, and reconnects as the shared connection policy
(``policy.py``, the same rules as the TTS) decides. The frames, the query and its checks are in
``stt_protocol``; the framing and the audio held during a reconnect in ``stt_buffer``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import NOT_GIVEN, NotGiven, STTSettings, is_given
from pipecat.services.stt_latency import (
    ASSEMBLYAI_TTFS_P99,
    AZURE_TTFS_P99,
    DEEPGRAM_TTFS_P99,
    GOOGLE_TTFS_P99,
)
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.protocol import State

from pipecat_telnyx_tts.failures import check_ws_url, classify_connect_error, error_category
from pipecat_telnyx_tts.policy import (
    ConnectionPolicy,
    Failure,
    Kind,
    Limits,
    Report,
    shared_limiter,
)
from pipecat_telnyx_tts.stt_buffer import Framer, HeldAudio
from pipecat_telnyx_tts.stt_protocol import (
    CLOSE_STREAM,
    DEFAULT_ENGINE,
    DEFAULT_STT_URL,
    FINALIZE,
    KEEP_ALIVE,
    Errors,
    SttParams,
    SttProtocolError,
    Transcript,
    check_params,
    control_frame,
    engine_named,
    parse_server,
)

FRAME_MS = 40
"""Audio per binary frame: inside the 40-100 ms the reference recommends, and 640 bytes at 8 kHz."""
HELD_AUDIO_SECONDS = 5.0
"""Caller audio kept while reconnecting; Telnyx advises 5-10 s, and older speech is stale."""
CLOSE_WAIT = 2.0
"""How long ``stop`` waits after ``CloseStream`` for the last finals and the server's close."""
TTFS_P99: dict[str, float] = {
    "Deepgram": DEEPGRAM_TTFS_P99,
    "Google": GOOGLE_TTFS_P99,
    "Azure": AZURE_TTFS_P99,
    "AssemblyAI": ASSEMBLYAI_TTFS_P99,
}
"""How long after the caller stops pipecat's user turn waits for a final, per engine: pipecat's
own measurements of the providers whose models Telnyx serves (the same models; Telnyx's network
path is not measured). Unset, pipecat waits 1 s on every turn for a final that, from Deepgram,
came about 0.1 s after the caller stopped (whole turn on the fake call: p50 1.6 s, of which
1.0 s that wait). Engines not listed keep pipecat's default."""
RECONNECT_CAP = 5.0
"""Longest backoff step: the caller is speaking, so the socket is always wanted (Telnyx's own
advice tops out at 5 s)."""
HANDSHAKES_PER_SECOND = 20.0


@dataclass
class TelnyxSTTSettings(STTSettings):
    """Runtime-updatable settings of :class:`TelnyxSTTService`; a change opens a new session.

    Parameters:
        engine: ``transcription_engine`` in Telnyx's exact case (``"Deepgram"``, ``"Telnyx"``,
            ``"Google"``, ``"Azure"``, ``"xAI"``, ``"AssemblyAI"``, ``"Speechmatics"``,
            ``"Soniox"``, ...). Lower case is refused here: Telnyx fails on it silently.
        interim_results: Partial transcripts (Deepgram, Speechmatics, Soniox only).
        endpointing: Milliseconds of silence that end an utterance, ``False`` to turn it off,
            ``None`` for the engine's default.
        keyterm: Terms to boost (Deepgram nova-3 and Flux).
        redact: ``"pci"``, ``"ssn"``, ``"numbers"`` (Deepgram only).
        eot_threshold, eager_eot_threshold, eot_timeout_ms: Flux end-of-turn options.
    """

    engine: str | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    interim_results: bool | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    endpointing: int | bool | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    keyterm: tuple[str, ...] | list[str] | None | NotGiven = field(
        default_factory=lambda: NOT_GIVEN
    )
    redact: tuple[str, ...] | list[str] | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    eot_threshold: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    eager_eot_threshold: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    eot_timeout_ms: int | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class TelnyxSTTService(STTService):
    """Telnyx speech-to-text over its WebSocket: one key for STT and TTS.

    Event handlers: ``on_connected``, ``on_disconnected``, ``on_connection_error`` (as pipecat's
    other STT services). An ``errors`` frame from Telnyx (bad parameters) becomes one ErrorFrame
    naming the parameter, and the service stays down until its settings change; network failures
    and server closes are retried with backoff, and the caller's audio in the meantime is held up
    to ``held_audio_seconds``, the oldest dropped with a warning.
    """

    Settings = TelnyxSTTSettings
    _settings: TelnyxSTTSettings

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str = DEFAULT_STT_URL,
        settings: TelnyxSTTSettings | None = None,
        sample_rate: int | None = None,
        frame_ms: int = FRAME_MS,
        held_audio_seconds: float = HELD_AUDIO_SECONDS,
        close_wait: float = CLOSE_WAIT,
        connect_timeout: float = 10.0,
        policy: ConnectionPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the service; bad settings raise ValueError saying what to fix.

        Args:
            api_key: Telnyx API v2 key (the TTS's); falls back to ``TELNYX_API_KEY``.
            url: The STT WebSocket URL (point it at the emulator's ``stt_url`` offline).
            settings: Engine, model, language and the options above.
            sample_rate: Input rate; the pipeline's ``audio_in_sample_rate`` when None.
            frame_ms: Audio per binary frame, 20-250 ms.
            held_audio_seconds: Audio kept while reconnecting.
            close_wait: Seconds ``stop`` waits for the last finals after ``CloseStream``.
            connect_timeout: Seconds one handshake may take.
            policy: The connection policy (tests pass their own); by default one per service,
                sharing the process-wide handshake limiter of the URL's host.
            **kwargs: Passed to :class:`STTService`.
        """
        key = api_key or os.environ.get("TELNYX_API_KEY")
        if not key:
            raise ValueError("no Telnyx API key: pass api_key=... or set TELNYX_API_KEY")
        check_ws_url(url)
        if not 20 <= frame_ms <= 250:
            raise ValueError(f"frame_ms must be 20-250 (Telnyx advises 40-100), got {frame_ms}")
        defaults = TelnyxSTTSettings(
            model=None,
            language=None,
            engine=DEFAULT_ENGINE,
            interim_results=False,
            endpointing=None,
            keyterm=None,
            redact=None,
            eot_threshold=None,
            eager_eot_threshold=None,
            eot_timeout_ms=None,
        )
        if settings is not None:
            defaults.apply_update(settings)
        fixes = check_params(_params(defaults, sample_rate or 16000))
        if fixes:
            raise ValueError("Telnyx STT settings: " + "; ".join(fixes))
        engine = defaults.engine if isinstance(defaults.engine, str) else DEFAULT_ENGINE
        if engine in TTFS_P99:
            kwargs.setdefault("ttfs_p99_latency", TTFS_P99[engine])
        super().__init__(sample_rate=sample_rate, settings=defaults, **kwargs)
        self._api_key = key
        self._url = url
        self._frame_ms = frame_ms
        self._held_audio_seconds = held_audio_seconds
        self._close_wait = close_wait
        self._connect_timeout = connect_timeout
        self._policy = policy or ConnectionPolicy(
            limits=Limits(spare_cap=RECONNECT_CAP),
            limiter=shared_limiter(
                url, rate=HANDSHAKES_PER_SECOND, burst=int(HANDSHAKES_PER_SECOND)
            ),
        )
        self._framer: Framer | None = None
        self._held: HeldAudio | None = None
        self._ws: ClientConnection | None = None
        """The socket audio goes to; None while connecting or held back."""
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        """Set while ``_ws`` takes audio."""
        self._finalize_sent = False
        self._proved = False
        """The current socket showed that connecting works (a result, or a long enough life)."""

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def params(self) -> SttParams:
        """The session parameters the next socket opens with."""
        return _params(self._settings, self.sample_rate or 16000)

    # ------------------------------------------------------------------ pipecat hooks

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        fixes = check_params(self.params)
        if fixes:
            await self.push_error(
                "Telnyx STT settings: " + "; ".join(fixes), force_treat_as_permanent=True
            )
            return
        rate = self.sample_rate
        self._framer = Framer(rate * 2 * self._frame_ms // 1000 // 2 * 2)
        self._held = HeldAudio(int(rate * 2 * self._held_audio_seconds))
        self._stopping = False
        self._task = self.create_task(self._run(), name="telnyx-stt-connection")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._close_stream()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._shut_down()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._shut_down()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self._framer is not None:
            for chunk in self._framer.add(audio):
                await self._send_audio(chunk)
        yield None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._finalize()

    async def _update_settings(self, delta: STTSettings) -> dict[str, Any]:  # type: ignore[override]
        previous = self._settings.copy()
        changed = await super()._update_settings(delta)
        if not changed:
            return changed
        fixes = check_params(self.params)
        if fixes:
            self._settings = previous
            await self.push_error("Telnyx STT settings update refused: " + "; ".join(fixes))
            return {}
        self._policy.settings_changed()
        if not self.is_usable:
            await self.set_usable(True)
        await self._reopen()
        return changed

    @traced_stt
    async def _handle_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Where the tracing decorator hooks in; the frames themselves are pushed by the reader."""

    # ------------------------------------------------------------------ sending

    async def _send_audio(self, chunk: bytes) -> None:
        ws = self._ws
        if ws is not None:
            try:
                await ws.send(chunk)
                return
            except ConnectionClosed:
                self._ws = None
                self._ready.clear()
        if self._held is not None:
            self._held.hold(chunk)

    async def _finalize(self) -> None:
        """End of the caller's speech: the rest of the audio, then ``Finalize`` where the engine
        takes one. Telnyx acknowledges nothing, so the next final counts as its answer."""
        ws = self._ws
        engine = engine_named(self.params.transcription_engine)
        if ws is None or engine is None or not engine.finalize or self._framer is None:
            return
        rest = self._framer.flush()
        try:
            if rest:
                await ws.send(rest)
            await ws.send(control_frame(FINALIZE))
        except ConnectionClosed:
            return
        self.request_finalize()
        self._finalize_sent = True

    async def _send_keepalive(self, silence: bytes) -> None:
        """pipecat's keepalive (``keepalive_timeout``): ``KeepAlive`` where the engine takes it,
        else silence, which every engine counts as activity."""
        ws = self._ws
        if ws is None:
            return
        engine = engine_named(self.params.transcription_engine)
        await ws.send(control_frame(KEEP_ALIVE) if engine and engine.keep_alive else silence)

    def _is_keepalive_ready(self) -> bool:
        return self._ws is not None

    # ------------------------------------------------------------------ the socket

    async def _run(self) -> None:
        """Connect, read, reconnect: the only code that opens or loses the socket."""
        while not self._stopping:
            attempt = self._policy.next_attempt(time.monotonic(), deadline=None)
            if attempt is None:
                # Refused for good: only a settings change (which restarts this task) helps.
                return
            if not await self._sleep_until(attempt.at):
                return
            if not attempt.reserved or attempt.void:
                continue  # the backoff ran, or a 429 voided the slot: ask the policy again
            ws = await self._connect()
            if ws is None:
                continue
            await self._serve(ws)

    async def _sleep_until(self, at: float) -> bool:
        """Wait until ``at`` (monotonic); False if the service stops meanwhile."""
        delay = at - time.monotonic()
        if delay > 0:
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
        return not self._stopping

    async def _connect(self) -> ClientConnection | None:
        url = f"{self._url}?{self.params.to_query()}"
        try:
            return await connect(
                url,
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                open_timeout=self._connect_timeout,
                close_timeout=self._close_wait,
                compression=None,
                max_size=2**20,
            )
        except (OSError, TimeoutError, WebSocketException) as e:
            failure = classify_connect_error(e, wall=time.time())
            if failure.status is not None:
                message = f"Telnyx STT refused the connection: {_refusal_text(failure.status)}"
            else:
                message = f"Telnyx STT connection failed: {e or type(e).__name__}"
            await self._connect_failed(failure, message)
        return None

    async def _connect_failed(self, failure: Failure, message: str) -> None:
        report = self._policy.connect_failed(time.monotonic(), failure)
        await self._call_event_handler("on_connection_error", message)
        if report is Report.ONCE:
            await self.push_error(
                message, category=error_category(failure), force_treat_as_permanent=True
            )
        elif failure.kind is not Kind.PERMANENT:
            logger.warning(f"{self}: {message}; retrying")
            await self._report_outage(message)

    async def _report_outage(self, message: str) -> None:
        """One ErrorFrame per outage, not one per attempt (the policy keeps count)."""
        if self._policy.outage_affects_turn() is Report.ONCE:
            await self.push_error(f"{message}; reconnecting", category=ErrorCategory.CONNECTIVITY)

    async def _serve(self, ws: ClientConnection) -> None:
        opened = time.monotonic()
        self._policy.handshake_ok()
        await self._call_event_handler("on_connected")
        logger.debug(f"{self}: connected ({self.params.transcription_engine})")
        reader = asyncio.ensure_future(self._read(ws, opened))
        try:
            await self._resume(ws)
            await reader
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader])
            if self._ws is ws:
                self._ws = None
                self._ready.clear()
            await ws.close()
        errors = reader.result() if not reader.cancelled() else None
        if errors is not None and errors.configuration:
            await self._connect_failed(Failure(Kind.PERMANENT), errors.describe())
            return
        if self._stopping:
            return
        age = time.monotonic() - opened
        self._policy.closed_by_server(time.monotonic(), age=age, proved=self._proved, idle_for=None)
        await self._call_event_handler("on_disconnected")
        reason = errors.describe() if errors else f"closed with {ws.close_code} {ws.close_reason!r}"
        logger.warning(f"{self}: Telnyx STT socket ended after {age:.1f} s: {reason}")
        await self._call_event_handler("on_connection_error", reason)
        if not self._proved:
            await self._report_outage(f"Telnyx STT socket ended: {reason}")

    async def _resume(self, ws: ClientConnection) -> None:
        """Send the audio held while connecting, then let new audio go straight to ``ws``."""
        held = self._held
        if held is None:
            self._ws = ws
            self._ready.set()
            return
        while True:
            frames, dropped = held.take()
            if dropped:
                seconds = dropped / 2 / self.sample_rate
                logger.warning(
                    f"{self}: dropped the oldest {seconds:.2f} s of caller audio while "
                    f"reconnecting (kept the latest {self._held_audio_seconds:g} s)"
                )
            if not frames:
                break
            for sent, chunk in enumerate(frames):
                try:
                    await ws.send(chunk)
                except ConnectionClosed:
                    # Lost while catching up: the next socket gets what this one did not.
                    held.put_back(frames[sent:])
                    return
        self._ws = ws
        self._ready.set()

    async def _read(self, ws: ClientConnection, opened: float) -> Errors | None:
        """Results until the server closes; the error frame, if one came."""
        self._proved = False
        errors: Errors | None = None
        try:
            async for raw in ws:
                try:
                    message = parse_server(raw)
                except SttProtocolError as e:
                    logger.warning(f"{self}: ignoring a frame Telnyx STT sent: {e}")
                    continue
                if isinstance(message, Errors):
                    errors = message
                    continue
                if not self._proved:
                    self._prove()
                if isinstance(message, Transcript):
                    await self._on_transcript(message)
        except ConnectionClosed:
            pass
        if not self._proved and time.monotonic() - opened >= self._policy.limits.quick_close:
            self._prove()
        return errors

    def _prove(self) -> None:
        self._proved = True
        if self._policy.proved(time.monotonic()):
            logger.info(f"{self}: Telnyx STT recovered")

    async def _on_transcript(self, message: Transcript) -> None:
        language = self._settings.language
        lang = Language(language) if isinstance(language, str) and _is_language(language) else None
        if message.is_final:
            if self._finalize_sent:
                self._finalize_sent = False
                self.confirm_finalize()
            if not message.text:
                return
            await self.emit_stt_usage_metrics()
            await self.push_frame(
                TranscriptionFrame(
                    message.text, self._user_id, time_now_iso8601(), lang, result=message
                )
            )
            await self._handle_transcription(message.text, True, lang)
        elif message.text:
            await self.push_frame(
                InterimTranscriptionFrame(
                    message.text, self._user_id, time_now_iso8601(), lang, result=message
                )
            )

    # ------------------------------------------------------------------ ending

    async def _close_stream(self) -> None:
        """Graceful end: the rest of the audio, ``CloseStream``, the last finals within
        ``close_wait``, then close whatever is still open. A socket still connecting gets the
        same ``close_wait`` to open, so that audio held for it is not lost."""
        if self._ws is None and self._task is not None and not self._task.done():
            try:
                async with asyncio.timeout(self._close_wait):
                    await self._ready.wait()
            except TimeoutError:
                logger.warning(f"{self}: no Telnyx STT socket by the end; held audio is lost")
        ws = self._ws
        if ws is not None and self._framer is not None:
            try:
                rest = self._framer.flush()
                if rest:
                    await ws.send(rest)
                await ws.send(control_frame(CLOSE_STREAM))
            except ConnectionClosed:
                pass
            else:
                self._stopping = True
                self._ws = None
                try:
                    async with asyncio.timeout(self._close_wait):
                        await ws.wait_closed()
                except TimeoutError:
                    logger.debug(f"{self}: no close {self._close_wait} s after CloseStream")
        await self._shut_down()

    async def _shut_down(self) -> None:
        self._stopping = True
        self._wake.set()
        ws, self._ws = self._ws, None
        self._ready.clear()
        task, self._task = self._task, None
        if task is not None:
            await self.cancel_task(task)
        if ws is not None and ws.state is not State.CLOSED:
            await ws.close()
        if self._held is not None:
            self._held.clear()

    async def _reopen(self) -> None:
        """New settings: the old session ends as at a stop (its last finals are not lost),
        then a new one opens with the new query."""
        if self._framer is None:
            return
        await self._close_stream()
        self._stopping = False
        self._task = self.create_task(self._run(), name="telnyx-stt-connection")


def _params(settings: TelnyxSTTSettings, sample_rate: int) -> SttParams:
    def given(value: Any) -> Any:
        return value if is_given(value) else None

    endpointing = given(settings.endpointing)
    return SttParams(
        transcription_engine=given(settings.engine) or DEFAULT_ENGINE,
        model=given(settings.model),
        input_format="linear16",
        sample_rate=sample_rate,
        language=given(settings.language),
        interim_results=bool(given(settings.interim_results)),
        endpointing=endpointing,
        keyterm=tuple(given(settings.keyterm) or ()),
        redact=tuple(given(settings.redact) or ()),
        eot_threshold=given(settings.eot_threshold),
        eager_eot_threshold=given(settings.eager_eot_threshold),
        eot_timeout_ms=given(settings.eot_timeout_ms),
    )


def _is_language(value: str) -> bool:
    try:
        Language(value)
    except ValueError:
        return False
    return True


def _refusal_text(status: int) -> str:
    match status:
        case 401 | 403:
            return f"{status}: check the Telnyx API key"
        case 404:
            return f"{status}: check the STT URL"
        case 429:
            return f"{status}: too many connections; backing off"
        case _:
            return str(status)
