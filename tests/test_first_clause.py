"""``flush_first_clause``: the first flush of a reply ends at its first clause, in both modes."""

from __future__ import annotations

import pytest
from pipecat.services.tts_service import TextAggregationMode
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from pipecat_telnyx_tts.clauses import FirstClauseAggregator
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from tests.service_helpers import errors, llm_turn, make_tts, run, wire_texts

REPLY = "If you want to reschedule, I can move it to Thursday. Does that work, or not? Yes."
MODES = [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN]


def llm_tokens(text: str) -> list[str]:
    """Pieces the way an LLM streams them: words with their leading space, punctuation apart."""
    pieces: list[str] = []
    for word in text.split(" "):
        core = word.rstrip(",.?")
        pieces += [(" " if pieces else "") + core, *word[len(core) :]]
    return pieces


async def aggregate(aggregator: SimpleTextAggregator, chunks: list[str]) -> list[str]:
    out = [a.text for chunk in chunks async for a in aggregator.aggregate(chunk)]
    rest = await aggregator.flush()
    return [*out, rest.text] if rest else out


# ----------------------------------------------------------------------------- the aggregator


@pytest.mark.parametrize("chunks", [[REPLY], list(REPLY), llm_tokens(REPLY)])
async def test_the_aggregator_yields_the_first_clause_then_what_pipecat_yields(chunks):
    pipecat = await aggregate(SimpleTextAggregator(), chunks)
    ours = await aggregate(FirstClauseAggregator(), chunks)
    assert pipecat[0] == "If you want to reschedule, I can move it to Thursday."
    assert ours == ["If you want to reschedule,", "I can move it to Thursday.", *pipecat[1:]]


@pytest.mark.parametrize(
    "reply",
    [
        "Sure, I can do that for you. Anything else?",
        "Hello there. If you want to reschedule, I can move it.",
        "Your total is 1,000 dollars. Okay?",
    ],
)
async def test_without_an_early_clause_the_aggregator_is_pipecat_s(reply):
    pipecat = await aggregate(SimpleTextAggregator(), list(reply))
    assert await aggregate(FirstClauseAggregator(), list(reply)) == pipecat


async def test_a_comma_inside_a_number_is_no_clause_boundary():
    reply = "It costs about 1,000 dollars a month, all in. Okay?"
    ours = await aggregate(FirstClauseAggregator(), list(reply))
    assert ours == ["It costs about 1,000 dollars a month,", "all in.", "Okay?"]


async def test_every_reply_gets_its_own_first_clause():
    aggregator = FirstClauseAggregator()
    first = await aggregate(aggregator, [REPLY])
    assert await aggregate(aggregator, [REPLY]) == first
    # An interruption mid-reply starts the next one afresh too.
    [_ async for _ in aggregator.aggregate("One two three four five")]
    await aggregator.handle_interruption()
    assert await aggregate(aggregator, [REPLY]) == first


# ----------------------------------------------------------------------------- on the wire


def first_flush(emu: TelnyxEmulator) -> str:
    """What the client sent on the turn's socket up to and including its first flush."""
    [conn] = [c for c in emu.connections if wire_texts(emu.received_messages(c.index))]
    text = ""
    for piece, flush in wire_texts(emu.received_messages(conn.index)):
        text += piece
        if flush:
            return text
    raise AssertionError("nothing was flushed")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("option", [True, False])
async def test_the_first_flush_ends_at_the_clause_only_with_the_option(mode, option):
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, text_aggregation_mode=mode, flush_first_clause=option)
        _, up = await run(tts, llm_turn(*llm_tokens(REPLY)))
        assert not errors(up)
        expected = "If you want to reschedule," if option else REPLY.split(" Does")[0]
        assert first_flush(emu).strip() == expected
        spoken = " ".join(s.text.strip() for c in emu.connections for s in c.syntheses)
        assert spoken.split() == REPLY.split()
