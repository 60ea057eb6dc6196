"""One Telnyx socket and the turn bound to it: connect, send, receive, close.

A lane knows nothing of pipecat. It reports what happens on its socket to its owner (the service)
and keeps the socket's state in a :class:`~pipecat_telnyx_tts.socket_state.SocketLife`, so that a
close this client started is told apart from one it did not, without guessing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from pipecat_telnyx_tts.audio import AudioDecoder
from pipecat_telnyx_tts.policy import Attempt, Failure
from pipecat_telnyx_tts.protocol import (
    ClientMessage,
    EndMessage,
    ProtocolError,
    ServerMessage,
    TextMessage,
    encode_client,
    parse_server,
)
from pipecat_telnyx_tts.request import Request
from pipecat_telnyx_tts.socket_state import Closer, SocketLife
from pipecat_telnyx_tts.turn import Turn
from pipecat_telnyx_tts.word_timing import TICK_S, WordClock

Connector = Callable[[Request], Awaitable[ClientConnection]]


class SendFailed(Exception):
    """A frame could not be written in time; the socket has been aborted."""


class LaneOwner(Protocol):
    """What a lane reports, from its own task."""

    async def lane_ready(self, lane: Lane) -> None:
        """Connected, initialized, and any text queued meanwhile sent."""

    async def lane_message(self, lane: Lane, message: ServerMessage) -> None:
        """A well-formed server frame, read while the lane was live."""

    async def lane_malformed(self, lane: Lane, error: ProtocolError) -> None:
        """A server frame that did not parse."""

    async def lane_quiet(self, lane: Lane, seconds: float) -> None:
        """Nothing read for ``seconds``; called about every ``poll`` seconds, and every
        ``word_timing.TICK_S`` while the turn has words waiting (which time alone may make due:
        :meth:`WordClock.tick`)."""

    async def lane_ended(self, lane: Lane, *, clean: bool, detail: str) -> None:
        """The server or the network ended the socket (never called for this client's closes)."""

    async def lane_next_attempt(self, lane: Lane) -> Attempt | None:
        """When to start the next handshake (``reserved``) or ask again; None to stop trying
        (the owner has then dealt with the lane's turn). Times are ``time.monotonic()``."""

    async def lane_connect_failed(self, lane: Lane, error: Exception) -> None:
        """The handshake failed."""


def unsent_text(messages: list[ClientMessage]) -> str:
    """The text held in ``messages``, for naming what a failure lost."""
    return " ".join(m.text for m in messages if isinstance(m, TextMessage)).strip()


class Lane:
    """A socket for one turn; until a turn binds it, a spare.

    ``pending`` holds the turn's frames while the handshake runs; they go out, in order, as soon
    as the socket is open. ``turn_on_wire`` records whether any of them has reached the socket:
    until then the turn can move to another socket without losing anything.
    """

    def __init__(
        self,
        request: Request,
        owner: LaneOwner,
        connect: Connector,
        *,
        send_timeout: float,
        poll: float = 1.0,
    ) -> None:
        """``poll``: how often a quiet socket is reported (``LaneOwner.lane_quiet``)."""
        self.request = request
        self.life = SocketLife(created_at=time.monotonic())
        self.pending: list[ClientMessage] = []
        self.turn: Turn | None = None
        self.context_id: str | None = None
        self.decoder: AudioDecoder | None = None
        self.clock: WordClock | None = None
        """The turn's word timing, when words are timed."""
        self.turn_on_wire = False
        self.had_audio = False
        """The bound turn got audio on this socket."""
        self.failure: Failure | None = None
        """How the server's error frame classes, if one failed the turn."""
        self.connect_error: tuple[str, Exception, Failure] | None = None
        """The last failed handshake: what to tell a person, the exception, its class."""
        self.woke_for: float | None = None
        """The time of the unreserved attempt the lane last waited for (see ``next_attempt``)."""
        self.connect_deadline: float | None = None
        """When the bound turn must give up getting a socket (set at bind, kept on moves)."""
        self.last_heard = time.monotonic()
        """When the server last sent a frame or was last asked for audio: its silence counts
        from the later of the two."""
        self._poll = poll
        self.task: asyncio.Task[None] | None = None
        self._owner = owner
        self._connect = connect
        self._send_timeout = send_timeout
        self._ws: ClientConnection | None = None
        self._abort_reason = ""

    def bind(
        self,
        context_id: str,
        turn: Turn,
        decoder: AudioDecoder,
        clock: WordClock | None = None,
    ) -> None:
        """Give the socket to a turn. The turn's silence is counted from now: a spare may have
        been quiet for longer than a turn may wait for audio."""
        self.life.bind()
        self.last_heard = time.monotonic()
        self.context_id, self.turn, self.decoder, self.clock = context_id, turn, decoder, clock

    def adopt(self, other: Lane) -> list[ClientMessage]:
        """Take over the turn of ``other``, whose socket ended before the turn reached it.

        Returns the turn's frames to send now if this socket is already open; otherwise they
        wait in ``pending`` for the handshake.
        """
        assert other.turn is not None and other.context_id is not None
        assert other.decoder is not None and not other.turn_on_wire
        self.bind(other.context_id, other.turn, other.decoder, other.clock)
        self.connect_deadline = other.connect_deadline
        self.connect_error = other.connect_error
        queued, other.pending = other.pending, []
        other.turn = other.context_id = other.decoder = other.clock = None
        if self.life.open:
            return queued
        self.pending.extend(queued)
        return []

    # ------------------------------------------------------------------ sending

    async def send(self, messages: list[ClientMessage]) -> None:
        """Send now, or queue until the socket is open.

        Raises :class:`SendFailed` when a write does not finish within the send timeout (the
        socket is aborted first) and ``ConnectionClosed`` when the socket is gone, which its
        receive loop reports in its own right.
        """
        if not self.life.open:
            self.pending.extend(messages)
            return
        for message in messages:
            await self._write(message)

    async def _write(self, message: ClientMessage) -> None:
        assert self._ws is not None
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._ws.send(encode_client(message))
        except TimeoutError:
            reason = f"a send to Telnyx stalled for {self._send_timeout:g} s"
            self.abort(reason)
            raise SendFailed(reason) from None
        self.life.sent(time.monotonic())
        if isinstance(message, EndMessage) or (isinstance(message, TextMessage) and message.flush):
            # The server owes audio from now: its silence before this was the LLM's, not its.
            self.last_heard = time.monotonic()
        if self.turn is not None:
            self.turn_on_wire = True

    # ------------------------------------------------------------------ closing

    def begin_close(self) -> bool:
        """Mark the socket as closed by this client, at once; False if it had already ended.

        From here on nothing the socket says reaches the owner. :meth:`finish_close` does the
        closing handshake.
        """
        return self.life.close_by_client()

    async def finish_close(self) -> None:
        """The closing handshake (bounded by the connection's close timeout), then the task."""
        ws = self._ws
        if ws is not None:
            try:
                await ws.close()
            except Exception:  # the socket is being discarded; a failed close changes nothing
                ws.transport.abort()
        task = self.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            await asyncio.wait([task])

    def abort(self, reason: str) -> None:
        """Drop a connection that no longer moves data, without a closing handshake.

        The socket failed rather than being retired, so its end is reported like any other
        failure, with ``reason`` as the detail.
        """
        self._abort_reason = reason
        if self._ws is not None:
            self._ws.transport.abort()

    # ------------------------------------------------------------------ the lane's task

    async def run(self) -> None:
        """Connect (when and as often as the owner says), send init and queued frames, receive."""
        while True:
            attempt = await self._owner.lane_next_attempt(self)
            if attempt is None or self.life.ended:
                self.life.on_ended()
                return
            delay = attempt.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
                if self.life.ended:
                    return
            self.woke_for = None if attempt.reserved else attempt.at
            if not attempt.reserved or attempt.void:
                continue
            try:
                ws = await self._connect(self.request)
                break
            except Exception as e:  # every failure to connect goes to the owner
                if self.life.ended:
                    return
                await self._owner.lane_connect_failed(self, e)
        self._ws = ws
        if self.life.ended:
            # Closed by this client while the handshake ran.
            await self.finish_close()
            return
        try:
            await self._write(self.request.init)
            while self.pending and not self.life.ended:
                # Popped only once sent, so that a failure still names the text it lost.
                await self._write(self.pending[0])
                self.pending.pop(0)
        except (ConnectionClosed, SendFailed, OSError):
            pass  # the receive loop below reports the end of the socket
        else:
            self.life.opened(time.monotonic())
            self.last_heard = time.monotonic()
            await self._owner.lane_ready(self)
        await self._receive(ws)

    async def _receive(self, ws: ClientConnection) -> None:
        while not self.life.ended:
            try:
                # A timeout scope, not wait_for: on 3.11 wait_for makes a task per audio frame.
                async with asyncio.timeout(self._wait()):
                    raw = await ws.recv()
            except TimeoutError:
                await self._owner.lane_quiet(self, time.monotonic() - self.last_heard)
                continue
            except ConnectionClosed as e:
                await self._ended(e)
                return
            if self.life.ended:
                return  # closed by this client while the frame was on its way: not delivered
            self.last_heard = time.monotonic()
            try:
                message = parse_server(raw)
            except ProtocolError as e:
                await self._owner.lane_malformed(self, e)
                continue
            await self._owner.lane_message(self, message)

    def _wait(self) -> float:
        """How long to read before reporting quiet: shorter while the turn's words wait."""
        waiting = self.clock is not None and self.clock.pending
        return min(self._poll, TICK_S) if waiting else self._poll

    async def _ended(self, e: ConnectionClosed) -> None:
        code = e.rcvd.code if e.rcvd is not None else None
        detail = f"close code {code}" if code is not None else "connection lost without a close"
        if e.rcvd is not None and e.rcvd.reason:
            detail += f": {e.rcvd.reason}"
        if self._abort_reason:
            detail = self._abort_reason
        if self.life.on_ended() is Closer.REMOTE:
            await self._owner.lane_ended(self, clean=code == 1000, detail=detail)
