"""After a turn fails mid-reply, the assistant context records the words that played, no more,
and the ErrorFrame names the text that did not play: every failure path, in real pipelines."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Sequence

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSTextFrame,
)

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from tests.service_helpers import Until, audio_seconds, errors, gated, llm_turn, make_tts, run

REPLY = (
    "The first sentence has a few words in it. ",
    "The second sentence is where the trouble starts for this reply. ",
    "A third one follows that nobody will hear. ",
    "And a last one.",
)
WORDS = "".join(REPLY).split()
FILLER = "".join(f" Item {i} is listed." for i in range(4000))

FAULTS = {
    "error frame": {"error_after_chunks": 3},
    "dropped connection": {"drop_after_chunks": 3},
    "closed socket": {"close_after_chunks": 3},
    "silence": {"stall_after_chunks": 3},
}


def heard(emu: TelnyxEmulator, delivered: float) -> int:
    """Words of the reply whose audio starts within the ``delivered`` seconds."""
    count, offset = 0, 0.0
    for synthesis in (s for c in emu.connections for s in c.syntheses):
        count += sum(offset + w.start < delivered for w in synthesis.words)
        offset += synthesis.audio_seconds
    return count


def check_context(
    emu: TelnyxEmulator, down: Sequence[Frame], up: Sequence[Frame], words: list[str] = WORDS
) -> list[str]:
    """The context holds a prefix of the reply's ``words``, within two words of what was heard,
    and one ErrorFrame names the first word after it as not played; returns the words
    recorded."""
    recorded = [f.text for f in down if isinstance(f, TTSTextFrame)]
    [error] = [e for e in errors(up) if "not played" in e.error]
    assert recorded == words[: len(recorded)], "the context holds a prefix of the reply"
    delivered = audio_seconds(down)
    assert abs(len(recorded) - heard(emu, delivered)) <= 2, (recorded, delivered)
    unplayed = error.error.split("not played: [", 1)[1].rstrip("]").split()
    assert unplayed[0] == words[len(recorded)], (recorded, unplayed)
    return recorded


@pytest.mark.parametrize("fault", FAULTS)
async def test_a_failed_turn_records_what_played_and_names_the_rest(fault, monkeypatch):
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 1.0)
    faults = Faults.fast(pace=4.0, chunk_ms=200, fault_count=1, **FAULTS[fault])
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn(*REPLY))
    recorded = check_context(emu, down, up)
    assert 0 < len(recorded) < len(REPLY[0].split()), "the fault cut the first sentence"


async def test_a_turn_that_fails_with_its_audio_far_ahead_of_playback_records_what_played():
    # Audio at four times real time, then the connection drops: words are handed to pipecat only
    # as their playback nears, so at the failure most words of the audio that came still wait.
    # No more audio will come, so they are due at once, or the context would lose what played.
    faults = Faults.fast(pace=4.0, chunk_ms=200, fault_count=1, drop_after_chunks=20)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn(*REPLY))
    recorded = check_context(emu, down, up)
    assert len(recorded) > len(REPLY[0].split()), "the audio that came ran past a sentence"


async def test_a_send_that_stalls_records_what_played_and_names_the_rest(monkeypatch):
    """The server stops reading after the first sentence's third chunk, so the reply's later
    text backs up until a send blocks; the send timeout aborts the socket."""
    monkeypatch.setattr(TelnyxTTSService, "SEND_TIMEOUT_S", 0.5)
    # Only the stalled send may end the turn, not silence.
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 30.0)
    faults = Faults.fast(pace=4.0, chunk_ms=200, fault_count=1, stop_reading_after_chunks=3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)

        def stopped_reading() -> bool:
            return any(s.chunks_sent >= 3 for c in emu.connections for s in c.syntheses)

        def small_send_buffer() -> None:
            # Loopback acknowledges whatever is sent, so the kernel lets a client's send buffer
            # grow to megabytes; over a path that stopped taking data it would not grow.
            for lane in tts._sockets.turns.values():
                sock = lane._ws.transport.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame(REPLY[0]),
            LLMTextFrame(REPLY[1]),
            Until(stopped_reading, then=small_send_buffer),
            LLMTextFrame(REPLY[2]),
            LLMTextFrame(REPLY[3]),
            # More than the path holds while the server reads nothing (some 70 kB), in short
            # sentences: pipecat lines up each sentence's words with its text by a diff that
            # costs seconds on a sentence of tens of kilobytes.
            *(LLMTextFrame(FILLER[i : i + 50]) for i in range(0, len(FILLER), 50)),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(gated(tts), frames)
    [error] = [e for e in errors(up) if "not played" in e.error]
    assert "stalled" in error.error
    recorded = check_context(emu, down, up, words=[*WORDS, *FILLER.split()])
    assert recorded, "the first sentence's audio played"


async def test_audio_that_stops_decoding_records_what_played_and_names_the_rest(monkeypatch):
    """MP3 audio that turns to junk after three chunks that played: more bytes in a row than
    the decoder reads before it gives up (a little junk it skips, as a short gap)."""
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 1.0)
    junk = json.dumps({"audio": base64.b64encode(bytes(40_000)).decode(), "text": None})
    faults = Faults.fast(pace=4.0, chunk_ms=200, inject_frames=[junk] * 3, inject_after_chunks=3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu, audio_format="mp3")
        down, up = await run(tts, llm_turn(*REPLY))
    [error] = [e for e in errors(up) if "not played" in e.error]
    assert "cannot be decoded" in error.error
    recorded = check_context(emu, down, up)
    assert 0 < len(recorded) < len(REPLY[0].split()), "the bad chunk cut the first sentence"


async def test_a_failed_turn_forgets_only_its_own_text_not_the_next_replys(monkeypatch):
    """The next reply's text is already with pipecat when the failed turn's marker plays: it is
    recorded in full."""
    monkeypatch.setattr(TelnyxTTSService, "RESPONSE_TIMEOUT_S", 1.0)
    faults = Faults.fast(pace=4.0, chunk_ms=200, fault_count=1, error_after_chunks=3)
    nxt = ("Here is the next reply. ", "It plays in full.")
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, [*llm_turn(*REPLY), *llm_turn(*nxt)])
    recorded = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert len([e for e in errors(up) if "not played" in e.error]) == 1
    assert recorded[-len("".join(nxt).split()) :] == "".join(nxt).split(), recorded
