"""``TelnyxTTSService``: Telnyx's streaming TTS WebSocket as a Pipecat TTS service.

Design in one paragraph: every turn gets a socket of its own, taken from a spare that was connected
and initialized ahead of time, so no turn waits for a handshake and every audio byte read from a
socket belongs to exactly one turn (the wire has no context id). Barge-in sends ``force`` on the
interrupted turn's socket and abandons it: nothing it sends afterwards can reach the pipeline.
Where the pieces live: what to send and when a turn is over, :mod:`~pipecat_telnyx_tts.turn`; the
life of one socket, :mod:`~pipecat_telnyx_tts.socket_state` and :mod:`~pipecat_telnyx_tts.lane`;
the spare, :mod:`~pipecat_telnyx_tts.spares`. This module is the pipecat glue around them.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, is_given
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipecat_telnyx_tts.audio import AudioDecodeError, AudioDecoder
from pipecat_telnyx_tts.clauses import FirstClauseAggregator
from pipecat_telnyx_tts.common import DEFAULT_VOICE
from pipecat_telnyx_tts.lane import Lane, SendFailed, unsent_text
from pipecat_telnyx_tts.protocol import (
    DEFAULT_URL,
    ClientMessage,
    ErrorMessage,
    ProtocolError,
    ServerMessage,
    TextMessage,
)
from pipecat_telnyx_tts.request import (
    DECODABLE_FORMATS,
    Request,
    build_request,
    check_text_options,
    check_voice,
    choose_format,
    ignored_speed,
    reads_ssml,
)
from pipecat_telnyx_tts.socket_state import PERMANENT_UPGRADE_STATUSES, Backoff
from pipecat_telnyx_tts.spares import SparePool, SpareTiming
from pipecat_telnyx_tts.ssml import phoneme
from pipecat_telnyx_tts.turn import (
    Announced,
    Audio,
    Event,
    Failed,
    Finished,
    FirstAudioLatency,
    Phase,
    SynthesisFinal,
    Turn,
)
from pipecat_telnyx_tts.voice_list import VoiceList, VoiceListUnavailable, fetch_voice_list
from pipecat_telnyx_tts.word_timing import TimedWord, WordClock

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
        text_type: ``"text"`` or ``"ssml"``; ``None`` leaves Telnyx's default (text). SSML is
            read by AWS Polly and Azure voices only, so ``"ssml"`` with any other voice is
            refused. With it, the text sent must be valid SSML content, and
            ``pronunciation_transform_ipa`` works.
        pronunciation_dict_id: UUID of a Telnyx pronunciation dictionary. Telnyx applies it
            before any provider sees the text, so every provider takes it.
        disable_cache: True asks Telnyx to synthesize afresh rather than serve identical text
            from its audio cache; the cache sits in front of every provider, so all take it.
    """

    speed: float | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    voice_settings: dict[str, Any] | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    text_type: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pronunciation_dict_id: str | None | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    disable_cache: bool | NotGiven = field(default_factory=lambda: NOT_GIVEN)


_QUERY_FIELDS = ("voice", "text_type", "pronunciation_dict_id", "disable_cache")
"""Settings checked together: whether one is accepted can depend on another (SSML on the voice)."""


class TelnyxTTSService(TTSService):
    """Telnyx text-to-speech over its streaming WebSocket.

    Text is sent as it arrives and flushed at sentence ends, so audio starts after the first
    sentence whichever way the server behaves; a socket per turn, prepared ahead, keeps handshakes
    off the critical path and makes barge-in exact. See the README for the settings table.
    """

    Settings = TelnyxTTSSettings
    _settings: TelnyxTTSSettings

    SPARE_TIMING: ClassVar[SpareTiming] = SpareTiming()
    RESPONSE_TIMEOUT_S: ClassVar[float] = 10.0
    """Silence from the server, while it owes audio, after which the turn fails."""
    FINAL_GRACE_S: ClassVar[float] = 3.0
    """After end of sequence and a final frame, how long to wait for a close that never comes."""
    CONNECT_TIMEOUT_S: ClassVar[float] = 5.0
    """One handshake attempt; an upgrade that is never answered is abandoned after this."""
    TURN_CONNECT_BUDGET_S: ClassVar[float] = 9.0
    """How long a turn keeps retrying to connect through an outage before it is given up.
    Below pipecat's idle timeout for the context (``RESPONSE_TIMEOUT_S`` + 2 s)."""
    SEND_TIMEOUT_S: ClassVar[float] = 5.0
    CLOSE_TIMEOUT_S: ClassVar[float] = 2.0
    QUICK_CLOSE_S: ClassVar[float] = 5.0
    """A spare the server closes sooner than this after it opened counts as a failure."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        url: str = DEFAULT_URL,
        sample_rate: int | None = None,
        audio_format: str | None = None,
        settings: TelnyxTTSSettings | None = None,
        flush_first_clause: bool = False,
        word_timestamps: bool = True,
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
            flush_first_clause: Flush each reply's first clause (at a comma, semicolon, colon or
                dash after four words or more) instead of its whole first sentence, so the first
                audio starts sooner; later text is flushed at sentence ends as before. Works in
                both aggregation modes. Off by default: the first sentence is then synthesized
                in two parts, which some voices phrase audibly (see ``benchmarks/first_clause.py``).
            word_timestamps: Push each word as a ``TTSTextFrame`` when it is heard, timed from
                the audio (Telnyx reports no word times), so that after a barge-in the assistant
                context holds what the caller heard. False pushes each sentence's text ahead of
                its audio instead, pipecat's behaviour for services without word times, which
                records sentences that never played.
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
            voice=DEFAULT_VOICE,
            language=None,
            speed=None,
            voice_settings=None,
            text_type=None,
            pronunciation_dict_id=None,
            disable_cache=False,
        )
        if settings is not None:
            defaults.apply_update(settings)
        assert isinstance(defaults.voice, str)
        # Fail at construction, with what to fix, rather than at the first turn.
        choose_format(check_voice(defaults.voice).family, 24000, audio_format)
        _check_text_options(defaults)
        kwargs.setdefault("push_start_frame", True)
        kwargs.setdefault("push_text_frames", not word_timestamps)
        kwargs.setdefault("push_stop_frames", False)
        # Every turn is ended by the server's signal or by this service's own watchdogs, so
        # pipecat's idle timeout (3 s by default) must not end one first: slow first audio is
        # not silence.
        kwargs.setdefault("stop_frame_timeout_s", self.RESPONSE_TIMEOUT_S + 2.0)
        super().__init__(sample_rate=sample_rate, settings=defaults, **kwargs)
        self._first_clause = flush_first_clause
        if flush_first_clause and not self._is_streaming_tokens:
            # pipecat 1.14's TTSService takes no text aggregator (its **kwargs would drop one
            # silently), so its sentence aggregator is replaced here, as its own Cartesia and
            # Rime services replace theirs. Token mode needs none: the Turn finds the clause.
            self._text_aggregator = FirstClauseAggregator(language=self._text_aggregator.language)
        self._api_key = key
        self._key_pattern = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
        self._url = url
        self._audio_format = audio_format
        self._lanes: dict[str, Lane] = {}
        """Turn sockets by context id."""
        self._word_timestamps = word_timestamps
        self._requested_at: dict[str, float] = {}
        """When each turn's first text went to synthesis, for its TTFB (see start_ttfb_metrics)."""
        self._pool = SparePool(self._open_lane, self._retire, self.SPARE_TIMING)
        self._backoff = Backoff()
        self._outage = False
        """Connections have failed for reasons that may pass, and none has succeeded since."""
        self._refused = False
        """Telnyx refused the key or settings (400/401/403); only new settings can help."""
        self._stopping = False
        self._connected = False
        """Whether ``on_connected`` was the last connection event fired."""
        self._in_reply = False
        self._leftover_reply = False
        """An interruption ended an LLM reply whose last frames may still be queued here."""
        self._maintenance_task: asyncio.Task | None = None
        self._closing: set[asyncio.Task] = set()
        self._failed_turns: dict[str, list[str]] = {}
        """Turns ended by an error while their text still flowed, with the text left unspoken."""
        self._voice_list: VoiceList | None = None
        self._voice_list_task: asyncio.Task | None = None
        self._warn_ignored_settings()

    def can_generate_metrics(self) -> bool:
        """TTFB and usage metrics are produced (through the base class)."""
        return True

    @property
    def supports_processing_metrics(self) -> bool:
        """Audio arrives on a receive task, so ``run_tts`` timing would measure only a send."""
        return False

    async def start_ttfb_metrics(self, *, start_time: float | None = None) -> None:
        """Note when this turn's synthesis was asked for.

        pipecat keeps one TTFB measurement per service and starts it when a turn's first text is
        synthesized, so a turn that starts before the previous one's first audio would take that
        audio's TTFB and lose its own. Each turn's start is kept, and put back when its own
        first audio plays (:meth:`stop_ttfb_metrics`).
        """
        context_id = self._turn_context_id
        if context_id is not None:
            self._requested_at.setdefault(context_id, start_time or time.time())
        await super().start_ttfb_metrics(start_time=start_time)

    async def stop_ttfb_metrics(self, *, end_time: float | None = None) -> None:
        """TTFB (and from it TTFA, leading silence included) of the turn whose audio starts."""
        context_id = self._audio_context_manager.playing_context_id
        started = self._requested_at.pop(context_id, None) if context_id else None
        if started is not None:
            await super().start_ttfb_metrics(start_time=started)
        await super().stop_ttfb_metrics(end_time=end_time)

    @classmethod
    def format_pronunciation(cls, word: str, ipa: str) -> str | None:
        """An SSML ``<phoneme>`` tag: the only pronunciation markup any Telnyx voice reads.

        Whether the current voice reads it is :attr:`supports_pronunciations`; a classmethod
        cannot know the voice.
        """
        return phoneme(word, ipa)

    @property
    def supports_pronunciations(self) -> bool:
        """True for AWS Polly and Azure voices with ``text_type="ssml"``; elsewhere the tag
        would be spoken, so pipecat skips pronunciation transforms."""
        s = self._settings
        return isinstance(s.voice, str) and reads_ssml(s.voice, _given(s.text_type))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame) -> None:
        """Connect a spare right away, so the first turn does not wait for a handshake."""
        await super().start(frame)
        self._ensure_spare()
        self._maintenance_task = self.create_task(self._maintain_spares(), name="telnyx-spares")
        self._voice_list_task = self.create_task(self._load_voice_list(), name="telnyx-voices")

    async def stop(self, frame: EndFrame) -> None:
        """Speak the turn in progress to its end, then close every socket.

        pipecat calls this before its own end-of-turn handling, and then waits for every audio
        context to finish playing; so the turn's remaining text is flushed here, or the wait
        would be for a turn whose end of sequence was never sent.
        """
        self._begin_shutdown()
        await self._finish_turn_in_progress()
        await super().stop(frame)
        await self._shutdown()

    async def cancel(self, frame: CancelFrame) -> None:
        """Close every socket at once."""
        self._begin_shutdown()
        await super().cancel(frame)
        await self._shutdown()

    async def cleanup(self) -> None:
        """Close every socket when the pipeline is torn down without a stop or cancel."""
        self._begin_shutdown()
        await super().cleanup()
        await self._shutdown()

    def _begin_shutdown(self) -> None:
        """From here on no socket is opened, whatever happens."""
        self._stopping = True
        for spare in self._pool.stop():
            self._retire(spare, "service stopping")

    async def _finish_turn_in_progress(self) -> None:
        # The steps of pipecat 1.14's own end-of-turn handling (_handle_llm_response_end), less
        # pushing the frame: they are private, and a pipecat upgrade is checked against
        # tests/test_reliability.py's EndFrame tests.
        context_id = self._turn_context_id
        if context_id is None:
            return
        remaining = await self._text_aggregator.flush()
        if remaining:
            await self._handle_aggregated_text(self._aggregated_text_frame(remaining))
        finalized = await self._aggregated_frame_sequencer.finalize(context_id)
        await self._push_sequencer_frames(finalized, context_id)
        if self.audio_context_available(context_id):
            await self.flush_audio(context_id)

    async def _shutdown(self) -> None:
        if self._connected:
            self._connected = False
            await self._call_event_handler("on_disconnected")
        if self._maintenance_task:
            await self.cancel_task(self._maintenance_task)
            self._maintenance_task = None
        if self._voice_list_task:
            await self.cancel_task(self._voice_list_task)
            self._voice_list_task = None
        for lane in list(self._lanes.values()):
            self._retire(lane, "service stopping")
        self._lanes.clear()
        # Every close is bounded by the close timeout; the margin only covers scheduling.
        while self._closing:
            _, late = await asyncio.wait(set(self._closing), timeout=self.CLOSE_TIMEOUT_S + 1.0)
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
            text_type=_given(s.text_type),
            pronunciation_dict_id=_given(s.pronunciation_dict_id),
            disable_cache=s.disable_cache is True,
        )

    def _warn_ignored_settings(self) -> None:
        s = self._settings
        assert isinstance(s.voice, str)
        note = ignored_speed(s.voice, s.speed if isinstance(s.speed, int | float) else None)
        if note:
            logger.warning(f"{self}: {note}")

    async def _update_settings(self, delta: TTSSettings) -> dict[str, Any]:  # type: ignore[override]
        """Apply from the next turn: the spare is rebuilt, the turn in progress keeps its socket."""
        previous_voice = self._settings.voice
        if isinstance(delta.voice, str):
            try:
                check_voice(delta.voice)
            except ValueError as e:
                await self.push_error(f"voice update refused: {e}", exception=e)
                delta.voice = NOT_GIVEN
        given = [name for name in _QUERY_FIELDS if is_given(getattr(delta, name, NOT_GIVEN))]
        if given:
            prospective = self._settings.copy()
            prospective.apply_update(delta)  # type: ignore[arg-type]  # a TTSSettings delta too
            try:
                _check_text_options(prospective)
            except ValueError as e:
                # The settings are judged together, so the update's part of them is refused
                # together: applying half of it could leave a combination nobody asked for.
                await self.push_error(
                    f"settings update of {', '.join(given)} refused: {e}", exception=e
                )
                for name in given:
                    setattr(delta, name, NOT_GIVEN)
        changed = await super()._update_settings(delta)
        if changed:
            self._refused = False
            self._backoff.succeeded()
            try:
                self._ensure_spare()
            except ValueError as e:
                self._settings.voice = previous_voice
                await self.push_error(f"settings update refused: {e}", exception=e)
                return changed
            self._warn_ignored_settings()
            if "voice" in changed:
                await self._check_voice_listed()
        return changed

    # ------------------------------------------------------------------ the voice list

    async def _load_voice_list(self) -> None:
        """Fetch Telnyx's voice list in the background; nothing waits for it."""
        try:
            self._voice_list = await fetch_voice_list(self._url, self._api_key)
        except VoiceListUnavailable as e:
            logger.warning(f"{self}: voice not checked against Telnyx's voice list: {e}")
            return
        await self._check_voice_listed()

    async def _check_voice_listed(self) -> None:
        voice = self._settings.voice
        if self._voice_list is None or not isinstance(voice, str):
            return
        problem = self._voice_list.unlisted(voice)
        if problem:
            # Not permanent, and the service carries on: the list may lack a voice that works (a
            # clone, a spelling Telnyx also accepts), and a voice Telnyx really lacks is refused
            # at the upgrade, which is permanent by itself. This only says what to fix sooner.
            await self.push_error(problem)

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
        if lane is None or lane.turn_on_wire or lane.pending:
            return
        if self.audio_context_available(context_id):
            return
        del self._lanes[context_id]
        self._pool.give_back(lane)
        self._ensure_spare()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Drop text of an interrupted reply that reaches the service after the interruption.

        The interruption is a system frame and overtakes text still queued at this processor;
        such text would open a new turn after the barge-in (token mode) or wait in the sentence
        aggregator and be spoken at the start of the next reply (sentence mode).
        """
        if isinstance(frame, LLMFullResponseStartFrame):
            self._in_reply, self._leftover_reply = True, False
        elif isinstance(frame, InterruptionFrame):
            self._leftover_reply, self._in_reply = self._in_reply, False
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._in_reply = self._leftover_reply = False
        elif isinstance(frame, LLMTextFrame) and self._leftover_reply:
            logger.debug(f"{self}: not spoken, from the interrupted reply: [{frame.text}]")
            return
        await super().process_frame(frame, direction)

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send the text on the turn's socket; the audio arrives on that socket's receive task."""
        if context_id in self._failed_turns:
            # Named once, when the turn ends, rather than once per token.
            self._failed_turns[context_id].append(text)
            yield None
            return
        lane = self._lane_for(context_id)
        if lane is None:
            logger.warning(f"{self}: the service is stopping; not spoken: [{text}]")
            yield None
            return
        if lane.turn is None or lane.turn.phase is not Phase.SPEAKING:
            logger.warning(f"{self}: turn {context_id} has already ended; not spoken: [{text}]")
            yield None
            return
        await self.start_tts_usage_metrics(text)
        await self._send_turn(lane, lane.turn.text(text))
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
            await self._send_turn(lane, lane.turn.end())
            return
        # No socket will end this turn (it failed, or the service could not connect), so its
        # audio context is ended here rather than left to pipecat's idle timeout.
        unspoken = "".join(self._failed_turns.get(context_id, [])).strip()
        if unspoken:
            logger.warning(f"{self}: not spoken after the turn's error: [{unspoken}]")
        await self._end_context(context_id)

    async def on_audio_context_completed(self, context_id: str) -> None:
        """A turn finished playing; one that never had audio leaves its TTFB start here."""
        await super().on_audio_context_completed(context_id)
        self._requested_at.pop(context_id, None)

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
        self._requested_at.pop(context_id, None)
        lane = self._lanes.pop(context_id, None)
        if lane is None or lane.turn is None:
            return
        force = lane.turn.interrupt()
        if force and lane.life.open and not lane.life.ended:
            await self._send(lane, force)
        self._retire(lane, "barge-in")

    def _lane_for(self, context_id: str) -> Lane | None:
        """The turn's socket, bound now if it has none; None once the service is stopping."""
        lane = self._lanes.get(context_id)
        if lane is not None:
            return lane
        if self._stopping:
            return None
        request = self._current_request()
        lane = self._pool.take(request) or self._open_lane(request)
        lane.bind(
            context_id,
            Turn(token_mode=self._is_streaming_tokens, first_clause=self._first_clause),
            AudioDecoder(pcm_rate=lane.request.pcm_rate, out_rate=self.sample_rate),
            WordClock(self.sample_rate) if self._word_timestamps else None,
        )
        self._lanes[context_id] = lane
        return lane

    async def _send_turn(self, lane: Lane, messages: list[ClientMessage]) -> None:
        """Send a turn's messages, telling its word clock what text went out."""
        for message in messages:
            if isinstance(message, TextMessage):
                sent = functools.partial(
                    WordClock.text_sent, text=message.text, flush=message.flush
                )
                await self._clock_words(lane, sent)
        await self._send(lane, messages)

    async def _send(self, lane: Lane, messages: list[ClientMessage]) -> None:
        try:
            await lane.send(messages)
        except SendFailed as e:
            # The socket was aborted; its receive task fails the turn with an error.
            logger.warning(f"{self}: {e}; not spoken: [{unsent_text(messages)}]")
        except (ConnectionClosed, OSError) as e:
            # The receive task sees the same end and fails the turn with an error.
            lost = unsent_text(messages)
            if lost:
                logger.warning(f"{self}: send to Telnyx failed ({e}); not spoken: [{lost}]")

    # ------------------------------------------------------------------ spares and sockets

    def _ensure_spare(self) -> None:
        """Keep one fresh spare (during an outage too: it is how recovery is noticed)."""
        if self._stopping or self._refused:
            return
        if not self.is_usable and not self._outage:
            return
        if self._backoff.wait(time.monotonic()) > 0:
            return
        self._pool.ensure(self._current_request())

    async def _maintain_spares(self) -> None:
        """Replace spares before the server's inactivity timeout closes them."""
        while True:
            now = time.monotonic()
            # While backing off, the next attempt is due when the backoff ends.
            delay = self._backoff.wait(now) or self._pool.next_check(now, longest=1.0)
            await asyncio.sleep(delay)
            self._ensure_spare()

    def _open_lane(self, request: Request) -> Lane:
        assert not self._stopping, "no socket may be opened once the service is stopping"
        lane = Lane(
            request,
            self,
            self._connect,
            send_timeout=self.SEND_TIMEOUT_S,
            poll=min(1.0, self.FINAL_GRACE_S),
        )
        lane.task = self.create_task(lane.run(), name="telnyx-lane")
        return lane

    def _retire(self, lane: Lane, reason: str) -> None:
        """Close a socket on this client's behalf, in the background (bounded by its timeout)."""
        if not lane.begin_close(reason):
            return
        task = self.create_task(lane.finish_close(), name="telnyx-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

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

    # ------------------------------------------------------------------ what lanes report

    async def lane_ready(self, lane: Lane) -> None:
        """A handshake went through: an outage, if there was one, is over."""
        self._backoff.succeeded()
        if not self._connected:
            # Once per stretch of being reachable, not per socket: every turn has its own.
            self._connected = True
            await self._call_event_handler("on_connected")
        if self._outage:
            self._outage = False
            logger.info(f"{self}: Telnyx is reachable again")
            if not self.is_usable and not self._refused:
                # pipecat wrote the service off for the silent turns of the outage.
                await self.set_usable(True)
        self._pool.ready(lane)

    async def lane_message(self, lane: Lane, message: ServerMessage) -> None:
        if lane.turn is None:
            await self._spare_message(lane, message)
            return
        await self._handle_events(lane, lane.turn.on_message(message))

    async def lane_malformed(self, lane: Lane, error: ProtocolError) -> None:
        logger.warning(f"{self}: ignoring a malformed frame from Telnyx: {error}")

    async def lane_quiet(self, lane: Lane, seconds: float) -> None:
        if lane.turn is not None:
            events = lane.turn.on_quiet(
                seconds, grace=self.FINAL_GRACE_S, timeout=self.RESPONSE_TIMEOUT_S
            )
            await self._handle_events(lane, events)

    async def lane_ended(self, lane: Lane, *, clean: bool, detail: str) -> None:
        if lane.turn is None:
            logger.debug(f"{self}: spare Telnyx socket ended ({detail})")
            quick = time.monotonic() - lane.life.created_at < self.QUICK_CLOSE_S
            self._pool.discard(lane, detail)
            if quick:
                self._backoff.failed(time.monotonic())
            self._ensure_spare()
            return
        if not lane.turn_on_wire and lane.turn.phase is not Phase.DONE and not self._stopping:
            await self._move_turn(lane, detail)
            return
        await self._handle_events(lane, lane.turn.on_closed(clean=clean, detail=detail))

    async def lane_connect_failed(self, lane: Lane, error: Exception) -> float | None:
        """Retry a turn's socket through an outage within its budget; give up otherwise."""
        now = time.monotonic()
        permanent = (
            isinstance(error, InvalidStatus)
            and error.response.status_code in PERMANENT_UPGRADE_STATUSES
        )
        message = self._describe_connect_error(lane.request, error)
        await self._call_event_handler("on_connection_error", message)
        if self._connected:
            self._connected = False
            await self._call_event_handler("on_disconnected")
        if not permanent:
            delay = self._backoff.failed(now)
            first = not self._outage
            self._outage = True
            turn = lane.turn
            budget_left = self.TURN_CONNECT_BUDGET_S - (now - lane.life.created_at)
            if turn is not None and turn.phase is not Phase.DONE and delay < budget_left:
                if first:
                    await self.push_error(f"{message}; retrying", exception=error)
                logger.warning(f"{self}: {message}; retrying in {delay:.1f} s")
                return delay
            if turn is None:
                # A spare: the pool tries again once the backoff allows.
                self._pool.forget(lane)
                if first:
                    await self.push_error(f"{message}; retrying", exception=error)
                else:
                    logger.debug(f"{self}: {message}")
                return None
        else:
            already_refused, self._refused = self._refused, True
            self._pool.forget(lane)
            if lane.turn is None and already_refused:
                logger.debug(f"{self}: {message}")
                return None
        await self._fail_unconnected_turn(lane, message, error)
        return None

    async def _fail_unconnected_turn(self, lane: Lane, message: str, error: Exception) -> None:
        turn, context_id = lane.turn, lane.context_id
        if turn is None or context_id is None:
            await self.push_error(message, exception=error)
            return
        self._lanes.pop(context_id, None)
        lost = unsent_text(lane.pending)
        lane.pending = []
        turn.interrupt()
        self._failed_turns[context_id] = []
        if turn.end_sent:
            await self._end_context(context_id)
        detail = f"; not spoken: [{lost}]" if lost else ""
        await self.push_error(f"{message}{detail}", exception=error)

    async def _move_turn(self, lane: Lane, detail: str) -> None:
        """The turn's socket ended before any of the turn reached it: carry on on another one."""
        assert lane.context_id is not None
        logger.info(f"{self}: Telnyx socket ended before the turn's text ({detail}); moving on")
        fresh = self._pool.take(lane.request) or self._open_lane(lane.request)
        self._lanes[lane.context_id] = fresh
        queued = fresh.adopt(lane)
        await self._send(fresh, queued)

    async def _spare_message(self, lane: Lane, message: ServerMessage) -> None:
        """A spare is owed nothing; an error here is about the settings it was built with."""
        if isinstance(message, ErrorMessage):
            await self.push_error(f"Telnyx refused the voice settings: {message.error}")
        self._pool.discard(lane, "unexpected frame on a spare")
        self._backoff.failed(time.monotonic())

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
                f"(Provider.Model.VoiceId){_format_asked(request)}",
                429: "Telnyx is rate-limiting connections",
            }.get(status, "Telnyx could not take the connection")
            return f"Telnyx TTS connection failed with HTTP {status}: {hint}. {body}".strip()
        return f"Telnyx TTS connection to {self._url} failed: {type(e).__name__}: {e}"

    # ------------------------------------------------------------------ a turn's events

    async def _handle_events(self, lane: Lane, events: list[Event]) -> None:
        # Nothing of an abandoned turn gets here: its Turn yields no events once interrupted,
        # and its Lane passes nothing on once this client began closing it.
        for event in events:
            match event:
                case Audio(data=data):
                    await self._deliver(lane, data)
                case Announced(text=text, carries_audio=carries_audio):
                    await self._clock_words(
                        lane, lambda clock: clock.announced(text, carries_audio=carries_audio)
                    )
                case SynthesisFinal():
                    await self._clock_words(lane, WordClock.synthesis_final)
                case FirstAudioLatency(milliseconds=ms, cached=cached):
                    logger.debug(f"{self}: Telnyx timeToFirstAudioFrameMs={ms} cached={cached}")
                case Finished():
                    await self._finish(lane, end_context=True)
                case Failed(reason=reason):
                    await self._fail(lane, reason)

    async def _fail(self, lane: Lane, reason: str) -> None:
        assert lane.turn is not None and lane.context_id is not None
        self._failed_turns[lane.context_id] = []
        # Words whose audio never came are not given made-up times. (pipecat still pushes a
        # context's untimed text when the context ends, untimed: see the README's limits.)
        lane.clock = None
        # While the LLM may still send text, the context stays open so that text cannot open a
        # second one; flush_audio ends it with the turn.
        await self._finish(lane, end_context=lane.turn.end_sent)
        await self.push_error(reason)

    async def _deliver(self, lane: Lane, data: bytes) -> None:
        assert lane.decoder is not None and lane.context_id is not None and lane.turn is not None
        try:
            pcm = lane.decoder.feed(data)
        except AudioDecodeError as e:
            await self._handle_events(lane, lane.turn.fail(f"Telnyx audio cannot be decoded: {e}"))
            return
        if pcm:
            # A frame opening with an ID3 tag starts an MP3 file, and every synthesis starts one.
            await self._append_audio(lane, pcm, new_file=lane.decoder.file_opened)

    async def _finish(self, lane: Lane, *, end_context: bool) -> None:
        """The socket is done: deliver the decoded tail, drop the socket, maybe end the context."""
        context_id = lane.context_id
        assert context_id is not None and lane.decoder is not None
        self._lanes.pop(context_id, None)
        self._retire(lane, "turn over")
        try:
            tail = lane.decoder.flush()
        except AudioDecodeError as e:
            tail = b""
            if context_id not in self._failed_turns:
                # The server finished, but none of its audio decoded: a failure all the same.
                self._failed_turns[context_id] = []
                await self.push_error(f"Telnyx audio cannot be decoded: {e}")
        if tail:
            await self._append_audio(lane, tail)
        if end_context:
            # The turn played out: its remaining words are timed on its complete audio.
            await self._clock_words(lane, WordClock.finish)
        lane.clock = None
        if end_context:
            await self._end_context(context_id)

    async def _append_audio(self, lane: Lane, pcm: bytes, *, new_file: bool = False) -> None:
        context_id = lane.context_id
        assert context_id is not None
        frame = TTSAudioRawFrame(pcm, self.sample_rate, 1, context_id=context_id)
        await self.append_to_audio_context(context_id, frame)
        now = time.monotonic()
        await self._clock_words(lane, lambda clock: clock.audio(pcm, now, new_file=new_file))

    async def _clock_words(self, lane: Lane, event: Callable[[WordClock], list[TimedWord]]) -> None:
        """Tell the turn's word clock of ``event`` and pass on the words it releases.

        The clock is an estimate, not the audio: if it fails, the turn goes on without it, and
        pipecat records the turn's text by sentence when the context ends, as it does for a
        service without word timestamps.
        """
        clock = lane.clock
        if clock is None:
            return
        try:
            words = event(clock)
        except Exception as e:
            lane.clock = None
            logger.opt(exception=e).warning(
                f"{self}: word timing failed ({type(e).__name__}: {e}); this turn's text is "
                "recorded by sentence instead of by word"
            )
            return
        await self._add_words(lane, words)

    async def _add_words(self, lane: Lane, words: list[TimedWord]) -> None:
        if lane.context_id is None:
            return
        # One call per run of words that carry their own spacing or not (CJK characters do).
        for spaced, run in itertools.groupby(words, key=lambda w: w.spaced):
            await self.add_word_timestamps(
                [(w.word, w.seconds) for w in run],
                context_id=lane.context_id,
                includes_inter_frame_spaces=spaced,
            )

    async def _end_context(self, context_id: str) -> None:
        if self.audio_context_available(context_id):
            await self.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
            await self.remove_audio_context(context_id)

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        """Never let the API key into an error message.

        No message is built with the key in it; this guard replaces only the whole key, so a
        short key cannot mangle the words around it.
        """
        error.error = self._key_pattern.sub("***", error.error)
        await super().push_error_frame(error, force_treat_as_permanent)


def _format_asked(request: Request) -> str:
    """The format and rate the request named, for a 400 message; nothing for what it left out."""
    asked = [
        f"{name} {value}"
        for name, value in (
            ("sample_rate", request.params.sample_rate),
            ("audio_format", request.params.audio_format),
        )
        if value is not None
    ]
    return f" and {' / '.join(asked)} for that provider" if asked else ""


def _given(value: Any) -> Any:
    """None for a field that was never given a value."""
    return value if is_given(value) else None


def _check_text_options(settings: TelnyxTTSSettings) -> None:
    assert isinstance(settings.voice, str)
    check_text_options(
        settings.voice,
        text_type=_given(settings.text_type),
        pronunciation_dict_id=_given(settings.pronunciation_dict_id),
        disable_cache=settings.disable_cache,
    )
