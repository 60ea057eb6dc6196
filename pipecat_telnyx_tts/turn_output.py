"""A turn's output into pipecat: its audio frames, its timed words, the end of its context.

What a :class:`~pipecat_telnyx_tts.turn.Turn` decides (audio to deliver, a synthesis announced or
final, the turn finished or failed) becomes frames in the turn's pipecat audio context here. The
service it writes into is reached through :class:`Host`, the few methods this needs.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from loguru import logger
from pipecat.frames.frames import ControlFrame, Frame, TTSAudioRawFrame, TTSStoppedFrame

from pipecat_telnyx_tts.audio import AudioDecodeError
from pipecat_telnyx_tts.turn import (
    Announced,
    Audio,
    Event,
    Failed,
    Finished,
    FirstAudioLatency,
    SynthesisFinal,
)
from pipecat_telnyx_tts.word_timing import TimedWord, WordClock

if TYPE_CHECKING:
    from pipecat_telnyx_tts.lane import Lane
    from pipecat_telnyx_tts.sockets import Sockets


@dataclass
class ForgetUnplayed(ControlFrame):
    """Queued in a failed turn's audio context after the last audio it got: when playback
    reaches it, the service drops the turn's text that never played (and pushes nothing)."""

    context_id: str = ""


class Host(Protocol):
    """The service, as far as turn output needs it."""

    @property
    def sample_rate(self) -> int: ...

    async def append_to_audio_context(self, context_id: str, frame: Frame) -> Any: ...

    async def add_word_timestamps(
        self,
        word_times: list[tuple[str, float]],
        context_id: str | None = None,
        includes_inter_frame_spaces: bool = False,
    ) -> Any: ...

    def audio_context_available(self, context_id: str) -> bool: ...

    async def remove_audio_context(self, context_id: str) -> Any: ...

    async def turn_failed(self, lane: Lane, reason: str) -> None: ...

    async def audio_heard(self, lane: Lane) -> None: ...


class TurnOutput:
    """Delivers turns' events into their audio contexts."""

    def __init__(self, host: Host, sockets: Sockets) -> None:
        self._host = host
        self._sockets = sockets
        self.failed_turns: dict[str, list[str]] = {}
        """Turns ended by an error while their text still flowed, with the text left unspoken."""

    async def handle_events(self, lane: Lane, events: list[Event]) -> None:
        # Nothing of an abandoned turn gets here: its Turn yields no events once interrupted,
        # and its Lane passes nothing on once this client began closing it.
        for event in events:
            match event:
                case Audio(data=data):
                    await self._deliver(lane, data)
                case Announced(text=text, carries_audio=carries_audio):
                    await self.clock_words(
                        lane, lambda clock: clock.announced(text, carries_audio=carries_audio)
                    )
                case SynthesisFinal():
                    await self.clock_words(lane, WordClock.synthesis_final)
                case FirstAudioLatency(milliseconds=ms, cached=cached):
                    logger.debug(f"Telnyx timeToFirstAudioFrameMs={ms} cached={cached}")
                case Finished():
                    await self._finish(lane, end_context=True)
                case Failed(reason=reason):
                    await self._fail(lane, reason)

    async def _fail(self, lane: Lane, reason: str) -> None:
        assert lane.turn is not None and lane.context_id is not None
        self.failed_turns[lane.context_id] = []
        # Words whose audio never came are not given made-up times, and are named instead; the
        # context records the words of the audio that did come (see end_context), all of them
        # now, since no more audio will make any of them due.
        await self.clock_words(lane, WordClock.stop)
        clock, lane.clock = lane.clock, None
        unplayed = clock.unreleased_text if clock is not None else lane.turn.unanswered_text
        # While the LLM may still send text, the context stays open so that text cannot open a
        # second one; flush_audio ends it with the turn.
        await self._finish(lane, end_context=lane.turn.end_sent)
        named = f"; not played: [{unplayed}]" if unplayed else ""
        await self._host.turn_failed(lane, f"{reason}{named}")

    async def _deliver(self, lane: Lane, data: bytes) -> None:
        assert lane.decoder is not None and lane.context_id is not None and lane.turn is not None
        try:
            pcm = lane.decoder.feed(data)
        except AudioDecodeError as e:
            await self.handle_events(lane, lane.turn.fail(f"Telnyx audio cannot be decoded: {e}"))
            return
        if pcm:
            if not lane.had_audio:
                await self._host.audio_heard(lane)
            await self._append_audio(lane, pcm, new_file=lane.decoder.file_opened)

    async def _finish(self, lane: Lane, *, end_context: bool) -> None:
        """The socket is done: deliver the decoded tail, drop the socket, maybe end the context."""
        context_id = lane.context_id
        assert context_id is not None and lane.decoder is not None
        self._sockets.turns.pop(context_id, None)
        self._sockets.retire(lane, "turn over")
        try:
            tail = lane.decoder.flush()
        except AudioDecodeError as e:
            tail = b""
            if context_id not in self.failed_turns:
                # The server finished, but none of its audio decoded: a failure all the same.
                self.failed_turns[context_id] = []
                await self._host.turn_failed(lane, f"Telnyx audio cannot be decoded: {e}")
        if tail:
            await self._append_audio(lane, tail)
        if end_context:
            # The turn played out: its remaining words are timed on its complete audio.
            await self.clock_words(lane, WordClock.finish)
        lane.clock = None
        if end_context:
            await self.end_context(context_id)

    async def _append_audio(self, lane: Lane, pcm: bytes, *, new_file: bool = False) -> None:
        context_id = lane.context_id
        assert context_id is not None
        frame = TTSAudioRawFrame(pcm, self._host.sample_rate, 1, context_id=context_id)
        await self._host.append_to_audio_context(context_id, frame)
        now = time.monotonic()
        await self.clock_words(lane, lambda clock: clock.audio(pcm, now, new_file=new_file))

    async def clock_words(self, lane: Lane, event: Callable[[WordClock], list[TimedWord]]) -> None:
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
                f"word timing failed ({type(e).__name__}: {e}); this turn's text is recorded "
                "by sentence instead of by word"
            )
            return
        await self.add_words(lane, words)

    async def add_words(self, lane: Lane, words: list[TimedWord]) -> None:
        if lane.context_id is None:
            return
        # One call per run of words that carry their own spacing or not (CJK characters do).
        for spaced, run in itertools.groupby(words, key=lambda w: w.spaced):
            await self._host.add_word_timestamps(
                [(w.word, w.seconds) for w in run],
                context_id=lane.context_id,
                includes_inter_frame_spaces=spaced,
            )

    async def end_context(self, context_id: str) -> None:
        """End a turn's audio context; a failed turn's unplayed text is dropped first."""
        host = self._host
        if host.audio_context_available(context_id):
            if context_id in self.failed_turns:
                await host.append_to_audio_context(context_id, ForgetUnplayed(context_id))
            await host.append_to_audio_context(context_id, TTSStoppedFrame(context_id=context_id))
            await host.remove_audio_context(context_id)
