"""The life of one Telnyx socket, and when to try connecting again, as plain code.

A socket is a spare until a turn binds it, and it is closed either by this client (a spare retired,
a turn finished or abandoned, the service stopping) or by something else (the server, the network,
a failed handshake). Which of the two closed it decides everything that follows: a close this
client started is never a failure, never a reason to back off and never a reason to open another
socket. So the closer is recorded as state, in one place, rather than guessed from a close code.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field


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
    SocketState.BOUND: frozenset(
        {SocketState.CONNECTING, SocketState.READY, SocketState.CLOSING, SocketState.CLOSED}
    ),
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
    last_client_frame_at: float | None = None
    """When this client last sent a frame: the server's inactivity clock counts from it."""
    reason: str = ""
    """Why the socket ended, for a person; empty while it lives."""

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
        self.last_client_frame_at = now
        if self.state is SocketState.CONNECTING:
            self._move(SocketState.READY)

    def bind(self) -> None:
        """A turn takes the socket (connecting or ready)."""
        self._move(SocketState.BOUND)

    def unbind(self) -> None:
        """The turn gives the socket back untouched: a spare again."""
        self._move(SocketState.READY if self.open else SocketState.CONNECTING)

    def sent(self, now: float) -> None:
        """A client frame went out: the server's inactivity clock restarts."""
        self.last_client_frame_at = now

    def close_by_client(self, reason: str) -> bool:
        """This client starts closing the socket; False if it had already ended."""
        if self.ended:
            return False
        self._move(SocketState.CLOSING)
        self.closed_by = Closer.CLIENT
        self.reason = reason
        return True

    def on_ended(self, reason: str) -> Closer:
        """The socket is gone (close frame, lost connection, failed handshake): who ended it."""
        if self.state is SocketState.CLOSED:
            assert self.closed_by is not None
            return self.closed_by
        if self.closed_by is None:
            self.closed_by = Closer.REMOTE
            self.reason = reason
        self._move(SocketState.CLOSED)
        self.open = False
        return self.closed_by

    def idle_left(self, now: float, idle_timeout: float) -> float:
        """Seconds until the server's inactivity timeout would close the socket.

        A socket still connecting has its whole idle window ahead of it.
        """
        if self.last_client_frame_at is None:
            return idle_timeout
        return idle_timeout - (now - self.last_client_frame_at)


@dataclass
class Backoff:
    """Delays between connection attempts after failures that may pass (429, 5xx, no route).

    Exponential, each delay drawn between half and all of its ceiling, so that many calls whose
    sockets failed together do not come back together; reset by the first success.
    """

    base: float = 0.25
    cap: float = 5.0
    random: Callable[[], float] = field(default_factory=lambda: random.random)
    failures: int = 0
    retry_at: float = 0.0
    """Monotonic time before which no new attempt should start."""

    def failed(self, now: float) -> float:
        """Record a failure; returns the delay before the next attempt."""
        ceiling = min(self.cap, self.base * (2**self.failures))
        self.failures += 1
        delay = ceiling * (0.5 + 0.5 * self.random())
        self.retry_at = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0

    def wait(self, now: float) -> float:
        """Seconds to wait before the next attempt may start (0 when it may start now)."""
        return max(0.0, self.retry_at - now)


PERMANENT_UPGRADE_STATUSES = frozenset({400, 401, 403})
"""Refusals that will repeat until the key or settings change (reference §6). Everything else at
the upgrade, 429 and 5xx included, may pass and is retried."""
