"""Where the first clause of a reply ends, and a sentence aggregator that releases it early.

Telnyx synthesizes at a flush (only then, under the observed reading), so the first audio of a
reply waits for its whole first sentence. Flushing at the first clause boundary instead (a comma,
semicolon, colon or dash) starts the audio sooner; the rest of the reply is still flushed at
sentence ends, so only the first sentence is ever split. :class:`~pipecat_telnyx_tts.turn.Turn`
applies :func:`first_clause_end` to LLM tokens; :class:`FirstClauseAggregator` applies it ahead of
``run_tts`` when pipecat aggregates sentences.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

MIN_CLAUSE_WORDS = 4
"""Words a first clause needs before it is flushed on its own.

A split sentence plays without a gap as long as its first part lasts longer than the LLM takes
to write the rest (both parts then wait the same first-audio delay). Shorter openers ("Sure,",
"Of course,", "Well, actually,") last 0.3 to 0.9 s, less than the 10 to 15 tokens of a typical
rest take at 60 ms a token, and they save at most three tokens of waiting; they are discourse
markers, too, spoken with the pitch of a finished utterance. Four words last about 1.2 s or more,
some 20 tokens at 60 ms, and are usually a real clause.
"""

_CLOSERS = "\"')\\]\u201d\u2019"
_CLAUSE = re.compile(
    # A comma, semicolon or colon (and any closing quotes or brackets) followed by a space: this
    # keeps "1,000" and "3:30" whole. Not after a full stop, so "e.g.," and "etc.," stay with
    # what follows them.
    rf"(?:(?<!\.)[,;:][{_CLOSERS}]*\s+"
    # An em or en dash, spaced or not; a hyphen or double hyphen after a space (not a list
    # bullet at the start of a line) and before one; "--" after a word.
    r"|[\u2014\u2013]\s*|(?<= )--?\s+|(?<=\w)--)"
    # Only once the next character is known, and not a digit: "10\u201320", "10 - 20" and
    # "1, 2 and 3" are not split.
    r"(?=[^\s\d])"
)
_REACH = 16
"""How far before the character that confirms a boundary the boundary may start: its punctuation,
closing quotes and spaces. Longer runs are not prose; bounding it keeps a long reply linear."""
_MAY_END_CLAUSE = re.compile(rf"(?:[,;:][{_CLOSERS}]*|[\u2014\u2013]|-)\s*$")
"""Text that may end in a clause boundary the next character confirms or rules out."""


def first_clause_end(text: str, start: int = 0) -> int | None:
    """Index just past the first clause boundary in ``text`` that ends at least
    :data:`MIN_CLAUSE_WORDS` words, counted from the start of ``text``; None if there is none yet.

    Boundaries are searched from ``start`` on; the text before it still counts for the words and
    for what comes before a boundary. The index includes the space after the boundary, which
    therefore goes with the clause.
    """
    for match in _CLAUSE.finditer(text, start):
        if len(text[: match.start()].split()) >= MIN_CLAUSE_WORDS:
            return match.end()
    return None


def may_end_clause(text: str) -> bool:
    """Whether ``text`` ends where the next character may confirm a clause boundary."""
    return _MAY_END_CLAUSE.search(text) is not None


class FirstClauseAggregator(SimpleTextAggregator):
    """Pipecat's sentence aggregator, except that each reply's first clause comes out on its own.

    Until the first clause or sentence of a reply is out, text is taken a character at a time,
    as the parent does, with a clause check after each; from then on the parent does everything,
    so every later sentence is cut exactly where pipecat's own aggregator would cut it. The end of
    a reply (``flush``), an interruption and a reset start the next reply afresh.

    Usable with any pipecat TTS through ``LLMTextProcessor(text_aggregator=...)`` as well;
    :class:`~pipecat_telnyx_tts.TelnyxTTSService` installs it itself for ``flush_first_clause``.
    """

    def __init__(self, *, language: str | None = None) -> None:
        """Aggregate sentences in ``language`` (None: pipecat's default tokenizer language)."""
        super().__init__(aggregation_type=TextType.SENTENCE, language=language)
        self._clause_due = True

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Yield the reply's first clause as soon as it is complete, then whole sentences."""
        for i, char in enumerate(text):
            if not self._clause_due:
                async for later in super().aggregate(text[i:]):
                    yield later
                return
            self._text += char
            sentence = await self._check_sentence_with_lookahead(char)
            if sentence:
                self._clause_due = False
                yield sentence
                continue
            # A boundary is confirmed by the first character after it, which is never a space;
            # one confirmed earlier was found then.
            reach = max(0, len(self._text) - _REACH)
            end = None if char.isspace() else first_clause_end(self._text, start=reach)
            if end is not None:
                self._clause_due = False
                clause, rest = self._text[:end], self._text[end:]
                # Start over from the text after the clause, as a fresh sentence aggregator
                # would: no lookahead state of a candidate inside the clause survives it.
                await super().reset()
                yield Aggregation(text=clause.strip(" "), type=TextType.SENTENCE)
                async for later in super().aggregate(rest):
                    yield later

    async def flush(self) -> Aggregation | None:
        """The rest of the reply; the next reply gets its own first clause."""
        self._clause_due = True
        return await super().flush()

    async def handle_interruption(self) -> None:
        """Drop the interrupted reply; the next one gets its own first clause."""
        self._clause_due = True
        await super().handle_interruption()

    async def reset(self) -> None:
        """Empty, as at the start of a reply."""
        self._clause_due = True
        await super().reset()
