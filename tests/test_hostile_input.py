"""Hostile text through the service, in both aggregation modes: whatever an LLM (or a user
echoed by one) can produce must be logged or spoken, never hang the pipeline, never put an
invalid frame (or a stray end of sequence) on the wire, and never stop the next turn speaking.

The text reaches the service as an LLM would stream it: in small tokens, which split emoji
sequences, markup and escape sequences at arbitrary points.
"""

from __future__ import annotations

import re

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSStartedFrame,
)
from pipecat.services.tts_service import TextAggregationMode
from test_fault_support import BOUND_S, Expect, check_all, conn_with, drive, wire_text

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from tests.service_helpers import llm_turn, make_tts

SENTENCE = "This is sentence number {} of a reply that goes on for a very long time. "
BIG = "".join(SENTENCE.format(i) for i in range(700))[: 50 * 1024]
"""50 kB of prose: about 700 sentences and an hour of speech."""

HOSTILE: dict[str, str | list[str]] = {
    "empty": "",
    "whitespace": "   \n\t  \n ",
    # Tokens that are only whitespace, between words: what LLMs emit around newlines.
    "whitespace_tokens": ["Well", " ", "\n\n", "then", ".", " ", "\t", "  ", "Okay", ".", "\n"],
    "50kB": BIG,
    "emoji": "Great news 🎉🎉 see you soon 👋🏽, says the family 👨‍👩‍👧 from 🇫🇷!",
    "emoji_only": "🎉👍👨‍👩‍👧",
    "markdown": "# Plan\n\n**Bold** and _italic_ with `code`, and [a link](https://x.io).\n\n"
    "- item one\n- item two\n\n```python\nprint('hi')\n```\n",
    "ssml": '<speak>Hello <break time="500ms"/> <emphasis level="strong">world</emphasis> '
    "&amp; friends.</speak>",
    "control": "Null\x00byte, escape \x1b[31mred\x1b[0m, line\u2028separator, para\u2029end, "
    "bell\x07, override \u202eevil\u202c, zero\u200bwidth.",
    "json_lookalike": '{"text": ""} {"force": true} {"text": " ", "flush": true}"}',
    "lone_surrogate": "Half an emoji \ud83d here, and \udc00 there.",
}
NEXT = "After that, this turn speaks."
TOKEN_CHARS = 7
"""How many characters an LLM token carries here; small enough to split every construct."""


def tokens(text: str | list[str]) -> list[str]:
    """The text as LLM tokens; the 50 kB case is one huge token, the worst a client can get."""
    if isinstance(text, list):
        return text
    if len(text) > 4096:
        return [text]
    return [text[i : i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS)]


def squash(text: str) -> str:
    """Text as it may be fairly spoken: aggregation may move or drop whitespace, and a code
    point that cannot be encoded (a lone surrogate) may become U+FFFD; nothing else may go."""
    repaired = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return re.sub(r"\s+", "", repaired)


@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_text_is_spoken_or_named_and_the_next_turn_speaks(
    case: str, mode: TextAggregationMode
) -> None:
    given = HOSTILE[case]
    text = given if isinstance(given, str) else "".join(given)
    faults = Faults.fast(chunk_ms=60_000)  # an hour of speech in few frames keeps the test fast
    async with TelnyxEmulator(signal="marker", faults=faults) as emu:
        tts = make_tts(emu, text_aggregation_mode=mode)
        frames: list[Frame] = [
            LLMFullResponseStartFrame(),
            *(LLMTextFrame(t) for t in tokens(given)),
            LLMFullResponseEndFrame(),
            *llm_turn(NEXT),
        ]
        # 8 kHz: the 50 kB case is an hour of audio, 58 MB at this rate. Its 10,000 words each
        # go through pipecat's word tracker (about 9 s of CPU on an idle machine): slow, not
        # hung, so that case gets a wider bound than a hang needs.
        bound = 60.0 if case == "50kB" else BOUND_S
        out = await drive(tts, emu, frames, rate=8000, bound=bound)
        expect = Expect(
            spoken_last=NEXT,
            # A reply with nothing speakable in it is reported by pipecat as a silent context.
            errors=["completed with no audio"] if case == "emoji_only" else [],
        )
        # Tokens are checked as a whole below: aggregation may move the spaces between them.
        await check_all(out, emu, tts, [llm_turn(NEXT)[1]], expect, rate=8000)
        hostile = [c for c in emu.connections if c is not conn_with(emu, NEXT)]
        sent = "".join(wire_text(c) for c in hostile)
        if not text.strip():
            assert sent == "", f"blank text reached the wire: {sent!r}"
            started = sum(isinstance(f, TTSStartedFrame) for f in out.down)
            assert started == 1, "a blank reply must not open an audio context"
        elif squash(text) != squash(sent):
            named = "\n".join(out.warnings())
            assert squash(text) in squash(named), (
                f"the text neither reached the wire whole nor was named in a warning; "
                f"sent {sent[:200]!r}; warnings {out.warnings()}"
            )
