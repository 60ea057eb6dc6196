"""The emulator's server connection: websockets' own, fed one client frame at a time.

websockets parses every frame of a TCP read at once; a close among them is answered on the spot,
and from then on nothing more may be sent. A client that sends ``{"force": true}`` and closes
right away would then never get the frames the server still had for it when the force came. Fed
frame by frame, the server gets to act on each message (``on_message``) before it reads the next.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.frames import DATA_OPCODES, Frame
from websockets.protocol import Event, State

MessageHook = Callable[[Frame], None]
"""Runs as the last frame of a client message is read, before any later frame is."""


def frame_length(data: bytes | bytearray) -> int | None:
    """Bytes of the WebSocket frame at the start of ``data`` (header, mask and payload), or None
    while its header is incomplete."""
    if len(data) < 2:
        return None
    masked = data[1] & 0x80
    length = data[1] & 0x7F
    header = 2
    if length == 126:
        header += 2
    elif length == 127:
        header += 8
    if len(data) < header:
        return None
    if length >= 126:
        length = int.from_bytes(data[2:header], "big")
    return header + (4 if masked else 0) + length


def connection_class(registry: set[EmulatorConnection]) -> type[EmulatorConnection]:
    """An ``EmulatorConnection`` that is in ``registry`` from TCP accept to TCP close.

    The server's own bookkeeping only covers upgraded sockets; this also covers connections still
    in the handshake (an upgrade delay, a hung upgrade, a client that never sends its request), so
    that shutdown can abort them instead of hanging.
    """

    class TrackedConnection(EmulatorConnection):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            registry.add(self)

        def connection_lost(self, exc: Exception | None) -> None:
            registry.discard(self)
            super().connection_lost(exc)

    return TrackedConnection


class EmulatorConnection(ServerConnection):
    """A server connection that stamps each client message's arrival and lets the socket act on
    it before the next frame is parsed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: deque[float] = deque()
        """``perf_counter`` at which each client message not yet received was read off the
        wire, in order; ``recv`` may run much later than that."""
        self.on_message: MessageHook | None = None
        self._unfed = bytearray()
        self._frame_left = 0
        """Bytes of the frame being fed that the protocol has not had yet."""

    def data_received(self, data: bytes) -> None:
        if self.protocol.state is State.CONNECTING:
            # The HTTP request: a client sends no frame before it has the 101.
            super().data_received(data)
            return
        self._unfed += data
        while self._unfed:
            if not self._frame_left:
                length = frame_length(self._unfed)
                if length is None:
                    return
                self._frame_left = length
            # Partial frames go in at once (the protocol buffers them); never a byte past the end
            # of the current frame.
            piece = bytes(self._unfed[: self._frame_left])
            del self._unfed[: len(piece)]
            self._frame_left -= len(piece)
            super().data_received(piece)

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode in DATA_OPCODES and event.fin:
            self.arrivals.append(time.perf_counter())
            if self.on_message is not None:
                self.on_message(event)
