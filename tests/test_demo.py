"""``demo.speak`` / ``run_demo``: a real pipeline, real sockets, a real WAV on disk."""

from __future__ import annotations

import asyncio
import re
import wave
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from pipecat_telnyx_tts import demo, emulator
from pipecat_telnyx_tts.demo import DEMO_REPLY, SpeakError, reply_tokens, run_demo, speak
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.synth import ESPEAK
from pipecat_telnyx_tts.protocol import TextMessage


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        return wav.getframerate(), np.frombuffer(wav.readframes(wav.getnframes()), np.int16)


def voiced_fraction(samples: np.ndarray, rate: int) -> float:
    """Share of 20 ms windows loud enough to be speech rather than a pause."""
    n = rate // 50
    windows = samples[: len(samples) // n * n].astype(np.float64).reshape(-1, n)
    return float(np.mean(np.sqrt(np.mean(windows**2, axis=1)) > 300))


def pauses(samples: np.ndarray, rate: int, at_least: float) -> int:
    """Runs of 20 ms windows too quiet to be speech lasting ``at_least`` seconds, between sounds."""
    n = rate // 50
    windows = samples[: len(samples) // n * n].astype(np.float64).reshape(-1, n)
    quiet = np.sqrt(np.mean(windows**2, axis=1)) <= 300
    loud = np.flatnonzero(~quiet)
    inner = quiet[loud[0] : loud[-1]].astype(np.int8)
    edges = np.diff(np.concatenate(([0], inner, [0])))
    runs = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    return int(np.sum(runs * 0.02 >= at_least))


async def test_without_a_key_the_demo_speaks_through_the_embedded_emulator(tmp_path, monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    # The embedded emulator keeps live-like time; this test need not wait it out.
    monkeypatch.setattr(emulator, "TelnyxEmulator", partial(TelnyxEmulator, faults=Faults.fast()))
    notes: list[str] = []
    result = await run_demo(tmp_path / "demo.wav", notify=notes.append)

    assert any("TELNYX_API_KEY is not set" in n and "emulator" in n for n in notes)
    rate, samples = read_wav(result.path)
    assert rate == result.sample_rate == 24000
    assert result.audio_seconds == pytest.approx(len(samples) / rate)
    # Four sentences of speech at a speaking pace: seconds, not a blip.
    assert 6 < result.audio_seconds < 30
    assert voiced_fraction(samples, rate) > 0.5
    assert len(result.sentences) == 4
    assert " ".join(result.sentences) == DEMO_REPLY
    if ESPEAK.available():
        # Each synthesis opens and ends with a TTS's silence: an audible pause (a quarter of a
        # second) at every sentence end, where espeak-ng alone leaves about 25 ms.
        assert pauses(samples, rate, at_least=0.25) >= 3
    # One progress line per sentence, as it is spoken.
    assert sum("sentence" in n for n in notes) == 4
    assert result.first_audio_ms is not None and result.first_audio_ms > 0


async def test_time_to_first_audio_includes_the_servers_latency(tmp_path):
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.4)) as emu:
        result = await speak(
            "One sentence. And another one.", tmp_path / "s.wav", url=emu.url, api_key="k"
        )
    assert result.first_audio_ms is not None
    assert 400 <= result.first_audio_ms < 2000


async def test_speak_asks_for_the_requested_rate_voice_and_speed(tmp_path):
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        result = await speak(
            "Hello there. How are you?",
            tmp_path / "rime.wav",
            voice="Rime.ArcanaV3.astra",
            sample_rate=8000,
            speed=1.25,
            url=emu.url,
            api_key="k",
        )
    rate, samples = read_wav(result.path)
    assert rate == 8000 and len(samples) > 8000 * 0.5
    query = emu.connections[0].query
    assert "voice=Rime.ArcanaV3.astra" in query and "sample_rate=8000" in query
    init = emu.received_messages(emu.connections[0].index)[0]
    assert getattr(init, "voice_settings", None) == {"voice_speed": 1.25}
    spoken = "".join(m.text for m in emu.received_messages() if isinstance(m, TextMessage))
    assert "Hello there." in spoken and "How are you?" in spoken


async def test_a_refused_key_is_an_error_that_names_the_key(tmp_path):
    async with TelnyxEmulator(api_key="right", signal="tone", faults=Faults.fast()) as emu:
        with pytest.raises(SpeakError, match=r"401.*TELNYX_API_KEY"):
            await speak("Hello.", tmp_path / "x.wav", url=emu.url, api_key="wrong")
    assert not (tmp_path / "x.wav").exists()


async def test_an_unreachable_server_is_an_error_that_names_the_url(tmp_path):
    url = "ws://127.0.0.1:9/v2/text-to-speech/speech"
    with pytest.raises(SpeakError, match=re.escape(url)):
        await speak("Hello.", tmp_path / "x.wav", url=url, api_key="k")


@pytest.mark.parametrize(
    ("voice", "match"),
    [("astra", "three parts"), ("Telnyx.Ultra.nova", "does not serve")],
)
async def test_a_voice_that_can_never_work_fails_before_anything_starts(tmp_path, voice, match):
    with pytest.raises(SpeakError, match=match):
        await speak("Hello.", tmp_path / "x.wav", voice=voice, url="ws://127.0.0.1:9", api_key="k")


async def test_a_missing_output_folder_fails_before_speaking(tmp_path):
    with pytest.raises(SpeakError, match="does not exist"):
        await speak("Hello.", tmp_path / "nope" / "x.wav", api_key="k")


def test_tokens_keep_every_character_of_the_reply():
    tokens = reply_tokens(DEMO_REPLY)
    assert len(tokens) > 20
    assert "".join(tokens) == DEMO_REPLY


async def test_a_server_that_never_answers_ends_in_an_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "BUDGET_S", 0.0)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(upgrade_delay=30)) as emu:
        with pytest.raises(SpeakError, match="no complete answer"):
            await asyncio.wait_for(
                speak("Hello.", tmp_path / "x.wav", url=emu.url, api_key="k"), 10
            )
