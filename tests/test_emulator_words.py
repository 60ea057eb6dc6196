"""Where each word lies in the emulator's audio: the ground truth a barge-in benchmark needs to
tell which words a caller heard before the audio was cut."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_emulator_support import VOICE, open_socket, receive_all, speak

from benchmarks.emulator_host import EmulatorProcess
from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.emulator import Faults, Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.catalogue import language_of
from pipecat_telnyx_tts.emulator.records import WordSpan
from pipecat_telnyx_tts.emulator.synth import (
    CHARS_PER_SECOND,
    ESPEAK,
    SILENCE_LEVEL,
    SPEECH_LEAD_SECONDS,
    SPEECH_TAIL_SECONDS,
    TAIL_SECONDS,
    OutputFormat,
    SynthesisRequest,
    render,
    sentence_speed,
    speech_seconds,
    split_sentences,
    spoken_text,
    synthesize_audio,
)

PCM_8K = OutputFormat("linear16", 8000)
PCM_16K = OutputFormat("linear16", 16000)
TWO = "Hi there. Bye now."

needs_espeak = pytest.mark.skipif(not ESPEAK.available(), reason="espeak-ng is not usable here")


def assert_spans(words: tuple[WordSpan, ...], expected: list[tuple[str, float, float]]) -> None:
    assert [w.word for w in words] == [word for word, _, _ in expected]
    assert [(w.start, w.end) for w in words] == [
        (pytest.approx(start, abs=1e-9), pytest.approx(end, abs=1e-9)) for _, start, end in expected
    ]


def assert_well_formed(words: tuple[WordSpan, ...], seconds: float) -> None:
    """In order, each word inside the audio and ending before the next one starts."""
    assert words, "a synthesis with something to say has words"
    assert words[0].start >= 0
    for word in words:
        assert word.start <= word.end <= seconds + 1e-9, word
    for before, after in itertools.pairwise(words):
        assert before.start <= after.start, (before, after)
        assert before.end <= after.start + 1e-9, (before, after)


# --------------------------------------------------------------------------- tone and marker


def test_tone_words_follow_the_speaking_rate() -> None:
    audio = synthesize_audio(SynthesisRequest("Hello there, my friend.", PCM_8K, Signal.TONE))
    assert audio.words_source == "signal"
    assert_spans(
        audio.words,
        [
            ("Hello", 0.0, 5 / CHARS_PER_SECOND),
            ("there,", 6 / CHARS_PER_SECOND, 12 / CHARS_PER_SECOND),
            ("my", 13 / CHARS_PER_SECOND, 15 / CHARS_PER_SECOND),
            ("friend.", 16 / CHARS_PER_SECOND, 23 / CHARS_PER_SECOND),
        ],
    )
    seconds = len(audio.pcm) / PCM_8K.sample_rate
    assert audio.words[-1].end == pytest.approx(seconds - TAIL_SECONDS, abs=1 / 8000)


def test_marker_words_scale_with_speed() -> None:
    request = SynthesisRequest("Hello there, my friend.", PCM_8K, Signal.MARKER, speed=2.0)
    audio = synthesize_audio(request)
    assert audio.words_source == "signal"
    assert audio.words[3] == WordSpan("friend.", 16 / 14.5 / 2, 23 / 14.5 / 2)
    assert audio.words[1].start == pytest.approx(0.2069, abs=1e-4), "6 characters at 29 a second"


def test_sentence_pauses_shift_the_words_after_them() -> None:
    paused = synthesize_audio(SynthesisRequest(TWO, PCM_8K, Signal.TONE, sentence_pause_ms=200))
    first_piece = round(speech_seconds("Hi there.") * 8000) / 8000
    second = first_piece + 0.2
    assert_spans(
        paused.words,
        [
            ("Hi", 0.0, 2 / 14.5),
            ("there.", 3 / 14.5, 9 / 14.5),
            ("Bye", second, second + 3 / 14.5),
            ("now.", second + 4 / 14.5, second + 8 / 14.5),
        ],
    )
    # Between the sentences: the first one's tail, then the pause.
    gap = paused.words[2].start - paused.words[1].end
    assert gap == pytest.approx(TAIL_SECONDS + 0.2, abs=1 / 8000)
    unpaused = synthesize_audio(SynthesisRequest(TWO, PCM_8K, Signal.TONE))
    assert unpaused.words[2].start == pytest.approx(10 / 14.5)


def test_words_are_the_spoken_tokens_of_markdown_and_ssml() -> None:
    marked = synthesize_audio(
        SynthesisRequest("**Bold** [link](https://x.y) now", PCM_8K, Signal.TONE)
    )
    assert [w.word for w in marked.words] == ["Bold", "link", "now"]
    ssml = "<speak>Hello <emphasis>there</emphasis>, friend.</speak>"
    tagged = synthesize_audio(SynthesisRequest(ssml, PCM_8K, Signal.TONE, ssml=True))
    assert [w.word for w in tagged.words] == spoken_text(ssml, ssml=True).split()


def test_rendition_carries_the_words_whatever_the_encoding() -> None:
    request = SynthesisRequest(TWO, PCM_8K, Signal.TONE, sentence_pause_ms=100)
    words = synthesize_audio(request).words
    mp3 = SynthesisRequest(TWO, OutputFormat("mp3", 24000), Signal.TONE, mp3_files=2)
    for rendition in (render(request), render(mp3)):
        assert [w.word for w in rendition.words] == [w.word for w in words]
        assert rendition.words_source == "signal"
        assert_well_formed(rendition.words, rendition.audio_seconds)
    assert render(request).words == words
    assert render(SynthesisRequest("  ", PCM_8K, Signal.TONE)).words == ()


# --------------------------------------------------------------------------- speech


def loud_from(pcm: np.ndarray, rate: int) -> float:
    """When the audio first rises above silence, in seconds."""
    return int(np.flatnonzero(np.abs(pcm.astype(np.int32)) > SILENCE_LEVEL)[0]) / rate


@needs_espeak
@pytest.mark.parametrize("speed", [1.0, 1.6])
def test_speech_words_line_up_with_the_audio(speed: float) -> None:
    text = "Hello there, my friend. I don't know 42 things."
    audio = synthesize_audio(SynthesisRequest(text, PCM_16K, Signal.SPEECH, speed=speed))
    assert audio.words_source == "espeak"
    assert [w.word for w in audio.words] == text.split()
    seconds = len(audio.pcm) / 16000
    assert_well_formed(audio.words, seconds)
    assert abs(audio.words[0].start - loud_from(audio.pcm, 16000)) < 0.1
    # espeak-ng pauses at a comma; the word after it starts when the pause ends...
    there, my = audio.words[1], audio.words[2]
    a, b = round((my.start - 0.1 / speed) * 16000), round((my.start - 0.01) * 16000)
    assert np.abs(audio.pcm[a:b].astype(np.int32)).max() <= SILENCE_LEVEL
    assert loud_from(audio.pcm[round(my.start * 16000) :], 16000) < 0.05
    # ...and the word before it ends when its sound does, not at the next word.
    assert there.end < my.start - 0.1 / speed
    # The last word ends with its sound, before the trailing silence.
    last = round(audio.words[-1].end * 16000)
    assert np.abs(audio.pcm[last - 1]) > SILENCE_LEVEL
    assert not np.any(np.abs(audio.pcm[last:].astype(np.int32)) > SILENCE_LEVEL)


@needs_espeak
def test_speech_words_account_for_sentence_pauses_and_resampling() -> None:
    text = "Hello there. Goodbye now."
    for fmt in (PCM_8K, OutputFormat("linear16", 24000)):
        whole = synthesize_audio(SynthesisRequest(text, fmt, Signal.SPEECH))
        paused = synthesize_audio(SynthesisRequest(text, fmt, Signal.SPEECH, sentence_pause_ms=300))
        rate = fmt.sample_rate
        assert_well_formed(paused.words, len(paused.pcm) / rate)
        (cut,) = paused.sentence_ends
        assert paused.words[2].start == pytest.approx(cut / rate, abs=0.01)
        assert paused.words[2].start - paused.words[1].end >= 0.3
        assert abs(paused.words[2].start - (cut / rate + loud_from(paused.pcm[cut:], rate))) < 0.1
        # Same words, same starts within a sentence, however the audio is pieced together.
        assert paused.words[1].start == pytest.approx(whole.words[1].start, abs=0.005)


@needs_espeak
def test_speech_words_of_ssml_are_the_spoken_tokens() -> None:
    ssml = (
        '<speak>Hello <break time="500ms"/>world &amp; friend. '
        "<emphasis>Big</emphasis> dog.</speak>"
    )
    audio = synthesize_audio(SynthesisRequest(ssml, PCM_16K, Signal.SPEECH, ssml=True))
    assert [w.word for w in audio.words] == spoken_text(ssml, ssml=True).split()
    assert_well_formed(audio.words, len(audio.pcm) / 16000)
    # The break is silence before "world".
    assert audio.words[1].start - audio.words[0].end >= 0.4


# --------------------------------------------------------------------------- records


@pytest.mark.parametrize("signal", ["tone", "marker", pytest.param("speech", marks=needs_espeak)])
async def test_records_carry_the_words_of_each_synthesis(signal: str) -> None:
    faults = Faults.fast(sentence_pause_ms=150)
    async with TelnyxEmulator(signal=signal, faults=faults) as emu:
        async with open_socket(emu, audio_format="linear16", sample_rate=16000) as ws:
            await speak(ws, "Hello there, this is the emulator. It speaks in words.")
            await receive_all(ws)
        (connection,) = emu.connections
    assert connection.syntheses
    for synthesis in connection.syntheses:
        assert synthesis.words_source == ("espeak" if signal == "speech" else "signal")
        assert [w.word for w in synthesis.words] == spoken_text(synthesis.text).split()
        assert_well_formed(tuple(synthesis.words), synthesis.audio_seconds)


async def test_emulator_process_ships_the_words() -> None:
    async with EmulatorProcess(signal="tone", faults=Faults.fast()) as emu:
        async with open_socket(emu.url) as ws:
            await speak(ws, "Hello there, my friend.")
            await receive_all(ws)
        (connection,) = await emu.connections()
    (synthesis,) = connection.syntheses
    assert synthesis.words_source == "signal"
    assert synthesis.mp3 and synthesis.sample_rate > 0 and synthesis.audio_seconds > 0
    word, start, end = synthesis.words[-1]
    assert (word, start, end) == ("friend.", pytest.approx(16 / 14.5), pytest.approx(23 / 14.5))
    assert [word for word, _, _ in synthesis.words] == ["Hello", "there,", "my", "friend."]


@needs_espeak
def test_speech_opens_and_ends_with_a_tts_silence() -> None:
    audio = synthesize_audio(SynthesisRequest("Hello there. Bye now.", PCM_16K, Signal.SPEECH))
    loud = np.flatnonzero(np.abs(audio.pcm.astype(np.int32)) > SILENCE_LEVEL)
    # espeak-ng alone leaves about 14 ms before and 10 ms after.
    assert loud[0] / 16000 >= SPEECH_LEAD_SECONDS >= 0.05
    assert (len(audio.pcm) - loud[-1] - 1) / 16000 >= SPEECH_TAIL_SECONDS >= 0.15
    # The words moved with the audio.
    assert audio.words[0].start >= SPEECH_LEAD_SECONDS
    assert abs(audio.words[0].start - loud_from(audio.pcm, 16000)) < 0.1


@pytest.mark.parametrize("untagged", [False, True])
async def test_word_places_agree_with_the_decoded_mp3_across_file_seams(untagged: bool) -> None:
    # Three MP3 files, cut at sentence ends. The reported word places are in the synthesized PCM;
    # the client plays the decoded MP3, so each file's delay and padding must be trimmed for a
    # sentence's first word to sound where it is reported.
    text = "The first sentence is here. Then comes a second one! Is there a third? There is."
    faults = Faults.fast(mp3_files=3, sentence_pause_ms=300, mp3_untagged=untagged)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu, open_socket(emu) as ws:
        await speak(ws, text)
        messages = await receive_all(ws)
    [synthesis] = emu.connections[0].syntheses
    rate = synthesis.sample_rate
    decoder = AudioDecoder(pcm_rate=rate, out_rate=rate)
    chunks = [m.audio for m in messages if getattr(m, "audio", None)]
    pcm = np.frombuffer(b"".join(map(decoder.feed, chunks)) + decoder.flush(), dtype="<i2")
    firsts = [0] + [i + 1 for i, w in enumerate(synthesis.words[:-1]) if w.word[-1] in ".!?"]
    # Untagged, each file's padding stays (under a frame, 24 ms here), shifting what follows.
    tolerance = 0.005 + (2 * 576 / rate if untagged else 0.0)
    for i in firsts:
        word = synthesis.words[i]
        # Where sound resumes, looked for from 0.2 s before the word (inside the pause).
        since = max(0, round((word.start - 0.2) * rate))
        onset = since / rate + loud_from(pcm[since:], rate)
        assert abs(onset - word.start) <= tolerance, (word, onset)


# --------------------------------------------------------------------------- rate jitter

JITTERED = "Sure, the order ships Monday. The courier calls first. If nobody answers, it waits."


@pytest.mark.parametrize("signal", ["tone", pytest.param("speech", marks=needs_espeak)])
async def test_rate_jitter_speaks_each_sentence_at_its_own_rate_and_the_words_follow(
    signal: str,
) -> None:
    # The record must be each sentence rendered alone at its drawn speed, placed end to end:
    # word places, audio length and all, so that a benchmark's ground truth follows the rate.
    seed = 11
    faults = Faults.fast(rate_jitter=0.25)
    async with TelnyxEmulator(signal=signal, faults=faults, seed=seed) as emu:
        async with open_socket(emu, audio_format="linear16", sample_rate=16000) as ws:
            await speak(ws, JITTERED)
            await receive_all(ws)
        (synthesis,) = emu.connections[0].syntheses
    sentences = split_sentences(JITTERED)
    speeds = [sentence_speed(1.0, s, 0.25, seed) for s in sentences]
    assert all(0.75 <= v <= 1.25 for v in speeds)
    assert len({round(v, 3) for v in speeds}) == 3 and all(abs(v - 1) > 0.01 for v in speeds)
    # A different seed draws different rates: the draw is the seed's and the text's.
    assert sentence_speed(1.0, sentences[0], 0.25, seed + 1) != speeds[0]
    lead = SPEECH_LEAD_SECONDS if signal == "speech" else 0.0
    language = language_of(VOICE)
    expected, offset = [], lead
    for sentence, speed in zip(sentences, speeds, strict=True):
        alone = synthesize_audio(
            SynthesisRequest(sentence, PCM_16K, Signal(signal), speed=speed, language=language)
        )
        pcm = len(alone.pcm) / 16000 - (SPEECH_LEAD_SECONDS + SPEECH_TAIL_SECONDS if lead else 0)
        expected += [(w.word, w.start - lead + offset, w.end - lead + offset) for w in alone.words]
        offset += pcm
    # espeak-ng's output varies by a few samples from one call to the next.
    tolerance = 0.005 if signal == "speech" else 1e-9
    assert [w.word for w in synthesis.words] == [word for word, _, _ in expected]
    for w, (_, start, end) in zip(synthesis.words, expected, strict=True):
        assert (w.start, w.end) == (
            pytest.approx(start, abs=tolerance),
            pytest.approx(end, abs=tolerance),
        )
    tail = SPEECH_TAIL_SECONDS if signal == "speech" else 0.0
    assert synthesis.audio_seconds == pytest.approx(offset + tail, abs=tolerance + 1 / 16000)
    if signal == "tone":
        # Tone: every character lasts 1 / (CHARS_PER_SECOND * speed) in its sentence.
        first = synthesis.words[0]
        assert first.end - first.start == pytest.approx(len("Sure,") / CHARS_PER_SECOND / speeds[0])


def test_rate_jitter_zero_keeps_the_voice_speed() -> None:
    plain = synthesize_audio(SynthesisRequest(JITTERED, PCM_8K, Signal.TONE, speed=1.3))
    same = synthesize_audio(
        SynthesisRequest(JITTERED, PCM_8K, Signal.TONE, speed=1.3, rate_jitter=0.0, jitter_seed=5)
    )
    assert plain.words == same.words and len(plain.pcm) == len(same.pcm)
    assert sentence_speed(1.3, "Any sentence.", 0.0, 5) == 1.3
