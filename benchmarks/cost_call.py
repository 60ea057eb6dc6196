"""One call of a call shape, in a child process, with the TTS service from a chosen source tree.

Run by ``benchmarks.connection_cost``, one process per call, so that "before" (the service of an
older commit, unpacked elsewhere) and "after" (this checkout) run side by side with the same
harness: ``--source`` goes first on ``sys.path``, before anything imports ``pipecat_telnyx_tts``,
which is why this module imports nothing of it at the top.

The call runs as a bot runs it: a pipeline ``[head, tts, tail, playout]``. Each user turn is
``VADUserStartedSpeakingFrame`` and ``UserStartedSpeakingFrame``, the user's speech time,
their stopped counterparts, then the LLM: ``LLMFullResponseStartFrame``, the first token after
the LLM's first-token delay, the rest streamed, ``LLMFullResponseEndFrame``. ``playout`` stands in
for the output transport: it plays the audio in real time, and tells the TTS when the bot starts
and stops speaking (``BotStartedSpeakingFrame`` and ``BotStoppedSpeakingFrame`` upstream), so
the bot's speaking time is the length of its reply, as on a call, not the time the faster than
real-time stream took. The next turn starts when the bot has stopped.

Prints one JSON object: the call's span and, per turn, when its first text entered the TTS and
its first audio left it, with the socket (marker signal) that carried it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

VOICE = "Telnyx.NaturalHD.astra"
API_KEY = "benchmark-key"
SAMPLE_RATE = 16000
_WORDS = ("and", "then", "the", "order", "ships", "on", "monday", "morning", "as", "planned")


class Playout(FrameProcessor):
    """The output transport's clock: audio plays at real time from when it arrives."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(enable_direct_mode=True)
        self._rate = sample_rate
        self._ends_at = 0.0
        self._speaking = False
        self._timer: asyncio.Task[None] | None = None
        self.stops = 0
        self._stopped = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Schedule each audio frame's playout; pass everything on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            now = time.perf_counter()
            self._ends_at = max(self._ends_at, now) + len(frame.audio) / 2 / self._rate
            if not self._speaking:
                self._speaking = True
                await self.push_frame(BotStartedSpeakingFrame(), FrameDirection.UPSTREAM)
            if self._timer is None:
                self._timer = asyncio.create_task(self._stop_when_played())
        await self.push_frame(frame, direction)

    async def _stop_when_played(self) -> None:
        while (left := self._ends_at - time.perf_counter()) > 0:
            await asyncio.sleep(left)
        self._timer = None
        self._speaking = False
        await self.push_frame(BotStoppedSpeakingFrame(), FrameDirection.UPSTREAM)
        self.stops += 1
        self._stopped.set()

    async def wait_stops(self, more_than: int, timeout: float) -> None:
        """Wait until the bot has stopped speaking more than ``more_than`` times."""
        async with asyncio.timeout(timeout):
            while self.stops <= more_than:
                self._stopped.clear()
                await self._stopped.wait()


def reply(number: int, seconds: float, chars_per_second: float) -> str:
    """Short sentences of about ``seconds`` of emulator audio in all, each unique across the run
    (the emulator serves repeated text from its cache, unpaced)."""
    words: list[str] = []
    sentence_no = 0
    while len(" ".join(words)) / chars_per_second < seconds:
        if len(words) % 6 == 0:
            sentence_no += 1
            if words:
                words[-1] += "."
            words.append(f"Reply{number:05d}x{sentence_no}")
        else:
            words.append(_WORDS[(number + len(words)) % len(_WORDS)])
    return " ".join(words) + "."


async def _call(ns: argparse.Namespace) -> dict[str, Any]:
    # Only now, with --source first on sys.path: this is the service under test.
    from benchmarks.pipeline import Session, tokens
    from pipecat_telnyx_tts.emulator.synth import CHARS_PER_SECOND

    module_name, _, class_name = ns.service.partition(":")
    module = importlib.import_module(module_name)
    service_class = getattr(module, class_name)
    kwargs = json.loads(ns.kwargs)
    tts = service_class(
        api_key=API_KEY, url=ns.url, settings=service_class.Settings(voice=VOICE), **kwargs
    )
    playout = Playout(SAMPLE_RATE)
    turns: list[dict[str, Any]] = []
    async with Session(tts, sample_rate=SAMPLE_RATE, markers=True, after=[playout]) as s:
        start = s.started_at
        if not ns.turns:
            await asyncio.sleep(ns.idle)
        else:
            await asyncio.sleep(ns.first_turn_after)
        for turn_no in range(1, ns.turns + 1):
            first_token = ns.first_token[(turn_no - 1) % len(ns.first_token)]
            seen_in, seen_out = len(s.entered.seen), len(s.tail.seen)
            stops = playout.stops
            user_at = time.perf_counter()
            await s.send([VADUserStartedSpeakingFrame(), UserStartedSpeakingFrame()])
            await asyncio.sleep(ns.user)
            await s.send([VADUserStoppedSpeakingFrame(), UserStoppedSpeakingFrame()])
            await s.send([LLMFullResponseStartFrame()])
            await asyncio.sleep(first_token)
            text = reply(ns.seed * 1000 + turn_no, ns.bot, CHARS_PER_SECOND)
            for token in tokens(text):
                await s.send([LLMTextFrame(token)])
                await asyncio.sleep(ns.token_interval)
            await s.send([LLMFullResponseEndFrame()])
            spoke = True
            try:
                await playout.wait_stops(stops, timeout=ns.bot + 30)
            except TimeoutError:
                spoke = False
            text_in = next(
                (x.t for x in s.entered.seen[seen_in:] if x.kind == "LLMTextFrame"), None
            )
            audio = [x for x in s.tail.seen[seen_out:] if x.kind == "audio"]
            turns.append(
                {
                    "turn": turn_no,
                    "first_token_s": first_token,
                    "user_started_at": user_at,
                    "text_in": text_in,
                    "audio_out": audio[0].t if audio else None,
                    "socket": audio[0].marker if audio else None,
                    "audio_s": sum(a.audio_bytes for a in audio) / 2 / SAMPLE_RATE,
                    "spoke": spoke and bool(audio),
                }
            )
            await asyncio.sleep(ns.gap)
        end = time.perf_counter()
        errors = s.errors()
    return {
        "service_file": module.__file__,
        "start": start,
        "end": end,
        "turns": turns,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """Run one call and print its record as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cost_call")
    parser.add_argument("--url", required=True)
    parser.add_argument("--source", required=True, help="directory holding pipecat_telnyx_tts")
    parser.add_argument("--service", required=True, help="MODULE:CLASS of the TTS service")
    parser.add_argument("--kwargs", default="{}", help="JSON of extra constructor arguments")
    parser.add_argument("--idle", type=float, default=0.0, help="call length with no turns")
    parser.add_argument("--turns", type=int, default=0)
    parser.add_argument("--user", type=float, default=0.0, help="user speech per turn, s")
    parser.add_argument("--bot", type=float, default=0.0, help="bot speech per turn, s")
    parser.add_argument(
        "--first-token", type=float, nargs="+", default=[0.3], help="LLM first-token delays, s"
    )
    parser.add_argument("--token-interval", type=float, default=0.02)
    parser.add_argument("--first-turn-after", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=0.5, help="bot stopped to user speaking")
    parser.add_argument("--seed", type=int, default=1)
    ns = parser.parse_args(argv)
    sys.path.insert(0, ns.source)
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    print(json.dumps(asyncio.run(_call(ns))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
