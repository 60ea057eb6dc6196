"""The connection policy, driven without sockets: every decision of issue #14, one at a time."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from pipecat_telnyx_tts.policy import (
    Backoff,
    ConnectionPolicy,
    Failure,
    HandshakeLimiter,
    IdleWindow,
    Kind,
    Limits,
    Report,
    classify_server_error,
    classify_status,
    parse_retry_after,
)

TRANSIENT = Failure(Kind.TRANSIENT)


def start_at(p: ConnectionPolicy, now: float, *, deadline: float | None) -> float | None:
    """When a lane following the policy would start its handshake (None: it gives up)."""
    attempt = p.next_attempt(now, deadline=deadline)
    while attempt is not None and not attempt.reserved:
        now = attempt.at
        attempt = p.next_attempt(now, deadline=deadline)
    return None if attempt is None else attempt.at


def policy(**limits: float) -> ConnectionPolicy:
    """A policy with a limiter that never holds anything back and draws of exactly 1."""
    return ConnectionPolicy(
        limits=Limits(**limits),
        limiter=HandshakeLimiter(rate=1e9, burst=1_000_000),
        backoff=Backoff(random=lambda: 1.0),
    )


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_refusals_that_only_a_change_can_fix_are_permanent(status):
    assert classify_status(status, wall=0.0).kind is Kind.PERMANENT


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_may_pass(status):
    assert classify_status(status, wall=0.0).kind is Kind.TRANSIENT


def test_a_429_carries_its_retry_after_in_seconds_or_as_a_date():
    assert classify_status(429, "3", wall=0.0) == Failure(Kind.RATE_LIMITED, 429, 3.0)
    wall = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(wall + 7, UTC), usegmt=True)
    assert parse_retry_after(date, wall=wall) == pytest.approx(7.0)
    assert parse_retry_after("a while", wall=wall) is None
    assert parse_retry_after(None, wall=wall) is None
    past = format_datetime(datetime.fromtimestamp(wall - 60, UTC), usegmt=True)
    assert parse_retry_after(past, wall=wall) == 0.0


def test_an_unknown_voice_after_the_upgrade_is_a_settings_error_and_a_provider_error_passes():
    assert classify_server_error("Invalid voice_id specified").kind is Kind.PERMANENT
    assert classify_server_error("Error in audio response").kind is Kind.TRANSIENT
    assert classify_server_error("Error in remaining audio response").kind is Kind.TRANSIENT


# ----------------------------------------------------------------------------- 1. no churn


def test_a_handshake_is_not_a_success_so_quick_closes_back_off():
    """Issue #14 item 1: handshake ok, closed 0.1 s later, again and again: delays must grow."""
    p = policy()
    now, waits = 0.0, []
    for _ in range(6):
        at = start_at(p, now, deadline=None)
        assert at is not None
        waits.append(at - now)
        now = at + 0.1  # the handshake went through, then the server closed it
        p.closed_by_server(now, age=0.1, proved=False, idle_for=0.1)
    assert waits[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(waits[1:])), waits


def test_only_a_proved_socket_resets_the_backoff():
    p = policy()
    for _ in range(4):
        p.connect_failed(0.0, TRANSIENT)
    assert p.backoff.retry_at(60.0) > 0.0
    p.closed_by_server(1.0, age=6.0, proved=False, idle_for=None)  # old enough: not a failure
    assert p.backoff.failures == 4
    assert p.proved(1.0) is True  # the outage is over, and says so once
    assert p.backoff.failures == 0 and p.proved(1.0) is False


# ----------------------------------------------------------------------------- 2, 4. permanent


def test_a_permanent_refusal_is_reported_once_and_nothing_is_opened_until_settings_change():
    p = policy(likely_for=100.0)
    p.turn_likely(0.0)
    assert p.connect_failed(0.0, classify_server_error("Invalid voice_id specified")) is Report.ONCE
    assert p.connect_failed(0.0, Failure(Kind.PERMANENT, 401)) is Report.QUIET
    assert start_at(p, 1.0, deadline=None) is None
    assert start_at(p, 1.0, deadline=9.0) is None
    assert not p.spare_wanted(1.0)
    assert p.probe_at() is None, "only new settings can help: no probing"
    p.settings_changed()
    assert start_at(p, 1.0, deadline=None) == 1.0
    assert p.spare_wanted(1.0)
    assert p.connect_failed(2.0, Failure(Kind.PERMANENT, 404)) is Report.ONCE


# ----------------------------------------------------------------------------- 5. Retry-After


def test_retry_after_is_a_floor_for_turns_and_spares_and_holds_the_whole_process():
    limiter = HandshakeLimiter(rate=1e9, burst=1_000_000)
    p = ConnectionPolicy(limiter=limiter, backoff=Backoff(random=lambda: 0.0))
    other_call = ConnectionPolicy(limiter=limiter)
    assert p.connect_failed(10.0, Failure(Kind.RATE_LIMITED, 429, 3.0)) is Report.QUIET
    assert start_at(p, 10.2, deadline=None) == pytest.approx(13.0)
    assert start_at(p, 10.2, deadline=30.0) == pytest.approx(13.0)
    # Another call of the same process, which saw no 429 itself, waits too.
    assert start_at(other_call, 10.2, deadline=None) == pytest.approx(13.0)


def test_a_retry_after_past_a_turns_budget_leaves_it_no_try_and_spares_a_longer_cap():
    p = policy(spare_cap=30.0)
    p.connect_failed(0.0, Failure(Kind.RATE_LIMITED, 429, 3600.0))
    assert start_at(p, 0.0, deadline=9.0) is None
    assert start_at(p, 0.0, deadline=None) == pytest.approx(30.0)


def test_a_spare_backs_off_further_than_a_turn():
    p = policy(turn_cap=2.0, spare_cap=30.0)
    for _ in range(10):
        p.connect_failed(0.0, TRANSIENT)
    assert start_at(p, 0.0, deadline=100.0) == pytest.approx(2.0)
    assert start_at(p, 0.0, deadline=None) == pytest.approx(30.0)


# ----------------------------------------------------------------------------- 7. budget


def test_a_turn_uses_its_budget_to_the_end_with_a_last_try_at_the_deadline():
    """Issue #14 item 7: queued 3 s into an outage, the turn tries until its deadline."""
    p = policy(turn_cap=5.0)
    deadline = 3.0 + 9.0
    for _ in range(6):
        p.connect_failed(9.0, TRANSIENT)
    # The next step of backoff (5 s) would end past the deadline: a last try at the deadline.
    assert start_at(p, 9.0, deadline=deadline) == pytest.approx(deadline)
    p.connect_failed(deadline, TRANSIENT)
    assert start_at(p, deadline + 0.01, deadline=deadline) is None


# ----------------------------------------------------------------------------- 6. provider outage


def test_after_turns_fail_without_audio_one_turn_probes_at_the_backoffs_pace():
    p = policy(spare_cap=8.0)
    assert p.turn_failed(0.0, had_audio=False) is False
    assert p.degraded_since == 0.0
    due = p.probe_at()
    assert due is not None and 0.0 < due <= 8.0
    p.probe_started()
    # The probe turn fails too: stop taking turns at once, probe later.
    assert p.turn_failed(due, had_audio=False) is True
    assert p.probe_at() > due
    p.probe_started()
    assert p.proved(50.0) is True, "the first turn that gets audio ends the outage"
    assert p.degraded_since is None and not p.probing


def test_a_turn_that_had_audio_before_failing_says_nothing_about_the_provider():
    p = policy()
    assert p.turn_failed(0.0, had_audio=True) is False
    assert p.degraded_since is None and p.backoff.failures == 0


# ----------------------------------------------------------------------------- 8. idle cost


def test_a_spare_is_wanted_only_when_a_turn_is_likely():
    p = policy(likely_for=10.0)
    assert not p.spare_wanted(0.0)
    p.caller_speaking(0.0, True)
    assert p.spare_wanted(100.0), "while the caller speaks"
    p.caller_speaking(100.0, False)
    assert p.spare_wanted(109.0) and not p.spare_wanted(110.5)
    p.turn_likely(200.0)
    p.turn_bound(200.5)
    assert not p.spare_wanted(200.6), "the reply took its socket: the next waits for a sign"
    assert ConnectionPolicy(keep_warm=True).spare_wanted(0.0)


def test_the_idle_window_is_learned_from_closes_never_taken_from_the_ask():
    idle = IdleWindow(default=20.0, asked=60.0)
    assert idle.believed() == 20.0, "asked is not granted"
    idle.saw_survive(45.0)
    assert idle.believed() == 45.0
    idle.saw_close(60.2)
    assert idle.believed() == 60.2
    assert IdleWindow(default=20.0, asked=10.0).believed() == 10.0
    short = IdleWindow(default=20.0, asked=60.0)
    short.saw_close(0.1)
    assert short.believed() == 0.1


def test_the_process_limiter_spreads_a_burst_of_handshakes():
    limiter = HandshakeLimiter(rate=10.0, burst=5)
    starts = [limiter.take(0.0) for _ in range(25)]
    assert starts[:5] == [0.0] * 5
    assert starts[-1] == pytest.approx(2.0)
    assert all(b >= a for a, b in itertools.pairwise(starts))
    assert limiter.peek(100.0) == 100.0


def test_a_429_halves_the_process_rate_once_per_hold_and_acceptance_wins_it_back():
    limiter = HandshakeLimiter(rate=40.0, burst=10)
    for _ in range(30):  # one burst's refusals are one signal
        limiter.refused(now=0.0, until=1.0)
    assert limiter.rate == 20.0
    assert limiter.peek(0.0) == 1.0, "nobody starts before the Retry-After"
    limiter.refused(now=1.5, until=2.5)
    assert limiter.rate == 10.0
    for _ in range(100):
        limiter.accepted()
    assert limiter.rate == 40.0, "never above the configured rate"


def test_a_slot_reserved_before_a_429_is_void():
    p = policy()
    attempt = p.next_attempt(0.0, deadline=None)
    assert attempt is not None and attempt.reserved and not attempt.void
    p.connect_failed(0.0, Failure(Kind.RATE_LIMITED, 429, 1.0))
    assert attempt.void, "that handshake would be refused too: ask again"


def test_only_imminent_slots_are_reserved():
    limiter = HandshakeLimiter(rate=1.0, burst=1)
    p = ConnectionPolicy(limiter=limiter)
    first = p.next_attempt(0.0, deadline=None)
    assert first is not None and first.reserved and first.at == 0.0
    later = p.next_attempt(0.0, deadline=None)
    assert later is not None and not later.reserved and later.at == 1.0
    # A turn whose deadline comes before any slot gives up at its deadline, not at once.
    limiter.refused(now=0.0, until=30.0)
    waiting = p.next_attempt(0.1, deadline=5.0)
    assert waiting is not None and not waiting.reserved and waiting.at == 5.0
    assert p.next_attempt(5.0, deadline=5.0) is None


def test_a_last_try_that_wakes_late_is_still_made_once():
    p = policy(turn_cap=5.0)
    for _ in range(3):
        p.connect_failed(10.95, TRANSIENT)
    wait = p.next_attempt(11.0, deadline=12.0)
    assert wait is not None and not wait.reserved and wait.at == pytest.approx(11.95)
    # The event loop was busy: the wake-up comes 50 ms after the deadline.
    last = p.next_attempt(12.05, deadline=12.0, woke_for=wait.at)
    assert last is not None and last.reserved
    p.connect_failed(12.06, TRANSIENT)
    assert p.next_attempt(12.07, deadline=12.0) is None


def test_an_outage_that_a_turn_waits_on_is_reported_once_until_it_is_over():
    p = policy()
    p.connect_failed(0.0, TRANSIENT)
    assert p.outage_affects_turn() is Report.ONCE
    p.connect_failed(1.0, TRANSIENT)
    assert p.outage_affects_turn() is Report.QUIET
    p.proved(2.0)
    p.connect_failed(3.0, TRANSIENT)
    assert p.outage_affects_turn() is Report.ONCE, "a new outage is news again"


def test_no_spare_and_no_probe_before_a_retry_after():
    p = ConnectionPolicy(
        limiter=HandshakeLimiter(1e9, 1_000_000), backoff=Backoff(random=lambda: 0.0)
    )
    p.connect_failed(10.0, Failure(Kind.RATE_LIMITED, 429, 3.0))
    assert not p.spare_allowed(12.9)
    assert p.spare_allowed(13.0)
    assert p.probe_at() == pytest.approx(13.0)
