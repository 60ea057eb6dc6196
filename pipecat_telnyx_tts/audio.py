"""Turn the audio bytes Telnyx's TTS WebSocket sends into s16le mono PCM at the pipeline's rate.

The server does not always honour the requested ``audio_format``: some voices answer MP3 whatever
was asked, some switch to raw PCM, some send WAV. So the bytes are sniffed instead of trusted.

MP3 needs care because one synthesis can be several MP3 files back to back, each opening with an
ID3v2 tag at the start of a WebSocket frame. An MPEG decoder fed the plain concatenation stumbles
on the tag in the middle, so tags are cut out at chunk starts before the bytes reach the decoder.
And each file carries its encoder's delay and padding, which would play as a gap at every join:
they are trimmed per file, as the file's Info tag records them, or by LAME's delay when it has no
tag (see ``_FileTrim``).

This module is sans-I/O: the caller feeds the decoded base64 payloads in arrival order and gets
PCM back, so it can be tested and benchmarked without a socket or an event loop.

Error policy: damaged data inside a stream that otherwise decodes is skipped (MP3 frames that fail
to decode are dropped, logged once per stream), because a short gap beats a dead voice.
:class:`AudioDecodeError` is raised only when nothing decodable can be recovered: a WAV header that
is malformed or holds an encoding other than integer or float PCM, MP3 data of which
:data:`MAX_UNDECODABLE_MP3_BYTES` in a row yield no audio, or a synthesis whose MP3 data never
decoded at all (raised from :meth:`AudioDecoder.flush`). After it is raised the decoder is spent.
"""

from __future__ import annotations

import enum
from typing import Protocol, TypeAlias

import av
import av.error
import numpy as np
import soxr
from loguru import logger
from numpy.typing import NDArray

# A valid MP3 stream decodes within a couple of frames (at most 1441 bytes each); this much data
# in a row without a single decoded frame means the stream is not MP3 we can play.
MAX_UNDECODABLE_MP3_BYTES = 64 * 1024

_ID3_MAGIC = b"ID3"
_ID3_HEADER_LEN = 10
_ID3_FOOTER_LEN = 10
_ID3_FOOTER_FLAG = 0x10

_WAV_FORMAT_PCM = 0x0001
_WAV_FORMAT_FLOAT = 0x0003
_WAV_FORMAT_EXTENSIBLE = 0xFFFE
# Streamed WAV files are written before their length is known and carry one of these as the
# data chunk size.
_WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
# A "fmt " chunk is 16 to 40 bytes; a larger size means a corrupt header, which must not make
# the parser wait for gigabytes that will never come.
_WAV_MAX_FMT_SIZE = 1024

Pcm: TypeAlias = bytes | NDArray[np.int16]


class AudioFormat(enum.Enum):
    """What the server actually sent, as told by the bytes."""

    MP3 = "mp3"
    WAV = "wav"
    PCM = "pcm"


class AudioDecodeError(ValueError):
    """The audio cannot be decoded and nothing playable can be recovered from it."""


def sniff_audio_format(head: bytes) -> AudioFormat | None:
    """Tell the format from the first bytes of a synthesis, or None if they cannot tell yet.

    MP3 and WAV need real evidence: an ID3v2 tag, a RIFF header, or an MPEG Layer III frame
    header followed, exactly one frame later, by another one. Anything else is raw PCM. One
    plausible header alone is not enough: a PCM stream whose first sample is -1025 opens with
    ``FF FB`` too. So a head that opens like an MPEG frame is held until the next frame's header
    has arrived (at most about 1.4 kB).
    """
    if not head:
        return None
    for magic, audio_format in ((_ID3_MAGIC, AudioFormat.MP3), (b"RIFF", AudioFormat.WAV)):
        if head.startswith(magic):
            return audio_format
        if magic.startswith(head):
            return None
    if head[0] == 0xFF:
        return _sniff_mpeg_frames(head)
    return AudioFormat.PCM


# Layer III bitrates in kbit/s by bitrate index, and sample rates by rate index.
_MPEG1_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_MPEG_HEADER_LEN = 4


def _mpeg_frame_length(header: bytes) -> int | None:
    """Bytes in the MPEG Layer III frame this 4-byte header opens, or None if it is no header.

    Free-format (bitrate index 0) is legal but has no length to check, and no TTS server uses it.
    """
    if len(header) < _MPEG_HEADER_LEN or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version, layer = (header[1] >> 3) & 0x03, (header[1] >> 1) & 0x03
    bitrate_index, rate_index = header[2] >> 4, (header[2] >> 2) & 0x03
    if version not in _MPEG_RATES or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    padding = (header[2] >> 1) & 0x01
    rate = _MPEG_RATES[version][rate_index]
    if version == 3:
        return 144_000 * _MPEG1_KBPS[bitrate_index] // rate + padding
    return 72_000 * _MPEG2_KBPS[bitrate_index] // rate + padding


def _sniff_mpeg_frames(head: bytes) -> AudioFormat | None:
    """MP3 if two consecutive frame headers agree; PCM as soon as they cannot; None meanwhile."""
    if len(head) < _MPEG_HEADER_LEN:
        # Rule out what the bytes so far already rule out, so that PCM is not held needlessly.
        padded = head + b"\x00" * (_MPEG_HEADER_LEN - len(head))
        if len(head) >= 2 and _mpeg_frame_length(padded[:2] + b"\x10\x00") is None:
            return AudioFormat.PCM
        if len(head) >= 3 and _mpeg_frame_length(padded) is None:
            return AudioFormat.PCM
        return None
    length = _mpeg_frame_length(head)
    if length is None:
        return AudioFormat.PCM
    following = head[length : length + _MPEG_HEADER_LEN]
    if len(following) < _MPEG_HEADER_LEN:
        return None
    same_stream = following[1] == head[1] and (following[2] & 0x0C) == (head[2] & 0x0C)
    if same_stream and _mpeg_frame_length(following) is not None:
        return AudioFormat.MP3
    return AudioFormat.PCM


class _RateConverter:
    """Brings mono s16 PCM from the source's rate, which may change mid-stream, to the output rate.

    soxr's streaming resampler keeps its filter state between calls, so chunk edges leave no
    trace. A rate change (a new MP3 file or WAV header at another rate) drains the old stream and
    starts a new one, rather than feeding samples at the wrong rate.
    """

    def __init__(self, out_rate: int) -> None:
        self._out_rate = out_rate
        self.rate: int | None = None
        self._resampler: soxr.ResampleStream | None = None

    def convert(self, pcm: Pcm, rate: int) -> bytes:
        drained = b""
        if rate != self.rate:
            drained = self.drain()
            self.rate = rate
            if rate != self._out_rate:
                # HQ rather than pipecat's VHQ: its filter holds back a quarter as many samples
                # (about 17 ms instead of 62 ms at 24 kHz -> 8 kHz), which is latency on every
                # chunk, and the extra stop-band depth is inaudible on speech.
                self._resampler = soxr.ResampleStream(
                    rate, self._out_rate, 1, dtype="float32", quality="HQ"
                )
        if self._resampler is None:
            return drained + (pcm if isinstance(pcm, bytes) else pcm.tobytes())
        samples = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, bytes) else pcm
        return drained + _to_s16(self._resampler.resample_chunk(samples.astype(np.float32)))

    def drain(self) -> bytes:
        """Return the samples the resampler's filter still holds and forget the resampler."""
        if self._resampler is None:
            return b""
        tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._resampler = None
        return _to_s16(tail)


def _to_s16(samples: NDArray[np.float32]) -> bytes:
    """Round resampled audio to s16 here rather than in soxr.

    soxr's own int16 output is dithered per internal block, so the same audio cut into
    different chunks would come out slightly different; rounding float output does not.
    """
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16).tobytes()


class _Stream(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _PcmStream:
    """Raw s16le mono: only a sample split between two chunks needs holding back."""

    def __init__(self, rate: int, converter: _RateConverter) -> None:
        self._rate = rate
        self._converter = converter
        self._odd_byte = b""

    def feed(self, chunk: bytes) -> bytes:
        if self._odd_byte:
            chunk = self._odd_byte + chunk
            self._odd_byte = b""
        if len(chunk) % 2:
            chunk, self._odd_byte = chunk[:-1], chunk[-1:]
        return self._converter.convert(chunk, self._rate) if chunk else b""

    def flush(self) -> bytes:
        if self._odd_byte:
            logger.debug("Telnyx TTS raw PCM ended with half a sample; dropping the odd byte")
        return b""


class _WavStream:
    """WAV parsed as it streams: header chunks are read, the data chunk is passed through.

    Chunk ids are walked rather than assuming a 44-byte header, because encoders put LIST or
    fact chunks before the data. After a data chunk of known size the walk resumes, so a second
    RIFF file sent back to back (the WAV counterpart of the multi-file MP3 case) is parsed too.
    A data chunk of unknown size runs to the end of the stream, unless a later chunk starts with
    a new RIFF/WAVE header.
    """

    def __init__(self, converter: _RateConverter) -> None:
        self._converter = converter
        self._buf = bytearray()  # bytes received but not yet consumed
        self._skip = 0  # bytes of a non-audio chunk still to discard
        self._in_data = False
        self._data_left: int | None = None  # None: the data chunk runs to the end
        self._data_pad = 0  # RIFF chunks are word aligned: an odd-sized chunk has a pad byte
        self._format: tuple[int, int, int, int] | None = None  # tag, rate, channels, bits
        self._partial_frame = b""
        self._saw_data = False

    def feed(self, chunk: bytes) -> bytes:
        if self._in_data and self._data_left is None and _is_riff_wave(chunk):
            self._in_data = False
        self._buf += chunk
        out: list[bytes] = []
        while self._step(out):
            pass
        return b"".join(out)

    def flush(self) -> bytes:
        if not self._saw_data:
            raise AudioDecodeError(
                f"WAV stream ended before its data chunk ({len(self._buf)} header bytes pending)"
            )
        return b""

    def _step(self, out: list[bytes]) -> bool:
        """Consume what the state allows; False when more bytes are needed to go on."""
        if self._in_data:
            return self._pass_data(out)
        if self._skip:
            n = min(self._skip, len(self._buf))
            del self._buf[:n]
            self._skip -= n
            return not self._skip
        return self._parse_chunk_header()

    def _pass_data(self, out: list[bytes]) -> bool:
        if self._data_left is None:
            take = len(self._buf)
        else:
            take = min(len(self._buf), self._data_left)
            self._data_left -= take
        if take:
            out.append(self._to_pcm(bytes(self._buf[:take])))
            del self._buf[:take]
        if self._data_left == 0:
            self._in_data = False
            self._skip = self._data_pad
            return True
        return False

    def _parse_chunk_header(self) -> bool:
        if len(self._buf) < 8:
            return False
        chunk_id, size = bytes(self._buf[:4]), int.from_bytes(self._buf[4:8], "little")
        if chunk_id == b"RIFF":
            if len(self._buf) < 12:
                return False
            if self._buf[8:12] != b"WAVE":
                raise AudioDecodeError(f"RIFF stream is not WAVE but {bytes(self._buf[8:12])!r}")
            del self._buf[:12]
            self._format = None
        elif chunk_id == b"fmt ":
            if not 16 <= size <= _WAV_MAX_FMT_SIZE:
                raise AudioDecodeError(f"WAV fmt chunk has an impossible size of {size} bytes")
            if len(self._buf) < 8 + size:
                return False
            self._format = _parse_wav_fmt(bytes(self._buf[8 : 8 + size]))
            self._partial_frame = b""  # a new format starts on a frame boundary
            del self._buf[: 8 + size + size % 2]
            tag, rate, channels, bits = self._format
            logger.debug(f"Telnyx TTS WAV: tag 0x{tag:04x}, {rate} Hz, {channels} ch, {bits} bit")
        elif chunk_id == b"data":
            if self._format is None:
                raise AudioDecodeError("WAV data chunk comes before any fmt chunk")
            del self._buf[:8]
            self._in_data = self._saw_data = True
            self._data_left = None if size in _WAV_UNKNOWN_SIZES else size
            self._data_pad = size % 2
        else:
            del self._buf[:8]
            self._skip = size + size % 2
        return True

    def _to_pcm(self, data: bytes) -> bytes:
        assert self._format is not None  # a data chunk is only entered after fmt
        tag, rate, channels, bits = self._format
        frame_size = channels * bits // 8
        if self._partial_frame:
            data = self._partial_frame + data
        whole = len(data) - len(data) % frame_size
        data, self._partial_frame = data[:whole], data[whole:]
        if not data:
            return b""
        if tag == _WAV_FORMAT_PCM and bits == 16 and channels == 1:
            return self._converter.convert(data, rate)
        return self._converter.convert(_wav_samples_to_mono_s16(data, tag, channels, bits), rate)


def _is_riff_wave(chunk: bytes) -> bool:
    return chunk[:4] == b"RIFF" and chunk[8:12] == b"WAVE"


def _parse_wav_fmt(fmt: bytes) -> tuple[int, int, int, int]:
    """Return (format tag, rate, channels, bits), rejecting encodings we cannot turn into PCM."""
    tag = int.from_bytes(fmt[0:2], "little")
    channels = int.from_bytes(fmt[2:4], "little")
    rate = int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == _WAV_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        # The real format tag is the first two bytes of the SubFormat GUID.
        tag = int.from_bytes(fmt[24:26], "little")
    supported = (tag == _WAV_FORMAT_PCM and bits in (8, 16, 24, 32)) or (
        tag == _WAV_FORMAT_FLOAT and bits == 32
    )
    if not supported or channels < 1 or rate < 1:
        raise AudioDecodeError(
            f"unsupported WAV encoding: format tag 0x{tag:04x}, {bits} bits, "
            f"{channels} channels, {rate} Hz (integer PCM or 32-bit float expected)"
        )
    return tag, rate, channels, bits


def _wav_samples_to_mono_s16(data: bytes, tag: int, channels: int, bits: int) -> NDArray[np.int16]:
    if tag == _WAV_FORMAT_FLOAT:
        floats = np.frombuffer(data, dtype="<f4")
        samples = np.clip(floats * 32768.0, -32768, 32767).astype(np.int16)
    elif bits == 8:  # 8-bit WAV is unsigned
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.int16) - 128) << 8
    else:
        # Little-endian: the last two bytes of each sample are its top 16 bits.
        width = bits // 8
        top = np.frombuffer(data, dtype=np.uint8).reshape(-1, width)[:, width - 2 :]
        samples = np.ascontiguousarray(top).view("<i2").reshape(-1)
    if channels == 1:
        return samples
    return samples.reshape(-1, channels).mean(axis=1).astype(np.int16)


def _id3_tag_length(header: bytes) -> int | None:
    """Total length of the ID3v2 tag opening with this 10-byte header, or None if it is not one."""
    version, revision, flags = header[3], header[4], header[5]
    size_bytes = header[6:10]
    if version not in (2, 3, 4) or revision == 0xFF or any(b & 0x80 for b in size_bytes):
        return None
    size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
    footer = _ID3_FOOTER_LEN if flags & _ID3_FOOTER_FLAG else 0
    return _ID3_HEADER_LEN + size + footer


# Where gapless MP3 comes from (FFmpeg's mp3dec.c does the same): a file written whole opens with an
# Info (constant bitrate) or Xing (variable) frame, a silent MPEG frame whose side info is followed
# by the tag; its LAME extension records how many samples of silence the encoder put before the
# audio and after it. A decoder adds its own filter delay on top, 529 samples for every file.
_MPEG_DECODER_DELAY = 529
LAME_ENCODER_DELAY = 576
"""Encoder delay assumed for a file whose tag does not give one: LAME's, which every LAME-based
encoder (the LAME tool, FFmpeg's libmp3lame, lameenc) uses."""
_XING_FLAG_FRAMES = 0x1
_XING_FLAG_BYTES = 0x2
_XING_FLAG_TOC = 0x4
_XING_FLAG_QUALITY = 0x8
_XING_TOC_LEN = 100
_LAME_DELAYS_AT = 21  # bytes from the LAME extension's version string to its delay fields
_LAME_VERSIONS = (b"LAME", b"Lavf", b"Lavc")


class _FileTrim:
    """Which decoded samples of one MP3 file are its audio: not the encoder delay and decoder
    delay before it, not the padding after it.

    With a frame count the file's end is known in advance and nothing is held back. Without
    one, the last ``tail`` samples decoded are held until the next frame shows they were not the
    end; a file's end (a new file, or the end of the synthesis) drops them.
    """

    def __init__(self, skip: int, tail: int, total: int | None) -> None:
        self._skip = skip
        self._tail = tail
        self._end = None if total is None else total - tail
        self._position = 0
        self._held = np.zeros(0, dtype=np.int16)

    @classmethod
    def untagged(cls) -> _FileTrim:
        """A file without delays on record: LAME's delay is assumed; its padding (under one
        frame) cannot be told from audio, so it is kept."""
        return cls(LAME_ENCODER_DELAY + _MPEG_DECODER_DELAY, 0, None)

    def take(self, samples: NDArray[np.int16]) -> NDArray[np.int16]:
        """The audio among the next decoded ``samples`` of the file that can be played now."""
        start = self._position
        self._position += len(samples)
        low = max(self._skip - start, 0)
        high = len(samples) if self._end is None else min(len(samples), self._end - start)
        samples = samples[low:high] if high > low else samples[:0]
        if self._end is not None or not self._tail:
            return samples
        if len(self._held):
            samples = np.concatenate((self._held, samples))
        self._held = samples[-self._tail :]
        return samples[: -self._tail]


def _info_tag(frame: bytes) -> _FileTrim | None:
    """The trim an Info/Xing frame (a tag, not audio) records; None if ``frame`` is audio."""
    version, mono = (frame[1] >> 3) & 0x03, frame[3] >> 6 == 3
    # The tag follows the frame's side info, whose size depends on the version and channels.
    side_info = (17 if mono else 32) if version == 3 else (9 if mono else 17)
    at = _MPEG_HEADER_LEN + side_info
    if frame[at : at + 4] not in (b"Xing", b"Info"):
        return None
    flags = int.from_bytes(frame[at + 4 : at + 8], "big")
    at += 8
    frames = None
    if flags & _XING_FLAG_FRAMES:
        frames = int.from_bytes(frame[at : at + 4], "big") or None
        at += 4
    at += 4 * bool(flags & _XING_FLAG_BYTES) + _XING_TOC_LEN * bool(flags & _XING_FLAG_TOC)
    at += 4 * bool(flags & _XING_FLAG_QUALITY)
    if frame[at : at + 4] not in _LAME_VERSIONS:
        # A tag without delays: only the assumption for untagged files is left.
        return _FileTrim.untagged()
    packed = int.from_bytes(frame[at + _LAME_DELAYS_AT : at + _LAME_DELAYS_AT + 3], "big")
    delay, padding = packed >> 12, packed & 0xFFF
    per_frame = 1152 if version == 3 else 576
    total = frames * per_frame if frames is not None else None
    return _FileTrim(delay + _MPEG_DECODER_DELAY, max(padding - _MPEG_DECODER_DELAY, 0), total)


class _Mp3Stream:
    """MP3 through FFmpeg's parser and fixed-point decoder, with ID3v2 tags cut out, each file
    decoded gaplessly.

    A synthesis can be several MP3 files, and every file carries its encoder's delay and
    padding: decoded as one stream, each file would add about 50 ms of silence. So each file
    gets its own decoder (as a player opening the file would) and its own trim (``_FileTrim``,
    from its Info tag, or LAME's delay when it has none). A file starts where an ID3 tag opens a
    chunk or an Info frame arrives. One parser serves the whole synthesis: it hands over each
    frame as soon as its last byte arrives, so chunk boundaries leave no trace. The fixed-point
    decoder ("mp3", not "mp3float") is used because it already outputs s16.
    """

    def __init__(self, converter: _RateConverter) -> None:
        self._converter = converter
        self._parser = av.CodecContext.create("mp3", "r")
        self._codec = av.CodecContext.create("mp3", "r")
        self._trim = _FileTrim.untagged()
        self._file_has_audio = False  # whether the current file has decoded a frame yet
        self.file_opened = False  # whether the PCM last returned holds a file's first audio
        self._file_pending = True  # a file started and has not returned audio yet
        self._id3_head = b""  # start of a possible ID3 header that a chunk ended inside
        self._id3_skip = 0  # bytes of the current ID3 tag still to cut out
        self._mpeg_bytes = 0
        self._bytes_since_audio = 0
        self._decoded_any = False
        self._warned = False

    def feed(self, chunk: bytes) -> bytes:
        self.file_opened = False
        if self._id3_skip:
            cut = min(self._id3_skip, len(chunk))
            self._id3_skip -= cut
            if self._id3_skip:
                return b""
            chunk = chunk[cut:]
        data = self._strip_id3_at_file_start(self._id3_head + chunk)
        if not data:
            return b""
        self._mpeg_bytes += len(data)
        self._bytes_since_audio += len(data)
        out = self._decode(self._parser.parse(data))
        if self._bytes_since_audio > MAX_UNDECODABLE_MP3_BYTES:
            raise AudioDecodeError(
                f"MP3 data could not be decoded after {self._bytes_since_audio} bytes"
            )
        return out

    def flush(self) -> bytes:
        """Decode what is held back and check that the synthesis decoded at all.

        The parser hands over each frame as soon as its last byte arrives and the decoder has no
        delay, so the codec itself holds nothing to drain. Only a final chunk shorter than an
        ID3 header, held in case it was one, is still undecoded; what the trim held back is the
        last file's padding.
        """
        self.file_opened = False
        out = self._decode(self._parser.parse(self._id3_head)) if self._id3_head else b""
        if self._mpeg_bytes and not self._decoded_any:
            raise AudioDecodeError(f"MP3 data could not be decoded after {self._mpeg_bytes} bytes")
        return out

    def _new_file(self, trim: _FileTrim) -> None:
        if self._file_has_audio:
            self._codec = av.CodecContext.create("mp3", "r")
        self._trim = trim
        self._file_has_audio = False
        self._file_pending = True

    def _strip_id3_at_file_start(self, data: bytes) -> bytes:
        """Cut the ID3v2 tags that open ``data``, which sits where a new MP3 file may start.

        Returns the MPEG bytes that follow; a tag running past the end of ``data`` (or a header
        split by it) is remembered so the next chunk continues cutting.
        """
        self._id3_head = b""
        while data and data[:3] == _ID3_MAGIC[: len(data)]:
            if len(data) < _ID3_HEADER_LEN:
                self._id3_head = data
                return b""
            tag_length = _id3_tag_length(data[:_ID3_HEADER_LEN])
            if tag_length is None:
                break
            self._new_file(_FileTrim.untagged())
            if tag_length > len(data):
                self._id3_skip = tag_length - len(data)
                return b""
            data = data[tag_length:]
        return data

    def _decode(self, packets: list[av.Packet]) -> bytes:
        """Decode packets, grouping runs of equal rate so the resampler gets few, large calls."""
        out: list[bytes] = []
        run: list[NDArray[np.int16]] = []
        run_rate = 0
        for packet in packets:
            trim = _info_tag(bytes(packet))
            if trim is not None:
                self._new_file(trim)
                continue
            try:
                frames = self._codec.decode(packet)
            except av.error.FFmpegError as exc:
                self._report_bad_packet(exc)
                continue
            for frame in frames:
                self._decoded_any = self._file_has_audio = True
                self._bytes_since_audio = 0
                planes = frame.to_ndarray()  # s16p: one row per channel
                mono = planes[0] if len(planes) == 1 else planes.mean(axis=0).astype(np.int16)
                samples = self._trim.take(mono)
                if not len(samples):
                    continue
                if frame.sample_rate != run_rate and run:
                    out.append(self._converter.convert(np.concatenate(run), run_rate))
                    run = []
                run_rate = frame.sample_rate
                run.append(samples)
                if self._file_pending:
                    self.file_opened, self._file_pending = True, False
        if run:
            out.append(self._converter.convert(np.concatenate(run), run_rate))
        return b"".join(out)

    def _report_bad_packet(self, exc: av.error.FFmpegError) -> None:
        if not self._warned:
            logger.warning(f"Telnyx TTS: skipping MP3 data that does not decode ({exc})")
            self._warned = True


class AudioDecoder:
    """Decode one synthesis (turn) of Telnyx TTS audio, whatever its format, into PCM.

    Feed the payload of each audio frame in arrival order; each call returns the s16le mono PCM
    at ``out_rate`` that can be produced so far, so playback can start with the first chunk. The
    format is sniffed from the first bytes. Use a fresh decoder per synthesis: decoder and
    resampler state (and the sniffed format) belong to one stream.
    """

    def __init__(self, *, pcm_rate: int, out_rate: int) -> None:
        """``pcm_rate``: the rate that was requested, which raw PCM arrives at unlabelled.

        ``out_rate``: the pipeline's rate; every format is resampled to it.
        """
        if pcm_rate <= 0 or out_rate <= 0:
            raise ValueError(f"rates must be positive, got pcm_rate={pcm_rate} out_rate={out_rate}")
        self._pcm_rate = pcm_rate
        self._converter = _RateConverter(out_rate)
        self._head = b""  # bytes held until they tell the format (see sniff_audio_format)
        self._format: AudioFormat | None = None
        self._stream: _Stream | None = None
        self._finished = False

    @property
    def format(self) -> AudioFormat | None:
        """The format the bytes turned out to be; None until enough have arrived to tell."""
        return self._format

    @property
    def source_rate(self) -> int | None:
        """Rate of the decoded audio before resampling; None until the first audio is decoded."""
        return self._converter.rate

    @property
    def file_opened(self) -> bool:
        """Whether the PCM the last :meth:`feed` returned holds the first audio of an MP3 file
        (every synthesis opens one; a synthesis may hold several)."""
        return isinstance(self._stream, _Mp3Stream) and self._stream.file_opened

    def feed(self, chunk: bytes) -> bytes:
        """Decode one chunk; returns the PCM available now, possibly b"".

        Raises AudioDecodeError when the stream cannot be decoded at all (see the module doc).
        """
        if self._finished:
            raise RuntimeError("AudioDecoder.feed() after flush(): use one decoder per synthesis")
        if self._stream is None:
            self._head += chunk
            audio_format = sniff_audio_format(self._head)
            if audio_format is None:
                return b""
            chunk, self._head = self._head, b""
            self._stream = self._start(audio_format)
        return self._stream.feed(chunk)

    def flush(self) -> bytes:
        """End the synthesis: return what the decoder and resampler still hold.

        Raises AudioDecodeError if the synthesis held MP3 or WAV data none of which decoded.
        """
        if self._finished:
            return b""
        self._finished = True
        out = b""
        if self._stream is None:
            if not self._head:
                return b""
            # Too short to be anything but PCM: the stream ended while still ambiguous.
            self._stream = self._start(AudioFormat.PCM)
            out = self._stream.feed(self._head)
        out += self._stream.flush()
        return out + self._converter.drain()

    def _start(self, audio_format: AudioFormat) -> _Stream:
        self._format = audio_format
        logger.debug(f"Telnyx TTS audio is {audio_format.name}")
        if audio_format is AudioFormat.MP3:
            return _Mp3Stream(self._converter)
        if audio_format is AudioFormat.WAV:
            return _WavStream(self._converter)
        return _PcmStream(self._pcm_rate, self._converter)
