"""What the audio looks like on the wire: frame shapes per provider, formats, MP3 files, signals."""

from __future__ import annotations

import io
import math
import random
import wave

import numpy as np
import pytest
from test_emulator_support import (
    SENTENCE,
    audio_chunks,
    audio_frames,
    audio_of,
    open_socket,
    receive_all,
    send,
    speak,
    text_frames,
)

from pipecat_telnyx_tts.emulator import Faults, Signal, TelnyxEmulator
from pipecat_telnyx_tts.emulator.synth import (
    ESPEAK,
    OutputFormat,
    SynthesisRequest,
    encode_alaw,
    encode_mulaw,
    resolve_signal,
    speech_seconds,
    spoken_text,
    strip_markdown,
    synthesize_pcm,
)
from pipecat_telnyx_tts.protocol import AudioMessage, EndMessage, FinalMessage, TextMessage

MPEG_SYNC_MASK = 0xFFE0


async def one_turn(
    emu: TelnyxEmulator, text: str = SENTENCE, voice: str = "Telnyx.NaturalHD.astra", **params
) -> list:
    async with open_socket(emu, voice, **params) as ws:
        await speak(ws, text)
        return await receive_all(ws)


async def test_streamed_delivery_has_audio_frames_and_one_text_bearing_frame() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu)
        audio = audio_frames(messages)
        assert len(audio) > 2
        assert all(m.text is None for m in audio)
        (bearing,) = text_frames(messages)
        assert bearing.audio is None
        assert bearing.text == SENTENCE
        assert messages[-1] == FinalMessage()


async def test_text_bearing_frame_position_varies_between_sockets() -> None:
    positions = set()
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        for _ in range(8):
            messages = await one_turn(emu)
            positions.add(next(i for i, m in enumerate(messages) if m.text is not None))
    assert len(positions) >= 2


@pytest.mark.parametrize("voice", ["aws.Polly.Generative.Lucia", "azure.en-GB-RyanNeural"])
async def test_concatenated_delivery_puts_the_whole_audio_in_the_text_bearing_frame(
    voice: str,
) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu, voice=voice)
        assert len(messages) == 2
        bearing, final = messages
        assert isinstance(bearing, AudioMessage)
        assert bearing.text == SENTENCE and bearing.audio
        assert bearing.audio.startswith(b"ID3")
        assert bearing.time_to_first_audio_ms is not None
        assert final == FinalMessage()


async def test_time_to_first_audio_is_on_the_first_audio_chunk_of_each_synthesis_only() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.1)) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage("One.", flush=True), TextMessage("Two.", flush=True))
            await send(ws, EndMessage())
            messages = await receive_all(ws)
        with_ttfa = [
            m
            for m in messages
            if isinstance(m, AudioMessage) and m.time_to_first_audio_ms is not None
        ]
        assert len(with_ttfa) == 2
        assert all(m.audio and isinstance(m.time_to_first_audio_ms, int) for m in with_ttfa)
        assert all((m.time_to_first_audio_ms or 0) >= 100 for m in with_ttfa)
        first = next(i for i, m in enumerate(messages) if isinstance(m, AudioMessage) and m.audio)
        assert messages[first] is with_ttfa[0]


async def test_a_repeat_is_cached_unless_the_socket_disables_the_cache() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(first_audio_delay=0.4)) as emu:
        first = await one_turn(emu)
        again = await one_turn(emu)
        uncached = await one_turn(emu, disable_cache=True)
        other_rate = await one_turn(emu, sample_rate=16000)
        assert not any(m.cached for m in first if isinstance(m, AudioMessage))
        assert all(m.cached for m in again if isinstance(m, AudioMessage))
        assert not any(m.cached for m in uncached if isinstance(m, AudioMessage))
        assert not any(m.cached for m in other_rate if isinstance(m, AudioMessage))
        records = [c.syntheses[0] for c in emu.connections]
        assert [r.cached for r in records] == [False, True, False, False]
        # A cached synthesis skips the first-audio delay.
        ttfa = [(r.first_audio_at or 0) - r.started_at for r in records]
        assert ttfa[1] < 0.4 <= min(ttfa[0], ttfa[2])
        assert audio_of(first) == audio_of(again)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
async def test_linear16_is_pcm_of_the_announced_length_at_the_asked_rate(rate: int) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu, audio_format="linear16", sample_rate=rate)
        synthesis = emu.connections[0].syntheses[0]
        audio = audio_of(messages)
        assert not synthesis.mp3 and synthesis.sample_rate == rate
        assert len(audio) == round(synthesis.audio_seconds * rate) * 2
        assert math.isclose(synthesis.audio_seconds, speech_seconds(SENTENCE), abs_tol=1 / rate)
        assert all(len(chunk) % 2 == 0 for chunk in audio_chunks(messages))


async def test_linear16_default_rate_is_the_family_default() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        await one_turn(emu, audio_format="linear16")
        assert emu.connections[0].syntheses[0].sample_rate == 24000


def decode_mp3(data: bytes) -> tuple[int, int]:
    """(sample rate, samples) by a standard decoder (FFmpeg's, through PyAV)."""
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data)) as container:
        frames = list(container.decode(audio=0))
    return frames[0].sample_rate, sum(f.samples for f in frames)


def is_mpeg_sync(data: bytes) -> bool:
    return len(data) >= 2 and (data[0] << 8 | data[1]) & MPEG_SYNC_MASK == MPEG_SYNC_MASK


def id3_size(data: bytes) -> int:
    assert data[:5] == b"ID3\x04\x00"
    size = 0
    for byte in data[6:10]:
        size = size << 7 | byte
    return 10 + size


async def test_mp3_decodes_to_the_announced_length() -> None:
    """The acceptance check: a standard decoder agrees with the emulator's own account."""
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu)
        synthesis = emu.connections[0].syntheses[0]
        rate, samples = decode_mp3(audio_of(messages))
        assert synthesis.mp3 and rate == synthesis.sample_rate == 24000
        # LAME's encoder delay and the last frame's padding add at most two MPEG frames.
        assert 0 <= samples / rate - synthesis.audio_seconds <= 2 * 1152 / rate


async def test_each_synthesis_is_one_mp3_file_cut_at_arbitrary_offsets() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage(SENTENCE, flush=True), TextMessage("Second.", flush=True))
            await send(ws, EndMessage())
            messages = await receive_all(ws)
        chunks = audio_chunks(messages)
        starts = [i for i, chunk in enumerate(chunks) if chunk.startswith(b"ID3")]
        assert starts[0] == 0 and len(starts) == 2
        files = [b"".join(chunks[starts[0] : starts[1]]), b"".join(chunks[starts[1] :])]
        for data, synthesis in zip(files, emu.connections[0].syntheses, strict=True):
            assert data.count(b"ID3\x04") == 1
            assert is_mpeg_sync(data[id3_size(data) :])
            _, samples = decode_mp3(data)
            assert samples / 24000 >= synthesis.audio_seconds
        # Cuts fall inside MPEG frames, not at their syncs.
        assert not all(is_mpeg_sync(c) for c in chunks if not c.startswith(b"ID3"))


async def test_kokoro_answers_mp3_at_22050_whatever_is_asked() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu, voice="Telnyx.KokoroTTS.af_heart", audio_format="linear16")
        synthesis = emu.connections[0].syntheses[0]
        audio = audio_of(messages)
        assert audio.startswith(b"ID3")
        assert synthesis.mp3 and synthesis.sample_rate == 22050
        rate, _ = decode_mp3(audio)
        assert rate == 22050


async def test_mp3_at_a_rate_mpeg_lacks_uses_the_nearest_lower_one() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu, sample_rate=96000)
        rate, _ = decode_mp3(audio_of(messages))
        assert rate == emu.connections[0].syntheses[0].sample_rate == 48000


async def test_wav_is_one_riff_file_per_synthesis() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(
            emu, voice="azure.en-US-AvaMultilingualNeural", audio_format="wav"
        )
        synthesis = emu.connections[0].syntheses[0]
        with wave.open(io.BytesIO(audio_of(messages))) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
            assert w.getnframes() == round(synthesis.audio_seconds * 24000)


@pytest.mark.parametrize(("encoding", "encode"), [("mulaw", encode_mulaw), ("alaw", encode_alaw)])
async def test_g711_is_one_byte_per_sample_of_the_same_signal(encoding: str, encode) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(
            emu, voice="azure.en-US-AvaMultilingualNeural", audio_format=encoding, sample_rate=8000
        )
    pcm, _ = synthesize_pcm(SynthesisRequest(SENTENCE, OutputFormat("linear16", 8000), Signal.TONE))
    assert audio_of(messages) == encode(pcm)


@pytest.mark.parametrize(
    ("encode", "decode_name"), [(encode_mulaw, "ulaw2lin"), (encode_alaw, "alaw2lin")]
)
def test_g711_encoders_match_the_reference_decoder(encode, decode_name: str) -> None:
    audioop = pytest.importorskip("audioop")
    pcm = (np.sin(np.arange(8000) / 8) * 20000).astype(np.int16)
    decoded = np.frombuffer(getattr(audioop, decode_name)(encode(pcm), 2), dtype=np.int16)
    error = decoded.astype(np.float64) - pcm
    snr = 10 * np.log10(np.mean(pcm.astype(np.float64) ** 2) / np.mean(error**2))
    assert snr > 30


async def test_marker_signal_fills_every_sample_with_the_connection_index() -> None:
    async with TelnyxEmulator(signal="marker", faults=Faults.fast()) as emu:
        for index in (1, 2):
            messages = await one_turn(emu, audio_format="linear16")
            for chunk in audio_chunks(messages):
                samples = np.frombuffer(chunk, dtype="<i2")
                assert samples.size and np.all(samples == index)
        # Even a voice that ignores audio_format: the marker must survive sample for sample.
        messages = await one_turn(emu, voice="Telnyx.KokoroTTS.af_heart")
        assert np.all(np.frombuffer(audio_of(messages), dtype="<i2") == 3)


async def test_tone_length_follows_the_text_and_repeats_exactly() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        short = audio_of(await one_turn(emu, "Short.", audio_format="linear16"))
        long = audio_of(await one_turn(emu, SENTENCE * 2, audio_format="linear16"))
        again = audio_of(await one_turn(emu, "Short.", audio_format="linear16", disable_cache=True))
    assert short == again
    assert len(long) > 5 * len(short)
    seconds = len(long) / 2 / 24000
    assert 13 <= len(SENTENCE * 2) / seconds <= 16 + 2


async def test_voice_speed_setting_shortens_the_audio() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        normal = audio_of(await one_turn(emu, audio_format="linear16"))
        async with open_socket(emu, audio_format="linear16", settings={"voice_speed": 2.0}) as ws:
            await speak(ws)
            fast = audio_of(await receive_all(ws))
    assert len(fast) < 0.6 * len(normal)


@pytest.mark.parametrize("text", ["   ", "** ** `` ##", "🎉🎉"])
async def test_text_with_nothing_to_say_gives_a_text_bearing_frame_and_no_audio(
    text: str,
) -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu, text)
    assert audio_frames(messages) == []
    assert [m.text for m in text_frames(messages)] == [text]
    assert messages[-1] == FinalMessage()


async def test_markdown_is_stripped_before_synthesis() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        marked = "# Title\n**Bold** and `code` with [a link](https://example.com)."
        plain = "Title Bold and code with a link."
        first = await one_turn(emu, marked, audio_format="linear16")
        second = await one_turn(emu, plain, audio_format="linear16")
    assert len(audio_of(first)) == len(audio_of(second))
    assert spoken_text(marked) == plain
    assert strip_markdown("**x** [y](z)") == "x y"


async def test_speech_signal_is_espeak_audio_of_plausible_length() -> None:
    if not ESPEAK.available():
        pytest.skip("espeak-ng is not usable here")
    assert resolve_signal(Signal.AUTO) is Signal.SPEECH
    async with TelnyxEmulator(signal="speech", faults=Faults.fast()) as emu:
        text = SENTENCE * 2
        messages = await one_turn(emu, text, audio_format="linear16", sample_rate=16000)
    pcm = np.frombuffer(audio_of(messages), dtype="<i2").astype(np.float64)
    seconds = pcm.size / 16000
    assert 10 <= len(text) / seconds <= 20
    assert np.sqrt(np.mean(pcm**2)) > 500, "speech must not be silence"


def test_chunking_is_seeded() -> None:
    from pipecat_telnyx_tts.emulator.synth import render, split_chunks

    rendition = render(SynthesisRequest(SENTENCE, OutputFormat("mp3", 24000), Signal.TONE))
    cuts = [
        [len(c.data) for c in split_chunks(rendition, 250, random.Random(seed))]
        for seed in (1, 1, 2)
    ]
    assert cuts[0] == cuts[1] != cuts[2]
    assert sum(cuts[0]) == len(rendition.data)


async def test_ogg_vorbis_is_answered_in_mp3() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        messages = await one_turn(emu, voice="aws.Polly.Neural.Joanna", audio_format="ogg_vorbis")
    assert audio_of(messages).startswith(b"ID3")


@pytest.mark.parametrize("signal", ["tone", "speech"])
async def test_ssml_tags_are_not_spoken(signal: str) -> None:
    if signal == "speech" and not ESPEAK.available():
        pytest.skip("espeak-ng is not usable here")
    voice = "aws.Polly.Neural.Joanna"
    async with TelnyxEmulator(signal=signal, faults=Faults.fast()) as emu:
        ssml = "<speak>Hello <emphasis>there</emphasis>, friend.</speak>"
        tagged = await one_turn(emu, ssml, voice=voice, audio_format="linear16", text_type="ssml")
        plain = await one_turn(emu, "Hello there, friend.", voice=voice, audio_format="linear16")
    # Emphasis slows espeak a little; tags read out as words would more than double the length.
    ratio = len(audio_of(tagged)) / len(audio_of(plain))
    assert 0.8 < ratio < 1.6
