"""The sans-I/O protocol core: query strings, voice ids, client and server frames."""

import base64
import json

import pytest

from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ConnectParams,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    InitMessage,
    ProtocolError,
    TextMessage,
    check_connect,
    encode_client,
    encode_server,
    parse_client,
    parse_server,
)
from pipecat_telnyx_tts.voices import Delivery, VoiceId, VoiceIdError, family_of

# ----------------------------------------------------------------------------- query string


def test_every_documented_parameter_round_trips():
    params = ConnectParams(
        voice="aws.Polly.Generative.Lucia",
        provider="aws",
        model_id="Polly.Generative",
        voice_id="Lucia",
        audio_format="linear16",
        sample_rate=16000,
        language="es-ES",
        text_type="ssml",
        disable_cache=True,
        pronunciation_dict_id="3f1c1f7e-1111-4c4c-9a9a-0123456789ab",
        socket_id="call-42",
        inactivity_timeout=30,
    )
    query = params.to_query()
    assert "disable_cache=true" in query
    assert "inactivity_timeout=30" in query
    assert ConnectParams.from_query(query) == params


def test_unset_parameters_are_left_out():
    assert ConnectParams(voice="Telnyx.NaturalHD.astra").to_query() == (
        "voice=Telnyx.NaturalHD.astra"
    )


def test_pcm_is_an_alias_of_linear16():
    assert ConnectParams.from_query("audio_format=pcm").audio_format == "linear16"


def test_unknown_parameters_are_ignored():
    assert ConnectParams.from_query("voice=a.b.c&colour=blue") == ConnectParams(voice="a.b.c")


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("sample_rate=fast", "sample_rate must be a positive integer"),
        ("sample_rate=0", "sample_rate must be a positive integer"),
        ("sample_rate=%C2%B2", "sample_rate must be a positive integer"),
        ("inactivity_timeout=nan", "inactivity_timeout must be positive"),
        ("inactivity_timeout=inf", "inactivity_timeout must be positive"),
        ("disable_cache=yes", "disable_cache must be 'true' or 'false'"),
        ("audio_format=flac", "audio_format 'flac' is not one of"),
        ("text_type=html", "text_type must be 'text' or 'ssml'"),
        ("inactivity_timeout=soon", "inactivity_timeout must be a number"),
        ("voice=a.b.c&voice=d.e.f", "given 2 times"),
    ],
)
def test_bad_parameters_say_what_is_wrong(query, words):
    with pytest.raises(ProtocolError, match=words):
        ConnectParams.from_query(query)


def test_split_voice_form_is_joined_and_voice_wins():
    split = ConnectParams(provider="Rime", model_id="ArcanaV3", voice_id="astra")
    assert split.resolved_voice() == "Rime.ArcanaV3.astra"
    assert ConnectParams(voice_id="astra", model_id="NaturalHD").resolved_voice() == (
        "telnyx.NaturalHD.astra"
    )
    assert ConnectParams(provider="azure", voice_id="en-US-AvaNeural").resolved_voice() == (
        "azure.en-US-AvaNeural"
    )
    both = ConnectParams(voice="Telnyx.KokoroTTS.af_heart", provider="Rime", voice_id="x")
    assert both.resolved_voice() == "Telnyx.KokoroTTS.af_heart"


# ----------------------------------------------------------------------------- voice ids


def test_voice_id_with_dots_in_the_model():
    vid = VoiceId.parse("aws.Polly.Generative.Lucia")
    assert (vid.provider, vid.model, vid.name) == ("aws", "Polly.Generative", "Lucia")
    assert vid.family is not None and vid.family.delivery is Delivery.CONCATENATED
    assert str(vid) == "aws.Polly.Generative.Lucia"


def test_azure_two_part_voice_id():
    vid = VoiceId.parse("azure.en-US-AvaMultilingualNeural")
    assert vid.model is None and vid.name == "en-US-AvaMultilingualNeural"
    assert vid.family is not None and vid.family.name == "Azure"


def test_provider_is_matched_case_insensitively():
    assert family_of("AWS.Polly.Neural.Joanna") is family_of("aws.Polly.Neural.Joanna")
    assert family_of("telnyx.naturalhd.astra") is family_of("Telnyx.NaturalHD.astra")


@pytest.mark.parametrize(
    ("voice", "family", "pcm", "speed_key"),
    [
        ("Telnyx.NaturalHD.astra", "Telnyx.NaturalHD", True, "voice_speed"),
        ("Telnyx.KokoroTTS.af_heart", "Telnyx.KokoroTTS", False, None),
        ("Minimax.speech-2.8-turbo.English_expressive_narrator", "Minimax", True, "speed"),
        ("Rime.ArcanaV3.astra", "Rime", True, "voice_speed"),
        ("Resemble.Turbo.Aaron_en-US", "Resemble", False, None),
        ("Inworld.Mini.Loretta", "Inworld", True, None),
        ("elevenlabs.v3.Adam", "ElevenLabs", True, None),
    ],
)
def test_families_know_what_their_voices_accept(voice, family, pcm, speed_key):
    fam = family_of(voice)
    assert fam is not None
    assert (fam.name, fam.pcm, fam.speed_key) == (family, pcm, speed_key)


def test_kokoro_answers_mp3_at_22050():
    fam = family_of("Telnyx.KokoroTTS.af_heart")
    assert fam is not None and not fam.honours_format and fam.mp3_rate == 22050


@pytest.mark.parametrize("voice", ["", "astra", "Telnyx.astra", "Telnyx..astra", "a.b. c", "azure"])
def test_malformed_voice_ids_are_refused_with_an_example(voice):
    with pytest.raises(VoiceIdError, match=r"e\.g\."):
        VoiceId.parse(voice)


def test_unknown_provider_has_no_family():
    assert family_of("Acme.Model.voice") is None


# ----------------------------------------------------------------------------- upgrade checks


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("", 400, "no voice"),
        ("voice=astra", 400, "three parts"),
        ("voice=Acme.M.v", 400, "unknown provider"),
        ("voice=Telnyx.Ultra.x", 403, "not available on the WebSocket"),
        ("voice=Telnyx.NaturalHD.astra&sample_rate=11025", 400, "sample_rate 11025"),
        ("voice=Resemble.Turbo.Aaron&audio_format=linear16", 400, "audio_format 'linear16'"),
    ],
)
def test_check_connect_refuses_like_the_server(query, status, words):
    rejection = check_connect(ConnectParams.from_query(query))
    assert rejection is not None
    assert rejection.status == status and words in rejection.reason


def test_check_connect_accepts_a_good_request():
    params = ConnectParams(
        voice="Telnyx.NaturalHD.astra", audio_format="linear16", sample_rate=8000
    )
    assert check_connect(params) is None


# ----------------------------------------------------------------------------- client frames


def test_client_frames_encode_exactly():
    assert json.loads(encode_client(InitMessage())) == {"text": " "}
    assert json.loads(encode_client(InitMessage({"voice_speed": 1.2}))) == {
        "text": " ",
        "voice_settings": {"voice_speed": 1.2},
    }
    assert json.loads(encode_client(TextMessage("Hi."))) == {"text": "Hi."}
    assert json.loads(encode_client(TextMessage("Hi.", flush=True))) == {
        "text": "Hi.",
        "flush": True,
    }
    assert json.loads(encode_client(ForceMessage())) == {"force": True}
    assert json.loads(encode_client(EndMessage())) == {"text": ""}


def test_empty_text_is_never_encoded_as_text():
    # On the wire an empty text ends the socket's life.
    with pytest.raises(ProtocolError, match="must not be empty"):
        encode_client(TextMessage(""))


def test_client_frames_round_trip_through_the_parser():
    for message in (TextMessage("héllo ✓"), TextMessage("x", flush=True), ForceMessage()):
        assert parse_client(encode_client(message), initialized=True) == message
    assert parse_client(encode_client(EndMessage()), initialized=True) == EndMessage()
    init = InitMessage({"voice_speed": 1.1})
    assert parse_client(encode_client(init), initialized=False) == init


def test_a_single_space_after_init_is_text():
    assert parse_client('{"text": " "}', initialized=True) == TextMessage(" ")


@pytest.mark.parametrize(
    ("raw", "initialized", "words"),
    [
        ('{"text": "Hello"}', False, "first frame must be the init frame"),
        ('{"force": true}', False, "force before the init frame"),
        ('{"force": 1}', True, "'force' must be true"),
        ('{"flush": true}', True, "neither 'text' nor 'force'"),
        ('{"text": 5}', True, "'text' must be a string"),
        ('{"text": "a", "flush": "yes"}', True, "'flush' must be a boolean"),
        ('{"text": "a", "voice_settings": {}}', True, "only accepted in the init frame"),
        ('{"text": " ", "voice_settings": [1]}', False, "'voice_settings' must be an object"),
        ("[1, 2]", True, "must be a JSON object"),
        ("{nope", True, "not valid JSON"),
        (b"\x00\x01", True, "binary frame of 2 bytes"),
    ],
)
def test_malformed_client_frames_say_what_is_wrong(raw, initialized, words):
    with pytest.raises(ProtocolError, match=words):
        parse_client(raw, initialized=initialized)


# ----------------------------------------------------------------------------- server frames


def test_server_frames_have_the_documented_shapes_and_no_type():
    streamed = json.loads(encode_server(AudioMessage(b"\x01\x02")))
    assert streamed == {"audio": "AQI=", "text": None, "isFinal": False, "cached": False}
    bearing = json.loads(encode_server(AudioMessage(None, "Hi.", True, 245)))
    assert bearing == {
        "audio": None,
        "text": "Hi.",
        "isFinal": False,
        "cached": True,
        "timeToFirstAudioFrameMs": 245,
    }
    assert json.loads(encode_server(FinalMessage())) == {"audio": None, "text": "", "isFinal": True}
    assert json.loads(encode_server(ErrorMessage("Invalid message"))) == {
        "error": "Invalid message"
    }
    for raw in (encode_server(AudioMessage(b"a")), encode_server(FinalMessage())):
        assert "type" not in json.loads(raw)


def test_server_frames_round_trip():
    for message in (
        AudioMessage(b"\xff\xfb\x90", "Hello.", False, 12.5),
        AudioMessage(None, "Hello."),
        FinalMessage(),
        ErrorMessage("Invalid voice_id specified"),
    ):
        assert parse_server(encode_server(message)) == message


def test_server_parser_ignores_unknown_keys_and_empty_audio():
    raw = json.dumps({"audio": "", "text": "x", "isFinal": False, "wordTimings": [1]})
    assert parse_server(raw) == AudioMessage(None, "x")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('{"audio": "!!notbase64!!"}', "'audio' is not valid base64"),
        ('{"audio": 12}', "'audio' must be a base64 string or null"),
        ('{"audio": null, "isFinal": "yes"}', "'isFinal' must be a boolean"),
        ('{"audio": null, "text": 3}', "'text' must be a string or null"),
        ('{"audio": null, "cached": 1}', "'cached' must be a boolean"),
        ('{"audio": null, "timeToFirstAudioFrameMs": "1"}', "must be a number"),
        ('{"error": 500}', "'error' must be a string"),
        ('{"hello": 1}', "no 'audio', 'isFinal' or 'error'"),
        ("null", "must be a JSON object"),
    ],
)
def test_malformed_server_frames_say_what_is_wrong(raw, words):
    with pytest.raises(ProtocolError, match=words):
        parse_server(raw)


def test_audio_bytes_survive_base64():
    audio = bytes(range(256)) * 4
    raw = json.dumps({"audio": base64.b64encode(audio).decode(), "text": None, "isFinal": False})
    message = parse_server(raw)
    assert isinstance(message, AudioMessage) and message.audio == audio
