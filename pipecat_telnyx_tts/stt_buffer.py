"""The caller's audio on its way to the STT socket, without I/O: cut into frames of a fixed
length, and held while the socket is reconnecting, up to a bound, the oldest dropped first."""

from __future__ import annotations

from collections import deque


class Framer:
    """Cuts a stream of 16-bit PCM into frames of ``frame_bytes``: pipecat's input chunks are
    10-20 ms, Telnyx recommends 2048-8192 bytes a frame."""

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0 or frame_bytes % 2:
            raise ValueError(f"a frame must be a positive even number of bytes, not {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._pending = bytearray()

    def add(self, audio: bytes) -> list[bytes]:
        """The whole frames ``audio`` completes, in order."""
        self._pending += audio
        whole = len(self._pending) - len(self._pending) % self.frame_bytes
        frames = [
            bytes(self._pending[i : i + self.frame_bytes])
            for i in range(0, whole, self.frame_bytes)
        ]
        del self._pending[:whole]
        return frames

    def flush(self) -> bytes:
        """What is left, whole samples only (for a Finalize or the end of the stream)."""
        even = len(self._pending) - len(self._pending) % 2
        rest = bytes(self._pending[:even])
        del self._pending[:even]
        return rest


class HeldAudio:
    """Frames that arrived while no socket could take them; at most ``max_bytes``, the oldest
    dropped first, so that what is sent after a reconnect is the caller's latest speech."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._frames: deque[bytes] = deque()
        self._bytes = 0
        self.dropped_bytes = 0
        """Dropped since the last ``take``."""

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def hold(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._bytes += len(frame)
        self._trim()

    def _trim(self) -> None:
        while self._bytes > self.max_bytes and self._frames:
            old = self._frames.popleft()
            self._bytes -= len(old)
            self.dropped_bytes += len(old)

    def put_back(self, frames: list[bytes]) -> None:
        """Frames taken but not sent (the socket went away meanwhile): older than anything held
        since, so they go in front, and the bound still drops the oldest first."""
        self._frames.extendleft(reversed(frames))
        self._bytes += sum(len(f) for f in frames)
        self._trim()

    def take(self) -> tuple[list[bytes], int]:
        """Every held frame in order, and how many bytes were dropped to keep within the bound."""
        frames, dropped = list(self._frames), self.dropped_bytes
        self._frames.clear()
        self._bytes = 0
        self.dropped_bytes = 0
        return frames, dropped

    def clear(self) -> None:
        self.take()
