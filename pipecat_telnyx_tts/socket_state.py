"""The life of one Telnyx socket, as plain code (when to open another: :mod:`.policy`).

A socket is a spare until a turn binds it, and it is closed either by this client (a spare retired,
a turn finished or abandoned, the service stopping) or by something else (the server, the network,
a failed handshake). Which of the two closed it decides everything that follows: a close this
client started is never a failure, never a reason to back off and never a reason to open another
socket. So the closer is recorded as state, in one place, rather than guessed from a close code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class SocketState(enum.Enum):
    """Where a socket is in its life."""

    CONNECTING = "connecting"
    """Handshake and init frame under way; nothing can be sent yet."""
    READY = "ready"
    """Open and initialized, owned by no turn: a spare."""
    BOUND = "bound"
    """Owned by a turn (whether or not its handshake has finished)."""
    CLOSING = "closing"
    """This client has decided to close it; whatever the socket says from now on is ignored."""
    CLOSED = "closed"


class Closer(enum.Enum):
    """Who ended a socket."""

    CLIENT = "client"
    """This client closed it on purpose."""
    REMOTE = "remote"
    """The server or the network ended it, or the handshake failed."""


_ALLOWED: dict[SocketState, frozenset[SocketState]] = {
    SocketState.CONNECTING: frozenset(
        {SocketState.READY, SocketState.BOUND, SocketState.CLOSING, SocketState.CLOSED}
    ),
    SocketState.READY: frozenset({SocketState.BOUND, SocketState.CLOSING, SocketState.CLOSED}),
    SocketState.BOUND: frozenset({SocketState.CLOSING, SocketState.CLOSED}),
    SocketState.CLOSING: frozenset({SocketState.CLOSED}),
    SocketState.CLOSED: frozenset(),
}


class InvalidTransition(RuntimeError):
    """A state change the socket's life does not allow: a bug in the caller."""


@dataclass
class SocketLife:
    """State of one socket. ``now`` values are ``time.monotonic()`` seconds."""

    created_at: float
    state: SocketState = SocketState.CONNECTING
    closed_by: Closer | None = None
    open: bool = False
    """The handshake and init frame are done, so frames can be sent."""
    opened_at: float | None = None
    """When the handshake and init frame finished."""
    last_client_frame_at: float | None = None
    """When this client last sent a frame: the server's inactivity clock counts from it."""
    proved: bool = False
    """The socket lived past the quick-close window or carried audio: connecting works."""

    def _move(self, new: SocketState) -> None:
        """The one place the state changes."""
        if new is self.state:
            return
        if new not in _ALLOWED[self.state]:
            raise InvalidTransition(f"socket cannot go from {self.state.value} to {new.value}")
        self.state = new

    @property
    def ended(self) -> bool:
        """Closing or closed: nothing it says may reach a turn, nothing more may be sent."""
        return self.state in (SocketState.CLOSING, SocketState.CLOSED)

    def opened(self, now: float) -> None:
        """The handshake and the init frame went through."""
        if self.ended:
            return
        self.open = True
        self.opened_at = self.last_client_frame_at = now
        if self.state is SocketState.CONNECTING:
            self._move(SocketState.READY)

    def bind(self) -> None:
        """A turn takes the socket (connecting or ready)."""
        self._move(SocketState.BOUND)

    def sent(self, now: float) -> None:
        """A client frame went out: the server's inactivity clock restarts."""
        self.last_client_frame_at = now

    def close_by_client(self) -> bool:
        """This client starts closing the socket; False if it had already ended."""
        if self.ended:
            return False
        self._move(SocketState.CLOSING)
        self.closed_by = Closer.CLIENT
        return True

    def on_ended(self) -> Closer:
        """The socket is gone (close frame, lost connection, failed handshake): who ended it."""
        if self.state is SocketState.CLOSED:
            assert self.closed_by is not None
            return self.closed_by
        if self.closed_by is None:
            self.closed_by = Closer.REMOTE
        self._move(SocketState.CLOSED)
        self.open = False
        return self.closed_by

    def idle_for(self, now: float) -> float:
        """Seconds since this client's last frame: the server's inactivity clock.

        A socket still connecting has not started that clock.
        """
        if self.last_client_frame_at is None:
            return 0.0
        return now - self.last_client_frame_at

    def age(self, now: float) -> float:
        """Seconds since the socket opened (0 while it connects)."""
        return 0.0 if self.opened_at is None else now - self.opened_at
