"""``text_type``, ``pronunciation_dict_id``, ``disable_cache``, SSML pronunciations and MiniMax's
PCM request: the plain decisions, then the service applying and refusing them in pipelines."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import TTSUpdateSettingsFrame
from pipecat.tests.utils import SleepFrame

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.protocol import ConnectParams, InitMessage
from pipecat_telnyx_tts.request import build_request, check_text_options
from tests.service_helpers import audio_seconds, errors, llm_turn, make_tts, run, wire_texts

DICT_ID = "c215a3e1-be41-4701-97e8-1d3c22f9a5b7"
IPA = "mɛtˈfɔɹmɪn"  # noqa: RUF001 (IPA letters are meant)
TAG = f'<phoneme alphabet="ipa" ph="{IPA}">Metformin</phoneme>'


def request(voice: str, **kw):
    args = {"out_rate": 16000, "audio_format": None, "speed": None, "voice_settings": None}
    return build_request(voice=voice, language=None, **(args | kw))


def turn_connections(emu: TelnyxEmulator) -> list:
    return [c for c in emu.connections if wire_texts(emu.received_messages(c.index))]


# ----------------------------------------------------------------------------- plain


def test_the_options_go_out_as_query_parameters():
    params = request(
        "aws.Polly.Generative.Lucia",
        text_type="ssml",
        pronunciation_dict_id=DICT_ID,
        disable_cache=True,
    ).params
    parsed = ConnectParams.from_query(params.to_query())
    assert parsed.text_type == "ssml"
    assert parsed.pronunciation_dict_id == DICT_ID
    assert parsed.disable_cache is True
    # Telnyx's defaults are left off the query.
    plain = request("Telnyx.NaturalHD.astra").params.to_query()
    assert "text_type" not in plain and "disable_cache" not in plain


@pytest.mark.parametrize("voice", ["aws.Polly.Generative.Lucia", "azure.en-US-AvaNeural"])
def test_ssml_is_accepted_for_aws_and_azure(voice):
    check_text_options(voice, text_type="ssml", pronunciation_dict_id=None, disable_cache=False)


@pytest.mark.parametrize(
    ("voice", "options", "words"),
    [
        ("Telnyx.NaturalHD.astra", {"text_type": "ssml"}, "AWS Polly and Azure"),
        ("Rime.ArcanaV3.astra", {"text_type": "ssml"}, "text_type='text'"),
        ("Telnyx.NaturalHD.astra", {"text_type": "xml"}, "'text' or 'ssml'"),
        ("Telnyx.NaturalHD.astra", {"pronunciation_dict_id": "my-dict"}, "not a UUID"),
        ("Telnyx.NaturalHD.astra", {"disable_cache": "yes"}, "True or False"),
    ],
)
def test_an_option_the_voice_has_no_use_for_says_what_to_fix(voice, options, words):
    given = {"text_type": None, "pronunciation_dict_id": None, "disable_cache": False} | options
    with pytest.raises(ValueError, match=words):
        check_text_options(voice, **given)


def test_the_constructor_refuses_ssml_for_a_voice_that_cannot_read_it():
    settings = TelnyxTTSService.Settings(voice="Telnyx.NaturalHD.astra", text_type="ssml")
    with pytest.raises(ValueError, match="read only by AWS Polly and Azure voices"):
        TelnyxTTSService(api_key="k", settings=settings)


def test_minimax_asks_for_pcm_in_the_init_frame_too():
    voice = "Minimax.speech-2.8-turbo.English_expressive_narrator"
    pcm = request(voice)
    assert pcm.params.audio_format == "linear16"
    assert pcm.init.voice_settings == {"response_format": "pcm"}
    assert request(voice, speed=1.2).init.voice_settings == {"response_format": "pcm", "speed": 1.2}
    # The user's own value wins, and MP3 asked for is MP3.
    own = request(voice, voice_settings={"response_format": "mp3"})
    assert own.init.voice_settings == {"response_format": "mp3"}
    assert request(voice, audio_format="mp3").init.voice_settings is None
    # Nobody else gets it.
    assert request("Rime.ArcanaV3.astra").init.voice_settings is None


def test_a_pronunciation_is_an_escaped_ssml_phoneme_tag():
    fmt = TelnyxTTSService.format_pronunciation
    assert fmt("Metformin", f"/{IPA}/") == TAG
    assert fmt("R&D", 'ɑɹ"ən"di') == (
        '<phoneme alphabet="ipa" ph="ɑɹ&quot;ən&quot;di">R&amp;D</phoneme>'
    )
    assert fmt("Metformin", "  ") is None


@pytest.mark.parametrize(
    ("voice", "text_type", "supported"),
    [
        ("aws.Polly.Generative.Lucia", "ssml", True),
        ("azure.en-US-AvaMultilingualNeural", "ssml", True),
        ("aws.Polly.Generative.Lucia", None, False),
        ("Telnyx.NaturalHD.astra", None, False),
    ],
)
def test_pronunciations_are_supported_only_where_ssml_is_read(voice, text_type, supported):
    settings = TelnyxTTSService.Settings(voice=voice, text_type=text_type)
    assert TelnyxTTSService(api_key="k", settings=settings).supports_pronunciations is supported


# ----------------------------------------------------------------------------- the service


async def test_options_apply_from_the_start_and_from_the_next_turn_after_an_update():
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, settings=TelnyxTTSService.Settings(disable_cache=True))
        update = TTSUpdateSettingsFrame(
            delta=TelnyxTTSService.Settings(
                voice="azure.en-US-AvaMultilingualNeural",
                text_type="ssml",
                pronunciation_dict_id=DICT_ID,
                disable_cache=False,
            )
        )
        frames = [*llm_turn("First turn."), SleepFrame(0.3), update, *llm_turn("Second turn.")]
        _, up = await run(tts, frames)
        assert not errors(up)
        first, second = turn_connections(emu)
        assert first.params.disable_cache is True and first.params.text_type is None
        assert second.params.voice == "azure.en-US-AvaMultilingualNeural"
        assert second.params.text_type == "ssml"
        assert second.params.pronunciation_dict_id == DICT_ID
        assert second.params.disable_cache is None


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        ({"text_type": "ssml"}, "AWS Polly and Azure"),
        ({"pronunciation_dict_id": "not-a-uuid"}, "not a UUID"),
        # Valid alone, the voice is refused with SSML already set: the update goes as a whole.
        ({"voice": "Rime.ArcanaV3.astra"}, "text_type='text'"),
    ],
    ids=["ssml-on-telnyx", "bad-dict-id", "voice-without-ssml"],
)
async def test_an_update_the_voice_has_no_use_for_is_an_error_and_not_applied(delta, words):
    start = TelnyxTTSService.Settings(voice="Telnyx.NaturalHD.astra", text_type=None)
    if "voice" in delta:
        start = TelnyxTTSService.Settings(voice="aws.Polly.Generative.Lucia", text_type="ssml")
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, settings=start)
        update = TTSUpdateSettingsFrame(delta=TelnyxTTSService.Settings(**delta))
        down, up = await run(tts, [SleepFrame(0.2), update, *llm_turn("Still spoken.")])
        [error] = errors(up)
        assert "refused" in error.error and words in error.error
        [conn] = turn_connections(emu)
        assert conn.params.voice == start.voice
        assert conn.params.text_type == start.text_type
        assert conn.params.pronunciation_dict_id is None
        assert audio_seconds(down) > 0.2
        assert tts.is_usable


async def test_an_ipa_pronunciation_reaches_an_ssml_voice_as_a_phoneme_tag():
    pronounce = TelnyxTTSService.pronunciation_transform_ipa({"Metformin": IPA})
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        settings = TelnyxTTSService.Settings(voice="aws.Polly.Generative.Lucia", text_type="ssml")
        tts = make_tts(emu, settings=settings, text_transforms=[("*", pronounce)])
        _, up = await run(tts, llm_turn("Take your Metformin daily."))
        assert not errors(up)
        [conn] = turn_connections(emu)
        sent = "".join(t for t, _ in wire_texts(emu.received_messages(conn.index)))
        assert TAG in sent


async def test_minimax_socket_gets_pcm_in_its_init_frame():
    voice = "Minimax.speech-2.8-turbo.English_expressive_narrator"
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        tts = make_tts(emu, voice=voice)
        down, up = await run(tts, llm_turn("Narrate this."))
        assert not errors(up)
        [conn] = turn_connections(emu)
        assert conn.params.audio_format == "linear16"
        assert emu.received_messages(conn.index)[0] == InitMessage({"response_format": "pcm"})
        assert audio_seconds(down) > 0.2
