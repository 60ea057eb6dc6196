"""The socket lifecycle and the spare bookkeeping's choices, without sockets."""

from __future__ import annotations

from typing import cast

import pytest

from pipecat_telnyx_tts.lane import Lane
from pipecat_telnyx_tts.policy import ConnectionPolicy, IdleWindow, Limits
from pipecat_telnyx_tts.socket_state import Closer, InvalidTransition, SocketLife, SocketState
from pipecat_telnyx_tts.sockets import Sockets
from tests.socket_helpers import default_request


def test_a_close_this_client_started_is_never_taken_for_the_server():
    life = SocketLife(created_at=0.0)
    life.opened(1.0)
    assert life.close_by_client() is True
    assert life.ended and life.closed_by is Closer.CLIENT
    # The close handshake then ends the socket: still this client's doing.
    assert life.on_ended() is Closer.CLIENT
    assert life.state is SocketState.CLOSED


def test_a_close_nobody_here_asked_for_is_the_remote_end():
    life = SocketLife(created_at=0.0)
    life.opened(1.0)
    life.bind()
    assert life.on_ended() is Closer.REMOTE
    assert life.close_by_client() is False
    assert life.closed_by is Closer.REMOTE


def test_states_move_only_forward():
    life = SocketLife(created_at=0.0)
    life.opened(1.0)
    assert life.state is SocketState.READY
    life.bind()
    assert life.state is SocketState.BOUND
    with pytest.raises(InvalidTransition):
        life._move(SocketState.READY)  # a turn never gives its socket back
    life.close_by_client()
    with pytest.raises(InvalidTransition):
        life.bind()


def test_idle_time_counts_from_the_last_client_frame_and_age_from_the_open():
    life = SocketLife(created_at=0.0)
    assert life.idle_for(100.0) == 0.0  # still connecting: the server's clock has not started
    assert life.age(100.0) == 0.0
    life.opened(1.0)
    assert life.idle_for(9.0) == 8.0
    life.sent(9.0)
    assert life.idle_for(9.0) == 0.0
    assert life.age(9.0) == 8.0


class _FakeLane:
    """Just what the bookkeeping reads of a lane."""

    def __init__(self, request_key: object, created_at: float) -> None:
        self.request = type("R", (), {"key": request_key})()
        self.life = SocketLife(created_at=created_at)

    def begin_close(self) -> bool:
        return self.life.close_by_client()

    async def finish_close(self) -> None:
        return None


class _Spawned:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, coroutine, name):  # type: ignore[no-untyped-def]
        coroutine.close()
        self.names.append(name)
        return _DoneTask()


class _DoneTask:
    def add_done_callback(self, callback) -> None:  # type: ignore[no-untyped-def]
        return None


def sockets_for(policy: ConnectionPolicy, opened: list[_FakeLane], now: float) -> Sockets:
    def open_lane(req):  # type: ignore[no-untyped-def]
        lane = _FakeLane(req.key, created_at=now)
        opened.append(lane)
        return cast(Lane, lane)

    return Sockets(open_lane, _Spawned(), policy)  # type: ignore[arg-type]


def test_a_spare_is_opened_only_while_a_turn_is_likely():
    policy = ConnectionPolicy(idle=IdleWindow(default=20.0))
    opened: list[_FakeLane] = []
    sockets = sockets_for(policy, opened, now=0.0)
    request = default_request()
    sockets.keep_spare(request, now=0.0)
    assert opened == [], "nothing said a turn was coming"
    policy.turn_likely(0.0)
    sockets.keep_spare(request, now=0.0)
    assert len(opened) == 1
    opened[0].life.opened(0.5)
    # Past the likely window the spare is left alone, even once it is stale: the server's idle
    # close is how the real window is learned, and no handshake is spent on an idle call.
    sockets.keep_spare(request, now=19.0)
    assert len(opened) == 1 and not opened[0].life.ended


def test_a_stale_spare_is_not_bound_and_is_replaced_while_wanted():
    policy = ConnectionPolicy(idle=IdleWindow(default=20.0), limits=Limits(bind_margin=1.0))
    opened: list[_FakeLane] = []
    sockets = sockets_for(policy, opened, now=0.0)
    request = default_request()
    old = _FakeLane(request.key, created_at=0.0)
    old.life.opened(0.0)
    sockets.spares.append(cast(Lane, old))
    assert sockets.take_spare(request, now=19.5) is None, "0.5 s of idle life left: too little"
    policy.caller_speaking(19.5, True)
    sockets.keep_spare(request, now=19.5)
    assert len(opened) == 1
    # A spare still connecting is bound rather than opening yet another socket.
    assert sockets.take_spare(request, now=19.5) is opened[0]


def test_a_replacement_is_opened_before_the_spare_stops_being_bindable():
    policy = ConnectionPolicy(
        idle=IdleWindow(default=20.0), limits=Limits(bind_margin=1.0, refresh_margin=3.0)
    )
    policy.caller_speaking(0.0, True)
    opened: list[_FakeLane] = []
    sockets = sockets_for(policy, opened, now=0.0)
    request = default_request()
    spare = _FakeLane(request.key, created_at=0.0)
    spare.life.opened(0.0)
    sockets.spares.append(cast(Lane, spare))
    sockets.keep_spare(request, now=16.9)
    assert opened == []
    sockets.keep_spare(request, now=17.1)  # 2.9 s left: below the refresh margin, bindable
    assert len(opened) == 1
    assert sockets.take_spare(request, now=17.1) is spare


def test_spares_are_not_kept_when_the_server_idles_sockets_out_before_one_could_be_bound():
    policy = ConnectionPolicy(keep_warm=True)
    policy.idle.saw_close(0.1)
    opened: list[_FakeLane] = []
    sockets = sockets_for(policy, opened, now=0.0)
    sockets.keep_spare(default_request(), now=0.0)
    assert opened == []


def test_stopped_bookkeeping_opens_nothing_and_closes_its_spares():
    policy = ConnectionPolicy(keep_warm=True)
    opened: list[_FakeLane] = []
    sockets = sockets_for(policy, opened, now=0.0)
    spare = _FakeLane(default_request().key, created_at=0.0)
    sockets.spares.append(cast(Lane, spare))
    sockets.stop()
    sockets.keep_spare(default_request(), now=0.0)
    assert opened == []
    assert spare.life.closed_by is Closer.CLIENT
