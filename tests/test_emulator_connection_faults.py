"""The cases a client's connection policy must survive: idle windows of any size and asks for
longer ones, when to retry after a 429, a per-key upgrade rate limit, provider errors that end,
a voice refused after the upgrade, unknown frames on idle sockets; and the counts a test reads
off the records."""

from __future__ import annotations

import asyncio
import json
import time
from email.utils import parsedate_to_datetime

import pytest
from test_emulator_support import (
    AUTH,
    VOICE,
    audio_frames,
    open_socket,
    receive,
    receive_all,
    refused,
    send,
    silent_for,
    speak,
    ws_url,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator
from pipecat_telnyx_tts.emulator.records import (
    ConnectionRecord,
    OpenSockets,
    UpgradeSecond,
    open_sockets,
    upgrades_per_second,
)
from pipecat_telnyx_tts.protocol import ErrorMessage, FinalMessage, InitMessage, TextMessage

OTHER_VOICE = "Telnyx.NaturalHD.orion"


async def closed_record(emu: TelnyxEmulator, index: int = 0) -> ConnectionRecord:
    return await emu.wait_for(lambda: emu.connections[index].closed_at and emu.connections[index])


# --------------------------------------------------------------------------- idle windows


async def test_a_50_ms_idle_window_closes_a_socket_that_only_sent_its_init() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(inactivity_timeout=0.05)) as emu:
        async with open_socket(emu) as ws:
            assert await receive_all(ws) == []
            assert (ws.close_code, ws.close_reason) == (1000, "inactivity timeout")
        record = await closed_record(emu)
        assert [type(f.message) for f in record.received] == [InitMessage]
        assert record.idle_timeout == 0.05
        assert record.closed_at - record.received[0].t >= 0.05


async def test_the_ask_for_a_longer_window_is_honoured_up_to_the_cap() -> None:
    faults = Faults.fast(inactivity_timeout=None, inactivity_timeout_cap=0.2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu, inactivity_timeout=60) as ws:
            assert await receive_all(ws) == []
            assert ws.close_reason == "inactivity timeout"
        record = await closed_record(emu)
        assert record.idle_timeout == 0.2
        assert record.closed_at - record.received[0].t >= 0.2


@pytest.mark.parametrize(("ignore", "window"), [(False, 0.4), (True, 0.1)])
async def test_an_ignored_ask_gets_the_servers_own_window(ignore: bool, window: float) -> None:
    faults = Faults.fast(inactivity_timeout=0.1, ignore_inactivity_query=ignore)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu, inactivity_timeout=0.4) as ws:
            assert await receive_all(ws) == []
        record = await closed_record(emu)
        assert record.params is not None and record.params.inactivity_timeout == 0.4
        assert record.idle_timeout == window
        assert record.closed_at - record.received[0].t >= window


# --------------------------------------------------------------------------- Retry-After


async def test_a_429_asks_for_the_configured_seconds() -> None:
    async with TelnyxEmulator(faults=Faults.fast(refuse_status=429, retry_after=7)) as emu:
        error = await refused(ws_url(emu))
        assert error.response.status_code == 429
        assert error.response.headers["Retry-After"] == "7"


async def test_a_429_can_say_when_as_an_http_date() -> None:
    faults = Faults.fast(refuse_status=429, retry_after=3, retry_after_date=True)
    async with TelnyxEmulator(faults=faults) as emu:
        error = await refused(ws_url(emu))
        when = parsedate_to_datetime(error.response.headers["Retry-After"]).timestamp()
        # Rounded up to a whole second: at least the wait, at most a second more.
        assert 3 - 1 <= when - time.time() <= 3 + 1
        assert error.response.headers["Retry-After"].endswith(" GMT")


# --------------------------------------------------------------------------- the rate limit


async def test_the_rate_limit_refuses_upgrades_past_it_per_key_and_counts_only_accepted() -> None:
    faults = Faults.fast(rate_limit=2, rate_window=30)
    async with TelnyxEmulator(faults=faults) as emu:
        for _ in range(2):
            async with open_socket(emu):
                pass
        for _ in range(2):
            error = await refused(ws_url(emu))
            assert error.response.status_code == 429
            assert 1 <= int(error.response.headers["Retry-After"]) <= 30
            assert (
                "more than 2 connections in 30 s"
                in json.loads(error.response.body)["errors"][0]["detail"]
            )
        async with open_socket(emu, headers={"Authorization": "Bearer another"}):
            pass
        assert [c.status for c in emu.connections] == [101, 101, 429, 429, 101]
        faults.rate_limit = None
        async with open_socket(emu):
            pass


async def attempt(emu: TelnyxEmulator) -> int:
    """The status an upgrade gets: 101 or the refusal's."""
    try:
        async with connect(ws_url(emu), additional_headers=AUTH, open_timeout=10):
            return 101
    except InvalidStatus as e:
        return e.response.status_code


async def test_the_rate_limit_lets_the_key_in_again_once_the_window_has_moved_on() -> None:
    async with TelnyxEmulator(faults=Faults.fast(rate_limit=1, rate_window=0.3)) as emu:
        async with open_socket(emu):
            pass
        error = await refused(ws_url(emu))
        assert error.response.headers["Retry-After"] == "1"
        accepted = emu.connections[0].answered_at
        assert accepted is not None
        # Refused attempts back to back: they must not count, or the window never moves on.
        while await attempt(emu) != 101:
            assert time.perf_counter() - accepted < 5, "refused attempts counted against the key"
        statuses = [c.status for c in emu.connections]
        assert statuses[-1] == 101 and set(statuses[1:-1]) == {429}
        again = emu.connections[-1].answered_at
        assert again is not None and again - accepted >= 0.3


async def test_a_burst_against_the_limit_is_counted_per_second() -> None:
    async with TelnyxEmulator(faults=Faults.fast(rate_limit=3, rate_window=60)) as emu:
        start = time.perf_counter()
        statuses = await asyncio.gather(*(attempt(emu) for _ in range(8)))
        assert sorted(statuses) == [101] * 3 + [429] * 5
        seconds = upgrades_per_second(emu.connections, start)
        assert sum(s.accepted for s in seconds) == 3
        assert sum(s.refused for s in seconds) == 5
        assert all(c.answered_at is not None for c in emu.connections)


# --------------------------------------------------------------------------- after the upgrade


async def test_provider_errors_for_n_syntheses_then_audio_again() -> None:
    faults = Faults.fast(error_after_chunks=0, fault_count=2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        for _ in range(2):
            async with open_socket(emu) as ws:
                await speak(ws)
                assert await receive_all(ws) == [ErrorMessage("Error in audio response")]
                assert ws.close_code == 1011
        async with open_socket(emu) as ws:
            await speak(ws)
            messages = await receive_all(ws)
        assert audio_frames(messages) and messages[-1] == FinalMessage()
        assert faults.fault_count == 0
        assert [len(c.syntheses) for c in emu.connections] == [1, 1, 1]
        sent = [c.syntheses[0].chunks_sent for c in emu.connections]
        assert sent[:2] == [0, 0] and sent[2] > 0


async def test_an_invalid_voice_is_refused_after_the_upgrade_and_others_speak() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(invalid_voices=[VOICE])) as emu:
        async with open_socket(emu, init=False) as ws:
            assert await receive(ws) == ErrorMessage("Invalid voice_id specified")
            with pytest.raises(ConnectionClosed):
                await receive(ws)
            assert ws.close_code == 1011
        async with open_socket(emu, OTHER_VOICE) as ws:
            await speak(ws)
            assert (await receive_all(ws))[-1] == FinalMessage()
        assert [c.status for c in emu.connections] == [101, 101]
        assert emu.connections[0].syntheses == []


async def test_an_unknown_frame_comes_once_on_an_idle_socket_after_its_init() -> None:
    raw = '{"type": "ping", "ts": 1}'
    faults = Faults.fast(idle_frame=raw, idle_frame_after=0.05)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu, init=False) as ws:
            assert await silent_for(ws, 0.3), "nothing before the init frame"
            await send(ws, InitMessage())
            async with asyncio.timeout(5):
                assert await ws.recv() == raw
            assert await silent_for(ws, 0.3), "once only"
            await speak(ws)
            assert (await receive_all(ws))[-1] == FinalMessage()
        record = await closed_record(emu)
        assert [f.raw for f in record.sent if f.message is None] == [raw]


async def test_unknown_frames_at_an_interval_do_not_keep_the_socket_alive() -> None:
    raw = '{"status": "ok"}'
    faults = Faults.fast(
        idle_frame=raw, idle_frame_after=0.02, idle_frame_every=0.02, inactivity_timeout=0.3
    )
    async with TelnyxEmulator(signal="tone", faults=faults) as emu, open_socket(emu) as ws:
        frames: list[str | bytes] = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    frames.append(await ws.recv())
        assert len(frames) >= 2 and set(frames) == {raw}
        assert ws.close_reason == "inactivity timeout"


async def test_no_unknown_frame_while_a_synthesis_streams() -> None:
    raw = '{"status": "ok"}'
    faults = Faults.fast(idle_frame=raw, idle_frame_after=0.01, idle_frame_every=0.01, pace=4.0)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        async with open_socket(emu) as ws:
            await send(ws, TextMessage("A sentence of some length to stream.", flush=True))
            await emu.wait_for(lambda: emu.connections[0].syntheses)
            synthesis = emu.connections[0].syntheses[0]
            await emu.wait_for(lambda: synthesis.finished_at)
        record = await closed_record(emu)
        assert synthesis.chunks_sent > 1
        pings = [f.t for f in record.sent if f.message is None]
        assert pings, "ticks before and after the synthesis still send"
        assert synthesis.first_audio_at is not None
        assert not [t for t in pings if synthesis.first_audio_at < t < synthesis.finished_at]


# --------------------------------------------------------------------------- counting


def _record(
    index: int, status: int, answered: float | None, closed: float | None
) -> ConnectionRecord:
    return ConnectionRecord(
        index=index,
        path="/",
        query="",
        params=None,
        headers={},
        status=status,
        opened_at=answered or 0.0,
        answered_at=answered,
        closed_at=closed,
    )


def test_upgrades_are_counted_in_the_second_they_were_answered() -> None:
    records = [
        _record(1, 101, 10.2, 11.0),
        _record(2, 429, 10.9, 10.9),
        _record(3, 101, 12.5, None),
        _record(4, 0, None, None),
        _record(5, 101, 9.0, 9.5),
    ]
    assert upgrades_per_second(records, start=10.0) == [
        UpgradeSecond(accepted=1, refused=1),
        UpgradeSecond(),
        UpgradeSecond(accepted=1),
    ]


def test_open_sockets_over_a_span_peak_and_time_weighted_mean() -> None:
    records = [
        _record(1, 101, 0.0, 6.0),
        _record(2, 101, 5.0, 10.0),
        _record(3, 429, 5.0, 5.0),
        # Replaced in the instant the next opens: never two at once.
        _record(4, 101, 10.0, 12.0),
        _record(5, 101, 18.0, None),
    ]
    # 0-5: one; 5-6: two; 6-12: one; 12-18: none; 18-20: one (still open).
    assert open_sockets(records, 0.0, 20.0) == OpenSockets(peak=2, mean=(5 + 2 + 6 + 2) / 20)
    assert open_sockets(records, 6.5, 20.0).peak == 1
    assert open_sockets(records, 12.0, 18.0) == OpenSockets(peak=0, mean=0.0)
    with pytest.raises(ValueError, match="length"):
        open_sockets(records, 1.0, 1.0)
