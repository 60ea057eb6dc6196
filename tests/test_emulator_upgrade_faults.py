"""Faults at the upgrade: refusals with a status of the test's choosing, and requests that get
no answer at all."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from test_emulator_support import AUTH, open_socket, refused, ws_url
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidMessage

from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator


def detail(body: bytes) -> str:
    (error,) = json.loads(body)["errors"]
    assert error["title"]
    return str(error["detail"])


async def test_refuse_count_refuses_that_many_attempts_then_accepts() -> None:
    faults = Faults.fast(refuse_status=503, refuse_count=2)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        for _ in range(2):
            error = await refused(ws_url(emu))
            assert error.response.status_code == 503
            assert error.response.headers["Content-Type"] == "application/json"
            assert detail(error.response.body)
            assert "Retry-After" not in error.response.headers
        async with open_socket(emu):
            pass
        assert faults.refuse_count == 0
        assert [c.status for c in emu.connections] == [503, 503, 101]


async def test_a_429_says_when_to_retry() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(refuse_status=429)) as emu:
        error = await refused(ws_url(emu))
        assert error.response.status_code == 429
        assert error.response.headers["Retry-After"] == "1"


async def test_without_limits_every_attempt_is_refused_until_the_fault_is_cleared() -> None:
    async with TelnyxEmulator(signal="tone", faults=Faults.fast(refuse_status=500)) as emu:
        for _ in range(3):
            assert (await refused(ws_url(emu))).response.status_code == 500
        emu.faults.refuse_status = None
        async with open_socket(emu):
            pass
        assert [c.status for c in emu.connections] == [500, 500, 500, 101]


async def test_the_refusal_comes_before_the_key_is_checked() -> None:
    faults = Faults.fast(refuse_status=503, refuse_count=1)
    async with TelnyxEmulator(api_key="right", signal="tone", faults=faults) as emu:
        error = await refused(ws_url(emu), {"Authorization": "Bearer wrong"})
        assert error.response.status_code == 503
        error = await refused(ws_url(emu), {"Authorization": "Bearer wrong"})
        assert error.response.status_code == 401


async def test_refuse_for_refuses_from_the_first_refusal_for_that_long() -> None:
    window = 0.3
    faults = Faults.fast(refuse_status=503, refuse_for=window)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        assert (await refused(ws_url(emu))).response.status_code == 503
        first = emu.connections[0].opened_at
        assert (await refused(ws_url(emu))).response.status_code == 503
        await emu.wait_for(lambda: time.perf_counter() - first >= window)
        async with open_socket(emu):
            pass
        assert emu.connections[-1].status == 101
        assert faults.refuse_status is None, "a spent window disarms the fault"
        # Setting it again opens a new window.
        faults.refuse_status = 503
        assert (await refused(ws_url(emu))).response.status_code == 503


async def test_a_hung_upgrade_gets_no_answer_until_the_client_gives_up() -> None:
    faults = Faults.fast(hang_upgrades=1)
    async with TelnyxEmulator(signal="tone", faults=faults) as emu:
        with pytest.raises(TimeoutError):
            async with connect(ws_url(emu), additional_headers=AUTH, open_timeout=0.3):
                pass
        hung = await emu.wait_for(lambda: emu.connections[0].closed_at and emu.connections[0])
        assert hung.status == 0, "no HTTP status was ever sent"
        assert faults.hang_upgrades == 0
        async with open_socket(emu):
            pass
        assert emu.connections[1].status == 101


async def test_stop_ends_hung_upgrades_promptly() -> None:
    emu = TelnyxEmulator(signal="tone", faults=Faults.fast(hang_upgrades=2))
    await emu.start()
    pending = [
        asyncio.create_task(
            connect(ws_url(emu), additional_headers=AUTH, open_timeout=30).__aenter__()
        )
        for _ in range(2)
    ]
    await emu.wait_for(lambda: len(emu.connections) == 2)
    start = time.perf_counter()
    await emu.stop()
    assert time.perf_counter() - start < 3.0
    for task in pending:
        # The TCP connection ends without any HTTP response.
        with pytest.raises(InvalidMessage):
            await task
    assert [c.status for c in emu.connections] == [0, 0]
    assert all(c.closed_at is not None for c in emu.connections)
