"""What ``flush_first_clause`` buys: time to first audio with and without it, per token rate.

From the repository root::

    .venv/bin/python -m benchmarks.first_clause            # 24 turns per cell, about 6 minutes
    .venv/bin/python -m benchmarks.first_clause --turns 4  # a smoke run

TTFA of a turn runs from its first ``LLMTextFrame`` entering the TTS's ``process_frame`` to the
first ``TTSAudioRawFrame`` the TTS pushes (as in ``latency.py``), but here the tokens arrive at an
LLM's pace, 10, 30 or 60 ms apart, so waiting for the rest of the first sentence is inside the
measurement: that wait is what the option shortens. The emulator runs in its own process with the
timing a client meets live (``Faults()``: first audio 250 ms after a flush, audio released at 2.4x
real time), so a split sentence also pays a second first-audio delay for its second part.

That second delay is the cost, so each turn is also played out on a simulated real-time clock
from its first audio: *stall* is the total time playback would have waited for audio after it
started. Most replies' first sentence has a clause boundary after 4 to 9 words (one of them a short
clause before a long rest, the case that can stall); the others have none the option takes (a
one-word opener, a time, a number), and their ratio shows that the option costs them nothing.
Turns with and without the option alternate, and the three token rates run at once (two pipelines
each), which keeps a run to minutes; the client does little work per turn, and both arms of a
ratio share whatever contention there is.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass
from statistics import median

from loguru import logger
from pipecat.frames.frames import (
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.services.tts_service import TextAggregationMode

from benchmarks.emulator_host import EmulatorProcess
from benchmarks.latency import API_KEY, VOICE
from benchmarks.pipeline import Seen, Session
from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults

SAMPLE_RATE = 16000
RATES_MS = (10, 30, 60)
MODES = (TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN)

REPLIES: tuple[tuple[str, bool], ...] = (
    ("If you want to reschedule, I can move your appointment to Thursday. Does that work?", True),
    ("I checked your account, and the refund went out on Monday. It takes five days.", True),
    ("Sure, I can help you with that today. What is your account number?", False),
    ("Your order shipped this morning from our Denver warehouse; it arrives by Friday.", True),
    ("Here is what I found for next week: two openings on Tuesday afternoon. Want one?", True),
    ("Your appointment is confirmed for Thursday at 3:30 in the afternoon. Anything else?", False),
    ("The earliest slot I can offer you is Wednesday \u2014 at nine in the morning. Okay?", True),
    ("Before we change anything on the plan, let me confirm your address. Is it Elm Street?", True),
    ("I have sent the new password to the email address on file. Please check your inbox.", False),
    ("Since your warranty covers water damage, the repair costs nothing. Shall I book it?", True),
    # A short clause before a long rest: at 60 ms/token the rest takes longer to generate than
    # the clause takes to speak, which is where a split first sentence can stall.
    ("Yes, I see it, and I will update the address on your order and email you a receipt.", True),
    ("The total for the two items comes to 1,049 dollars and 99 cents. Shall I charge it?", False),
)
"""Reply text, and whether its first sentence has a clause boundary the option flushes at."""


def llm_tokens(text: str) -> list[str]:
    """Words with their leading space and punctuation on its own, roughly as an LLM streams."""
    return re.findall(r"\s*\w+|\s*[^\w\s]", text)


@dataclass(frozen=True)
class Measured:
    """One turn; durations in milliseconds."""

    mode: str
    rate_ms: int
    option: bool
    has_clause: bool
    ttfa_ms: float
    stall_ms: float


def stall_ms(audio: list[Seen]) -> float:
    """How long real-time playback, started at the first audio frame, would have waited."""
    if not audio:
        return 0.0
    waited = 0.0
    playing_until = audio[0].t
    for frame in audio:
        if frame.t > playing_until:
            waited += frame.t - playing_until
            playing_until = frame.t
        playing_until += frame.audio_bytes / 2 / SAMPLE_RATE
    return 1000 * waited


async def speak(session: Session, text: str, rate_ms: int) -> tuple[float, float]:
    """One reply at ``rate_ms`` per token; TTFA and stall once its end has left the TTS."""
    entered, seen = len(session.entered.seen), len(session.tail.seen)
    ends = session.tail.count("LLMFullResponseEndFrame")
    await session.send([LLMFullResponseStartFrame()])
    start = time.perf_counter()
    for i, token in enumerate(llm_tokens(text)):
        # On a fixed schedule, so that late wake-ups do not add up over a reply.
        await asyncio.sleep(max(0.0, start + i * rate_ms / 1000 - time.perf_counter()))
        await session.send([LLMTextFrame(token)])
    await session.send([LLMFullResponseEndFrame()])
    await session.tail.wait_count("LLMFullResponseEndFrame", ends, timeout=30)
    first_in = next(x.t for x in session.entered.seen[entered:] if x.kind == "LLMTextFrame")
    audio = [x for x in session.tail.seen[seen:] if x.kind == "audio"]
    if not audio:
        raise RuntimeError(f"no audio for {text!r}")
    return 1000 * (audio[0].t - first_in), stall_ms(audio)


def _service(url: str, mode: TextAggregationMode, option: bool) -> TelnyxTTSService:
    # The emulator's cache would serve a repeated reply at once; Telnyx's is off the same way.
    settings = TelnyxTTSService.Settings(voice=VOICE, disable_cache=True)
    return TelnyxTTSService(
        api_key=API_KEY,
        url=url,
        settings=settings,
        text_aggregation_mode=mode,
        flush_first_clause=option,
    )


async def _cell(url: str, mode: TextAggregationMode, rate_ms: int, turns: int) -> list[Measured]:
    """``turns`` replies with the option and as many without, alternating."""
    out: list[Measured] = []
    async with (
        Session(_service(url, mode, False), sample_rate=SAMPLE_RATE) as without,
        Session(_service(url, mode, True), sample_rate=SAMPLE_RATE) as with_option,
    ):
        for i in range(turns):
            text, has_clause = REPLIES[i % len(REPLIES)]
            # Which arm goes first alternates too, so neither always follows the other.
            arms = [(False, without), (True, with_option)]
            for option, session in arms if i % 2 == 0 else arms[::-1]:
                ttfa, stall = await speak(session, text, rate_ms)
                out.append(Measured(mode.value, rate_ms, option, has_clause, ttfa, stall))
                await asyncio.sleep(0.2)
        errors = without.errors() + with_option.errors()
    if errors:
        raise RuntimeError(f"{mode.value} at {rate_ms} ms/token: {errors}")
    return out


async def run(turns: int) -> list[Measured]:
    """Every cell against one emulator process with live-like timing."""
    results: list[Measured] = []
    async with EmulatorProcess(signal="marker", faults=Faults()) as emu:
        for mode in MODES:
            cells = [_cell(emu.url, mode, rate, turns) for rate in RATES_MS]
            for cell in await asyncio.gather(*cells):
                results += cell
            print(f"  {mode.value} mode done", file=sys.stderr, flush=True)
    return results


def table(results: list[Measured]) -> str:
    """Medians per cell, and without/with ratios (above 1: the option is faster)."""

    def ms(rows: list[Measured], option: bool, *, clause: bool | None = None) -> float:
        values = [
            r.ttfa_ms
            for r in rows
            if r.option is option and (clause is None or r.has_clause is clause)
        ]
        return median(values) if values else float("nan")

    def ratio(rows: list[Measured], *, clause: bool | None = None) -> str:
        return f"{ms(rows, False, clause=clause) / ms(rows, True, clause=clause):.2f}"

    lines = [
        "| mode | ms/token | turns | TTFA without | TTFA with | ratio | ratio, clause "
        "| ratio, no clause | stall without | stall with |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in MODES:
        for rate in RATES_MS:
            rows = [r for r in results if r.mode == mode.value and r.rate_ms == rate]
            stall_off = [r.stall_ms for r in rows if not r.option]
            stall_on = [r.stall_ms for r in rows if r.option]
            lines.append(
                f"| {mode.value} | {rate} | {len(rows) // 2} | {ms(rows, False):.0f} "
                f"| {ms(rows, True):.0f} "
                f"| {ratio(rows)} | {ratio(rows, clause=True)} | {ratio(rows, clause=False)} "
                f"| {_stall(stall_off)} | {_stall(stall_on)} |"
            )
    lines.append("")
    lines.append(
        "TTFA: median ms, first token into the TTS to first audio out. Ratio: without / with "
        "(medians). Stall: median / max ms that real-time playback would have waited for audio."
    )
    return "\n".join(lines)


def _stall(values: list[float]) -> str:
    return f"{median(values):.0f} / {max(values):.0f}"


def main(argv: list[str] | None = None) -> int:
    """Run every cell once and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_clause", description=__doc__)
    parser.add_argument("--turns", type=int, default=24, help="turns per cell and arm")
    ns = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    started = time.perf_counter()
    results = asyncio.run(run(ns.turns))
    print(table(results))
    print(f"\n{len(results)} turns in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
