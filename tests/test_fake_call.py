"""The offline fake call (``examples/phone_agent/fake_call.py``): the bot's real pipeline, the STT
and TTS emulators, a simulated caller who talks over the greeting; no key, no network."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from benchmarks.whole_turn import load_fake_call as load


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if samples.size else 0.0


async def test_the_fake_call_hears_both_voices_and_the_barge_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_call = load()
    wav_path = tmp_path / "call.wav"
    result = await fake_call.fake_call(wav_path)  # type: ignore[attr-defined]
    printed = capsys.readouterr().out

    assert " ".join(result["transcripts"]) == " ".join(fake_call.CALLER)  # type: ignore[attr-defined]
    assert "STT: final: 'what time do you open tomorrow?'" in printed
    assert "first audio" in printed and "caller: (hangs up)" in printed
    with wave.open(str(wav_path)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), np.int16).reshape(-1, 2)
    caller, bot = stereo[:, 0], stereo[:, 1]
    assert rms(caller) > 100 and rms(bot) > 100, "both voices are in the recording"
    # The barge-in: the caller starts over the greeting, and the bot falls silent after the clear.
    clear = result["cleared"][0]
    before = slice(round((clear - 1.0) * 8000), round(clear * 8000))
    after = slice(round((clear + 0.5) * 8000), round((clear + 1.5) * 8000))
    assert rms(bot[before]) > 300, "the greeting was playing when the caller spoke"
    assert rms(bot[after]) < 50, "the greeting stopped after the clear"
    assert rms(caller[before.start : after.stop]) > 300
