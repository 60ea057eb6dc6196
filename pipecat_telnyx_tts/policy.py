"""When a Telnyx socket is opened, retried, given up on or reported: one policy, as plain code.

Telnyx is a paid API with rate limits, and every decision about connecting costs it something, so
the decisions live here together instead of in the glue around each socket. A service (TTS or STT)
tells the policy what happened (a handshake went through, an upgrade was refused, the server closed
a socket, a turn needs a socket, a turn is likely soon, a turn got audio or failed without it) and
the policy answers what to do: open now or at a given time, give up, report or stay quiet, make the
service usable again. There is no I/O here and no clock of its own: every call takes ``now``
(``time.monotonic()`` seconds), so tests drive it without sockets or sleeps.

The rules, in short:

- A failure is *permanent* (the key, the URL or the settings are wrong: only a change helps),
  *rate-limited* (429: wait at least what ``Retry-After`` says) or *transient* (5xx, refused, reset,
  timed out, a socket the server closed young). Permanent failures are never retried and are
  reported once per settings change.
- Backoff cannot be defeated: a handshake is not a success. A socket counts as working only once
  it has lived past the quick-close window or carried audio; only that resets the backoff.
- A turn retries within its own connect budget and makes a last try at the budget's end; spares
  back off further (a longer cap) and never report anything a turn did not need.
- Every handshake in the process goes through one rate limiter per endpoint, which a 429 also holds,
  so that the calls of one process cannot all reconnect at once after a network blip.
- After turns failed for lack of audio (Telnyx's upstream provider down) the service is probed at
  the backoff's pace: one turn is let through, and the first turn that gets audio ends the outage.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})
"""Upgrade refusals that repeat until the key, URL or settings change (pipecat classes 404 and 422
as invalid requests too)."""


class Kind(enum.Enum):
    """What a failure says about the next attempt."""

    PERMANENT = "permanent"
    """The key, the URL or the settings are wrong: retrying repeats the failure."""
    RATE_LIMITED = "rate_limited"
    """Telnyx asked for fewer attempts (429): wait at least ``retry_after``."""
    TRANSIENT = "transient"
    """May pass by itself: a 5xx, a refused, reset or timed-out connect, a socket closed young."""


@dataclass(frozen=True)
class Failure:
    """A classified failure; the message for a person is built by the service, which knows the
    voice and the URL."""

    kind: Kind
    status: int | None = None
    retry_after: float | None = None
    """Seconds Telnyx asked to wait (429 only)."""


def classify_status(status: int, retry_after: str | None = None, *, wall: float) -> Failure:
    """An HTTP status at the upgrade. ``wall`` is ``time.time()``, for a ``Retry-After`` date."""
    if status in PERMANENT_STATUSES:
        return Failure(Kind.PERMANENT, status)
    if status == 429:
        return Failure(Kind.RATE_LIMITED, status, parse_retry_after(retry_after, wall=wall))
    return Failure(Kind.TRANSIENT, status)


def parse_retry_after(value: str | None, *, wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - wall)


_SETTINGS_ERRORS = ("invalid voice", "voice_id", "voice not found", "unknown voice")


def classify_server_error(text: str) -> Failure:
    """An ``{"error": ...}`` frame after the upgrade.

    A voice Telnyx does not know is a settings error and repeats on every socket; anything else
    ("Error in audio response" while the upstream provider is down, a timeout) may pass.
    """
    lowered = text.lower()
    if any(marker in lowered for marker in _SETTINGS_ERRORS):
        return Failure(Kind.PERMANENT)
    return Failure(Kind.TRANSIENT)


@dataclass
class Backoff:
    """Exponential delays after failures, each drawn between half and all of its ceiling so that
    calls which failed together do not come back together.

    The draw is made at the failure and applied to whichever ceiling the next attempt has (a turn
    waits less than a spare), and a ``Retry-After`` is a floor that no cap lowers.
    """

    base: float = 0.25
    random: Callable[[], float] = field(default_factory=lambda: random.random)
    failures: int = 0
    failed_at: float = 0.0
    not_before: float = 0.0
    _draw: float = 1.0

    def failed(self, now: float, *, retry_after: float | None = None) -> None:
        self.failures += 1
        self.failed_at = now
        self._draw = 0.5 + 0.5 * self.random()
        if retry_after is not None:
            self.not_before = max(self.not_before, now + retry_after)

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0

    def retry_at(self, cap: float) -> float:
        """When the next attempt may start, for an attempt whose delays are capped at ``cap``."""
        if self.failures == 0:
            return self.not_before
        ceiling = min(cap, self.base * 2 ** (self.failures - 1))
        return max(self.failed_at + ceiling * self._draw, self.not_before)


class HandshakeLimiter:
    """Handshakes a second to one endpoint, for the whole process (a token bucket, kept as GCRA).

    A 429 stops every handshake until its ``Retry-After`` (the other calls of the process would
    be refused too), empties the bucket and halves the rate, once per hold (the refusals of one
    burst are one signal); each accepted handshake adds back a half a handshake a second,
    up to ``rate`` (at full use the rate grows by half each second): the process finds the rate
    Telnyx takes instead of knocking at its own.
    """

    MIN_RATE = 1.0
    GROWTH = 1.0

    def __init__(self, rate: float, burst: int) -> None:
        self.max_rate = self.rate = rate
        self.burst = burst
        self._tat = 0.0
        """Theoretical arrival time of the next handshake."""
        self._held_until = 0.0
        self.epoch = 0
        """Counts 429s: a slot reserved before one is void (those handshakes would be refused)."""

    def peek(self, at: float) -> float:
        """The earliest time at or after ``at`` that a handshake could start."""
        tolerance = (self.burst - 1) / self.rate
        return max(at, self._tat - tolerance, self._held_until)

    def take(self, at: float) -> float:
        """Reserve a handshake slot at or after ``at``; returns its time."""
        start = self.peek(at)
        self._tat = max(self._tat, start) + 1.0 / self.rate
        return start

    def refused(self, now: float, until: float) -> None:
        """A 429 at ``now``: nobody starts a handshake before ``until``."""
        if now >= self._held_until:
            self.rate = max(self.MIN_RATE, self.rate / 2)
        self.epoch += 1
        self._held_until = max(self._held_until, until)
        self._tat = max(self._tat, self._held_until + (self.burst - 1) / self.rate)

    def accepted(self) -> None:
        self.rate = min(self.max_rate, self.rate + self.GROWTH)


_LIMITERS: dict[str, HandshakeLimiter] = {}


def shared_limiter(endpoint: str, *, rate: float, burst: int) -> HandshakeLimiter:
    """The process's limiter for ``endpoint`` (created with ``rate`` and ``burst`` on first use)."""
    limiter = _LIMITERS.get(endpoint)
    if limiter is None:
        limiter = _LIMITERS[endpoint] = HandshakeLimiter(rate, burst)
    return limiter


@dataclass
class IdleWindow:
    """How long the server lets a socket sit idle, learned from what it does, not what was asked.

    Until a socket is seen closed for idleness, the belief is the documented default (20 s),
    raised by any socket seen to survive longer, never above what was asked for. An idle close
    sets the belief to when it came.
    """

    default: float = 20.0
    asked: float | None = None
    closed_after: float | None = None
    survived: float = 0.0

    def believed(self) -> float:
        if self.closed_after is not None:
            return self.closed_after
        belief = max(self.default, self.survived)
        return min(belief, self.asked) if self.asked else belief

    def saw_close(self, idle_for: float) -> None:
        if self.closed_after is None or idle_for < self.closed_after:
            self.closed_after = idle_for

    def saw_survive(self, idle_for: float) -> None:
        self.survived = max(self.survived, idle_for)
        if self.closed_after is not None and idle_for > self.closed_after:
            # An earlier close came sooner than idleness explains (a restart, a network blip).
            self.closed_after = None


@dataclass(frozen=True)
class Limits:
    """The policy's numbers, in seconds."""

    quick_close: float = 5.0
    """A socket the server ends sooner than this, having carried no audio, failed."""
    turn_budget: float = 9.0
    """How long a turn may spend getting a socket before it fails with its text named."""
    turn_cap: float = 2.0
    """Longest backoff step while a turn waits."""
    spare_cap: float = 30.0
    """Longest backoff step when no turn waits (and longest ``Retry-After`` honoured for a spare;
    a turn honours any, up to its budget)."""
    slot_horizon: float = 0.5
    """Longest wait for a handshake slot that is reserved; a later one is asked for again."""
    likely_for: float = 10.0
    """How long a sign that a turn is coming (the caller stopped speaking, a reply started) keeps
    a spare wanted."""
    bind_margin: float = 1.0
    """Idle time a spare must have left to be bound: the turn's first text is sent at once."""
    refresh_margin: float = 3.0
    """While a spare is wanted, one with less idle time left than this is replaced (room for a
    handshake before the old one stops being bindable)."""


@dataclass(frozen=True)
class Attempt:
    """When to act on a handshake: start it (``reserved``) or ask the policy again."""

    at: float
    reserved: bool
    limiter: HandshakeLimiter | None = None
    epoch: int = 0

    @property
    def void(self) -> bool:
        """A 429 came after the slot was reserved: ask again instead of starting."""
        return self.limiter is not None and self.limiter.epoch != self.epoch


class Report(enum.Enum):
    """What a failure should tell the pipeline."""

    QUIET = "quiet"
    """Log only: nothing a caller could act on (a spare, a retry within a turn's budget)."""
    ONCE = "once"
    """Push one ErrorFrame: a permanent refusal, first seen since the settings last changed."""


@dataclass
class ConnectionPolicy:
    """The connection decisions of one service. See the module docstring for the rules."""

    limits: Limits = field(default_factory=Limits)
    limiter: HandshakeLimiter = field(default_factory=lambda: HandshakeLimiter(20.0, 20))
    backoff: Backoff = field(default_factory=Backoff)
    idle: IdleWindow = field(default_factory=IdleWindow)
    keep_warm: bool = False
    """Always keep a spare (the old behaviour), not only when a turn is likely."""
    refused: Failure | None = None
    """A permanent failure for the current settings; nothing is opened until they change."""
    degraded_since: float | None = None
    """When the current outage began (connections or syntheses failing), or None."""
    probing: bool = False
    """The service was made usable again to let one turn test whether Telnyx recovered."""
    _refusal_reported: bool = False
    _outage_reported: bool = False
    _likely_until: float = 0.0
    _caller_speaking: bool = False

    # ------------------------------------------------------------------ when to open

    def next_attempt(
        self, now: float, *, deadline: float | None, woke_for: float | None = None
    ) -> Attempt | None:
        """When the next handshake may start; None to give up.

        While the backoff runs, the answer is when to ask again; once it has run out, a slot of
        the process's limiter is reserved (so that only imminent attempts hold slots).
        ``deadline`` is a turn's: its attempts are capped at ``turn_cap`` and the last one starts
        at the deadline rather than not at all (``woke_for``, the time of the unreserved answer
        the caller waited for, keeps a wake-up that came late from costing that last try).
        Without a deadline (a spare) the longer cap applies.
        """
        if self.refused is not None:
            return None
        cap = self.limits.spare_cap if deadline is None else self.limits.turn_cap
        at = max(now, self.backoff.retry_at(cap))
        if deadline is not None:
            spent = now > deadline and (woke_for is None or woke_for > deadline)
            if spent or self.backoff.not_before > deadline:
                return None  # spent, or Telnyx asked for a wait the turn cannot afford
            at = min(at, deadline)
        if at > now and (deadline is None or at < deadline):
            return Attempt(at, reserved=False)
        slot = self.limiter.peek(at)
        if slot > at + self.limits.slot_horizon:
            # Only imminent slots are reserved, so that a rate that grows (or a 429 that holds
            # everyone) applies to the attempts still waiting.
            if deadline is None:
                return Attempt(slot, reserved=False)
            if at >= deadline or now > deadline:
                return None
            return Attempt(min(slot, deadline), reserved=False)
        return Attempt(self.limiter.take(at), True, self.limiter, self.limiter.epoch)

    def handshake_ok(self) -> None:
        """An upgrade was accepted: the process's limiter may speed up again."""
        self.limiter.accepted()

    def spare_allowed(self, now: float) -> bool:
        """Whether a spare may be opened now (nothing refused, no backoff running)."""
        return self.refused is None and self.backoff.retry_at(self.limits.spare_cap) <= now

    def turn_likely(self, now: float) -> None:
        """A turn may come soon (the service started, the LLM began a reply)."""
        self._likely_until = max(self._likely_until, now + self.limits.likely_for)

    def caller_speaking(self, now: float, speaking: bool) -> None:
        """The caller started or stopped speaking: a reply is likely until a while after."""
        self._caller_speaking = speaking
        self.turn_likely(now)

    def turn_bound(self, now: float) -> None:
        """A turn took its socket: the next spare waits for the next sign of a turn."""
        if not self._caller_speaking:
            self._likely_until = now

    def spare_wanted(self, now: float) -> bool:
        """Whether a spare should be kept ready now."""
        if self.refused is not None or not self.spares_useful():
            return False
        return self.keep_warm or self._caller_speaking or now < self._likely_until

    def spares_useful(self) -> bool:
        """A spare is pointless when the server closes idle sockets before one could be bound."""
        return self.idle.believed() > self.limits.refresh_margin

    def bindable(self, idle_for: float) -> bool:
        return self.idle.believed() - idle_for >= self.limits.bind_margin

    def fresh(self, idle_for: float) -> bool:
        return self.idle.believed() - idle_for >= self.limits.refresh_margin

    # ------------------------------------------------------------------ what happened

    def connect_failed(self, now: float, failure: Failure) -> Report:
        """A handshake failed (or an error frame answered it on a socket with no turn)."""
        if failure.kind is Kind.PERMANENT:
            return self._refuse(failure)
        retry_after = failure.retry_after
        if failure.kind is Kind.RATE_LIMITED:
            retry_after = min(retry_after or 1.0, self.limits.spare_cap)
            self.limiter.refused(now, now + retry_after)
        self.backoff.failed(now, retry_after=retry_after)
        self._degrade(now)
        return Report.QUIET

    def closed_by_server(
        self, now: float, *, age: float, proved: bool, idle_for: float | None
    ) -> None:
        """The server or the network ended a socket this client did not close.

        ``idle_for`` is how long the socket had been idle, when it carried no turn (a spare): the
        evidence for the server's idle window.
        """
        young = age < self.limits.quick_close and not proved
        if young:
            self.backoff.failed(now)
            self._degrade(now)
        if idle_for is not None:
            self.idle.saw_close(idle_for)

    def survived(self, idle_for: float) -> None:
        """A spare was seen open after ``idle_for`` seconds without a client frame."""
        self.idle.saw_survive(idle_for)

    def proved(self, now: float) -> bool:
        """A socket lived past the quick-close window or carried audio: connecting works.

        Returns True when this ends an outage (the caller logs it and makes itself usable).
        """
        self.backoff.succeeded()
        self.probing = False
        recovered = self.degraded_since is not None
        self.degraded_since = None
        self._outage_reported = False
        return recovered

    def outage_affects_turn(self) -> Report:
        """A turn waits on a connection that failed for a reason that may pass: the pipeline
        hears of the outage once (each turn that then fails names its own text)."""
        if self._outage_reported:
            return Report.QUIET
        self._outage_reported = True
        return Report.ONCE

    def turn_failed(self, now: float, *, had_audio: bool) -> bool:
        """A turn failed (error frame, lost socket, silence, budget spent).

        Returns True when the service should stop taking turns now: it was let through to probe
        a recovery and found none. (pipecat writes it off by itself after three silent turns.)
        """
        if had_audio:
            return False
        self.backoff.failed(now)
        self._degrade(now)
        probing, self.probing = self.probing, False
        return probing

    def probe_at(self) -> float | None:
        """When an unusable service may take one turn to test for recovery; None when only a
        settings change can help."""
        if self.refused is not None:
            return None
        return self.backoff.retry_at(self.limits.spare_cap)

    def probe_started(self) -> None:
        self.probing = True

    def settings_changed(self) -> None:
        """New settings may be the fix: forget a permanent refusal, report the next one."""
        self.refused = None
        self._refusal_reported = False

    def _refuse(self, failure: Failure) -> Report:
        self.refused = failure
        if self._refusal_reported:
            return Report.QUIET
        self._refusal_reported = True
        return Report.ONCE

    def _degrade(self, now: float) -> None:
        if self.degraded_since is None:
            self.degraded_since = now
