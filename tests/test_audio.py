"""Tests for the sniffing, decoding and resampling of Telnyx TTS audio.

MP3 test data is real: PCM encoded with LAME (lameenc), each file opened by an ID3v2 tag built
here, several files back to back and cut at random offsets the way Telnyx's WebSocket frames cut
them (every file starts a frame, and a file spans several frames).
"""

from __future__ import annotations

import io
import itertools
import math
import random
import struct
import wave

import lameenc
import numpy as np
import pytest
from numpy.typing import NDArray

from pipecat_telnyx_tts.audio import (
    MAX_UNDECODABLE_MP3_BYTES,
    AudioDecodeError,
    AudioDecoder,
    AudioFormat,
    sniff_audio_format,
)
from pipecat_telnyx_tts.emulator import synth

# LAME delays the audio by its encoder delay (576 samples) and the decoder adds its own
# synthesis delay (529 samples): this much lead before each file's audio, which the decoder trims.
MP3_CODEC_DELAY = 576 + 529
SINE_HZ = 1000.0
# A wrong rate anywhere moves the pitch by at least 8% (22050 vs 24000); gaps between files
# smear the spectral peak by a few bins, so allow 0.5%.
PITCH_TOLERANCE_HZ = 5.0


def mp3_frame_samples(rate: int) -> int:
    """MPEG-1 (32 kHz and up) frames hold 1152 samples; MPEG-2/2.5 frames (below) hold 576."""
    return 1152 if rate >= 32000 else 576


def mp3_length_bounds(source_samples: int, rate: int) -> tuple[int, int]:
    """Decoded length of one untagged LAME file: the PCM, its lead trimmed, plus the end padding
    that no tag records (under one frame). A frame lost or doubled falls out."""
    return source_samples, source_samples + mp3_frame_samples(rate)


def sine(rate: int, seconds: float, freq: float = SINE_HZ, amplitude: float = 0.5) -> NDArray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")


def encode_mp3(pcm: NDArray, rate: int, kbps: int = 48) -> bytes:
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(kbps)
    encoder.set_in_sample_rate(rate)
    encoder.set_out_sample_rate(rate)  # or LAME downsamples high rates at low bitrates
    encoder.set_channels(1)
    encoder.set_quality(2)
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3_tag(title: str, *, footer: bool = False, padding: int = 0) -> bytes:
    """An ID3v2.4 tag with a title and a PRIV frame full of fake MPEG frame headers.

    The fake headers make a tag that reaches the MPEG decoder audible: the decoder would lock on
    to them instead of skipping the tag as noise.
    """
    text = b"\x03" + title.encode()
    frames = b"TIT2" + syncsafe(len(text)) + b"\x00\x00" + text
    priv = b"telnyx\x00" + b"\xff\xf3\x64\xc4" * 64
    frames += b"PRIV" + syncsafe(len(priv)) + b"\x00\x00" + priv
    frames += bytes(padding)
    flags = 0x10 if footer else 0x00
    header = b"ID3\x04\x00" + bytes([flags]) + syncsafe(len(frames))
    return header + frames + (b"3DI" + header[3:] if footer else b"")


def mp3_files(rates_and_seconds: list[tuple[int, float]]) -> tuple[list[bytes], list[NDArray]]:
    """Tagged MP3 files, one per (rate, seconds), each a sine at SINE_HZ; also their PCM."""
    files, pcms = [], []
    for i, (rate, seconds) in enumerate(rates_and_seconds):
        pcm = sine(rate, seconds)
        files.append(
            id3_tag(f"segment {i}", footer=i % 2 == 1, padding=i * 7) + encode_mp3(pcm, rate)
        )
        pcms.append(pcm)
    return files, pcms


def telnyx_chunks(files: list[bytes], seed: int, cuts_per_file: int = 12) -> list[bytes]:
    """Cut each file at random offsets, some inside the ID3 header and tag, as frames would."""
    rng = random.Random(seed)
    chunks = []
    for data in files:
        tag_end = 10 + int.from_bytes(data[6:10], "big")  # close enough to land cuts in the tag
        cuts = {rng.randrange(1, 10), rng.randrange(10, tag_end)}
        cuts |= {rng.randrange(1, len(data)) for _ in range(cuts_per_file)}
        edges = [0, *sorted(cuts), len(data)]
        chunks += [data[a:b] for a, b in itertools.pairwise(edges)]
    return chunks


def decode(
    chunks: list[bytes], *, out_rate: int, pcm_rate: int = 24000
) -> tuple[NDArray, AudioDecoder]:
    decoder = AudioDecoder(pcm_rate=pcm_rate, out_rate=out_rate)
    pcm = b"".join(decoder.feed(chunk) for chunk in chunks) + decoder.flush()
    return np.frombuffer(pcm, dtype="<i2"), decoder


def dominant_hz(samples: NDArray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def wav_file(
    payload: bytes,
    *,
    rate: int,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    data_size: int | None = None,
    chunks_before_data: bytes = b"",
) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    size = len(payload) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + chunks_before_data
    body += b"data" + struct.pack("<I", size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def split_at_random(data: bytes, seed: int, max_chunk: int = 700) -> list[bytes]:
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, max_chunk)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


# --- sniffing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"I",
        b"ID",
        b"R",
        b"RI",
        b"RIF",
        b"\xff",
        b"\xff\xf3",
        b"\xff\xfb",
        b"\xff\xf3\x64",  # an MPEG-2 Layer III header, 24 kHz: the next frame must confirm it
        b"\xff\xfb\x90\x64" + bytes(400),  # MPEG-1, 44.1 kHz, 128 kbit/s: 417-byte frames
    ],
)
def test_sniff_returns_none_while_the_head_is_undecidable(head: bytes) -> None:
    assert sniff_audio_format(head) is None


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3", AudioFormat.MP3),
        (b"RIFF", AudioFormat.WAV),
        (b"\x00", AudioFormat.PCM),
        (b"IX", AudioFormat.PCM),
        (b"RIX", AudioFormat.PCM),
        (b"\xff\x00", AudioFormat.PCM),  # a sample of -256, no frame sync
        (b"\xff\xfd", AudioFormat.PCM),  # sync but Layer II
        (b"\xff\xf3\xf4", AudioFormat.PCM),  # sync but bitrate index 15 (invalid)
    ],
)
def test_sniff_decides_from_magic_bytes(head: bytes, expected: AudioFormat) -> None:
    assert sniff_audio_format(head) is expected


def test_two_consecutive_mpeg_frames_are_mp3() -> None:
    mp3 = encode_mp3(sine(24000, 0.3), 24000)
    assert not mp3.startswith(b"ID3")
    assert sniff_audio_format(mp3[:3]) is None
    assert sniff_audio_format(mp3) is AudioFormat.MP3


def test_pcm_opening_like_an_mpeg_header_is_pcm() -> None:
    """A first sample of -1025 is FF FB little-endian; a valid header must follow one frame on."""
    samples = np.concatenate([[-1025, 0x6490 - 0x10000], sine(24000, 0.2)]).astype("<i2")
    pcm = samples.tobytes()
    assert pcm[:4] == b"\xff\xfb\x90\x64"
    assert sniff_audio_format(pcm[:100]) is None
    assert sniff_audio_format(pcm) is AudioFormat.PCM

    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    out = b"".join(decoder.feed(pcm[i : i + 160]) for i in range(0, len(pcm), 160))
    out += decoder.flush()
    assert decoder.format is AudioFormat.PCM
    assert out == pcm


# --- MP3 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_rate", "out_rate"),
    [(24000, 24000), (22050, 24000), (16000, 8000), (24000, 8000), (44100, 16000)],
)
def test_mp3_files_back_to_back_decode_to_the_right_duration_rate_and_pitch(
    source_rate: int, out_rate: int
) -> None:
    files, pcms = mp3_files([(source_rate, 1.3), (source_rate, 0.7), (source_rate, 2.1)])

    out, decoder = decode(telnyx_chunks(files, seed=source_rate + out_rate), out_rate=out_rate)

    assert decoder.format is AudioFormat.MP3
    assert decoder.source_rate == source_rate
    bounds = [mp3_length_bounds(len(pcm), source_rate) for pcm in pcms]
    ratio = out_rate / source_rate
    low = sum(lo for lo, _ in bounds) * ratio - 2
    high = sum(hi for _, hi in bounds) * ratio + 2
    assert low <= len(out) <= high
    # The sine's pitch in the output, read at out_rate, proves the samples really are at out_rate.
    assert abs(dominant_hz(out, out_rate) - SINE_HZ) <= PITCH_TOLERANCE_HZ


@pytest.mark.parametrize("out_rate", [24000, 8000, 48000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mp3_chunk_boundaries_leave_no_trace(seed: int, out_rate: int) -> None:
    files, _ = mp3_files([(24000, 1.0), (24000, 1.5), (24000, 0.5)])

    whole, _ = decode(files, out_rate=out_rate)  # one chunk per file: no cut inside a file
    cut, _ = decode(telnyx_chunks(files, seed, cuts_per_file=60), out_rate=out_rate)

    np.testing.assert_array_equal(cut, whole)


def test_mp3_audio_comes_out_of_the_first_chunk() -> None:
    data = encode_mp3(sine(24000, 2.0), 24000)  # 48 kbit/s at 24 kHz: 144-byte frames
    tag = id3_tag("first")
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)

    first = decoder.feed(tag + data[: 10 * 144])

    # Every complete frame, less the lead of an untagged file; nothing held back.
    assert len(first) == (10 * 576 - MP3_CODEC_DELAY) * 2


def test_mp3_decodes_byte_by_byte() -> None:
    files, _ = mp3_files([(22050, 0.4), (22050, 0.3)])
    one_byte_chunks = [data[i : i + 1] for data in files for i in range(len(data))]

    whole, _ = decode(files, out_rate=16000)
    trickled, _ = decode(one_byte_chunks, out_rate=16000)

    np.testing.assert_array_equal(trickled, whole)


def test_id3_tags_are_cut_out_not_decoded() -> None:
    rates_and_seconds = [(24000, 0.8), (24000, 0.6), (24000, 0.9)]
    files, _ = mp3_files(rates_and_seconds)
    bare = [encode_mp3(sine(rate, seconds), rate) for rate, seconds in rates_and_seconds]

    tagged_out, _ = decode(telnyx_chunks(files, seed=7), out_rate=24000)
    # Without tags nothing shows where a bare file ends, so each is decoded on its own.
    decoded_bare = [decode([data], out_rate=24000) for data in bare]
    bare_out = np.concatenate([out for out, _ in decoded_bare])

    assert decoded_bare[0][1].format is AudioFormat.MP3  # sniffed from the frame sync alone
    np.testing.assert_array_equal(tagged_out, bare_out)


def test_a_short_final_chunk_that_looks_like_an_id3_start_is_still_decoded() -> None:
    data = bytearray(encode_mp3(sine(24000, 0.5), 24000))
    assert data[-5:] == b"\x55" * 5  # LAME's stuffing after the last frame's audio data
    data[-5:] = b"ID3\x04\x00"  # the decoder ignores stuffing, so the audio is unchanged

    whole, _ = decode([bytes(data)], out_rate=24000)
    split, _ = decode([bytes(data[:-5]), bytes(data[-5:])], out_rate=24000)

    np.testing.assert_array_equal(split, whole)


def test_stereo_mp3_is_downmixed_to_mono() -> None:
    left = sine(24000, 1.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).reshape(-1)
    encoder = lameenc.Encoder()
    encoder.set_bit_rate(96)
    encoder.set_in_sample_rate(24000)
    encoder.set_channels(2)
    encoder.set_quality(2)
    data = bytes(encoder.encode(stereo.tobytes()) + encoder.flush())

    out, decoder = decode(split_at_random(data, seed=8), out_rate=16000)

    assert decoder.source_rate == 24000
    assert abs(dominant_hz(out, 16000) - SINE_HZ) <= PITCH_TOLERANCE_HZ
    # The silent right channel halves the level: the mix is the mean, not one channel.
    assert abs(int(np.abs(out).max()) - int(np.abs(left).max()) // 2) < 800


def test_mp3_rate_change_between_files_is_resampled_per_file() -> None:
    files, pcms = mp3_files([(24000, 1.0), (16000, 1.0)])

    out, decoder = decode(telnyx_chunks(files, seed=3), out_rate=24000)

    (lo1, hi1), (lo2, hi2) = (
        mp3_length_bounds(len(p), r) for p, r in zip(pcms, (24000, 16000), strict=True)
    )
    assert lo1 + lo2 * 1.5 - 2 <= len(out) <= hi1 + hi2 * 1.5 + 2
    assert decoder.source_rate == 16000
    second_file = out[hi1 + 2000 :]
    assert abs(dominant_hz(second_file, 24000) - SINE_HZ) <= PITCH_TOLERANCE_HZ


def test_damaged_mp3_frames_are_skipped_without_raising() -> None:
    files, _ = mp3_files([(24000, 2.0)])
    data = bytearray(files[0])
    middle = len(data) // 2
    data[middle : middle + 400] = random.Random(5).randbytes(400)

    good, _ = decode(files, out_rate=24000)
    damaged, decoder = decode(telnyx_chunks([bytes(data)], seed=5), out_rate=24000)

    assert decoder.format is AudioFormat.MP3
    assert 0.8 * len(good) <= len(damaged) <= len(good)


def test_mp3_that_never_decodes_raises_at_flush() -> None:
    junk = bytes(range(0x7F)) * 20  # no 0xFF byte, so no frame sync anywhere
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)

    assert decoder.feed(id3_tag("x") + junk[:1000]) == b""
    assert decoder.feed(junk[1000:]) == b""
    with pytest.raises(AudioDecodeError, match=f"could not be decoded after {len(junk)} bytes"):
        decoder.flush()


def test_endless_undecodable_mp3_raises_from_feed_instead_of_buffering() -> None:
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    decoder.feed(id3_tag("x"))
    fed = 0
    with pytest.raises(AudioDecodeError, match="MP3 data could not be decoded"):
        while fed <= 2 * MAX_UNDECODABLE_MP3_BYTES:
            decoder.feed(b"\x00\x01" * 2048)
            fed += 4096
    assert fed <= MAX_UNDECODABLE_MP3_BYTES + 4096


def test_feed_after_flush_is_refused() -> None:
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    decoder.feed(b"\x00\x00")
    decoder.flush()
    with pytest.raises(RuntimeError):
        decoder.feed(b"\x00\x00")


# --- WAV ----------------------------------------------------------------------------------------


def test_wav_header_is_parsed_and_pcm_passed_through() -> None:
    pcm = sine(16000, 0.5).tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(pcm)

    out, decoder = decode(split_at_random(buffer.getvalue(), seed=1), out_rate=16000)

    assert decoder.format is AudioFormat.WAV
    assert decoder.source_rate == 16000
    assert out.tobytes() == pcm


def test_wav_24bit_stereo_after_a_list_chunk_is_downmixed_and_resampled() -> None:
    mono = sine(48000, 1.0)
    # 24-bit samples whose top 16 bits are the sine on the left; the right channel is silent.
    stereo24 = np.zeros((len(mono), 2, 3), dtype=np.uint8)
    stereo24[:, 0, 1:] = mono.view(np.uint8).reshape(-1, 2)
    stereo = stereo24.tobytes()
    list_chunk = b"LIST" + struct.pack("<I", 5) + b"INFO\x00" + b"\x00"  # odd size + pad byte
    data = wav_file(stereo, rate=48000, channels=2, bits=24, chunks_before_data=list_chunk)

    out, decoder = decode(split_at_random(data, seed=2), out_rate=16000)

    assert decoder.source_rate == 48000
    assert abs(len(out) - len(mono) / 3) <= 1
    assert abs(dominant_hz(out, 16000) - SINE_HZ) <= PITCH_TOLERANCE_HZ
    # The silent right channel halves the level: the mix is the mean, not one channel.
    assert abs(int(np.abs(out).max()) - int(np.abs(mono).max()) // 2) < 300


@pytest.mark.parametrize(
    ("tag", "bits", "encode"),
    [
        (1, 8, lambda s: ((s.astype(np.int32) >> 8) + 128).astype(np.uint8).tobytes()),
        (1, 32, lambda s: (s.astype("<i4") << 16).tobytes()),
        (3, 32, lambda s: (s.astype("<f4") / 32768).tobytes()),
    ],
)
def test_wav_sample_formats_become_s16(tag: int, bits: int, encode) -> None:
    pcm = sine(24000, 0.2)
    data = wav_file(encode(pcm), rate=24000, bits=bits, tag=tag)

    out, _ = decode(split_at_random(data, seed=bits), out_rate=24000)

    tolerance = 256 if bits == 8 else 0  # 8-bit keeps only the top byte
    assert len(out) == len(pcm)
    assert np.abs(out.astype(np.int32) - pcm).max() <= tolerance


def test_back_to_back_wav_files_with_known_and_unknown_sizes() -> None:
    first, second, third = sine(24000, 0.3), sine(16000, 0.2), sine(16000, 0.25)
    sized = wav_file(first.tobytes(), rate=24000) + wav_file(second.tobytes(), rate=16000)
    streamed = wav_file(third.tobytes(), rate=16000, data_size=0xFFFFFFFF)
    # Sized files may meet anywhere inside a chunk; a streamed file starts a new chunk.
    chunks = split_at_random(sized, seed=4) + split_at_random(streamed, seed=5)

    out, decoder = decode(
        [*chunks, wav_file(first.tobytes(), rate=16000, data_size=0)], out_rate=16000
    )

    expected_first = len(first) * 2 / 3
    assert decoder.source_rate == 16000
    assert abs(len(out) - (expected_first + len(second) + len(third) + len(first))) <= 2
    np.testing.assert_array_equal(out[-len(first) :], first)


def test_unsupported_wav_encoding_raises() -> None:
    mulaw = wav_file(b"\x7f" * 800, rate=8000, bits=8, tag=7)
    decoder = AudioDecoder(pcm_rate=8000, out_rate=8000)
    with pytest.raises(AudioDecodeError, match="unsupported WAV encoding: format tag 0x0007"):
        decoder.feed(mulaw)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"RIFF\x24\x00\x00\x00AVI LIST", "RIFF stream is not WAVE but b'AVI '"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \xff\xff\xff\x7f", "fmt chunk has an impossible size"),
        (b"RIFF\x24\x00\x00\x00WAVEdata\x10\x00\x00\x00", "data chunk comes before any fmt"),
    ],
)
def test_malformed_wav_headers_raise_clear_errors(header: bytes, message: str) -> None:
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    with pytest.raises(AudioDecodeError, match=message):
        decoder.feed(header + bytes(64))


def test_wav_that_ends_inside_its_header_raises_at_flush() -> None:
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    assert decoder.feed(b"RIFF\x24\x00\x00\x00WAVEfmt ") == b""
    with pytest.raises(AudioDecodeError, match="WAV stream ended before its data chunk"):
        decoder.flush()


# --- raw PCM ------------------------------------------------------------------------------------


def test_raw_pcm_passes_through_chunks_of_odd_length() -> None:
    pcm = sine(24000, 0.5).tobytes()
    rng = random.Random(9)
    chunks, pos = [], 0
    while pos < len(pcm):
        size = rng.randrange(1, 999, 2)  # always odd
        chunks.append(pcm[pos : pos + size])
        pos += size

    out, decoder = decode(chunks, out_rate=24000, pcm_rate=24000)

    assert decoder.format is AudioFormat.PCM
    assert decoder.source_rate == 24000
    assert out.tobytes() == pcm


@pytest.mark.parametrize("out_rate", [8000, 16000])
def test_raw_pcm_is_resampled_to_the_right_length_and_pitch(out_rate: int) -> None:
    pcm = sine(24000, 1.0)

    whole, _ = decode([pcm.tobytes()], out_rate=out_rate, pcm_rate=24000)
    cut, decoder = decode(split_at_random(pcm.tobytes(), seed=3), out_rate=out_rate)

    assert decoder.source_rate == 24000
    assert abs(len(whole) - out_rate) <= 1
    assert abs(dominant_hz(whole, out_rate) - SINE_HZ) <= PITCH_TOLERANCE_HZ
    np.testing.assert_array_equal(cut, whole)


def test_a_head_too_short_to_sniff_is_flushed_as_pcm() -> None:
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)

    assert decoder.feed(b"I") == b""
    assert decoder.feed(b"D") == b""
    assert decoder.format is None
    assert decoder.flush() == b"ID"
    assert decoder.format is AudioFormat.PCM


def test_empty_synthesis_yields_nothing() -> None:
    decoder = AudioDecoder(pcm_rate=24000, out_rate=8000)
    assert decoder.flush() == b""
    assert decoder.format is None
    assert decoder.source_rate is None


# --- robustness ---------------------------------------------------------------------------------


def test_garbage_never_raises_anything_but_audio_decode_error() -> None:
    rng = random.Random(0)
    seeds = [
        b"".join(mp3_files([(24000, 0.3)])[0]),
        wav_file(sine(16000, 0.1).tobytes(), rate=16000),
        b"ID3\x04\x00\x00\x00\x00\x00\x10",
        b"RIFF\x00\x00\x00\x00WAVE",
        b"\xff\xf3\x64\xc4",
        b"",
    ]
    outcomes = set()
    for i in range(300):
        data = bytearray(rng.choice(seeds) + rng.randbytes(rng.randint(0, 3000)))
        for _ in range(rng.randint(0, 20)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        decoder = AudioDecoder(pcm_rate=8000, out_rate=rng.choice([8000, 16000]))
        try:
            for chunk in split_at_random(bytes(data), seed=i, max_chunk=rng.choice([3, 50, 2000])):
                decoder.feed(chunk)
            decoder.flush()
            outcomes.add("decoded")
        except AudioDecodeError:
            outcomes.add("AudioDecodeError")
    assert outcomes == {"decoded", "AudioDecodeError"}  # both paths really were exercised


# --- gapless MP3: each file's delay and padding trimmed -------------------------------------------

GAPLESS_TONE_HZ = 300.0
GAPLESS_AMPLITUDE = 8000
# 48 kbit/s LAME leaves about 280 RMS of coding error on this tone; one sample of misalignment
# anywhere adds at least 300 more (at 48 kHz, more at lower rates), a whole gap thousands.
GAPLESS_MAX_RMS_ERROR = 400.0


def gapless_tone(rate: int, seconds: float) -> NDArray:
    t = np.arange(round(rate * seconds)) / rate
    return (GAPLESS_AMPLITUDE * np.sin(2 * np.pi * GAPLESS_TONE_HZ * t)).astype("<i2")


def emulator_files(pcm: NDArray, rate: int, files: int, *, info_tag: bool) -> list[bytes]:
    """``pcm`` cut evenly, mid-tone, into ``files`` MP3 files as the emulator encodes them."""
    bounds = [round(k * len(pcm) / files) for k in range(files + 1)]
    return [
        synth.encode_mp3(pcm[a:b], rate, info_tag=info_tag) for a, b in itertools.pairwise(bounds)
    ]


def seam_steps(out: NDArray, seams: list[int]) -> tuple[int, int]:
    """The largest sample step within two samples of a seam, and the largest elsewhere."""
    steps = np.abs(np.diff(out.astype(np.int32)))
    near = np.zeros(len(steps), dtype=bool)
    for seam in seams:
        near[max(seam - 2, 0) : seam + 2] = True
    return int(steps[near].max()), int(steps[~near].max())


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
@pytest.mark.parametrize("files", [1, 4])
def test_tagged_mp3_files_decode_to_exactly_their_pcm_with_no_click_at_the_seams(
    rate: int, files: int
) -> None:
    pcm = gapless_tone(rate, 2.3)
    data = emulator_files(pcm, rate, files, info_tag=True)

    out, _ = decode(telnyx_chunks(data, seed=rate + files), out_rate=rate)

    assert len(out) == len(pcm)
    # Every sample where it was encoded: a gap or a shift anywhere shows as error.
    error = out.astype(np.float64) - pcm
    assert np.sqrt(np.mean(error**2)) < GAPLESS_MAX_RMS_ERROR
    seams = [round(k * len(pcm) / files) for k in range(1, files)]
    if seams:
        at_seams, elsewhere = seam_steps(out, seams)
        # Coding noise moves steps by a few percent; a click is a step of the tone's amplitude.
        assert at_seams <= 1.25 * elsewhere


@pytest.mark.parametrize("out_rate", [8000, 16000, 24000, 48000])
@pytest.mark.parametrize("info_tag", [True, False])
def test_mp3_synthesis_of_several_files_is_within_one_frame_per_untagged_file(
    out_rate: int, info_tag: bool
) -> None:
    files, rate = 3, 24000
    pcm = gapless_tone(rate, 2.0)
    data = emulator_files(pcm, rate, files, info_tag=info_tag)

    out, _ = decode(telnyx_chunks(data, seed=out_rate), out_rate=out_rate)

    expected = len(pcm) * out_rate / rate
    frame = mp3_frame_samples(rate) * out_rate / rate
    # Tagged: exact, give or take the resampler's rounding. Untagged: the lead is trimmed by
    # LAME's delay, and each file's padding (under a frame, recorded nowhere) stays.
    slack = 2 if info_tag else files * frame
    assert expected - 2 <= len(out) <= expected + slack


def test_untagged_mp3_files_lose_only_their_lead() -> None:
    rate, pcm = 16000, gapless_tone(16000, 1.5)
    data = emulator_files(pcm, rate, 1, info_tag=False)

    out, _ = decode([data[0]], out_rate=rate)

    assert len(pcm) <= len(out) < len(pcm) + mp3_frame_samples(rate)
    error = out[: len(pcm)].astype(np.float64) - pcm
    assert np.sqrt(np.mean(error**2)) < GAPLESS_MAX_RMS_ERROR


def test_a_tag_with_a_frame_count_holds_nothing_back() -> None:
    rate, spf = 24000, mp3_frame_samples(24000)
    pcm = gapless_tone(rate, 1.0)
    (data,) = emulator_files(pcm, rate, 1, info_tag=True)
    frames = math.ceil((len(pcm) + MP3_CODEC_DELAY) / spf)  # LAME's count, which the tag holds
    decoder = AudioDecoder(pcm_rate=rate, out_rate=rate)

    # The whole file but its last byte: every frame but the last is decoded and all of its
    # audio is out, none kept back in case it was padding (the count says it is not).
    early = decoder.feed(data[:-1])
    rest = decoder.feed(data[-1:]) + decoder.flush()

    assert len(early) // 2 == (frames - 1) * spf - MP3_CODEC_DELAY
    assert (len(early) + len(rest)) // 2 == len(pcm)


def without_frame_count(data: bytes) -> bytes:
    """An emulator MP3 file whose Info tag does not give its frame count, as a streaming
    encoder that writes its tag before it knows the count would leave it."""
    tag = data.index(b"Info")
    flags = int.from_bytes(data[tag + 4 : tag + 8], "big")
    end = data.index(b"\xff", tag)  # the first audio frame after the tag frame
    frame = data[tag + 4 : end]
    frame = (flags & ~1).to_bytes(4, "big") + frame[8:] + bytes(4)  # drop the count, keep size
    return data[:tag] + b"Info" + frame + data[end:]


def test_without_a_frame_count_only_the_padding_is_held_back() -> None:
    rate, spf = 16000, mp3_frame_samples(16000)
    pcm = gapless_tone(rate, 1.3)
    files = [without_frame_count(data) for data in emulator_files(pcm, rate, 2, info_tag=True)]
    half = len(pcm) // 2
    frames = math.ceil((half + MP3_CODEC_DELAY) / spf)
    padding = frames * spf - half - MP3_CODEC_DELAY  # what the decoder adds after the audio
    decoder = AudioDecoder(pcm_rate=rate, out_rate=rate)

    early = decoder.feed(files[0][:-1])
    first = early + decoder.feed(files[0][-1:])
    rest = decoder.feed(files[1]) + decoder.flush()

    # The file's end is not known until the next file starts: the last decoded samples wait,
    # exactly as many as the padding, and what waits at the end is dropped as padding.
    assert 0 < padding < spf
    assert len(early) // 2 == (frames - 1) * spf - MP3_CODEC_DELAY - padding
    assert len(first) // 2 == half
    assert (len(first) + len(rest)) // 2 == len(pcm)


def test_tagged_mp3_matches_ffmpegs_own_gapless_length() -> None:
    """FFmpeg's demuxer reads the same tag: both trim to the same number of samples."""
    import av

    for rate in (8000, 22050, 44100):
        pcm = gapless_tone(rate, 0.77)
        (data,) = emulator_files(pcm, rate, 1, info_tag=True)
        with av.open(io.BytesIO(data), format="mp3") as container:
            demuxed = sum(frame.samples for frame in container.decode(audio=0))

        out, _ = decode([data], out_rate=rate)

        assert len(out) == demuxed == len(pcm)


@pytest.mark.parametrize("info_tag", [True, False])
def test_the_decoder_tells_which_output_opens_a_file(info_tag: bool) -> None:
    # The word clock takes a file's start as a likely synthesis boundary; the file's first audio
    # comes out later than its first bytes (the tag and the lead give none).
    pcm = gapless_tone(24000, 1.5)
    files = emulator_files(pcm, 24000, 3, info_tag=info_tag)
    decoder = AudioDecoder(pcm_rate=24000, out_rate=24000)
    opened_at: list[int] = []
    first_audio_of_file: list[int] = []
    produced = 0
    for data in files:
        awaiting = True
        for chunk in (data[:30], data[30:400], data[400:]):  # tag, lead, the rest
            out = decoder.feed(chunk)
            if decoder.file_opened:
                opened_at.append(produced)
            if out and awaiting:
                first_audio_of_file.append(produced)
                awaiting = False
            produced += len(out)

    assert opened_at == first_audio_of_file
    assert len(opened_at) == 3


def ffmpeg_mp3_file(pcm: NDArray, rate: int, *, vbr: bool) -> bytes:
    """An MP3 file as FFmpeg writes one (libmp3lame through its muxer): an Info tag for CBR, a
    Xing tag with its seek table for VBR, both with the LAME extension FFmpeg fills in."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=rate, layout="mono")
        if vbr:
            stream.codec_context.qscale = 4
            stream.codec_context.flags |= 2  # AV_CODEC_FLAG_QSCALE: quality, not bitrate
        else:
            stream.bit_rate = 48000
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("rate", [8000, 24000, 44100])
@pytest.mark.parametrize("vbr", [False, True])
def test_ffmpeg_written_tags_are_read_as_ffmpeg_reads_them(rate: int, vbr: bool) -> None:
    import av

    pcm = gapless_tone(rate, 1.37)
    data = ffmpeg_mp3_file(pcm, rate, vbr=vbr)
    assert (b"Xing" if vbr else b"Info") in data[:200]
    with av.open(io.BytesIO(data), format="mp3") as container:
        demuxed = sum(frame.samples for frame in container.decode(audio=0))

    out, _ = decode(split_at_random(data, seed=rate), out_rate=rate)

    assert len(out) == demuxed
    assert abs(len(out) - len(pcm)) < mp3_frame_samples(rate)


def test_a_xing_tag_without_the_lame_extension_falls_back_to_lames_delay() -> None:
    # Only a LAME-format extension (named LAME, Lavf or Lavc, as FFmpeg checks) holds delays;
    # without it the file is trimmed as an untagged one, and its tag frame is still no audio.
    rate = 24000
    pcm = gapless_tone(rate, 1.0)
    (data,) = emulator_files(pcm, rate, 1, info_tag=True)
    lame = data.index(b"LAME3.100")
    bare = data[:lame] + bytes(36) + data[lame + 36 :]

    out, _ = decode([bare], out_rate=rate)

    assert len(pcm) <= len(out) < len(pcm) + mp3_frame_samples(rate)
    error = out[: len(pcm)].astype(np.float64) - pcm
    assert np.sqrt(np.mean(error**2)) < GAPLESS_MAX_RMS_ERROR
