"""The command line: a real process, its one announced line, a real client, a clean SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from test_emulator_support import open_socket, receive_all, refused, speak, ws_url

from pipecat_telnyx_tts.emulator import Faults, add_arguments, faults_from_args
from pipecat_telnyx_tts.protocol import FinalMessage

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^Telnyx TTS emulator listening on (ws://127\.0\.0\.1:(\d+)/v2/text-to-speech/speech)$"
)


async def test_cli_serves_until_sigint_and_exits_zero() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipecat_telnyx_tts.emulator",
        "--port", "0", "--api-key", "k", "--signal", "tone", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode().rstrip("\n")
        match = LINE.match(line)
        assert match, line
        assert int(match.group(2)) > 0
        url = match.group(1)
        async with open_socket(url) as ws:
            await speak(ws)
            messages = await receive_all(ws)
        assert messages[-1] == FinalMessage()
        error = await refused(ws_url(url), {"Authorization": "Bearer x"})
        assert error.response.status_code == 401
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            assert await process.wait() == 0
        assert await process.stdout.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_every_fault_is_settable_from_the_command_line() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ns = parser.parse_args(
        [
            "--upgrade-delay", "0.5", "--first-audio-delay", "0.2", "--pace", "2.4",
            "--inactivity-timeout", "3", "--error-after-chunks", "4", "--drop-after-chunks", "5",
            "--fault-count", "2", "--frames-after-force", "1", "--chunk-ms", "100",
            "--lifecycle", "documented", "--signal", "marker", "--seed", "7",
        ]
    )  # fmt: skip
    assert faults_from_args(ns) == Faults(
        upgrade_delay=0.5,
        first_audio_delay=0.2,
        pace=2.4,
        inactivity_timeout=3.0,
        error_after_chunks=4,
        drop_after_chunks=5,
        fault_count=2,
        frames_after_force=1,
        chunk_ms=100,
    )
    assert (ns.lifecycle, ns.signal, ns.seed, ns.port) == ("documented", "marker", 7, 8765)
    assert faults_from_args(parser.parse_args([])) == Faults()


def test_bad_option_values_are_rejected() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--lifecycle", "sometimes"])
