"""The socket lifecycle, the retry backoff and the spare pool's choices, without sockets."""

from __future__ import annotations

from typing import cast

import pytest

from pipecat_telnyx_tts.lane import Lane
from pipecat_telnyx_tts.socket_state import (
    Backoff,
    Closer,
    InvalidTransition,
    SocketLife,
    SocketState,
)
from pipecat_telnyx_tts.spares import SparePool, SpareTiming
from tests.socket_helpers import default_request


def test_a_close_this_client_started_is_never_taken_for_the_server():
    life = SocketLife(created_at=0.0)
    life.opened(1.0)
    assert life.close_by_client("retired") is True
    assert life.ended and life.closed_by is Closer.CLIENT
    # The close handshake then ends the socket: still this client's doing.
    assert life.on_ended("close code 1000") is Closer.CLIENT
    assert life.state is SocketState.CLOSED
    assert life.reason == "retired"


def test_a_close_nobody_here_asked_for_is_the_remote_end():
    life = SocketLife(created_at=0.0)
    life.opened(1.0)
    life.bind()
    assert life.on_ended("close code 1000: inactivity timeout") is Closer.REMOTE
    assert life.close_by_client("too late") is False
    assert life.closed_by is Closer.REMOTE


def test_states_move_only_forward_except_a_turn_giving_its_socket_back():
    life = SocketLife(created_at=0.0)
    life.bind()
    life.unbind()
    assert life.state is SocketState.CONNECTING
    life.opened(1.0)
    assert life.state is SocketState.READY
    life.bind()
    life.unbind()
    assert life.state is SocketState.READY
    life.close_by_client("done")
    with pytest.raises(InvalidTransition):
        life.bind()


def test_idle_time_counts_from_the_last_client_frame():
    life = SocketLife(created_at=0.0)
    assert life.idle_left(100.0, 20.0) == 20.0  # still connecting: the whole window ahead
    life.opened(1.0)
    assert life.idle_left(9.0, 20.0) == 12.0
    life.sent(9.0)
    assert life.idle_left(9.0, 20.0) == 20.0


def test_backoff_grows_with_jitter_up_to_its_cap_and_resets_on_success():
    draws = iter([0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0])
    backoff = Backoff(base=0.25, cap=2.0, random=lambda: next(draws))
    delays = [backoff.failed(now=10.0) for _ in range(6)]
    assert delays == [0.125, 0.5, 0.75, 2.0, 2.0, 2.0]
    assert backoff.wait(10.5) == pytest.approx(1.5)
    backoff.succeeded()
    assert backoff.wait(10.5) == 0.0
    assert backoff.failed(now=0.0) == pytest.approx(0.25)


class _FakeLane:
    """Just what the pool reads of a lane."""

    def __init__(self, request_key: object, created_at: float) -> None:
        self.request = type("R", (), {"key": request_key})()
        self.life = SocketLife(created_at=created_at)
        self.unbound = False

    def unbind(self) -> None:
        self.unbound = True
        self.life.unbind()


def test_a_spare_is_bound_only_while_it_can_outlive_a_slow_first_token():
    timing = SpareTiming(server_idle_timeout=20.0, bind_margin=12.0, refresh_margin=13.5)
    request = default_request()
    opened: list[_FakeLane] = []
    retired: list[tuple[_FakeLane, str]] = []

    def open_lane(req):
        lane = _FakeLane(req.key, created_at=0.0)
        opened.append(lane)
        return lane

    pool = SparePool(open_lane, lambda lane, why: retired.append((lane, why)), timing)
    old = _FakeLane(request.key, created_at=0.0)
    old.life.opened(0.0)
    pool.spares.append(cast(Lane, old))
    # 9 s after its init, 11 s of idle life are left: too little for a 12 s first token.
    assert pool.take(request, now=9.0) is None
    pool.ensure(request, now=9.0)
    assert retired == [(old, "spare no longer usable")]
    assert len(opened) == 1 and pool.spares == opened
    # A spare still connecting has its whole window ahead: it is bound rather than a new one.
    assert pool.take(request, now=9.0) is opened[0]


def test_a_replacement_is_opened_before_the_spare_stops_being_bindable():
    timing = SpareTiming(server_idle_timeout=20.0, bind_margin=12.0, refresh_margin=13.5)
    request = default_request()
    opened: list[_FakeLane] = []
    pool = SparePool(
        lambda req: opened.append(_FakeLane(req.key, 7.0)) or opened[-1],
        lambda lane, why: None,
        timing,
    )
    spare = _FakeLane(request.key, created_at=0.0)
    spare.life.opened(0.0)
    pool.spares.append(cast(Lane, spare))
    pool.ensure(request, now=6.0)
    assert opened == []
    pool.ensure(request, now=7.0)  # 13 s left: below the refresh margin, still bindable
    assert len(opened) == 1
    assert pool.take(request, now=7.0) is spare


def test_a_stopped_pool_opens_nothing_and_closes_what_is_given_back():
    retired: list[str] = []
    pool = SparePool(
        lambda req: pytest.fail("opened a socket after stop"),
        lambda lane, why: retired.append(why),
        SpareTiming(),
    )
    assert pool.stop() == []
    pool.ensure(default_request(), now=0.0)
    pool.give_back(cast(Lane, _FakeLane(None, 0.0)))
    assert retired == ["not needed"]
