"""Word-level text frames in real pipelines: what the assistant context is built from, plus the
pipecat conventions around a turn (connection events, TTFA, tracing)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSTextFrame,
)
from pipecat.metrics.metrics import TTFAMetricsData
from pipecat.pipeline.task import PipelineParams
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.services.tts_service import TextAggregationMode
from pipecat.tests.utils import SleepFrame, run_test
from service_helpers import (
    Push,
    Until,
    audio_seconds,
    errors,
    gated,
    llm_turn,
    make_tts,
    run,
    started_and_stopped,
    wire_texts,
)
from test_fault_support import captured_logs

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.word_timing import WordClock

REPLY = (
    "Sure, I can help. ",
    "Your order ships on Monday, ",
    "and it arrives by Thursday. ",
    "Ok.",
)
TEXT = "".join(REPLY)


VOICES = [
    ("Telnyx.NaturalHD.astra", "linear16"),
    ("Telnyx.NaturalHD.astra", "mp3"),
    ("aws.Polly.Generative.Lucia", "linear16"),
    ("Telnyx.KokoroTTS.af_heart", None),
]
"""Streamed PCM, streamed MP3, concatenated PCM, and a voice that sends MP3 whatever is asked."""


def text_frames(frames: list) -> list[TTSTextFrame]:
    return [f for f in frames if isinstance(f, TTSTextFrame)]


@pytest.mark.parametrize("lifecycle", ["observed", "documented"])
@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
@pytest.mark.parametrize(("voice", "audio_format"), VOICES)
async def test_a_turn_is_pushed_word_by_word_once_in_order(lifecycle, mode, voice, audio_format):
    # The guard against falling back to sentence-level frames: those are queued ahead of the
    # audio and commit sentences nobody heard after a barge-in.
    async with TelnyxEmulator(lifecycle=lifecycle, signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice=voice, audio_format=audio_format, text_aggregation_mode=mode)
        down, up = await run(tts, llm_turn(*REPLY))
    assert not errors(up)
    words = text_frames(down)
    assert [f.text for f in words] == TEXT.split()
    assert all(f.pts for f in words), "every word is timed, so the transport releases it on time"
    assert [f.pts for f in words] == sorted(f.pts for f in words)
    # Words carry no spacing of their own: the assistant aggregator joins them with spaces.
    assert not any(f.includes_inter_frame_spaces for f in words)


@pytest.mark.parametrize("lifecycle", ["observed", "documented"])
@pytest.mark.parametrize(("voice", "audio_format"), VOICES)
async def test_a_turns_last_word_is_timed_on_its_own_audio(lifecycle, voice, audio_format):
    # The clock releases a synthesis's last words when the turn's audio is complete. Were they
    # never released, pipecat would push them at the end of the context stamped with the
    # previous word's time: recorded before their audio played.
    async with TelnyxEmulator(lifecycle=lifecycle, signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice=voice, audio_format=audio_format)
        down, up = await run(tts, llm_turn(*REPLY))
    assert not errors(up)
    words = text_frames(down)
    assert [f.text for f in words] == TEXT.split()
    # "Ok." is a synthesis of its own: it is heard once its own audio starts, after all of the
    # synthesis before it, not a moment after "Thursday." (times relative to the first word,
    # with the tolerance the other placement tests use for where a first word lies).
    *_, (ok_start, _ok_end, ok_words) = synthesis_spans(emu)
    assert ok_words == 1
    heard = (words[-1].pts - words[0].pts) / 1e9
    assert heard >= ok_start - 0.1, (heard, ok_start)


WORDY = (
    "Strengths, straights and scripts. ",
    "I am a bit of a pro at it, you see. ",
    "Thanks for calling.",
)
"""A first sentence of many letters and few syllables: a speaking-rate guess lands well off."""


def synthesis_spans(emu: TelnyxEmulator) -> list[tuple[float, float, int]]:
    """Each synthesis's start and end in the turn's audio, and its word count."""
    spans, start = [], 0.0
    for synthesis in (s for c in emu.connections for s in c.syntheses if s.audio_seconds):
        spans.append((start, start + synthesis.audio_seconds, len(synthesis.text.split())))
        start += synthesis.audio_seconds
    return spans


@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
@pytest.mark.parametrize(
    ("lifecycle", "voice"),
    [
        # A final frame after every synthesis marks where the next one starts.
        ("documented", "Telnyx.NaturalHD.astra"),
        ("documented", "Telnyx.KokoroTTS.af_heart"),
        ("documented", "aws.Polly.Generative.Lucia"),
        # A concatenated provider's text-bearing frame carries its synthesis's first audio.
        ("observed", "aws.Polly.Generative.Lucia"),
    ],
)
async def test_words_are_timed_within_their_own_synthesis_from_the_wire_marks(
    mode, lifecycle, voice
):
    # The marker signal has no pauses to find, and one frame per synthesis leaves no seams:
    # where each synthesis lies in the audio is known only from the wire.
    faults = Faults.fast(chunk_ms=20_000)
    async with TelnyxEmulator(lifecycle=lifecycle, signal="marker", faults=faults) as emu:
        tts = make_tts(emu, voice=voice, text_aggregation_mode=mode)
        down, up = await run(tts, llm_turn(*WORDY))
    assert not errors(up)
    words = text_frames(down)
    assert [f.text for f in words] == "".join(WORDY).split()
    origin, i = words[0].pts, 0
    for start, end, count in synthesis_spans(emu):
        for _ in range(count):
            heard = (words[i].pts - origin) / 1e9
            assert start - 0.1 <= heard <= end + 0.1, (words[i].text, heard, start, end)
            i += 1


@pytest.mark.parametrize("audio_format", ["linear16", "mp3"])
async def test_with_nothing_on_the_wire_marking_a_boundary_no_sentence_is_timed_early(
    audio_format,
):
    # Observed lifecycle, streamed provider: nothing marks where a synthesis ends, and the
    # speaking rate misjudges the first sentence; the frame seams (a short last PCM frame, an
    # MP3 file start) still place the next sentence no earlier than its audio.
    async with TelnyxEmulator(lifecycle="observed", signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, audio_format=audio_format)
        down, up = await run(tts, llm_turn(*WORDY))
    assert not errors(up)
    words = text_frames(down)
    assert [f.text for f in words] == "".join(WORDY).split()
    origin, i = words[0].pts, 0
    for start, _end, count in synthesis_spans(emu):
        heard = (words[i].pts - origin) / 1e9
        assert heard >= start - 0.01, (words[i].text, heard, start)
        i += count


async def test_a_sentence_the_llm_writes_for_longer_than_pipecats_idle_wait_stays_in_its_turn():
    # pipecat ends an audio context that gets nothing for ``stop_frame_timeout_s``, without a
    # word; its sentence aggregator holds a sentence's tokens until the sentence ends, so a slow
    # LLM writing a sentence after the last one played looked idle. The next sentence's audio
    # then opened a second context, whose word times restart from its own first audio: the
    # words were stamped seconds after they played, and a barge-in lost them all.
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, stop_frame_timeout_s=1.0)
        tokens = ("And", " this", " one", " came", " slowly.")
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("The first sentence plays at once. "),
            *(f for token in tokens for f in (SleepFrame(0.4), LLMTextFrame(token))),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(tts, frames)
    assert not errors(up)
    words = text_frames(down)
    said = "The first sentence plays at once. And this one came slowly."
    assert [f.text for f in words] == said.split()
    assert started_and_stopped(down)[0] == 1, "one audio context for the whole reply"


async def test_words_whose_audio_came_early_go_out_as_playback_reaches_them_without_more_audio(
    monkeypatch,
):
    # All of a sentence's audio arrives at once, and the LLM then writes nothing for seconds: no
    # more audio, no frame. Its words wait for their playback to come near; only time can make
    # them due, so the service tells the word clock the time while they wait, and a barge-in
    # three seconds in finds the words played by then already handed to pipecat.
    sentence = (
        "Here is a sentence that takes a few seconds to say out loud, word by word, to its end."
    )
    handed: list[tuple[float, float]] = []
    first_audio: list[float] = []
    add_word_timestamps, audio = TelnyxTTSService.add_word_timestamps, WordClock.audio

    async def add_and_note(self, word_times, *args, **kwargs):
        handed.extend((time.monotonic(), seconds) for _, seconds in word_times)
        return await add_word_timestamps(self, word_times, *args, **kwargs)

    def audio_and_note(self, pcm, now, **kwargs):
        first_audio.append(now)
        return audio(self, pcm, now, **kwargs)

    monkeypatch.setattr(TelnyxTTSService, "add_word_timestamps", add_and_note)
    monkeypatch.setattr(WordClock, "audio", audio_and_note)
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame(sentence + " "),
            # (The next word tells pipecat's sentence aggregator the sentence has ended.)
            LLMTextFrame("Then"),
            Until(lambda: any(c.syntheses for c in emu.connections)),
            SleepFrame(3.0),
            Push(InterruptionFrame()),
            LLMFullResponseEndFrame(),
        ]
        down, up = await run(gated(tts), frames)
    assert not errors(up)
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before = [f.text for f in text_frames(down[:cut])]
    # The tone signal speaks 14.5 characters a second: by 2 s (a second short of the barge-in)
    # the words in its first 29 characters have started.
    started = len(sentence[:29].split())
    assert before == sentence.split()[: len(before)]
    assert len(before) >= started, (before, started)
    # Each word reaches pipecat well before it plays (the clock is asked often, not once a
    # second), except those due as soon as the audio came.
    ahead = [first_audio[0] + seconds - at for at, seconds in handed if seconds > 1.5]
    assert ahead and min(ahead) > 0.5, ahead


async def test_every_mp3_file_start_reaches_the_word_clock(monkeypatch):
    # A live synthesis comes as several MP3 files; each file's start is a seam where a synthesis
    # may have ended, which the word clock looks for when nothing on the wire marks a boundary.
    flags: list[bool] = []
    audio = WordClock.audio

    def audio_and_note(self, pcm, now, *, new_file=False):
        flags.append(new_file)
        return audio(self, pcm, now, new_file=new_file)

    monkeypatch.setattr(WordClock, "audio", audio_and_note)
    faults = replace(Faults.fast(), mp3_files=2)
    async with TelnyxEmulator(lifecycle="observed", signal="tone", faults=faults) as emu:
        tts = make_tts(emu, audio_format="mp3")
        down, up = await run(tts, llm_turn(*REPLY))
    assert not errors(up)
    syntheses = [s for c in emu.connections for s in c.syntheses if s.audio_seconds]
    assert len(syntheses) >= 3
    assert sum(flags) == 2 * len(syntheses), flags
    assert [f.text for f in text_frames(down)] == TEXT.split()


async def test_text_written_without_spaces_is_pushed_a_character_at_a_time_with_its_spacing():
    # A Chinese sentence has no spaces: as one "word" it would be released only when it ends,
    # and the assistant aggregator would put a space between such frames.
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)
        down, up = await run(tts, llm_turn("你好。", "今天天气很好\uff01"))
    assert not errors(up)
    words = text_frames(down)
    assert [f.text for f in words] == ["你", "好。", "今", "天", "天", "气", "很", "好\uff01"]
    assert all(f.includes_inter_frame_spaces for f in words)


async def test_sentence_frames_remain_available_when_asked_for():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, word_timestamps=False)
        down, _ = await run(tts, llm_turn(*REPLY))
    assert [f.text.strip() for f in text_frames(down)] == [
        "Sure, I can help.",
        "Your order ships on Monday, and it arrives by Thursday.",
        "Ok.",
    ]


@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
async def test_text_of_an_interrupted_reply_that_arrives_after_the_interruption_is_not_spoken(
    mode,
):
    # The interruption, a system frame, overtakes a token still queued at the service; the
    # token then reaches it after the interruption, as here.
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, text_aggregation_mode=mode)
        frames = [
            LLMFullResponseStartFrame(),
            LLMTextFrame("First reply here. "),
            Until(lambda: any(c.syntheses for c in emu.connections)),
            Push(InterruptionFrame()),
            LLMTextFrame("Stale words "),
            LLMTextFrame("from before. "),
            LLMFullResponseEndFrame(),
            *llm_turn("Fresh reply now."),
        ]
        with captured_logs() as logs:
            down, _ = await run(gated(tts), frames)
    sent = " ".join(
        text for c in emu.connections for text, _ in wire_texts(emu.received_messages(c.index))
    )
    assert "Stale" not in sent and "before" not in sent
    assert "Fresh reply now." in sent
    assert "Stale" not in " ".join(f.text for f in text_frames(down))
    assert any("Stale words" in line.message for line in logs), "dropped text is named"


async def test_connection_events_follow_reachability():
    seen: list[str] = []
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu)

        @tts.event_handler("on_connected")
        async def _connected(_tts: TelnyxTTSService) -> None:
            seen.append("connected")

        @tts.event_handler("on_disconnected")
        async def _disconnected(_tts: TelnyxTTSService) -> None:
            seen.append("disconnected")

        @tts.event_handler("on_connection_error")
        async def _error(_tts: TelnyxTTSService, error: str) -> None:
            seen.append(f"error: {error}")

        await run(tts, [*llm_turn("One turn."), *llm_turn("Another turn.")])
    # One connection event per stretch of reachability, not one per socket (a turn each).
    assert seen == ["connected", "disconnected"]


async def test_a_refused_connection_fires_the_error_and_disconnected_events():
    seen: list[str] = []
    faults = Faults.fast(refuse_status=503, refuse_count=2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)

        @tts.event_handler("on_connected")
        async def _connected(_tts: TelnyxTTSService) -> None:
            seen.append("connected")

        @tts.event_handler("on_connection_error")
        async def _error(_tts: TelnyxTTSService, error: str) -> None:
            seen.append("error 503" if "503" in error else f"error {error}")

        await run(tts, [Until(lambda: "connected" in seen), *llm_turn("After the outage.")])
    assert seen[:3] == ["error 503", "error 503", "connected"]


async def test_ttfa_is_reported_for_every_turn_from_its_own_start():
    faults = Faults.fast(first_audio_delay=0.3)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        tts = make_tts(emu)
        down, _ = await run_test(
            tts,
            frames_to_send=[*llm_turn("First turn."), *llm_turn("Second turn.")],
            pipeline_params=PipelineParams(
                audio_in_sample_rate=16000, audio_out_sample_rate=16000, enable_metrics=True
            ),
        )
    ttfa = [
        d
        for f in down
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, TTFAMetricsData)
    ]
    assert len(ttfa) == 2
    for d in ttfa:
        # At least the emulator's injected delay, and not counted from the first turn's start.
        assert 0.3 <= d.ttfa < 3.0
        assert d.ttfa == pytest.approx(d.ttfb + d.leading_silence)


class _Traced(TelnyxTTSService):
    """The service with tracing on, as a pipeline task with ``enable_tracing=True`` sets it."""

    async def setup(self, setup: FrameProcessorSetup) -> None:
        await super().setup(setup)
        self._tracing_enabled = True


async def test_each_turn_is_one_tts_span_with_its_text(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Pipecat asks `trace.get_tracer("pipecat")` for every span: answering from this provider
    # records this test's spans without setting the process's global provider, which can be set
    # only once and would then leak into every later test.
    monkeypatch.setattr(
        trace, "get_tracer", lambda name, *args, **kwargs: provider.get_tracer(name)
    )
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = _Traced(
            api_key="test-key",
            url=emu.url,
            settings=TelnyxTTSService.Settings(voice="Telnyx.NaturalHD.astra"),
        )
        await run(tts, [*llm_turn("One turn. ", "Two sentences."), *llm_turn("Next.")])
    spans = sorted(
        (s for s in exporter.get_finished_spans() if s.name == "tts"), key=lambda s: s.start_time
    )
    assert [str(s.attributes.get("text")).split() for s in spans] == [
        ["One", "turn.", "Two", "sentences."],
        ["Next."],
    ]
    assert all(s.attributes.get("voice_id") == "Telnyx.NaturalHD.astra" for s in spans)


@pytest.mark.parametrize("failing", ["audio", "announced", "text_sent", "finish"])
async def test_a_failing_word_clock_degrades_the_turn_to_sentence_text_not_kills_it(
    failing, monkeypatch
):
    # The word clock is an estimate: a bug in it may cost the turn its word timing, never its
    # audio, its end or its text.
    real = getattr(WordClock, failing)
    calls = 0

    def breaks_from_the_second_call_on(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls >= 2 or failing == "finish":
            raise ZeroDivisionError("a bug in the estimate")
        return real(self, *args, **kwargs)

    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice="Telnyx.NaturalHD.astra")
        with captured_logs() as logs:
            monkeypatch.setattr(WordClock, failing, breaks_from_the_second_call_on)
            down, up = await run(tts, llm_turn(*REPLY))
            monkeypatch.undo()
        synthesized = sum(s.audio_seconds for c in emu.connections for s in c.syntheses)
    assert not errors(up)
    assert started_and_stopped(down) == (1, 1)
    assert audio_seconds(down) == pytest.approx(synthesized, abs=0.01)
    # Whatever was not released word by word is still recorded: every word, once, in order.
    assert " ".join(f.text.strip() for f in text_frames(down)).split() == TEXT.split()
    failed = [line for line in logs if "word timing failed" in line.message]
    assert len(failed) == 1 and failed[0].level == "WARNING"
