"""The lifecycle of one spoken turn on one socket, as plain code.

One socket carries exactly one turn. Telnyx's audio carries no context id, so this is what makes
attribution exact: every byte read from a socket belongs to the turn bound to it, and a turn that
is interrupted is simply abandoned with its socket. What is left here is deciding which frames to
send for the text that arrives, and when the server has finished, under both readings of the
protocol (``shared/telnyx-tts-protocol.md`` §4):

- observed: synthesis only on ``flush`` or end of sequence; ``isFinal`` only after end of
  sequence; then the server closes.
- documented: synthesis also at sentence ends; ``isFinal`` after every synthesis; the socket
  stays open until end of sequence.

Both readings agree that the server closes after answering end of sequence, so a turn is complete
when that close arrives, or when a final frame that followed end of sequence is not followed by
more audio within a short grace (a server that keeps the socket open). A final frame before end of
sequence never ends a turn: under the documented reading it only closes one sentence. Nor does the
grace while text that was sent has not been echoed back by a text-bearing frame yet: under the
documented reading a final can close sentence 1 while sentence 2 is still being synthesized, and
its audio may come after a long pause.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from loguru import logger

from pipecat_telnyx_tts.clauses import first_clause_end, may_end_clause
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ClientMessage,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    ServerMessage,
    TextMessage,
)

# Where a sentence ends inside streamed text: closing punctuation (and any closing quotes or
# brackets) followed by whitespace, or a CJK full stop, which needs no space after it.
_CLOSERS = "\"')\\]\u201d\u2019"
_BOUNDARY = re.compile(rf"[.!?\u2026][{_CLOSERS}]*\s+|[\u3002\uff01\uff1f][{_CLOSERS}]*\s*")
_ENDS_SENTENCE = re.compile(rf"[.!?\u2026\u3002\uff01\uff1f][{_CLOSERS}]*$")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(text: str) -> str:
    """Join surrogate pairs split across tokens and replace lone surrogates.

    A lone surrogate cannot be encoded as UTF-8, and sending one kills the socket (and the turn).
    """
    if not _LONE_SURROGATE.search(text):
        return text
    fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if "\ufffd" in fixed:
        logger.warning(f"unpaired surrogate replaced in text for Telnyx: {text!r}")
    return fixed


class Phase(enum.Enum):
    """Where a turn is in its life."""

    SPEAKING = "speaking"
    """Text may still come."""
    ENDING = "ending"
    """End of sequence sent; waiting for the server to finish."""
    DONE = "done"
    """Finished, failed or abandoned: nothing more is sent or delivered."""


@dataclass(frozen=True)
class Audio:
    """Encoded audio to decode and deliver, in arrival order."""

    data: bytes


@dataclass(frozen=True)
class Finished:
    """The server has delivered everything for the turn."""


@dataclass(frozen=True)
class Failed:
    """The turn ended because of an error; ``reason`` is for a person."""

    reason: str


@dataclass(frozen=True)
class Announced:
    """A text-bearing frame: the server names the text of a synthesis it is sending.

    ``carries_audio`` says the frame holds the synthesis's first audio (concatenated providers),
    which marks exactly where that synthesis starts; a streamed provider's ``audio: null`` frame
    lies somewhere among the synthesis's own audio frames.
    """

    text: str
    carries_audio: bool


@dataclass(frozen=True)
class SynthesisFinal:
    """A final frame: the synthesis announced last has sent all its audio."""


@dataclass(frozen=True)
class FirstAudioLatency:
    """The server's own ``timeToFirstAudioFrameMs`` for a synthesis."""

    milliseconds: float
    cached: bool


Event = Audio | Announced | SynthesisFinal | Finished | Failed | FirstAudioLatency


class Turn:
    """Decides what to send for a turn's text and what the server's frames mean for it.

    ``token_mode`` says whether text arrives as LLM tokens (sentence ends must be found here)
    or as whole sentences (each one is flushed as it comes). ``first_clause`` flushes the turn's
    first clause in token mode (see :mod:`~pipecat_telnyx_tts.clauses`); in sentence mode the
    aggregator ahead of this cuts it, and each text is flushed as it comes all the same.
    """

    def __init__(self, *, token_mode: bool, first_clause: bool = False) -> None:
        self._token_mode = token_mode
        self._clause_due = token_mode and first_clause
        """The first clause is still to be flushed: no flush has gone out yet."""
        self.phase = Phase.SPEAKING
        self._held: str | None = None
        self._sent_text = False
        self._end_sent = False
        self.awaiting_server = False
        """True while a synthesis was asked for and the server has not answered since."""
        self.final_after_end = False
        """True once a final frame arrived after end of sequence (see ``Turn`` docstring)."""
        self._sent = ""
        self._echoed_chars = 0

    @property
    def end_sent(self) -> bool:
        """Whether end of sequence went out: no more text will come for this turn."""
        return self._end_sent

    @property
    def sent_text(self) -> bool:
        """Whether any text went out, so a force has something to stop."""
        return self._sent_text

    def text(self, text: str) -> list[ClientMessage]:
        """The messages for newly arrived text.

        Sentences are flushed as soon as they are known to be complete, which is what makes the
        first audio come after the first sentence under the observed reading as well. In token
        mode text that ends in sentence punctuation is held until the next token shows whether
        the sentence really ended there ("3." in "3.5" did not), costing one token of delay only
        at sentence ends; a sentence end inside a token is split off and flushed at once. The
        first clause, when asked for and complete before the first sentence, is flushed the same
        way, and text that may end one is held for a token like a sentence end.
        """
        if self.phase is not Phase.SPEAKING or not text:
            return []
        if not self._token_mode:
            return [self._text_message(_valid_text(text), flush=True)]
        pending = (self._held or "") + text
        self._held = None
        if "\ud800" <= pending[-1] <= "\udbff":
            # The first half of a pair split across tokens: its second half comes next.
            self._held = pending
            return []
        pending = _valid_text(pending)
        out: list[ClientMessage] = []
        if self._clause_due:
            clause = self._first_clause(pending)
            if clause is not None:
                out.append(self._text_message(pending[:clause], flush=True))
                pending = pending[clause:]
        boundaries = list(_BOUNDARY.finditer(pending))
        if boundaries:
            last = boundaries[-1]
            out.append(self._text_message(pending[: last.end()], flush=True))
            pending = pending[last.end() :]
        if _ENDS_SENTENCE.search(pending) or (self._clause_due and may_end_clause(pending)):
            self._held = pending
        elif pending:
            out.append(self._text_message(pending, flush=False))
        return out

    def end(self) -> list[ClientMessage]:
        """The messages that finish the turn: any held text, flushed, then end of sequence."""
        if self.phase is not Phase.SPEAKING:
            return []
        out: list[ClientMessage] = []
        if self._held is not None:
            out.append(self._text_message(_valid_text(self._held), flush=True))
            self._held = None
        out.append(EndMessage())
        self._end_sent = True
        self.awaiting_server = True
        self.phase = Phase.ENDING
        return out

    @property
    def unanswered_text(self) -> str:
        """Sent text whose synthesis the server has not announced yet (empty when none).

        Text-bearing frames echo what each synthesis speaks; comparing letters and digits only
        keeps the markdown and spacing the server strips from mattering.
        """
        seen = 0
        for i, c in enumerate(self._sent):
            if c.isalnum():
                if seen == self._echoed_chars:
                    return self._sent[i:].strip()
                seen += 1
        return ""

    def interrupt(self) -> list[ClientMessage]:
        """Abandon the turn; a force goes out only if the server has anything to stop."""
        was_live = self.phase is not Phase.DONE and self._sent_text
        self.phase = Phase.DONE
        self._held = None
        return [ForceMessage()] if was_live else []

    def on_message(self, message: ServerMessage) -> list[Event]:
        """What a server frame means for the turn."""
        if self.phase is Phase.DONE:
            return []
        self.awaiting_server = self.phase is Phase.ENDING
        match message:
            case ErrorMessage(error=error):
                self.phase = Phase.DONE
                return [Failed(f"Telnyx reported an error: {error}")]
            case AudioMessage(audio=audio, text=text, cached=cached, time_to_first_audio_ms=ttfa):
                events: list[Event] = []
                if text:
                    self._echoed_chars += _letters(text)
                    events.append(Announced(text, carries_audio=bool(audio)))
                if ttfa is not None:
                    events.append(FirstAudioLatency(ttfa, cached))
                if audio:
                    self.final_after_end = False
                    events.append(Audio(audio))
                return events
            case FinalMessage(audio=audio):
                events = [Audio(audio)] if audio else []
                events.append(SynthesisFinal())
                if self._end_sent:
                    self.final_after_end = True
                return events
        return []

    def on_quiet(self, seconds: float, *, grace: float, timeout: float) -> list[Event]:
        """The server has sent nothing for ``seconds``.

        After a final that followed end of sequence, and with every sentence announced, ``grace``
        of quiet means the server kept the socket open after finishing. While audio is owed,
        ``timeout`` of quiet means it is not coming; the error names what was not heard.
        """
        if self.phase is Phase.DONE:
            return []
        ended = self.phase is Phase.ENDING and self.final_after_end
        if ended and seconds >= grace and not self.unanswered_text:
            self.phase = Phase.DONE
            return [Finished()]
        if self.awaiting_server and seconds >= timeout:
            self.phase = Phase.DONE
            return [Failed(f"Telnyx sent nothing for {seconds:.0f} s while audio was due")]
        return []

    def fail(self, reason: str) -> list[Event]:
        """End the turn because of a failure found outside the frames (a send, the decoder)."""
        if self.phase is Phase.DONE:
            return []
        self.phase = Phase.DONE
        return [Failed(reason)]

    def on_closed(self, *, clean: bool, detail: str) -> list[Event]:
        """The socket closed. After end of sequence a clean close is the normal end of a turn."""
        if self.phase is Phase.DONE:
            return []
        ending = self.phase is Phase.ENDING
        self.phase = Phase.DONE
        if ending and clean and self.final_after_end:
            return [Finished()]
        if ending and clean:
            # Under both readings a final frame precedes the close that answers end of
            # sequence; a close without one (an idle timeout, say) cut the audio short.
            return [Failed(f"Telnyx closed the socket before the turn's final frame ({detail})")]
        return [Failed(f"the Telnyx connection ended before the turn finished ({detail})")]

    def _first_clause(self, pending: str) -> int | None:
        """Length of the part of ``pending`` that completes the turn's first clause, if it does
        so before the first sentence ends. Until the first flush, all that was sent is that
        clause's beginning, and it counts towards its words."""
        end = first_clause_end(self._sent + pending, start=len(self._sent))
        if end is None:
            return None
        end -= len(self._sent)
        sentence = _BOUNDARY.search(pending)
        return end if sentence is None or end <= sentence.start() else None

    def _text_message(self, text: str, *, flush: bool) -> TextMessage:
        self._sent_text = True
        self._sent += text
        self.awaiting_server = self.awaiting_server or flush
        self._clause_due = self._clause_due and not flush
        return TextMessage(text, flush=flush)


def _letters(text: str) -> int:
    return sum(c.isalnum() for c in text)
