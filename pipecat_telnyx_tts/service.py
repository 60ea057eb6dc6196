"""``TelnyxTTSService``: Telnyx's streaming TTS WebSocket as a Pipecat TTS service.

Design in one paragraph: every turn gets a socket of its own, taken from a spare that was connected
and initialized ahead of time, so no turn waits for a handshake and every audio byte read from a
socket belongs to exactly one turn (the wire has no context id). Barge-in sends ``force`` on the
interrupted turn's socket and abandons it: nothing it sends afterwards can reach the pipeline. What
to send and when a turn is over is decided by :class:`~pipecat_telnyx_tts.turn.Turn`; this module is
the asyncio and pipecat glue around it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.types import NOT_GIVEN, NotGiven
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.protocol import (
    DEFAULT_URL,
    ClientMessage,
    ErrorMessage,
    ProtocolError,
    ServerMessage,
    encode_client,
    parse_server,
)
from pipecat_telnyx_tts.request import (
    DECODABLE_FORMATS,
    Request,
    build_request,
    check_voice,
    choose_format,
)
from pipecat_telnyx_tts.turn import Audio, Event, Failed, Finished, FirstAudioLatency, Phase, Turn

# websockets logs request headers (the API key among them) at DEBUG; this logger never does.
_WS_LOGGER = logging.getLogger("pipecat_telnyx_tts.websockets")
_WS_LOGGER.setLevel(logging.INFO)


@dataclass
class TelnyxTTSSettings(TTSSettings):
    """Runtime-updatable settings of :class:`TelnyxTTSService`.

    Parameters:
        speed: Speaking rate, mapped onto the provider's own key (``voice_speed`` for Telnyx and
            Rime, ``speed`` for Minimax). ``None`` leaves the provider's default.
        voice_settings: Provider-specific init keys, sent verbatim; they win over ``speed``.
    """

    speed: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    voice_settings: dict[str, Any] | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)


@dataclass(eq=False)
class _Lane:
    """One socket and, once a turn takes it, that turn."""

    request: Request
    created_at: float = field(default_factory=time.monotonic)
    ws: ClientConnection | None = None
    ready: bool = False
    """Connected and initialized; until then messages wait in ``pending``."""
    pending: list[ClientMessage] = field(default_factory=list)
    context_id: str | None = None
    turn: Turn | None = None
    decoder: AudioDecoder | None = None
    task: asyncio.Task | None = None
    last_heard: float = field(default_factory=time.monotonic)
    closed: bool = False


class TelnyxTTSService(TTSService):
    """Telnyx text-to-speech over its streaming WebSocket.

    Text is sent as it arrives and flushed at sentence ends, so audio starts after the first
    sentence whichever way the server behaves; a socket per turn, prepared ahead, keeps handshakes
    off the critical path and makes barge-in exact. See the README for the settings table.
    """

    Settings = TelnyxTTSSettings
    _settings: TelnyxTTSSettings

    SPARE_MAX_AGE_S: ClassVar[float] = 12.0
    """A spare is replaced after this long: Telnyx closes sockets idle for 20 s."""
    RESPONSE_TIMEOUT_S: ClassVar[float] = 10.0
    """Silence from the server, while it owes audio, after which the turn fails."""
    FINAL_GRACE_S: ClassVar[float] = 3.0
    """After end of sequence and a final frame, how long to wait for a close that never comes."""
    CONNECT_TIMEOUT_S: ClassVar[float] = 10.0
    SEND_TIMEOUT_S: ClassVar[float] = 5.0
    CLOSE_TIMEOUT_S: ClassVar[float] = 2.0
    RETRY_DELAYS_S: ClassVar[tuple[float, ...]] = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str = DEFAULT_URL,
        sample_rate: int | None = None,
        audio_format: str | None = None,
        settings: TelnyxTTSSettings | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the service.

        Args:
            api_key: Telnyx API v2 key; falls back to the ``TELNYX_API_KEY`` environment variable.
            url: The TTS WebSocket URL (point it at the emulator for offline work).
            sample_rate: Output rate of the audio frames; None means the pipeline's output rate.
            audio_format: ``linear16``, ``mp3`` or ``wav``; None asks for linear16 at the output
                rate where the voice honours it, MP3 otherwise.
            settings: Voice, speed, voice_settings and language (see :class:`TelnyxTTSSettings`).
            **kwargs: Passed on to pipecat's ``TTSService`` (``text_aggregation_mode``, ...).
        """
        key = api_key or os.environ.get("TELNYX_API_KEY")
        if not key:
            raise ValueError(
                "no Telnyx API key: pass api_key=... or set TELNYX_API_KEY "
                "(a Telnyx API v2 key from the Telnyx portal, 'KEY...')"
            )
        if audio_format is not None and audio_format not in DECODABLE_FORMATS:
            raise ValueError(
                f"audio_format {audio_format!r} cannot be decoded by this service; "
                f"use one of {', '.join(DECODABLE_FORMATS)} or None"
            )
        defaults = TelnyxTTSSettings(
            model=None,
            voice="Telnyx.NaturalHD.astra",
            language=None,
            speed=None,
            voice_settings=None,
        )
        if settings is not None:
            defaults.apply_update(settings)
        assert isinstance(defaults.voice, str)
        # Fail at construction, with what to fix, rather than at the first turn.
        choose_format(check_voice(defaults.voice).family, 24000, audio_format)
        kwargs.setdefault("push_start_frame", True)
        kwargs.setdefault("push_text_frames", True)
        kwargs.setdefault("push_stop_frames", False)
        # Every turn is ended by the server's signal or by this service's own watchdogs, so
        # pipecat's idle timeout (3 s by default) must not end one first: slow first audio is
        # not silence.
        kwargs.setdefault("stop_frame_timeout_s", self.RESPONSE_TIMEOUT_S + 2.0)
        super().__init__(sample_rate=sample_rate, settings=defaults, **kwargs)
        self._api_key = key
        self._url = url
        self._audio_format = audio_format
        self._lanes: dict[str, _Lane] = {}
        self._spares: list[_Lane] = []
        self._maintenance_task: asyncio.Task | None = None
        self._connect_failures = 0
        self._retry_at = 0.0
        self._closing: set[asyncio.Task] = set()
        self._failed_turns: dict[str, list[str]] = {}
        """Turns ended by an error while their text still flowed, with the text left unspoken."""

    def can_generate_metrics(self) -> bool:
        """TTFB and usage metrics are produced (through the base class)."""
        return True

    @property
    def supports_processing_metrics(self) -> bool:
        """Audio arrives on a receive task, so ``run_tts`` timing would measure only a send."""
        return False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame) -> None:
        """Connect a spare right away, so the first turn does not wait for a handshake."""
        await super().start(frame)
        self._ensure_spare()
        self._maintenance_task = self.create_task(self._maintain_spares(), name="telnyx-spares")

    async def stop(self, frame: EndFrame) -> None:
        """Let the last turn finish playing, then close every socket."""
        await super().stop(frame)
        await self._shutdown()

    async def cancel(self, frame: CancelFrame) -> None:
        """Close every socket at once."""
        await super().cancel(frame)
        await self._shutdown()

    async def cleanup(self) -> None:
        """Close every socket when the pipeline is torn down without a stop or cancel."""
        await super().cleanup()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._maintenance_task:
            await self.cancel_task(self._maintenance_task)
            self._maintenance_task = None
        for lane in [*self._spares, *self._lanes.values()]:
            await self._close_lane(lane)
        self._spares.clear()
        self._lanes.clear()
        # Sockets already closing in the background are bounded by the close timeout.
        if self._closing:
            _, late = await asyncio.wait(self._closing, timeout=self.CLOSE_TIMEOUT_S + 1.0)
            for task in late:
                await self.cancel_task(task)

    # ------------------------------------------------------------------ settings

    def _current_request(self) -> Request:
        s = self._settings
        assert isinstance(s.voice, str)
        return build_request(
            voice=s.voice,
            out_rate=self.sample_rate,
            audio_format=self._audio_format,
            speed=s.speed if isinstance(s.speed, int | float) else None,
            voice_settings=s.voice_settings if isinstance(s.voice_settings, dict) else None,
            language=str(s.language) if s.language else None,
        )

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:  # type: ignore[override]
        """Apply from the next turn: the spare is rebuilt, the turn in progress keeps its socket."""
        previous_voice = self._settings.voice
        if isinstance(delta.voice, str):
            try:
                check_voice(delta.voice)
            except ValueError as e:
                await self.push_error(f"voice update refused: {e}", exception=e)
                delta.voice = NOT_GIVEN
        changed = await super()._update_settings(delta)
        if changed:
            self._retry_at = 0.0
            self._connect_failures = 0
            try:
                self._ensure_spare()
            except ValueError as e:
                self._settings.voice = previous_voice
                await self.push_error(f"settings update refused: {e}", exception=e)
        return changed

    # ------------------------------------------------------------------ turns

    async def on_turn_context_created(self, context_id: str) -> None:
        """Bind a prepared socket to the turn before its first text arrives."""
        await super().on_turn_context_created(context_id)
        if self.is_usable:
            self._lane_for(context_id)

    async def on_turn_context_completed(self) -> None:
        """A turn that never spoke hands its untouched socket back as a spare."""
        context_id = self._turn_context_id
        await super().on_turn_context_completed()
        if context_id is None:
            return
        self._failed_turns.pop(context_id, None)
        lane = self._lanes.get(context_id)
        unused = lane is not None and lane.turn is not None and not lane.turn.sent_text
        if lane is not None and unused and not self.audio_context_available(context_id):
            del self._lanes[context_id]
            lane.context_id = lane.turn = lane.decoder = None
            self._spares.append(lane)
            self._ensure_spare()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send the text on the turn's socket; the audio arrives on that socket's receive task."""
        if context_id in self._failed_turns:
            # Named once, when the turn ends, rather than once per token.
            self._failed_turns[context_id].append(text)
            yield None
            return
        lane = self._lane_for(context_id)
        if lane.turn is None or lane.turn.phase is not Phase.SPEAKING:
            logger.warning(f"{self}: turn {context_id} has already ended; not speaking [{text}]")
            yield None
            return
        await self.start_tts_usage_metrics(text)
        await self._send(lane, lane.turn.text(text))
        # The replacement spare's handshake is started only now, so it never competes with the
        # turn's first send.
        self._ensure_spare()
        yield None

    async def flush_audio(self, context_id: str | None = None) -> None:
        """End of the LLM turn: flush what is held and tell the server no more text is coming."""
        if context_id is None:
            return
        lane = self._lanes.get(context_id)
        if lane and lane.turn:
            await self._send(lane, lane.turn.end())
            return
        # No socket will end this turn (it failed, or the service could not connect), so its
        # audio context is ended here rather than left to pipecat's idle timeout.
        unspoken = "".join(self._failed_turns.get(context_id, [])).strip()
        if unspoken:
            logger.warning(f"{self}: not spoken after the turn's error: [{unspoken}]")
        await self._end_context(context_id)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        """Barge-in: ``force`` on the turn's socket at once, then abandon the socket."""
        await super().on_audio_context_interrupted(context_id)
        await self._abandon(context_id)

    async def _handle_interruption(
        self, frame: InterruptionFrame, direction: FrameDirection
    ) -> None:
        await super()._handle_interruption(frame, direction)
        # A turn whose text never reached run_tts has a socket but no audio context, so the base
        # class has no hook for it; it is abandoned here.
        live = set(self.get_audio_contexts())
        for context_id in [c for c in self._lanes if c not in live]:
            await self._abandon(context_id)

    async def _abandon(self, context_id: str) -> None:
        self._failed_turns.pop(context_id, None)
        lane = self._lanes.pop(context_id, None)
        if lane is None or lane.turn is None:
            return
        messages = lane.turn.interrupt()
        if messages and lane.ready:
            await self._send(lane, messages)
        lane.pending.clear()
        self._close_later(lane)

    def _lane_for(self, context_id: str) -> _Lane:
        lane = self._lanes.get(context_id)
        if lane is not None:
            return lane
        lane = self._take_spare() or self._open_lane(self._current_request())
        lane.context_id = context_id
        lane.turn = Turn(token_mode=self._is_streaming_tokens)
        lane.decoder = AudioDecoder(pcm_rate=lane.request.pcm_rate, out_rate=self.sample_rate)
        self._lanes[context_id] = lane
        return lane

    # ------------------------------------------------------------------ spares

    def _take_spare(self) -> _Lane | None:
        """The newest ready spare built from the current settings, else a connecting one."""
        key = self._current_request().key
        usable = [s for s in self._spares if not s.closed and s.request.key == key]
        if not usable:
            return None
        lane = next((s for s in reversed(usable) if s.ready), usable[-1])
        self._spares.remove(lane)
        return lane

    def _ensure_spare(self) -> None:
        """Keep one fresh spare built from the current settings (connecting or ready)."""
        if not self.is_usable or time.monotonic() < self._retry_at:
            return
        request = self._current_request()
        now = time.monotonic()
        fresh = [
            s
            for s in self._spares
            if not s.closed
            and s.request.key == request.key
            and now - s.created_at < self.SPARE_MAX_AGE_S
        ]
        if not fresh:
            self._spares.append(self._open_lane(request))
        for spare in [s for s in self._spares if s.request.key != request.key or s.closed]:
            self._spares.remove(spare)
            self._close_later(spare)

    async def _maintain_spares(self) -> None:
        """Replace spares before the server's inactivity timeout closes them."""
        while True:
            await asyncio.sleep(1.0)
            self._ensure_spare()

    def _retire_older_spares(self, ready: _Lane) -> None:
        """A newer ready spare makes older ones redundant."""
        for spare in [
            s for s in self._spares if s is not ready and s.created_at < ready.created_at
        ]:
            self._spares.remove(spare)
            self._close_later(spare)

    # ------------------------------------------------------------------ sockets

    def _open_lane(self, request: Request) -> _Lane:
        lane = _Lane(request)
        lane.task = self.create_task(self._run_lane(lane), name="telnyx-lane")
        return lane

    async def _send(self, lane: _Lane, messages: list[ClientMessage]) -> None:
        if not lane.ready:
            lane.pending.extend(messages)
            return
        assert lane.ws is not None
        for message in messages:
            try:
                async with asyncio.timeout(self.SEND_TIMEOUT_S):
                    await lane.ws.send(encode_client(message))
            except (ConnectionClosed, TimeoutError, OSError) as e:
                # The receive task sees the same failure and ends the turn with an error.
                unsent = " ".join(getattr(m, "text", "") for m in messages).strip()
                if unsent:
                    logger.warning(f"{self}: send to Telnyx failed ({e}); not spoken: [{unsent}]")
                else:
                    logger.debug(f"{self}: send to Telnyx failed ({e}); no text was lost")
                return

    async def _run_lane(self, lane: _Lane) -> None:
        try:
            lane.ws = await self._connect(lane.request)
            await lane.ws.send(encode_client(lane.request.init))
            while lane.pending:
                # Popped only once sent, so a failure still names the text it lost.
                await lane.ws.send(encode_client(lane.pending[0]))
                lane.pending.pop(0)
        except Exception as e:  # every failure to connect must end the turn
            await self._connect_failed(lane, e)
            return
        lane.ready = True
        self._connect_failures = 0
        lane.last_heard = time.monotonic()
        if lane in self._spares:
            self._retire_older_spares(lane)
        await self._receive(lane)

    async def _connect(self, request: Request) -> ClientConnection:
        return await connect(
            f"{self._url}?{request.params.to_query()}",
            additional_headers={"Authorization": f"Bearer {self._api_key}"},
            open_timeout=self.CONNECT_TIMEOUT_S,
            close_timeout=self.CLOSE_TIMEOUT_S,
            max_size=None,
            compression=None,
            logger=_WS_LOGGER,
        )

    async def _receive(self, lane: _Lane) -> None:
        assert lane.ws is not None
        while not lane.closed:
            try:
                # A timeout scope, not wait_for: on 3.11 wait_for makes a task per audio frame.
                async with asyncio.timeout(self._poll_interval(lane)):
                    raw = await lane.ws.recv()
            except TimeoutError:
                await self._on_quiet(lane)
                continue
            except ConnectionClosed as e:
                await self._on_closed(lane, e)
                return
            lane.last_heard = time.monotonic()
            try:
                message = parse_server(raw)
            except ProtocolError as e:
                logger.warning(f"{self}: ignoring a malformed frame from Telnyx: {e}")
                continue
            if lane.turn is None:
                await self._spare_message(lane, message)
                continue
            await self._handle_events(lane, lane.turn.on_message(message))

    def _poll_interval(self, lane: _Lane) -> float:
        if lane.turn is not None and lane.turn.final_after_end:
            return self.FINAL_GRACE_S
        return 1.0

    async def _on_quiet(self, lane: _Lane) -> None:
        turn = lane.turn
        if turn is None:
            return
        quiet = time.monotonic() - lane.last_heard
        if turn.final_after_end and quiet >= self.FINAL_GRACE_S:
            logger.debug(f"{self}: Telnyx kept the socket open after the final frame")
            await self._handle_events(lane, turn.on_grace_expired())
        elif turn.awaiting_server and quiet >= self.RESPONSE_TIMEOUT_S:
            await self._handle_events(lane, turn.on_timeout(quiet))

    async def _on_closed(self, lane: _Lane, e: ConnectionClosed) -> None:
        clean = e.rcvd is not None and e.rcvd.code == 1000
        detail = f"close code {e.rcvd.code}" if e.rcvd else "connection lost without a close frame"
        if e.rcvd and e.rcvd.reason:
            detail += f": {e.rcvd.reason}"
        if lane.turn is not None:
            await self._handle_events(lane, lane.turn.on_closed(clean=clean, detail=detail))
        else:
            logger.debug(f"{self}: spare Telnyx socket closed ({detail})")
            await self._drop_spare(lane, quick=time.monotonic() - lane.created_at < 5.0)

    async def _spare_message(self, lane: _Lane, message: ServerMessage) -> None:
        """A spare is not owed anything; an error here is about the settings it was built with."""
        if isinstance(message, ErrorMessage):
            await self.push_error(f"Telnyx refused the voice settings: {message.error}")
        await self._drop_spare(lane, quick=True)

    async def _drop_spare(self, lane: _Lane, *, quick: bool) -> None:
        if lane in self._spares:
            self._spares.remove(lane)
        await self._close_lane(lane)
        if quick:
            self._backoff()
        self._ensure_spare()

    def _backoff(self) -> None:
        delay = self.RETRY_DELAYS_S[min(self._connect_failures, len(self.RETRY_DELAYS_S) - 1)]
        self._connect_failures += 1
        self._retry_at = time.monotonic() + delay

    async def _connect_failed(self, lane: _Lane, e: Exception) -> None:
        lane.closed = True
        message = self._describe_connect_error(lane.request, e)
        permanent = isinstance(e, InvalidStatus) and e.response.status_code in (400, 401, 403)
        if lane in self._spares:
            self._spares.remove(lane)
        if lane.turn is not None and lane.context_id is not None:
            self._lanes.pop(lane.context_id, None)
            if lane.pending:
                unsent = " ".join(getattr(m, "text", "") for m in lane.pending).strip()
                logger.error(f"{self}: not spoken because Telnyx could not be reached: [{unsent}]")
            lane.turn.interrupt()
            self._failed_turns[lane.context_id] = []
            if lane.turn.end_sent:
                await self._end_context(lane.context_id)
        if not permanent:
            self._backoff()
        await self.push_error(message, exception=e)
        if not permanent:
            self._ensure_spare()

    def _describe_connect_error(self, request: Request, e: Exception) -> str:
        voice = request.params.voice
        if isinstance(e, InvalidStatus):
            status = e.response.status_code
            body = e.response.body.decode("utf-8", "replace")[:300] if e.response.body else ""
            hint = {
                401: "the API key was refused: check api_key / TELNYX_API_KEY "
                "(a Telnyx API v2 key)",
                403: f"voice {voice!r} is not allowed for this account on the WebSocket "
                "(Ultra voices never are; cloned voices need verification): choose another voice",
                400: f"the request was rejected: check the voice id {voice!r} "
                f"(Provider.Model.VoiceId) and sample_rate {request.params.sample_rate} / "
                f"audio_format {request.params.audio_format} for that provider",
            }.get(status, "unexpected HTTP status at the WebSocket upgrade")
            return f"Telnyx TTS connection failed with HTTP {status}: {hint}. {body}".strip()
        return f"Telnyx TTS connection to {self._url} failed: {type(e).__name__}: {e}"

    async def _handle_events(self, lane: _Lane, events: list[Event]) -> None:
        for event in events:
            # An abandoned socket is no longer the turn's: nothing it sends may be delivered.
            if lane.closed or self._lanes.get(lane.context_id or "") is not lane:
                return
            match event:
                case Audio(data=data):
                    await self._deliver(lane, data)
                case FirstAudioLatency(milliseconds=ms, cached=cached):
                    logger.debug(f"{self}: Telnyx timeToFirstAudioFrameMs={ms} cached={cached}")
                case Finished():
                    await self._finish(lane, end_context=True)
                case Failed(reason=reason):
                    assert lane.turn is not None and lane.context_id is not None
                    self._failed_turns[lane.context_id] = []
                    # While the LLM may still send text, the context stays open so that text
                    # cannot open a second one; flush_audio ends it with the turn.
                    await self._finish(lane, end_context=lane.turn.end_sent)
                    await self.push_error(reason)

    async def _deliver(self, lane: _Lane, data: bytes) -> None:
        assert lane.decoder is not None and lane.context_id is not None
        try:
            pcm = lane.decoder.feed(data)
        except ValueError as e:
            logger.warning(f"{self}: undecodable audio from Telnyx dropped: {e}")
            return
        if pcm:
            frame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=lane.context_id)
            await self.append_to_audio_context(lane.context_id, frame)

    async def _finish(self, lane: _Lane, *, end_context: bool) -> None:
        """The socket is done: deliver the decoded tail, drop the socket, maybe end the context."""
        if lane.decoder is not None and lane.context_id in self._lanes:
            try:
                tail = lane.decoder.flush()
            except ValueError as e:
                logger.warning(f"{self}: undecodable audio tail from Telnyx dropped: {e}")
                tail = b""
            if tail:
                frame = TTSAudioRawFrame(tail, self.sample_rate, 1, context_id=lane.context_id)
                await self.append_to_audio_context(lane.context_id, frame)
        if lane.context_id is not None:
            self._lanes.pop(lane.context_id, None)
            if end_context:
                await self._end_context(lane.context_id)
        self._close_later(lane)

    async def _end_context(self, context_id: str) -> None:
        if self.audio_context_available(context_id):
            await self.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
            await self.remove_audio_context(context_id)

    def _close_later(self, lane: _Lane) -> None:
        lane.closed = True
        task = self.create_task(self._close_lane(lane), name="telnyx-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_lane(self, lane: _Lane) -> None:
        lane.closed = True
        ws = lane.ws
        if ws is not None:
            try:
                await ws.close()
            except Exception as e:  # closing must never fail a turn
                logger.debug(f"{self}: closing a Telnyx socket: {e}")
        task = lane.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await self.cancel_task(task)

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        """Never let the API key into an error message."""
        if self._api_key in error.error:
            error.error = error.error.replace(self._api_key, "***")
        await super().push_error_frame(error, force_treat_as_permanent)
