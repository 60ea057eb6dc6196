"""When text becomes a synthesis, per lifecycle reading: the per-socket rules, without I/O.

The server feeds each parsed client frame in and runs the actions that come out, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat_telnyx_tts.emulator.config import Lifecycle

SENTENCE_ENDS = frozenset(".?!")


@dataclass(frozen=True)
class Synthesize:
    """Synthesize ``text`` after whatever is queued; ``final_after`` adds a final frame."""

    text: str
    final_after: bool


@dataclass(frozen=True)
class Finish:
    """End of sequence, after the queued syntheses: maybe a final frame, then close 1000."""

    send_final: bool


Action = Synthesize | Finish


class TextSession:
    """The server-side text buffer of one socket."""

    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle
        self.buffer = ""
        self.ended = False

    def on_text(self, text: str, flush: bool) -> list[Action]:
        """Buffer text; synthesize at flush, and at sentence ends under the documented reading."""
        if self.ended:
            # The server is tearing the socket down: later text is never synthesized.
            return []
        self.buffer += text
        if flush:
            return self._take(len(self.buffer))
        if self.lifecycle == Lifecycle.DOCUMENTED:
            end = last_sentence_end(self.buffer)
            if end is not None:
                return self._take(end + 1)
        return []

    def on_end(self) -> list[Action]:
        """``{"text": ""}``: synthesize the rest, then a final frame and the close."""
        if self.ended:
            return []
        self.ended = True
        actions = self._take(len(self.buffer)) if self.buffer else []
        # Under the documented reading the last synthesis already ends with a final frame.
        return [*actions, Finish(send_final=not actions or self.lifecycle == Lifecycle.OBSERVED)]

    def on_force(self) -> None:
        """Forget buffered text; the socket and its settings stay."""
        self.buffer = ""

    def _take(self, length: int) -> list[Action]:
        text, rest = self.buffer[:length], self.buffer[length:]
        # Whitespace after a sentence end separates sentences and belongs to neither; dropping
        # it keeps a whitespace-only remainder from becoming a synthesis of its own at the end.
        self.buffer = rest.lstrip()
        return [Synthesize(text, final_after=self.lifecycle == Lifecycle.DOCUMENTED)]


def last_sentence_end(text: str) -> int | None:
    """Index of the last ``.``/``?``/``!`` followed by whitespace or the end of the text."""
    for i in range(len(text) - 1, -1, -1):
        if text[i] in SENTENCE_ENDS and (i + 1 == len(text) or text[i + 1].isspace()):
            return i
    return None
