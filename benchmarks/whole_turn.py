"""The whole turn on the offline fake call: the caller stops speaking -> the bot's first audio.

``examples/phone_agent/fake_call.py`` serves a call with the bot's real pipeline (Telnyx's media
stream transport and serializer, Silero VAD and pipecat's default turn detection, the context
aggregators, ``TelnyxSTTService`` and ``TelnyxTTSService``) against the STT and TTS emulators,
with the scripted LLM stand-in; its ``caller_turns`` speaks many caller turns, each after the
bot's previous answer ended. Every time is taken on the phone line's clock (the STT's finals on
the emulator's, which is the same process's ``perf_counter``):

- the caller stopped: the end of the caller's last frame above the silence level;
- the STT's first final of the turn, as the emulator sent it;
- the user's turn reaching the LLM stand-in (after VAD stop, turn detection and the final);
- the stand-in's first sentence out (its tokens come every 20 ms, the first at once);
- the bot's first media frame back on the caller's line.

The TTS emulator plays the same timing as the TTS-only time-to-first-audio part
(``benchmarks.latency``), so that part's figure is what the TTS alone costs; the STT emulator's
floor is its endpointing (100 ms of silence on the audio's clock; no recognizer delay).

    python -m benchmarks.whole_turn --turns 30
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from loguru import logger

from benchmarks.latency import LatencyConfig
from benchmarks.stats import injected_floor, percentiles
from pipecat_telnyx_tts.emulator import Faults
from pipecat_telnyx_tts.emulator.stt_config import SttBehaviour, SttFaults

FAKE_CALL = Path(__file__).resolve().parents[1] / "examples" / "phone_agent" / "fake_call.py"
RATE = 8000


@dataclass(frozen=True)
class TurnConfig:
    """What the whole-turn run does."""

    turns: int = 30
    gap: float = 1.0
    """Quiet after the bot's answer before the caller speaks again."""
    faults: Faults = field(default_factory=lambda: LatencyConfig().faults)
    """The TTS emulator's timing: the TTS-only part's, for the comparison."""


def load_fake_call() -> ModuleType:
    """The example's module, loaded from its file as the example runs (it is not a package)."""
    spec = importlib.util.spec_from_file_location("phone_agent_fake_call", FAKE_CALL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _ms(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else round(1000 * (later - earlier), 3)


def _stats(turns: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return percentiles(t[key] for t in turns if t[key] is not None)


async def run_whole_turn(
    config: TurnConfig, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Speak ``config.turns`` caller turns on one fake call; every turn's times and their
    percentiles."""
    fake_call = load_fake_call()
    progress(f" whole turn: {config.turns} caller turns on the fake call")
    started = time.perf_counter()
    timings, transcripts = await fake_call.caller_turns(config.turns, config.faults, gap=config.gap)
    turns = [
        {
            "said": t.said,
            "heard": t.heard,
            "stop_to_final_ms": _ms(t.final, t.stopped),
            "stop_to_llm_ms": _ms(t.context, t.stopped),
            "llm_to_first_sentence_ms": _ms(t.first_sentence, t.context),
            "first_sentence_to_first_audio_ms": _ms(t.first_audio, t.first_sentence),
            "stop_to_first_audio_ms": _ms(t.first_audio, t.stopped),
        }
        for t in timings
    ]
    behaviour, stt_faults = SttBehaviour(), SttFaults()
    faults = config.faults
    progress(f" whole turn: done in {time.perf_counter() - started:.0f} s")
    return {
        "config": {"turns": config.turns, "gap": config.gap, "faults": dataclasses.asdict(faults)},
        "measured_from": "the caller's end of speech on the phone line",
        "measured_to": "the bot's first media frame back on the phone line",
        "tts_floor_ms": round(1000 * injected_floor(faults, RATE, 10.0), 3),
        "stt_floor_ms": float(behaviour.default_endpointing_ms),
        "stt_result_delay_ms": 1000 * stt_faults.result_delay,
        "llm_token_interval_ms": 20,
        "exact_transcripts": sum(t.heard.lower() == t.said.lower() for t in timings),
        "transcripts": transcripts,
        "turns": turns,
        **{key: _stats(turns, key) for key in turns[0] if key.endswith("_ms")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=TurnConfig.turns)
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    result = asyncio.run(run_whole_turn(TurnConfig(turns=args.turns)))
    print(json.dumps({k: v for k, v in result.items() if k != "turns"}, indent=1))


if __name__ == "__main__":
    main()
