"""Every socket a service holds: the spare, the turns' sockets, and the ones being closed.

A spare takes the handshake off a turn's critical path. It is opened when a turn is likely (the
service started, the caller is speaking, a reply began or its text is all in), or always with
``keep_warm``; it is bound
at the turn's first text, whose frame then restarts the server's idle clock; and while a spare is
wanted it is replaced before the server's idle window (as the policy has learned it) runs out.
When no turn is likely, an idle spare is left to the server's idle close and not replaced: an idle
call costs no handshakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from pipecat_telnyx_tts.lane import Lane
from pipecat_telnyx_tts.policy import ConnectionPolicy
from pipecat_telnyx_tts.request import Request
from pipecat_telnyx_tts.socket_state import SocketState

Spawn = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


class Sockets:
    """The bookkeeping; what to open and when is the policy's.

    ``open_lane`` starts a new socket's task. Once :meth:`stop` is called, nothing is opened.
    """

    def __init__(
        self, open_lane: Callable[[Request], Lane], spawn: Spawn, policy: ConnectionPolicy
    ) -> None:
        self._open_lane = open_lane
        self._spawn = spawn
        self._policy = policy
        self.spares: list[Lane] = []
        self.turns: dict[str, Lane] = {}
        """Turn sockets by context id."""
        self.closing: set[asyncio.Task[None]] = set()
        self.stopped = False

    # ------------------------------------------------------------------ spares

    def take_spare(self, request: Request, now: float) -> Lane | None:
        """The spare a turn should bind, or None (then the turn opens its own socket).

        The newest ready spare with enough idle time left, else the newest still connecting
        (its handshake is already under way, so it is ready sooner than a new one).
        """
        matching = [s for s in self.spares if s.request.key == request.key and not s.life.ended]
        ready = [
            s
            for s in matching
            if s.life.state is SocketState.READY and self._policy.bindable(s.life.idle_for(now))
        ]
        connecting = [s for s in matching if s.life.state is SocketState.CONNECTING]
        candidates = ready or connecting
        if not candidates:
            return None
        lane = candidates[-1]
        self.spares.remove(lane)
        return lane

    def keep_spare(self, request: Request, now: float) -> None:
        """Retire spares no turn can use; open one if a spare is wanted and none is fresh."""
        if self.stopped:
            return
        for spare in list(self.spares):
            stale = spare.life.state is SocketState.READY and not self._policy.bindable(
                spare.life.idle_for(now)
            )
            if spare.request.key != request.key or stale:
                self.discard(spare, "spare no longer usable")
        wanted = self._policy.spare_wanted(now) and self._policy.spare_allowed(now)
        fresh = any(self._policy.fresh(s.life.idle_for(now)) for s in self.spares)
        if wanted and not fresh:
            self.spares.append(self._open_lane(request))

    def next_check(self, now: float, longest: float) -> float:
        """Seconds until a spare may need replacing or retiring (at most ``longest``)."""
        window = self._policy.idle.believed()
        margin = self._policy.limits.refresh_margin
        due = [window - margin - s.life.idle_for(now) for s in self.spares]
        return max(0.01, min([longest, *due]))

    def spare_ready(self, lane: Lane) -> None:
        """A spare finished its handshake: older ones are redundant."""
        if lane not in self.spares:
            return
        for spare in list(self.spares):
            if spare is not lane and spare.life.created_at < lane.life.created_at:
                self.discard(spare, "replaced by a newer spare")

    def discard(self, lane: Lane, reason: str) -> None:
        """Forget a spare, closing it if it still lives."""
        self.forget(lane)
        self.retire(lane, reason)

    def forget(self, lane: Lane) -> None:
        """Drop a spare that never connected: there is nothing to close."""
        if lane in self.spares:
            self.spares.remove(lane)

    # ------------------------------------------------------------------ closing

    def retire(self, lane: Lane, reason: str) -> None:
        """Close a socket on this client's behalf, in the background (bounded by its timeout)."""
        if not lane.begin_close():
            return
        task = self._spawn(lane.finish_close(), f"telnyx-close ({reason})")
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    def stop(self) -> None:
        """No socket is opened from now on; spares are closed."""
        self.stopped = True
        spares, self.spares = self.spares, []
        for spare in spares:
            self.retire(spare, "service stopping")

    def close_turns(self) -> None:
        for lane in self.turns.values():
            self.retire(lane, "service stopping")
        self.turns.clear()
