"""The spare socket: one connected and initialized ahead of the next turn.

A spare takes the handshake off the critical path of a turn. It must also be able to outlive a
slow first token once bound, while Telnyx closes sockets that have been idle for 20 s, so a spare
is bound only while enough of its idle window is left, and is replaced before that runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pipecat_telnyx_tts.lane import Lane
from pipecat_telnyx_tts.request import Request
from pipecat_telnyx_tts.socket_state import SocketState


@dataclass(frozen=True)
class SpareTiming:
    """How long a spare is good for, in seconds."""

    server_idle_timeout: float = 20.0
    """Telnyx closes a socket after this long without a client frame (reference §1)."""
    bind_margin: float = 12.0
    """Idle time a socket must have left to be bound: room for an LLM's slow first token."""
    refresh_margin: float = 13.5
    """Below this much idle time left, a replacement is opened, so that one is ready before the
    current spare stops being bindable."""

    def bindable(self, lane: Lane, now: float) -> bool:
        return lane.life.idle_left(now, self.server_idle_timeout) >= self.bind_margin

    def fresh(self, lane: Lane, now: float) -> bool:
        return lane.life.idle_left(now, self.server_idle_timeout) >= self.refresh_margin


class SparePool:
    """Keeps one fresh spare for the current settings.

    ``open_lane`` starts a new socket; ``retire`` closes one on this client's behalf. Once
    :meth:`stop` is called, no socket is ever opened again.
    """

    def __init__(
        self,
        open_lane: Callable[[Request], Lane],
        retire: Callable[[Lane, str], None],
        timing: SpareTiming,
    ) -> None:
        self._open_lane = open_lane
        self._retire = retire
        self.timing = timing
        self.spares: list[Lane] = []
        self.stopped = False

    def take(self, request: Request, now: float | None = None) -> Lane | None:
        """The spare a new turn should bind, or None (then the turn opens its own socket).

        The newest ready spare with enough idle time left, else the newest still connecting
        (its handshake is already under way, so it is ready sooner than a new one).
        """
        now = time.monotonic() if now is None else now
        matching = [s for s in self.spares if s.request.key == request.key and not s.life.ended]
        ready = [
            s
            for s in matching
            if s.life.state is SocketState.READY and self.timing.bindable(s, now)
        ]
        connecting = [s for s in matching if s.life.state is SocketState.CONNECTING]
        candidates = ready or connecting
        if not candidates:
            return None
        lane = candidates[-1]
        self.spares.remove(lane)
        return lane

    def ensure(self, request: Request, now: float | None = None) -> None:
        """Open a spare if none is fresh; retire spares no turn can use any more."""
        if self.stopped:
            return
        now = time.monotonic() if now is None else now
        for spare in list(self.spares):
            stale = spare.life.state is SocketState.READY and not self.timing.bindable(spare, now)
            if spare.request.key != request.key or stale:
                self.discard(spare, "spare no longer usable")
        if not any(self.timing.fresh(s, now) for s in self.spares):
            self.spares.append(self._open_lane(request))

    def next_check(self, now: float, longest: float) -> float:
        """Seconds until a spare may need replacing (at most ``longest``).

        A spare still connecting counts as if it became ready now: its idle clock starts with
        its init frame, any moment.
        """
        timeout, margin = self.timing.server_idle_timeout, self.timing.refresh_margin
        left = [s.life.idle_left(now, timeout) - margin for s in self.spares]
        return max(0.01, min([longest, *left]))

    def ready(self, lane: Lane) -> None:
        """A spare finished its handshake: older ones are redundant."""
        if lane not in self.spares:
            return
        for spare in list(self.spares):
            if spare is not lane and spare.life.created_at < lane.life.created_at:
                self.discard(spare, "replaced by a newer spare")

    def discard(self, lane: Lane, reason: str) -> None:
        """Forget a spare, closing it if it still lives."""
        self.forget(lane)
        self._retire(lane, reason)

    def forget(self, lane: Lane) -> None:
        """Drop a spare that never connected: there is nothing to close."""
        if lane in self.spares:
            self.spares.remove(lane)

    def give_back(self, lane: Lane) -> None:
        """A socket whose turn never sent anything on it is a spare again."""
        if self.stopped or lane.life.ended:
            self._retire(lane, "not needed")
            return
        lane.unbind()
        self.spares.append(lane)

    def stop(self) -> list[Lane]:
        """No more sockets; returns the spares for the caller to close."""
        self.stopped = True
        spares, self.spares = self.spares, []
        return spares
