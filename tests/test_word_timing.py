"""The word clock on its own: synthetic speech whose word positions are known, fed as it would
arrive, and the times the clock gives each word."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from pipecat_telnyx_tts.word_timing import (
    GUARD_S,
    PRIOR_SECONDS_PER_SYLLABLE,
    RELEASE_LEAD_S,
    TimedWord,
    WordClock,
    pause_after,
    speaking_weight,
    syllables,
)

RATE = 16000


def speech(
    text: str,
    *,
    per_syllable: float = PRIOR_SECONDS_PER_SYLLABLE,
    lead: float = 0.0,
    comma_pause: float | None = None,
) -> tuple[bytes, list[float]]:
    """A voiced burst per word, as long as its weight, silence at punctuation (``comma_pause``
    seconds at a comma, if given); and the start of every word. (The weight model itself is
    measured by the context benchmark against espeak-ng and uniform-per-character speech.)"""
    pieces = [np.zeros(round(lead * RATE), dtype=np.int16)]
    starts: list[float] = []
    t = lead
    for word in text.split():
        seconds = speaking_weight(word) * per_syllable
        n = round(seconds * RATE)
        starts.append(t)
        tone = 8000 * np.sin(2 * np.pi * 150 * np.arange(n) / RATE)
        pieces.append(tone.astype(np.int16))
        t += n / RATE
        pause = round(pause_after(word) * per_syllable * RATE)
        if comma_pause is not None and word.endswith(","):
            pause = round(comma_pause * RATE)
        pieces.append(np.zeros(pause, dtype=np.int16))
        t += pause / RATE
    return np.concatenate(pieces).astype("<i2").tobytes(), starts


def feed(clock: WordClock, pcm: bytes, *, at: float = 0.0, chunk_s: float = 0.1, pace: float = 2.4):
    """Audio in chunks, arriving ``pace`` times faster than it plays, from ``at``."""
    out: list[TimedWord] = []
    step = round(RATE * chunk_s) * 2
    for i in range(0, len(pcm), step):
        out += clock.audio(pcm[i : i + step], at + i / 2 / RATE / pace)
    return out


STEP = round(RATE * 0.1) * 2
"""Bytes of one 0.1 s frame, as ``feed`` cuts them."""


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / RATE


def test_a_marked_synthesis_times_its_words_from_its_own_audio():
    one, starts_one = speech("Sure, I can help with that today.", lead=0.15)
    two, starts_two = speech("The total is forty dollars.", per_syllable=0.22, lead=0.1)
    clock = WordClock(RATE)
    words = clock.text_sent("Sure, I can help with that today. ", flush=True)
    words += clock.text_sent("The total is forty dollars. ", flush=True)
    words += clock.announced("Sure, I can help with that today.", carries_audio=True)
    words += feed(clock, one)
    words += clock.announced("The total is forty dollars.", carries_audio=True)
    words += feed(clock, two, at=1.0)
    words += clock.finish()
    assert [w.word for w in words] == [
        "Sure,",
        "I",
        "can",
        "help",
        "with",
        "that",
        "today.",
        "The",
        "total",
        "is",
        "forty",
        "dollars.",
    ]
    truth = starts_one + [len(one) / 2 / RATE + s for s in starts_two]
    errors = [abs(w.seconds - t) for w, t in zip(words, truth, strict=True)]
    # The second synthesis speaks slower than the first; its words are released while its
    # audio still arrives, at the rate measured so far: off by less than a word.
    assert max(errors[:7]) < 0.02
    assert max(errors) < 0.45
    # The second synthesis's first word starts at its sound, after the leading silence.
    assert words[7].seconds == pytest.approx(truth[7], abs=0.02)


def test_words_are_held_until_the_audio_covers_them():
    pcm, starts = speech("One two three four five six seven eight nine ten.")
    clock = WordClock(RATE)
    clock.text_sent("One two three four five six seven eight nine ten.", flush=True)
    half = len(pcm) // 4 * 2
    released = clock.audio(pcm[:half], 0.0)
    heard_by = half / 2 / RATE
    assert released, "words well inside the audio that arrived are released"
    assert all(s + GUARD_S <= heard_by + 0.26 for s in starts[: len(released)])
    assert len(released) < 10
    rest = clock.audio(pcm[half:], 0.1) + clock.finish()
    assert [w.word for w in released + rest] == [
        "One",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten.",
    ]


def test_a_synthesis_that_arrives_late_is_timed_from_when_it_plays():
    one, _ = speech("Hello there.")
    two, starts_two = speech("How are you?")
    clock = WordClock(RATE)
    words = clock.text_sent("Hello there. ", flush=True)
    words += feed(clock, one)
    played_out = len(one) / 2 / RATE
    # The LLM is slow: the next sentence is sent, and its audio arrives, 2 s after the first
    # finished playing; the transport was silent meanwhile.
    words += clock.text_sent("How are you? ", flush=True)
    words += clock.announced("How are you?", carries_audio=False)
    words += feed(clock, two, at=played_out + 2.0)
    words += clock.finish()
    assert words[2].word == "How"
    assert words[2].seconds == pytest.approx(played_out + 2.0 + starts_two[0], abs=0.05)


def test_a_final_frame_marks_where_the_next_synthesis_starts():
    one, _ = speech("First sentence here.")
    two, _ = speech("Then the second one.")
    clock = WordClock(RATE)
    words = clock.text_sent("First sentence here. ", flush=True)
    words += clock.text_sent("Then the second one. ", flush=True)
    words += clock.announced("First sentence here.", carries_audio=False)
    words += feed(clock, one)
    words += clock.synthesis_final()
    words += feed(clock, two, at=0.5)
    words += clock.finish()
    assert words[3].word == "Then"
    assert words[3].seconds == pytest.approx(len(one) / 2 / RATE, abs=0.02)


@pytest.mark.parametrize("seed", range(20))
def test_an_unmarked_sentence_is_never_timed_before_it_starts(seed: int):
    # Streamed PCM under the observed reading: nothing on the wire says where one synthesis
    # ends; the text-bearing frame lands anywhere among its synthesis's audio.
    rng = random.Random(seed)
    texts = [
        "Sure, I can help with that.",
        "Your order ships on Monday, and it should arrive by Thursday.",
        "Is there anything else?",
    ]
    rates = [rng.uniform(0.16, 0.24) for _ in texts]
    clips = [speech(t, per_syllable=r) for t, r in zip(texts, rates, strict=True)]
    clock = WordClock(RATE)
    words: list[TimedWord] = []
    for text in texts:
        words += clock.text_sent(text + " ", flush=True)
    sentence_starts = []
    offset = 0.0
    for text, (pcm, _) in zip(texts, clips, strict=True):
        sentence_starts.append(offset)
        # Between two of its frames: the text-bearing frame never splits one.
        cut = rng.randrange(0, len(pcm) // STEP + 1) * STEP
        words += feed(clock, pcm[:cut], at=offset / 2.4)
        words += clock.announced(text, carries_audio=False)
        words += feed(clock, pcm[cut:], at=(offset + cut / 2 / RATE) / 2.4)
        offset += len(pcm) / 2 / RATE
    words += clock.finish()
    assert [w.word for w in words] == " ".join(texts).split()
    firsts = [0, len(texts[0].split()), len(texts[0].split()) + len(texts[1].split())]
    for index, start, rate in zip(firsts, sentence_starts, rates, strict=True):
        assert words[index].seconds >= start - 0.01
        # Placed a beat after where its synthesis starts, and that beat is small next to a word:
        # the first word is timed before it has finished playing.
        first_word_ends = start + speaking_weight(words[index].word) * rate
        assert words[index].seconds < first_word_ends, (words[index], start, first_word_ends)
    times = [w.seconds for w in words]
    assert times == sorted(times)


def test_every_word_is_released_once_in_order_whatever_arrives():
    rng = random.Random(7)
    for _ in range(30):
        clock = WordClock(RATE)
        sent: list[str] = []
        words: list[TimedWord] = []
        text = "Well, that depends. It could take 3 to 5 days: maybe more, maybe less. Ok."
        cuts = sorted(rng.sample(range(1, len(text)), 15))
        tokens = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        t = 0.0
        for token in tokens:
            # The service flushes at sentence ends, after whitespace.
            words += clock.text_sent(token, flush=token[-1].isspace() and rng.random() < 0.5)
            sent.append(token)
            if rng.random() < 0.5:
                words += clock.audio(b"\x10\x00" * rng.randint(1, 3000), t)
                t += 0.05
            if rng.random() < 0.1:
                words += clock.announced(token, carries_audio=rng.random() < 0.5)
            if rng.random() < 0.05:
                words += clock.synthesis_final()
        words += clock.finish()
        assert [w.word for w in words] == "".join(sent).split()
        assert [w.seconds for w in words] == sorted(w.seconds for w in words)
        assert clock.pending == 0


def test_syllables_and_pauses():
    assert syllables("cat") == 1
    assert syllables("conversation") == 4
    assert syllables("2026") > syllables("7")
    assert syllables("\u4f60\u597d") == 2
    assert pause_after("end.") > pause_after("well,") > pause_after("word") == 0


def test_a_words_weight_follows_its_letters_more_than_its_vowel_groups():
    # Vowel groups alone make a made-up name of open syllables twice as long as a word of
    # consonant clusters; voices (and a voice that gives every letter the same time) do not.
    assert speaking_weight("kamivimi") < syllables("kamivimi")
    assert speaking_weight("strengths") > syllables("strengths")
    assert speaking_weight("\u4f60\u597d") == syllables("\u4f60\u597d")


def test_unspaced_scripts_are_timed_a_character_at_a_time():
    clock = WordClock(RATE)
    clock.text_sent("你好。OK吗\uff1f 안녕 하세요. ", flush=True)
    words = clock.finish()
    assert [(w.word, w.spaced) for w in words] == [
        ("你", True),
        ("好。", True),
        ("OK", True),
        ("吗\uff1f", True),
        # Korean is written with spaces between words: its words stay whole.
        ("안녕", False),
        ("하세요.", False),
    ]


FIRST = "Sure I can help with that today"
SECOND = "The total is forty dollars"
"""Two syntheses with no punctuation: no pause joins them, so only the guard under test can
place the boundary between them."""


def both_sent() -> tuple[WordClock, list[TimedWord]]:
    """A clock that has sent FIRST and SECOND, each flushed: two syntheses."""
    clock = WordClock(RATE)
    return clock, clock.text_sent(FIRST + " ", flush=True) + clock.text_sent(
        SECOND + " ", flush=True
    )


def test_a_frame_carrying_audio_marks_where_its_synthesis_starts():
    # A concatenated provider: each text-bearing frame carries its synthesis's first audio. No
    # pause joins the two, and the first speaks faster than the prior rate, so only the mark
    # places the second.
    one, _ = speech(FIRST, per_syllable=0.2)
    two, _ = speech(SECOND, per_syllable=0.3)
    clock, words = both_sent()
    words += clock.announced(FIRST, carries_audio=True)
    words += feed(clock, one)
    words += clock.announced(SECOND, carries_audio=True)
    words += feed(clock, two, at=1.5)
    words += clock.finish()
    assert words[7].word == "The"
    assert words[7].seconds == pytest.approx(seconds(one), abs=0.02)


def test_with_frames_carrying_audio_a_synthesis_waits_for_its_own_frame():
    # Slower speech than the prior rate and no pause: the rate would place the second
    # synthesis inside the first's audio; its frame, not yet come, is what places it.
    one, _ = speech(FIRST, per_syllable=0.4)
    two, _ = speech(SECOND, per_syllable=0.3)
    clock, words = both_sent()
    words += clock.announced(FIRST, carries_audio=True)
    words += feed(clock, one)
    assert [w.word for w in words][-1] != "The"
    words += clock.announced(SECOND, carries_audio=True)
    words += feed(clock, two, at=1.5)
    words += clock.finish()
    assert words[7].word == "The"
    assert words[7].seconds == pytest.approx(seconds(one), abs=0.02)


def test_the_next_synthesis_starts_no_earlier_than_the_frame_announcing_the_one_before():
    # Streamed PCM: the first synthesis's text-bearing frame arrives late among its own audio,
    # so the second cannot have started before it, although the prior rate says it had.
    one, _ = speech(FIRST, per_syllable=1 / 3)
    two, _ = speech(SECOND, per_syllable=0.2)
    clock, words = both_sent()
    cut = 29 * STEP  # 2.9 s of the first synthesis's 3.0 s
    words += feed(clock, one[:cut])
    words += clock.announced(FIRST, carries_audio=False)
    words += feed(clock, one[cut:], at=cut / 2 / RATE / 2.4)
    words += feed(clock, two, at=seconds(one) / 2.4)
    words += clock.finish()
    assert words[7].word == "The"
    assert words[7].seconds >= seconds(one) - 0.01


@pytest.mark.parametrize("seam", ["short frame", "new file"])
def test_a_frame_seam_places_the_start_of_the_next_synthesis(seam: str):
    # Nothing on the wire marks the boundary and no pause joins the two; but the first
    # synthesis's audio ends with a short frame (fixed-size PCM), or the second opens a new
    # file. (0.29 s a syllable leaves a short last frame; 0.3 makes whole 0.1 s frames.)
    rate = 0.29 if seam == "short frame" else 0.3
    one, _ = speech(FIRST, per_syllable=rate)
    two, _ = speech(SECOND, per_syllable=0.2)
    clock, words = both_sent()
    words += clock.announced(FIRST, carries_audio=False)
    words += feed(clock, one)
    at = seconds(one) / 2.4
    words += clock.audio(two[:STEP], at, new_file=seam == "new file")
    words += feed(clock, two[STEP:], at=at + 0.1 / 2.4)
    words += clock.finish()
    assert words[7].word == "The"
    assert words[7].seconds == pytest.approx(seconds(one), abs=0.1)


def test_the_last_words_of_a_synthesis_are_released_once_the_next_one_has_started():
    # Its last word ends within the guard of its audio's end; once the next synthesis's start
    # is settled and reached, the audio of this one is complete and nothing need wait.
    one, starts_one = speech("Sure I can help with that now")
    two, _ = speech("How are you")
    clock = WordClock(RATE)
    words = clock.text_sent("Sure I can help with that now ", flush=True)
    words += clock.announced("Sure I can help with that now", carries_audio=False)
    words += feed(clock, one)
    played_out = seconds(one)
    words += clock.text_sent("How are you ", flush=True)
    words += clock.announced("How are you", carries_audio=False)
    words += clock.audio(two[:STEP], played_out + 1.0)
    assert [w.word for w in words] == ["Sure", "I", "can", "help", "with", "that", "now"]
    assert words[-1].seconds == pytest.approx(starts_one[-1], abs=0.02)


def test_a_chunk_costs_the_words_it_releases_not_the_synthesis_so_far(monkeypatch):
    # One long synthesis, fed in small chunks: were every word placed anew on every chunk, the
    # placements would grow with words x chunks (here about 240 x 900).
    text = " ".join(["Here is a rather long sentence that keeps on going, and on."] * 20)
    pcm, _ = speech(text)
    placed = 0
    position = WordClock._position

    def counted(self, span, i):
        nonlocal placed
        placed += 1
        return position(self, span, i)

    monkeypatch.setattr(WordClock, "_position", counted)
    clock = WordClock(RATE)
    words = clock.text_sent(text + " ", flush=True)
    chunks = len(range(0, len(pcm), STEP // 4))
    words += feed(clock, pcm, chunk_s=0.025)
    words += clock.finish()
    assert len(words) == len(text.split())
    # Each word once, plus at most one look at the next word per call.
    assert placed <= len(words) + chunks + 1


def feed_files(clock: WordClock, files: list[bytes], *, at: float = 0.0, pace: float = 2.4):
    """Audio as separately encoded files back to back (live MP3 is several per synthesis): the
    first frame of each opens a file."""
    out: list[TimedWord] = []
    sent = 0
    for data in files:
        for i in range(0, len(data), STEP):
            out += clock.audio(data[i : i + STEP], at + sent / 2 / RATE / pace, new_file=i == 0)
            sent += len(data[i : i + STEP]) // 2
    return out


def halves(pcm: bytes) -> list[bytes]:
    """``pcm`` as two files, cut mid-speech on a 0.1 s frame."""
    cut = len(pcm) // 2 // STEP * STEP
    return [pcm[:cut], pcm[cut:]]


def test_a_synthesis_ending_where_the_audio_stood_when_the_next_text_went_out_starts_there():
    # A slow LLM: the first synthesis's audio is all in (its last frame short) when the next
    # text is sent. The voice is twice as fast as the prior rate, so a guess from the rate
    # lands far past the boundary; the short frame right where the audio stood is the boundary.
    first, second = "Sure, I can help with that today.", "The total is forty dollars."
    one, _ = speech(first, per_syllable=0.1)
    two, starts_two = speech(second, per_syllable=0.1)
    assert len(one) % STEP, "the first synthesis ends on a short frame"
    clock = WordClock(RATE)
    words = clock.text_sent(first + " ", flush=True)
    words += feed(clock, one)
    words += clock.text_sent(second + " ", flush=True)
    words += feed(clock, two[: STEP * 8], at=seconds(one) + 1.0)
    assert [w.word for w in words][7:9] == ["The", "total"], "released while the audio comes"
    assert words[7].seconds == pytest.approx(seconds(one) + 1.0 + starts_two[0], abs=0.08)


def test_a_file_boundary_after_a_pause_is_preferred_to_one_inside_speech():
    # Live MP3 comes as several files per synthesis, so a file's start is a seam whether or not
    # a synthesis starts there. The voice is fast: the rate's guess for the second synthesis's
    # start lands near the file boundary inside it; the boundary after the first synthesis's
    # closing pause is the synthesis boundary.
    first, second = "Sure, I can help with that today.", "The total is forty two dollars now."
    one, _ = speech(first, per_syllable=0.12)
    two, starts_two = speech(second, per_syllable=0.12)
    clock = WordClock(RATE)
    words = clock.text_sent(first + " ", flush=True)
    words += clock.text_sent(second + " ", flush=True)
    words += feed_files(clock, [*halves(one), *halves(two)])
    words += clock.finish()
    assert words[7].word == "The"
    assert words[7].seconds == pytest.approx(seconds(one) + starts_two[0], abs=0.1)


def test_words_already_out_are_not_moved_by_a_seam_that_comes_later():
    # No pause ends the first synthesis, so nothing tells its two seams apart but the guess.
    # The second synthesis's first word goes out once its start settles at the boundary; a
    # file boundary inside it that arrives later lies nearer the guess, and must not move the
    # words that follow (they would be timed a second late: recorded after they were heard).
    first, second = "Sure I can help with that one right now", "The total is due on Monday"
    one, _ = speech(first, per_syllable=0.16)
    two, starts_two = speech(second, per_syllable=0.16)
    assert 0.5 < seconds(two) / seconds(one) < 0.7
    clock = WordClock(RATE)
    words = clock.text_sent(first + " ", flush=True)
    words += clock.text_sent(second + " ", flush=True)
    # In real time, so that playback is close to the seam when it comes.
    *earlier, later = [*halves(one), *halves(two)]
    words += feed_files(clock, earlier, pace=1.0)
    assert "The" in [w.word for w in words], "the second synthesis has begun to go out"
    words += feed_files(clock, [later], at=seconds(b"".join(earlier)), pace=1.0)
    truth = [seconds(one) + s for s in starts_two]
    words += clock.finish()
    assert [w.word for w in words[9:]] == second.split()
    assert max(abs(w.seconds - t) for w, t in zip(words[9:], truth, strict=True)) < 0.3


def test_no_word_of_a_synthesis_whose_text_is_still_coming_is_timed_in_audio_before_it():
    # Token mode with a slow LLM: the next sentence's words go out one by one while the audio
    # of the one before (two files, a seam inside it) arrives. The server has not begun a
    # synthesis whose text is not all sent, so the seam inside the earlier audio is not its
    # start, though a voice twice as slow as the prior puts the rate's guess right on it.
    first = "Sure, I can help with that today."
    one, _ = speech(first, per_syllable=2 * PRIOR_SECONDS_PER_SYLLABLE)
    clock = WordClock(RATE)
    words = clock.text_sent(first + " ", flush=True)
    words += clock.text_sent("The total is", flush=False)
    words += feed_files(clock, halves(one))
    assert [w.word for w in words] == first.split()[: len(words)]


def test_a_chunk_lays_out_the_syntheses_it_reaches_not_every_one_sent(monkeypatch):
    # Forty syntheses sent at once, fed in small chunks: were every synthesis laid out on every
    # chunk, the layouts would grow with syntheses x chunks (here 40 x 5670).
    sentences = [f"Here is sentence {n} of the reply." for n in range(40)]
    pcm = b"".join(speech(s)[0] for s in sentences)
    laid = 0
    onset = WordClock._onset

    def counted(self, *args, **kwargs):
        nonlocal laid
        laid += 1
        return onset(self, *args, **kwargs)

    monkeypatch.setattr(WordClock, "_onset", counted)
    clock = WordClock(RATE)
    words = [w for s in sentences for w in clock.text_sent(s + " ", flush=True)]
    chunks = len(range(0, len(pcm), round(RATE * 0.025) * 2))
    words += feed(clock, pcm, chunk_s=0.025)
    words += clock.finish()
    assert len(words) == sum(len(s.split()) for s in sentences)
    # The synthesis playing and the next one, about; never all that are still to come.
    assert laid <= 3 * chunks


def test_the_audio_analysis_buffer_grows_by_doubling_not_by_each_chunk():
    # Copying everything measured so far on every chunk would make a chunk cost the synthesis.
    pcm, _ = speech(" ".join(["Here is a rather long sentence that keeps on going."] * 20))
    clock = WordClock(RATE)
    clock.text_sent("Some text. ", flush=True)
    step = round(RATE * 0.025) * 2
    buffers = [clock._energy]
    for i in range(0, len(pcm), step):
        clock.audio(pcm[i : i + step], i / 2 / RATE)
        if clock._energy is not buffers[-1]:
            buffers.append(clock._energy)
    frames = seconds(pcm) / 0.01
    assert len(buffers) <= math.log2(frames) + 2, len(buffers)


def test_no_word_is_placed_inside_a_pause_however_long_it_is():
    # Words share a synthesis's speech; its pauses are where the audio is silent. A voice that
    # stops for 0.7 s at a comma (the punctuation predicts 0.16) puts every word after the
    # comma 0.5 s later than a share of the whole synthesis would.
    text = "Well, after a long pause the words go on, and on, just as before."
    pcm, starts = speech(text, comma_pause=0.7)
    clock = WordClock(RATE)
    words = clock.text_sent(text + " ", flush=True)
    words += clock.announced(text, carries_audio=True)
    words += clock.audio(pcm, 0.0)
    words += clock.finish()
    assert [w.word for w in words] == text.split()
    assert max(abs(w.seconds - t) for w, t in zip(words, starts, strict=True)) < 0.03


def released_at(clock: WordClock, pcm: bytes, *, pace: float) -> list[tuple[TimedWord, float]]:
    """Feed ``pcm`` at ``pace`` and tell the clock the time every 0.1 s between chunks, up to
    the audio's playback end; each word with the playback position when it came out."""
    out: list[tuple[TimedWord, float]] = []
    step = round(RATE * 0.1) * 2
    t = 0.0
    for i in range(0, len(pcm), step):
        t = i / 2 / RATE / pace
        out += [(w, t) for w in clock.audio(pcm[i : i + step], t)]
    while t < seconds(pcm):
        t += 0.1
        out += [(w, t) for w in clock.tick(t)]
    return out


def test_inside_a_long_sentence_the_rate_follows_the_pauses_at_its_commas():
    # A 45-word sentence spoken 15 % faster than the prior, in real time, its end unknown:
    # by the rate so far its last words would be placed a second late. Each pause at a comma
    # shows how far the voice has got.
    text = (
        "Thanks for waiting, I spoke with the billing team and they confirmed that the "
        "duplicate charge was a mistake on our side, that it has already been reversed, and "
        "that your next statement will show the correction within three to five days, so "
        "there is nothing more you need to do today."
    )
    assert len(text.split()) >= 45
    pcm, starts = speech(text, per_syllable=0.85 * PRIOR_SECONDS_PER_SYLLABLE)
    clock = WordClock(RATE)
    clock.text_sent(text + " ", flush=True)
    out = released_at(clock, pcm, pace=1.0)
    errors = [abs(w.seconds - starts[i]) for i, (w, _) in enumerate(out)]
    assert len(out) >= 40, "words go out as the audio arrives"
    # Off by the rate until the pauses tell it (the prior outweighs the first few): never
    # by two words, and not drifting further once they have.
    assert max(errors) < 0.7, max(errors)
    assert max(errors[25:]) < 0.5, max(errors[25:])


def test_a_word_goes_out_only_when_its_playback_is_near():
    # Audio at 2.4 times real time: the word clock waits, for each word, until playback is
    # within RELEASE_LEAD_S of it, so what arrives meanwhile can still place it.
    text = "One two three four five six seven eight nine ten eleven twelve thirteen."
    pcm, _ = speech(text)
    clock = WordClock(RATE)
    clock.text_sent(text + " ", flush=True)
    out = released_at(clock, pcm, pace=2.4)
    assert [w.word for w, _ in out] == text.split()[: len(out)]
    assert len(out) >= len(text.split()) - 2
    assert all(w.seconds <= playing + RELEASE_LEAD_S + 1e-9 for w, playing in out)


def test_a_synthesis_whose_end_is_marked_before_its_words_play_is_timed_by_it():
    # A voice 20 % faster than the prior, no pause to go by, audio 2.4 times real time: the
    # next synthesis's frame marks where this one ends while most of its words are still to
    # play, and words held until their playback is near are placed by it, not by the rate.
    first = " ".join(["one two three four five six seven eight nine ten"] * 3)
    one, starts = speech(first, per_syllable=0.8 * PRIOR_SECONDS_PER_SYLLABLE)
    two, _ = speech("Eleven twelve", per_syllable=0.8 * PRIOR_SECONDS_PER_SYLLABLE)
    clock = WordClock(RATE)
    clock.text_sent(first + " ", flush=True)
    clock.text_sent("Eleven twelve ", flush=True)
    out = [(w, 0.0) for w in clock.announced(first, carries_audio=True)]
    step = round(RATE * 0.1) * 2
    for i in range(0, len(one), step):
        t = i / 2 / RATE / 2.4
        out += [(w, t) for w in clock.audio(one[i : i + step], t)]
    marked = t = seconds(one) / 2.4
    out += [(w, t) for w in clock.announced("Eleven twelve", carries_audio=True)]
    out += [(w, t) for w in clock.audio(two, t)]
    while t < seconds(one):
        t += 0.1
        out += [(w, t) for w in clock.tick(t)]
    assert [w.word for w, _ in out][:30] == first.split()
    after = [(w, s) for (w, t), s in zip(out[:30], starts, strict=True) if t >= marked]
    assert len(after) >= 15, "most words wait for their playback"
    # (The first of them may not go before words already out, placed late by the rate.)
    assert max(abs(w.seconds - s) for w, s in after[-10:]) < 0.03


def test_a_failed_turn_releases_the_words_its_audio_covers_and_no_more():
    # The socket failed: no more audio, so waiting for playback gains nothing. The words the
    # audio that came covers will play and are due now; the rest never will be.
    text = "One two three four five six seven eight nine ten eleven twelve thirteen."
    pcm, starts = speech(text)
    clock = WordClock(RATE)
    clock.text_sent(text + " ", flush=True)
    cut = len(pcm) // 2 // 2 * 2
    held = clock.audio(pcm[:cut], 0.0)
    out = held + clock.stop()
    covered = [i for i, s in enumerate(starts) if s + GUARD_S <= seconds(pcm[:cut]) - 0.1]
    assert len(out) >= len(covered) > len(held)
    assert all(starts[i] < seconds(pcm[:cut]) for i in range(len(out)))
    assert clock.unreleased_text == " ".join(text.split()[len(out) :])


def test_a_silence_too_short_to_be_a_pause_is_part_of_its_word():
    # A stop consonant ("t" in "butter") silences the voice for a few tens of milliseconds,
    # inside a word: that time is the word's, or words full of stops would look short.
    text = "Put it on the table, but do not tip the cup. Then we are done here for today."
    pcm, starts = speech(text)
    samples = np.frombuffer(pcm, dtype="<i2").copy()
    for i, word in enumerate(text.split()[:10]):
        middle = round((starts[i] + speaking_weight(word) * PRIOR_SECONDS_PER_SYLLABLE / 2) * RATE)
        samples[middle - round(0.04 * RATE) : middle + round(0.04 * RATE)] = 0
    clock = WordClock(RATE)
    words = clock.text_sent(text + " ", flush=True)
    words += clock.announced(text, carries_audio=True)
    words += feed(clock, samples.astype("<i2").tobytes())
    words += clock.finish()
    assert [w.word for w in words] == text.split()
    assert max(abs(w.seconds - t) for w, t in zip(words, starts, strict=True)) < 0.03


def test_a_synthesis_that_ended_unmarked_gives_its_last_words_before_playback_reaches_them():
    # Nothing marks where the last synthesis ends (the next sentence is still being written),
    # and the voice is 15 % faster than the rate: its last words are placed past the audio. Its
    # audio ends in a pause, holds the speech of all its words at the fastest rate looked for,
    # and no more has come for a while: it has ended, and its words share its speech.
    text = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen."
    pcm, starts = speech(text, per_syllable=0.85 * PRIOR_SECONDS_PER_SYLLABLE)
    clock = WordClock(RATE)
    clock.text_sent(text + " ", flush=True)
    out = released_at(clock, pcm, pace=2.4)
    assert [w.word for w, _ in out] == text.split()
    assert all(playing <= w.seconds for w, playing in out[-3:]), "out before they play"
    # (Words out earlier, placed late by the rate, hold the ones after them back a little.)
    assert out[-1][0].seconds == pytest.approx(starts[-1], abs=0.05)


def test_a_stream_that_stops_at_a_pause_mid_sentence_is_not_taken_for_its_end():
    # The audio stops at a comma halfway through the sentence (a server that stalls): the
    # speech so far is far short of what the rest of the words need, so they wait.
    text = "One two three four five six seven eight, nine ten eleven twelve thirteen fourteen."
    pcm, starts = speech(text)
    half = round((starts[8] - 0.05) * RATE) * 2
    clock = WordClock(RATE)
    clock.text_sent(text + " ", flush=True)
    out = released_at(clock, pcm[:half], pace=2.4)
    for t in range(30):
        out += [(w, 0.0) for w in clock.tick(seconds(pcm[:half]) + t * 0.1)]
    assert [w.word for w, _ in out] == text.split()[:8]
