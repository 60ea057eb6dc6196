"""The turn lifecycle and the request builder, without sockets."""

import pytest

from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    TextMessage,
)
from pipecat_telnyx_tts.request import build_request, check_voice, choose_format, ignored_speed
from pipecat_telnyx_tts.turn import (
    Announced,
    Audio,
    Failed,
    Finished,
    FirstAudioLatency,
    Phase,
    SynthesisFinal,
    Turn,
)
from pipecat_telnyx_tts.voices import family_of


def sent(turn: Turn, tokens: list[str]) -> list:
    out = []
    for token in tokens:
        out.extend(turn.text(token))
    return out


def test_sentence_mode_flushes_every_sentence():
    turn = Turn(token_mode=False)
    assert turn.text("Hello there.") == [TextMessage("Hello there.", flush=True)]
    assert turn.end() == [EndMessage()]
    assert turn.phase is Phase.ENDING


def test_token_mode_flushes_at_sentence_ends_only():
    turn = Turn(token_mode=True)
    out = sent(turn, ["Hello", ".", " How", " are", " you", "?"])
    assert out == [
        TextMessage("Hello"),
        TextMessage(". ", flush=True),
        TextMessage("How"),
        TextMessage(" are"),
        TextMessage(" you"),
    ]
    # The question mark is held until the turn ends, then flushed before end of sequence.
    assert turn.end() == [TextMessage("?", flush=True), EndMessage()]


def test_token_mode_does_not_flush_inside_a_number():
    turn = Turn(token_mode=True)
    out = sent(turn, ["Pi", " is", " 3", ".", "14", " roughly"])
    assert not any(m.flush for m in out)
    assert "".join(m.text for m in out) == "Pi is 3.14 roughly"


def test_token_mode_splits_a_sentence_end_inside_a_token():
    turn = Turn(token_mode=True)
    assert turn.text('Done." Next') == [
        TextMessage('Done." ', flush=True),
        TextMessage("Next"),
    ]


def test_token_mode_cjk_full_stop_needs_no_space():
    turn = Turn(token_mode=True)
    assert sent(turn, ["好", "。", "你"]) == [
        TextMessage("好"),
        TextMessage("。", flush=True),
        TextMessage("你"),
    ]


def test_no_text_is_lost_in_token_mode():
    tokens = ["A", " b", ".", " C", "!", "\u201d", " d", "?", "e"]
    turn = Turn(token_mode=True)
    out = sent(turn, tokens) + turn.end()
    assert "".join(m.text for m in out if isinstance(m, TextMessage)) == "".join(tokens)


def test_empty_text_sends_nothing():
    turn = Turn(token_mode=True)
    assert turn.text("") == []
    assert not turn.sent_text


def test_a_final_before_end_of_sequence_does_not_end_the_turn():
    # Documented reading: a final frame after each synthesis.
    turn = Turn(token_mode=False)
    turn.text("One.")
    assert turn.on_message(FinalMessage()) == [SynthesisFinal()]
    assert turn.phase is Phase.SPEAKING
    turn.text("Two.")
    turn.end()
    assert turn.on_message(FinalMessage()) == [SynthesisFinal()]
    assert turn.final_after_end
    # More audio after that final means it closed a sentence, not the turn.
    assert turn.on_message(AudioMessage(b"x")) == [Audio(b"x")]
    assert not turn.final_after_end
    turn.on_message(FinalMessage())
    assert turn.on_closed(clean=True, detail="close code 1000") == [Finished()]


def test_clean_close_after_the_final_frame_finishes_the_turn():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    turn.end()
    turn.on_message(AudioMessage(b"a"))
    turn.on_message(FinalMessage())
    assert turn.on_closed(clean=True, detail="1000") == [Finished()]
    assert turn.phase is Phase.DONE


def test_clean_close_after_end_without_a_final_frame_is_a_cut_turn():
    # An idle timeout while the server still streams looks clean; only the missing final tells.
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    turn.end()
    turn.on_message(AudioMessage(b"a"))
    assert turn.on_closed(clean=True, detail="close code 1000: inactivity timeout") == [
        Failed(
            "Telnyx closed the socket before the turn's final frame "
            "(close code 1000: inactivity timeout)"
        )
    ]


def test_close_before_end_of_sequence_is_a_failure():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    events = turn.on_closed(clean=True, detail="close code 1000: inactivity timeout")
    assert events == [
        Failed(
            "the Telnyx connection ended before the turn finished "
            "(close code 1000: inactivity timeout)"
        )
    ]


def test_grace_after_final_finishes_a_server_that_never_closes():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    assert turn.on_quiet(5, grace=3, timeout=10) == []
    turn.end()
    turn.on_message(AudioMessage(None, "Hi."))
    turn.on_message(FinalMessage())
    assert turn.on_quiet(2.9, grace=3, timeout=10) == []
    assert turn.on_quiet(3, grace=3, timeout=10) == [Finished()]


def test_a_final_does_not_end_a_turn_while_a_sentence_is_unanswered():
    """Documented reading: the final of sentence 1 arrives, sentence 2 is still synthesizing."""
    turn = Turn(token_mode=False)
    turn.text("First one. ")
    turn.text("Second **one**.")
    turn.end()
    turn.on_message(AudioMessage(b"a", "First one. "))
    turn.on_message(FinalMessage())
    assert turn.unanswered_text == "Second **one**."
    assert turn.on_quiet(5, grace=3, timeout=10) == []
    # The server may strip markdown from what it echoes; letters and digits still match.
    turn.on_message(AudioMessage(None, "Second one."))
    turn.on_message(AudioMessage(b"b"))
    turn.on_message(FinalMessage())
    assert turn.unanswered_text == ""
    assert turn.on_quiet(3, grace=3, timeout=10) == [Finished()]


def test_owed_audio_that_never_comes_fails_the_turn_with_its_text_unanswered():
    turn = Turn(token_mode=False)
    turn.text("First one. ")
    turn.text("Second one.")
    turn.end()
    turn.on_message(AudioMessage(b"a", "First one. "))
    turn.on_message(FinalMessage())
    assert turn.on_quiet(10, grace=3, timeout=10) == [
        Failed("Telnyx sent nothing for 10 s while audio was due")
    ]
    assert turn.unanswered_text == "Second one."


def test_error_frame_fails_the_turn_and_later_frames_are_ignored():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    assert turn.on_message(ErrorMessage("Error in audio response")) == [
        Failed("Telnyx reported an error: Error in audio response")
    ]
    assert turn.on_message(AudioMessage(b"late")) == []
    assert turn.text("More.") == []


def test_interrupt_sends_force_only_when_text_went_out():
    idle = Turn(token_mode=False)
    assert idle.interrupt() == []
    busy = Turn(token_mode=False)
    busy.text("Hi.")
    assert busy.interrupt() == [ForceMessage()]
    assert busy.on_message(AudioMessage(b"stale")) == []
    assert busy.interrupt() == []


def test_text_bearing_frames_are_announced_before_their_audio():
    # A concatenated provider's frame carries the synthesis's first audio: it marks the start.
    turn = Turn(token_mode=False)
    turn.text("Hi there.")
    assert turn.on_message(AudioMessage(b"a", "Hi there.")) == [
        Announced("Hi there.", carries_audio=True),
        Audio(b"a"),
    ]
    assert turn.on_message(AudioMessage(None, "Again.")) == [Announced("Again.", False)]


def test_first_audio_latency_is_reported():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    assert turn.on_message(AudioMessage(b"a", None, True, 245)) == [
        FirstAudioLatency(245, True),
        Audio(b"a"),
    ]


def test_awaiting_server_tracks_unanswered_flushes():
    turn = Turn(token_mode=True)
    turn.text("Hello")
    assert not turn.awaiting_server
    turn.text(". Next")
    assert turn.awaiting_server
    turn.on_message(AudioMessage(b"a"))
    assert not turn.awaiting_server
    turn.end()
    assert turn.awaiting_server
    turn.on_message(AudioMessage(b"a"))
    assert turn.awaiting_server


def test_timeout_fails_once():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    assert turn.on_quiet(10, grace=3, timeout=10) == [
        Failed("Telnyx sent nothing for 10 s while audio was due")
    ]
    assert turn.on_quiet(10, grace=3, timeout=10) == []


def test_fail_ends_the_turn_once():
    turn = Turn(token_mode=False)
    turn.text("Hi.")
    assert turn.fail("undecodable audio") == [Failed("undecodable audio")]
    assert turn.fail("again") == []
    assert turn.on_message(AudioMessage(b"late")) == []


# ----------------------------------------------------------------------------- requests


def test_pcm_at_the_output_rate_where_the_voice_honours_it():
    assert choose_format(family_of("Telnyx.NaturalHD.astra"), 8000, None) == (
        "linear16",
        8000,
        8000,
    )
    # Polly has no 48 kHz: the nearest higher rate is none, so its highest.
    assert choose_format(family_of("aws.Polly.Neural.Joanna"), 48000, None) == (
        "linear16",
        24000,
        24000,
    )
    # Minimax has no 11025: the next rate up.
    assert choose_format(family_of("Minimax.m.v"), 11025, None) == ("linear16", 16000, 16000)


def test_mp3_where_the_voice_ignores_or_lacks_linear16():
    assert choose_format(family_of("Telnyx.KokoroTTS.af_heart"), 8000, None)[0] == "mp3"
    assert choose_format(family_of("Resemble.Turbo.Aaron"), 16000, None)[0] == "mp3"


def test_a_format_the_provider_lacks_is_refused():
    with pytest.raises(ValueError, match="not offered by Resemble"):
        choose_format(family_of("Resemble.Turbo.Aaron"), 16000, "linear16")


def test_speed_maps_to_the_provider_key_and_voice_settings_win():
    natural = build_request(
        voice="Telnyx.NaturalHD.astra",
        out_rate=16000,
        audio_format=None,
        speed=1.2,
        voice_settings=None,
        language=None,
    )
    assert natural.init.voice_settings == {"voice_speed": 1.2}
    minimax = build_request(
        voice="Minimax.speech-2.8-turbo.v",
        out_rate=16000,
        audio_format=None,
        speed=0.9,
        voice_settings={"speed": 1.5, "pitch": 2},
        language="en-US",
    )
    assert minimax.init.voice_settings == {"response_format": "pcm", "speed": 1.5, "pitch": 2}
    assert minimax.params.language == "en-US"


def test_speed_on_a_provider_without_one_is_dropped_and_explained():
    req = build_request(
        voice="Telnyx.KokoroTTS.af_heart",
        out_rate=24000,
        audio_format=None,
        speed=1.3,
        voice_settings=None,
        language=None,
    )
    assert req.init.voice_settings is None
    assert ignored_speed("Telnyx.KokoroTTS.af_heart", 1.3) == (
        "Telnyx.KokoroTTS has no speed setting; speed=1.3 is ignored"
    )
    assert ignored_speed("Telnyx.NaturalHD.astra", 1.3) is None
    assert ignored_speed("Telnyx.KokoroTTS.af_heart", None) is None


def test_ultra_and_malformed_voices_fail_at_construction():
    with pytest.raises(ValueError, match="does not serve on the streaming WebSocket"):
        check_voice("Telnyx.Ultra.x")
    with pytest.raises(ValueError, match="three parts"):
        check_voice("astra")


def test_a_surrogate_pair_split_across_tokens_is_joined():
    turn = Turn(token_mode=True)
    out = sent(turn, ["Smile ", "\ud83d", "\ude00", " now"])
    assert "".join(m.text for m in out) == "Smile \U0001f600 now"


def test_lone_surrogates_are_replaced_not_sent():
    turn = Turn(token_mode=False)
    [message] = turn.text("broken \ud83d here.")
    assert message.text == "broken \ufffd here."
    token = Turn(token_mode=True)
    out = sent(token, ["a \udc00 b"]) + token.end()
    assert all("\udc00" not in m.text for m in out if isinstance(m, TextMessage))
    held = Turn(token_mode=True)
    held.text("dangling \ud83d")
    assert held.end()[0] == TextMessage("dangling \ufffd", flush=True)


# ----------------------------------------------------------------------------- first clause


def flushed(messages: list) -> list[str]:
    """The text of each synthesis the messages ask for: everything up to each flush."""
    out, text = [], ""
    for m in messages:
        if isinstance(m, TextMessage):
            text += m.text
            if m.flush:
                out.append(text)
                text = ""
    return [*out, text] if text else out


def clause_turn(tokens: list[str], *, first_clause: bool = True) -> list[str]:
    turn = Turn(token_mode=True, first_clause=first_clause)
    return flushed(sent(turn, tokens) + turn.end())


REPLY = ["If", " you", " want", " to", " reschedule", ",", " I", " can", " move", " it", "."]


def test_first_clause_is_flushed_at_its_comma():
    assert clause_turn(REPLY) == ["If you want to reschedule, ", "I can move it."]


def test_without_the_option_the_first_flush_is_the_sentence():
    turn = Turn(token_mode=True)
    messages = sent(turn, REPLY) + turn.end()
    assert flushed(messages) == ["If you want to reschedule, I can move it."]
    # Nothing is held for a clause: the comma goes out with the token that brought it.
    assert messages[5] == TextMessage(",")


@pytest.mark.parametrize(
    ("text", "clause"),
    [
        ("One two three four; five six.", "One two three four; "),
        ("Here is what I found: two slots.", "Here is what I found: "),
        ("I checked the calendar\u2014Thursday works.", "I checked the calendar\u2014"),
        ("I checked the calendar \u2013 Thursday works.", "I checked the calendar \u2013 "),
        ("I checked the calendar - Thursday works.", "I checked the calendar - "),
        ("I checked the calendar -- Thursday works.", "I checked the calendar -- "),
        ('She told me "call back," so I did.', 'She told me "call back," '),
    ],
)
def test_clause_boundaries(text, clause):
    assert clause_turn([text])[0] == clause


@pytest.mark.parametrize(
    "text",
    [
        "It costs about 1,000 dollars a month.",
        "Your slot is at 3:30 on the dot.",
        "The range is 10\u201320 units per box.",
        "The range is 10 - 20 units per box.",
        "Pick any of 1, 2 or 3 for me.",
        "Bring a document, e.g., a passport.",
        "It is a well-known and well-liked place.",
    ],
)
def test_no_clause_inside_numbers_abbreviations_or_words(text):
    assert clause_turn([text]) == [text]
    assert clause_turn(list(text)) == [text]


def test_a_number_split_across_tokens_is_not_a_boundary():
    assert clause_turn(["It", " costs", " about", " 1", ",", "000", " dollars", "."]) == [
        "It costs about 1,000 dollars."
    ]


def test_a_clause_needs_four_words():
    assert clause_turn(["Sure", ",", " I", " can", " do", " that", "."]) == ["Sure, I can do that."]
    # The first boundary after four words is the one, even if an earlier one was too short.
    assert clause_turn(["Well", ",", " if", " you", " like", ",", " I", " can", "."]) == [
        "Well, if you like, ",
        "I can.",
    ]


def test_only_the_first_segment_may_be_a_clause():
    tokens = ["Let", " me", " check", " that", ",", " okay", "?", " If", " it", " is", " free"]
    tokens += [",", " I", " book", " it", "."]
    assert clause_turn(tokens) == [
        "Let me check that, ",
        "okay? ",
        "If it is free, I book it.",
    ]


def test_a_sentence_before_any_clause_ends_the_chance_of_one():
    assert clause_turn(["Hello", " there", ".", " One", " two", " three", ",", " four", "."]) == [
        "Hello there. ",
        "One two three, four.",
    ]


@pytest.mark.parametrize(
    "tokens",
    [
        ["If you want to reschedule,", " I can move it."],
        ["If you want to reschedule", ", I", " can move it."],
        ["If you want to reschedule, I", " can move it."],
        ["If you want to reschedule,", " ", "I can move it."],
        list("If you want to reschedule, I can move it."),
    ],
)
def test_a_token_split_across_the_boundary(tokens):
    assert clause_turn(tokens) == ["If you want to reschedule, ", "I can move it."]


def test_text_that_may_end_a_clause_is_held_for_one_token_only_while_one_is_due():
    turn = Turn(token_mode=True, first_clause=True)
    assert turn.text("One two three four") == [TextMessage("One two three four")]
    assert turn.text(",") == []
    assert turn.text(" five") == [TextMessage(", ", flush=True), TextMessage("five")]
    assert turn.text(",") == [TextMessage(",")]


def test_a_held_clause_end_is_flushed_at_the_end_of_the_turn():
    turn = Turn(token_mode=True, first_clause=True)
    sent(turn, ["One", " two", " three", " four", ","])
    assert turn.end() == [TextMessage(",", flush=True), EndMessage()]


def test_first_clause_changes_nothing_in_sentence_mode():
    turn = Turn(token_mode=False, first_clause=True)
    assert turn.text("If you want to reschedule, I can move it.") == [
        TextMessage("If you want to reschedule, I can move it.", flush=True)
    ]
