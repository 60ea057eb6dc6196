"""``TelnyxTTSService``: Telnyx's streaming TTS WebSocket as a Pipecat TTS service.

Design in one paragraph: every turn gets a socket of its own, usually a spare connected and
initialized when the turn became likely, so no turn waits for a handshake and every audio byte read
from a socket belongs to exactly one turn (the wire has no context id). Barge-in sends ``force`` on
the interrupted turn's socket and abandons it: nothing it sends afterwards can reach the pipeline.
Where the pieces live: what to send and when a turn is over, :mod:`.turn`; when to open, retry, give
up and report, :mod:`.policy` (with :mod:`.failures`); the sockets held, :mod:`.sockets`; one
socket, :mod:`.lane` and :mod:`.socket_state`; turn audio and words into pipecat,
:mod:`.turn_output`; the settings, :mod:`.settings`; pipecat's private members,
:mod:`.pipecat_private`. This module is the pipecat hooks around them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from collections.abc import AsyncGenerator, Coroutine
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
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.errors import ErrorCategory
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, is_given
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipecat_telnyx_tts import pipecat_private
from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.clauses import FirstClauseAggregator
from pipecat_telnyx_tts.common import DEFAULT_VOICE
from pipecat_telnyx_tts.failures import check_ws_url, classify_connect_error, error_category
from pipecat_telnyx_tts.lane import Lane, SendFailed, unsent_text
from pipecat_telnyx_tts.policy import (
    Attempt,
    ConnectionPolicy,
    Failure,
    IdleWindow,
    Kind,
    Limits,
    Report,
    classify_server_error,
    shared_limiter,
)
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
    check_voice,
    choose_format,
    ignored_speed,
    reads_ssml,
)
from pipecat_telnyx_tts.settings import QUERY_FIELDS, TelnyxTTSSettings, check_settings, given
from pipecat_telnyx_tts.sockets import Sockets
from pipecat_telnyx_tts.ssml import phoneme
from pipecat_telnyx_tts.turn import Phase, Turn
from pipecat_telnyx_tts.turn_output import ForgetUnplayed, TurnOutput
from pipecat_telnyx_tts.voice_list import VoiceList, VoiceListUnavailable, fetch_voice_list
from pipecat_telnyx_tts.word_timing import WordClock

# websockets logs request headers (the API key among them) at DEBUG; this logger never does.
_WS_LOGGER = logging.getLogger("pipecat_telnyx_tts.websockets")
_WS_LOGGER.setLevel(logging.INFO)

_CALLER_STARTED = (UserStartedSpeakingFrame, VADUserStartedSpeakingFrame)
_CALLER_STOPPED = (UserStoppedSpeakingFrame, VADUserStoppedSpeakingFrame)


class TelnyxTTSService(TTSService):
    """Telnyx text-to-speech over its streaming WebSocket.

    Text is sent as it arrives and flushed at sentence ends, so audio starts after the first
    sentence whichever way the server behaves; a socket per turn, prepared when a turn becomes
    likely, keeps handshakes off the critical path and makes barge-in exact. See the README for
    the settings table and what each fault costs.
    """

    Settings = TelnyxTTSSettings
    _settings: TelnyxTTSSettings

    POLICY_LIMITS: ClassVar[Limits] = Limits()
    """Quick-close window, a turn's connect budget, backoff caps, spare margins (:mod:`.policy`)."""
    INACTIVITY_TIMEOUT_S: ClassVar[float | None] = 60.0
    """The idle window asked for in the query (None: none); the one the server keeps is learned
    from the closes it makes."""
    HANDSHAKES_PER_SECOND: ClassVar[float] = 50.0
    HANDSHAKE_BURST: ClassVar[int] = 20
    """Handshakes to one URL, for the whole process: after a network blip, every call of the
    process reconnects within this, not at once."""
    RESPONSE_TIMEOUT_S: ClassVar[float] = 10.0
    """Silence from the server, while it owes audio, after which the turn fails."""
    FINAL_GRACE_S: ClassVar[float] = 3.0
    """After end of sequence and a final frame, how long to wait for a close that never comes."""
    CONNECT_TIMEOUT_S: ClassVar[float] = 5.0
    """One handshake attempt; an upgrade that is never answered is abandoned after this."""
    SEND_TIMEOUT_S: ClassVar[float] = 5.0
    CLOSE_TIMEOUT_S: ClassVar[float] = 2.0

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
        keep_warm: bool = False,
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
            keep_warm: Always keep a connected spare socket, replaced before the server's idle
                window runs out, instead of opening one when a turn becomes likely (the caller
                speaks, a reply starts). It also covers turns nothing announces, at a few
                handshakes a minute on an idle call.
            **kwargs: Passed on to pipecat's ``TTSService`` (``text_aggregation_mode``, ...).
        """
        key = api_key or os.environ.get("TELNYX_API_KEY")
        if not key:
            raise ValueError(
                "no Telnyx API key: pass api_key=... or set TELNYX_API_KEY "
                "(a Telnyx API v2 key from the Telnyx portal, 'KEY...')"
            )
        check_ws_url(url)
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
        check_settings(defaults)
        kwargs.setdefault("push_start_frame", True)
        kwargs.setdefault("push_text_frames", not word_timestamps)
        kwargs.setdefault("push_stop_frames", False)
        # Every turn is ended by the server's signal or by this service's own watchdogs, so
        # pipecat's idle timeout (3 s by default) must not end one first: slow first audio is
        # not silence.
        kwargs.setdefault("stop_frame_timeout_s", self.RESPONSE_TIMEOUT_S + 2.0)
        super().__init__(sample_rate=sample_rate, settings=defaults, **kwargs)
        self._first_clause = flush_first_clause
        if flush_first_clause and not pipecat_private.streams_tokens(self):
            # Token mode needs no aggregator of its own: the Turn finds the clause.
            pipecat_private.replace_text_aggregator(self, FirstClauseAggregator)
        self._api_key = key
        self._key_pattern = re.compile(rf"(?<![\w-]){re.escape(key)}(?![\w-])")
        self._url = url
        self._audio_format = audio_format
        self._word_timestamps = word_timestamps
        self._policy = ConnectionPolicy(
            limits=self.POLICY_LIMITS,
            limiter=shared_limiter(
                url, rate=self.HANDSHAKES_PER_SECOND, burst=self.HANDSHAKE_BURST
            ),
            idle=IdleWindow(asked=self.INACTIVITY_TIMEOUT_S),
            keep_warm=keep_warm,
        )
        self._sockets = Sockets(self._open_lane, self._spawn, self._policy)
        self._output = TurnOutput(self, self._sockets)
        self._requested_at: dict[str, float] = {}
        """When each turn's first text went to synthesis, for its TTFB (see start_ttfb_metrics)."""
        self._reply_request: tuple[str, Request] | None = None
        """The settings in force when the current reply began: a settings update applies from
        the next reply, even if it comes before this one's first text."""
        self._stopping = False
        self._connected = False
        """Whether ``on_connected`` was the last connection event fired."""
        self._in_reply = False
        self._leftover_reply = False
        """An interruption ended an LLM reply whose last frames may still be queued here."""
        self._upkeep_task: asyncio.Task | None = None
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
        context_id = pipecat_private.turn_context_id(self)
        if context_id is not None:
            self._requested_at.setdefault(context_id, start_time or time.time())
        await super().start_ttfb_metrics(start_time=start_time)

    async def stop_ttfb_metrics(self, *, end_time: float | None = None) -> None:
        """TTFB (and from it TTFA, leading silence included) of the turn whose audio starts."""
        context_id = pipecat_private.playing_context_id(self)
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
        return isinstance(s.voice, str) and reads_ssml(s.voice, given(s.text_type))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, frame: StartFrame) -> None:
        """Connect a spare right away, so the first turn (a greeting) does not wait for one."""
        await super().start(frame)
        self._policy.turn_likely(time.monotonic())
        self._keep_spare()
        self._upkeep_task = self.create_task(self._upkeep(), name="telnyx-upkeep")
        self._voice_list_task = self.create_task(self._load_voice_list(), name="telnyx-voices")

    async def stop(self, frame: EndFrame) -> None:
        """Speak the turn in progress to its end, then close every socket.

        pipecat calls this before its own end-of-turn handling, and then waits for every audio
        context to finish playing; so the turn's remaining text is flushed here, or the wait
        would be for a turn whose end of sequence was never sent.
        """
        self._begin_shutdown()
        context_id = pipecat_private.turn_context_id(self)
        if context_id is not None:
            await pipecat_private.finish_turn_text(self, context_id)
            if self.audio_context_available(context_id):
                await self.flush_audio(context_id)
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
        self._sockets.stop()

    async def _shutdown(self) -> None:
        if self._connected:
            self._connected = False
            await self._call_event_handler("on_disconnected")
        for task in (self._upkeep_task, self._voice_list_task):
            if task is not None:
                await self.cancel_task(task)
        self._upkeep_task = self._voice_list_task = None
        self._sockets.close_turns()
        # Every close is bounded by the close timeout; the margin only covers scheduling.
        while self._sockets.closing:
            _, late = await asyncio.wait(
                set(self._sockets.closing), timeout=self.CLOSE_TIMEOUT_S + 1.0
            )
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
            text_type=given(s.text_type),
            pronunciation_dict_id=given(s.pronunciation_dict_id),
            disable_cache=s.disable_cache is True,
            inactivity_timeout=self.INACTIVITY_TIMEOUT_S,
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
        named = [name for name in QUERY_FIELDS if is_given(getattr(delta, name, NOT_GIVEN))]
        if named:
            prospective = self._settings.copy()
            prospective.apply_update(delta)  # type: ignore[arg-type]  # a TTSSettings delta too
            try:
                check_settings(prospective)
            except ValueError as e:
                # The settings are judged together, so the update's part of them is refused
                # together: applying half of it could leave a combination nobody asked for.
                await self.push_error(
                    f"settings update of {', '.join(named)} refused: {e}", exception=e
                )
                for name in named:
                    setattr(delta, name, NOT_GIVEN)
        changed = await super()._update_settings(delta)
        if changed:
            self._policy.settings_changed()
            try:
                self._keep_spare()
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
        """A reply is starting: have a spare ready for its first text."""
        await super().on_turn_context_created(context_id)
        self._reply_request = (context_id, self._current_request())
        self._policy.turn_likely(time.monotonic())
        self._keep_spare()

    async def on_turn_context_completed(self) -> None:
        context_id = pipecat_private.turn_context_id(self)
        await super().on_turn_context_completed()
        if context_id is not None:
            self._output.failed_turns.pop(context_id, None)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Prepare a socket when a turn becomes likely; drop text of an interrupted reply.

        The next turn is likely once the caller speaks, and once a reply's text is all in (the
        next reply may follow at once: a tool call's result); the spare opened then is the one
        the next reply binds, one handshake a turn either way.
        The interruption is a system frame and overtakes text still queued at this processor;
        such text would open a new turn after the barge-in (token mode) or wait in the sentence
        aggregator and be spoken at the start of the next reply (sentence mode).
        """
        if isinstance(frame, (*_CALLER_STARTED, *_CALLER_STOPPED)):
            self._policy.caller_speaking(time.monotonic(), isinstance(frame, _CALLER_STARTED))
            self._keep_spare()
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._in_reply, self._leftover_reply = True, False
        elif isinstance(frame, InterruptionFrame):
            self._leftover_reply, self._in_reply = self._in_reply, False
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._in_reply = self._leftover_reply = False
        elif isinstance(frame, LLMTextFrame) and self._leftover_reply:
            logger.debug(f"{self}: not spoken, from the interrupted reply: [{frame.text}]")
            return
        elif isinstance(frame, LLMTextFrame):
            # A reply still being written is not idle, even while pipecat's sentence
            # aggregator holds its text: pipecat would end its audio context after
            # ``stop_frame_timeout_s`` without a word, and the words after it would be lost.
            pipecat_private.keep_turn_context_alive(self)
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMFullResponseEndFrame):
            # After the base class: the reply's last text has taken its socket by now.
            self._policy.turn_likely(time.monotonic())
            self._keep_spare()

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Send the text on the turn's socket; the audio arrives on that socket's receive task."""
        if context_id in self._output.failed_turns:
            # Named once, when the turn ends, rather than once per token.
            self._output.failed_turns[context_id].append(text)
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
        yield None

    async def flush_audio(self, context_id: str | None = None) -> None:
        """End of the LLM turn: flush what is held and tell the server no more text is coming."""
        if context_id is None:
            return
        lane = self._sockets.turns.get(context_id)
        if lane and lane.turn:
            await self._send_turn(lane, lane.turn.end())
            return
        # No socket will end this turn (it failed, or never had text), so its audio context is
        # ended here rather than left to pipecat's idle timeout.
        unspoken = "".join(self._output.failed_turns.get(context_id, [])).strip()
        if unspoken:
            logger.warning(f"{self}: not spoken after the turn's error: [{unspoken}]")
        await self._output.end_context(context_id)

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
        for context_id in [c for c in self._sockets.turns if c not in live]:
            await self._abandon(context_id)

    async def _abandon(self, context_id: str) -> None:
        self._output.failed_turns.pop(context_id, None)
        self._requested_at.pop(context_id, None)
        lane = self._sockets.turns.pop(context_id, None)
        if lane is None or lane.turn is None:
            return
        force = lane.turn.interrupt()
        if force and lane.life.open and not lane.life.ended:
            await self._send(lane, force)
        self._sockets.retire(lane, "barge-in")

    def _lane_for(self, context_id: str) -> Lane | None:
        """The turn's socket, bound at its first text; None once the service is stopping."""
        lane = self._sockets.turns.get(context_id)
        if lane is not None:
            return lane
        if self._stopping:
            return None
        now = time.monotonic()
        reply = self._reply_request
        request = reply[1] if reply and reply[0] == context_id else self._current_request()
        lane = self._sockets.take_spare(request, now) or self._open_lane(request)
        lane.bind(
            context_id,
            Turn(token_mode=pipecat_private.streams_tokens(self), first_clause=self._first_clause),
            AudioDecoder(pcm_rate=lane.request.pcm_rate, out_rate=self.sample_rate),
            WordClock(self.sample_rate) if self._word_timestamps else None,
        )
        lane.connect_deadline = now + self._policy.limits.turn_budget
        self._sockets.turns[context_id] = lane
        self._policy.turn_bound(now)
        return lane

    async def _send_turn(self, lane: Lane, messages: list[ClientMessage]) -> None:
        """Send a turn's messages, telling its word clock what text went out."""
        for message in messages:
            if isinstance(message, TextMessage):
                sent = functools.partial(
                    WordClock.text_sent, text=message.text, flush=message.flush
                )
                await self._output.clock_words(lane, sent)
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

    # ------------------------------------------------------------------ sockets

    def _keep_spare(self) -> None:
        if not self._stopping:
            self._sockets.keep_spare(self._current_request(), time.monotonic())

    async def _upkeep(self) -> None:
        """Learn from living spares, let a written-off service probe, keep the spare fresh."""
        while True:
            now = time.monotonic()
            for spare in list(self._sockets.spares):
                if spare.life.open and not spare.life.ended:
                    self._policy.survived(spare.life.idle_for(now))
                    if spare.life.age(now) >= self._policy.limits.quick_close:
                        await self._proved(spare)
            await self._maybe_probe(now)
            self._keep_spare()
            await asyncio.sleep(self._sockets.next_check(now, longest=1.0))

    async def _proved(self, lane: Lane) -> None:
        """The socket works (it lived long enough, or carried audio): an outage is over."""
        if lane.life.proved:
            return
        lane.life.proved = True
        if self._policy.proved(time.monotonic()):
            logger.info(f"{self}: Telnyx is working again")
            if not self.is_usable and self._policy.refused is None:
                await self.set_usable(True)

    async def _maybe_probe(self, now: float) -> None:
        """After turns failed for lack of audio, let one turn through at the backoff's pace."""
        if self.is_usable or self._policy.degraded_since is None or self._policy.probing:
            return
        due = self._policy.probe_at()
        if due is not None and due <= now:
            self._policy.probe_started()
            logger.info(f"{self}: letting the next turn through to see if Telnyx has recovered")
            await self.set_usable(True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self.create_task(coroutine, name=name)

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

    async def lane_next_attempt(self, lane: Lane) -> Attempt | None:
        """When the lane may try its handshake, as the policy says; a turn out of budget fails."""
        now = time.monotonic()
        if lane.turn is None and (self._stopping or lane not in self._sockets.spares):
            return None  # a spare that failed is not retried: the upkeep opens another
        attempt = self._policy.next_attempt(
            now,
            deadline=lane.connect_deadline if lane.turn is not None else None,
            woke_for=lane.woke_for,
        )
        if attempt is not None:
            return attempt
        if lane.turn is None:
            self._sockets.forget(lane)
        else:
            await self._give_up_turn(lane)
        return None

    async def lane_ready(self, lane: Lane) -> None:
        """A handshake went through; that alone proves nothing (the server may close it)."""
        self._policy.handshake_ok()
        if not self._connected:
            # Once per stretch of being reachable, not per socket: every turn has its own.
            self._connected = True
            await self._call_event_handler("on_connected")
        self._sockets.spare_ready(lane)

    async def lane_message(self, lane: Lane, message: ServerMessage) -> None:
        if lane.turn is None:
            await self._spare_message(lane, message)
            return
        if isinstance(message, ErrorMessage):
            lane.failure = classify_server_error(message.error)
            if lane.failure.kind is Kind.PERMANENT:
                self._policy.connect_failed(time.monotonic(), lane.failure)
        await self._output.handle_events(lane, lane.turn.on_message(message))

    async def lane_malformed(self, lane: Lane, error: ProtocolError) -> None:
        logger.warning(f"{self}: ignoring a malformed frame from Telnyx: {error}")

    async def lane_quiet(self, lane: Lane, seconds: float) -> None:
        # Words wait for their playback to come near, which only time tells.
        await self._output.clock_words(lane, lambda clock: clock.tick(time.monotonic()))
        if lane.turn is not None:
            events = lane.turn.on_quiet(
                seconds, grace=self.FINAL_GRACE_S, timeout=self.RESPONSE_TIMEOUT_S
            )
            await self._output.handle_events(lane, events)

    async def lane_ended(self, lane: Lane, *, clean: bool, detail: str) -> None:
        now = time.monotonic()
        life = lane.life
        self._policy.closed_by_server(
            now,
            age=life.age(now),
            proved=life.proved or lane.turn_on_wire,
            idle_for=life.idle_for(now) if lane.turn is None and life.opened_at else None,
        )
        if lane.turn is None:
            logger.debug(f"{self}: spare Telnyx socket ended ({detail})")
            self._sockets.discard(lane, detail)
            self._keep_spare()
            return
        if not lane.turn_on_wire and lane.turn.phase is not Phase.DONE and not self._stopping:
            await self._move_turn(lane, detail)
            return
        await self._output.handle_events(lane, lane.turn.on_closed(clean=clean, detail=detail))

    async def lane_connect_failed(self, lane: Lane, error: Exception) -> None:
        """Classify and record the failure; the lane then asks when to try again."""
        failure = classify_connect_error(error, wall=time.time())
        message = self._describe_connect_error(lane.request, error)
        lane.connect_error = (message, error, failure)
        await self._call_event_handler("on_connection_error", message)
        if self._connected:
            self._connected = False
            await self._call_event_handler("on_disconnected")
        healthy = self._policy.degraded_since is None
        report = self._policy.connect_failed(time.monotonic(), failure)
        if lane.turn is None:
            self._sockets.forget(lane)
        if failure.kind is Kind.PERMANENT:
            if report is Report.ONCE and lane.turn is None:
                await self.push_error(message, exception=error, category=error_category(failure))
            logger.error(f"{self}: {message}")
            return
        if healthy:
            logger.warning(f"{self}: degraded: {message}; retrying with backoff")
        else:
            logger.debug(f"{self}: {message}")
        if lane.turn is not None and self._policy.outage_affects_turn() is Report.ONCE:
            await self.push_error(message, exception=error, category=error_category(failure))

    async def _give_up_turn(self, lane: Lane) -> None:
        """The turn's connect budget is spent (or the settings were refused): fail it, naming
        its text."""
        turn, context_id = lane.turn, lane.context_id
        assert turn is not None and context_id is not None
        message, error, failure = lane.connect_error or (
            "no Telnyx handshake could start within the turn's connect budget "
            "(backing off after failures, or over this process's handshake rate)",
            TimeoutError("connect budget spent"),
            Failure(Kind.TRANSIENT),
        )
        self._sockets.turns.pop(context_id, None)
        lost = unsent_text(lane.pending)
        lane.pending = []
        turn.interrupt()
        self._output.failed_turns[context_id] = []
        if turn.end_sent:
            await self._output.end_context(context_id)
        if self._policy.turn_failed(time.monotonic(), had_audio=False):
            await self.set_usable(False)
        detail = f"; not spoken: [{lost}]" if lost else ""
        await self.push_error(
            f"{message}{detail}", exception=error, category=error_category(failure)
        )

    async def _move_turn(self, lane: Lane, detail: str) -> None:
        """The turn's socket ended before any of the turn reached it: carry on on another one,
        within the turn's budget and the policy's backoff."""
        assert lane.context_id is not None
        logger.info(f"{self}: Telnyx socket ended before the turn's text ({detail}); moving on")
        fresh = self._sockets.take_spare(lane.request, time.monotonic()) or self._open_lane(
            lane.request
        )
        self._sockets.turns[lane.context_id] = fresh
        queued = fresh.adopt(lane)
        await self._send(fresh, queued)

    async def _spare_message(self, lane: Lane, message: ServerMessage) -> None:
        """A spare is owed nothing. An error is about the settings it was built with; anything
        else (a frame this client does not know) is ignored, and costs the spare nothing."""
        if not isinstance(message, ErrorMessage):
            logger.debug(f"{self}: ignoring an unexpected frame on a spare socket: {message}")
            return
        failure = classify_server_error(message.error)
        report = self._policy.connect_failed(time.monotonic(), failure)
        self._sockets.discard(lane, "error frame on a spare")
        text = f"Telnyx refused the voice settings: {message.error}"
        if report is Report.ONCE:
            await self.push_error(text, category=error_category(failure))
        else:
            logger.warning(f"{self}: {text}")

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
                404: f"there is no TTS WebSocket at {self._url}: check the url "
                "(Telnyx: wss://api.telnyx.com/v2/text-to-speech/speech)",
                422: "the request was rejected as unprocessable: check the settings",
                429: "Telnyx is rate-limiting connections",
            }.get(status, "Telnyx could not take the connection")
            return f"Telnyx TTS connection failed with HTTP {status}: {hint}. {body}".strip()
        return f"Telnyx TTS connection to {self._url} failed: {type(e).__name__}: {e}"

    async def push_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM
    ) -> None:
        """A failed turn's marker, reached in playback order, drops its unplayed text."""
        if isinstance(frame, ForgetUnplayed):
            pipecat_private.forget_unplayed_text(self, frame.context_id)
            return
        await super().push_frame(frame, direction)

    async def push_error_frame(
        self, error: ErrorFrame, force_treat_as_permanent: bool = False
    ) -> None:
        """Never let the API key into an error message.

        No message is built with the key in it; this guard replaces only the whole key, so a
        short key cannot mangle the words around it.
        """
        error.error = self._key_pattern.sub("***", error.error)
        await super().push_error_frame(error, force_treat_as_permanent)

    async def turn_failed(self, lane: Lane, reason: str) -> None:
        """A turn failed after it had its socket (error frame, lost socket, silence, decode)."""
        failure = lane.failure or Failure(Kind.TRANSIENT)
        if self._policy.turn_failed(time.monotonic(), had_audio=lane.had_audio):
            await self.set_usable(False)
        category = error_category(failure) if lane.failure else ErrorCategory.UNKNOWN
        await self.push_error(reason, category=category)

    async def audio_heard(self, lane: Lane) -> None:
        """A turn got audio: the socket, and the provider behind it, work."""
        lane.had_audio = True
        await self._proved(lane)


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
