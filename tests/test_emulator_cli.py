"""The command line: a real process, its announced URLs, a real client, a clean SIGINT, and one
line of error when it cannot listen."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest
from test_emulator_support import open_socket, receive_all, refused, speak, ws_url

from pipecat_telnyx_tts.emulator import Faults, add_arguments, faults_from_args
from pipecat_telnyx_tts.protocol import FinalMessage

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(
    r"^Telnyx TTS emulator listening on (ws://127\.0\.0\.1:(\d+)/v2/text-to-speech/speech)$"
)


def child_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


async def test_cli_serves_until_sigint_and_exits_zero() -> None:
    env = child_env()
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
        async with asyncio.timeout(5):
            second = (await process.stdout.readline()).decode()
        voices_url = f"http://127.0.0.1:{match.group(2)}/v2/text-to-speech/voices"
        assert second == f"Voice list at {voices_url} (send --api-key as a bearer token)\n"
        async with asyncio.timeout(5):
            third = (await process.stdout.readline()).decode()
        stt_url = f"ws://127.0.0.1:{match.group(2)}/v2/speech-to-text/transcription"
        assert third == f"Speech-to-text at {stt_url} (same key)\n"
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
            "--upgrade-delay", "0.5", "--refuse-status", "429", "--refuse-count", "3",
            "--refuse-for", "1.5", "--hang-upgrades", "2", "--first-audio-delay", "0.2",
            "--pace", "1.5", "--sentence-pause-ms", "120", "--inactivity-timeout", "3",
            "--chunk-ms", "100", "--error-after-chunks", "4", "--drop-after-chunks", "5",
            "--close-after-chunks", "6", "--close-code", "1008", "--stall-after-chunks", "7",
            "--fault-count", "2", "--frames-after-force", "1", "--keep-open-after-final",
            "--mp3-files", "3", "--mp3-untagged", "--inject-frame", "{bad",
            "--retry-after", "4", "--retry-after-date", "--rate-limit", "5",
            "--rate-window", "2", "--inactivity-timeout-cap", "30",
            "--ignore-inactivity-query", "--invalid-voice", "Telnyx.NaturalHD.orion",
            "--idle-frame", '{"status": "ok"}', "--idle-frame-after", "0.1",
            "--idle-frame-every", "2", "--rate-jitter", "0.25", "--stall-ms", "300",
            "--stop-reading-after-chunks", "8",
            "--inject-after-chunks", "2",
            "--lifecycle", "documented", "--signal", "marker", "--seed", "7",
        ]
    )  # fmt: skip
    expected = Faults(
        upgrade_delay=0.5,
        refuse_status=429,
        refuse_count=3,
        refuse_for=1.5,
        hang_upgrades=2,
        first_audio_delay=0.2,
        pace=1.5,
        sentence_pause_ms=120,
        inactivity_timeout=3.0,
        chunk_ms=100,
        error_after_chunks=4,
        drop_after_chunks=5,
        close_after_chunks=6,
        close_code=1008,
        stall_after_chunks=7,
        fault_count=2,
        frames_after_force=1,
        keep_open_after_final=True,
        mp3_files=3,
        mp3_untagged=True,
        inject_frames=["{bad"],
        retry_after=4,
        retry_after_date=True,
        rate_limit=5,
        rate_window=2.0,
        inactivity_timeout_cap=30.0,
        ignore_inactivity_query=True,
        invalid_voices=["Telnyx.NaturalHD.orion"],
        idle_frame='{"status": "ok"}',
        idle_frame_after=0.1,
        idle_frame_every=2.0,
        rate_jitter=0.25,
        stall_ms=300,
        stop_reading_after_chunks=8,
        inject_after_chunks=2,
    )
    assert faults_from_args(ns) == expected
    untouched = [
        f.name for f in fields(Faults) if getattr(expected, f.name) == getattr(Faults(), f.name)
    ]
    assert untouched == [], "the command line above must set every fault"
    assert (ns.lifecycle, ns.signal, ns.seed, ns.port) == ("documented", "marker", 7, 8765)
    assert faults_from_args(parser.parse_args([])) == Faults()


def test_fast_starts_from_no_latency_and_options_still_apply() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert faults_from_args(parser.parse_args(["--fast"])) == Faults.fast()
    ns = parser.parse_args(["--fast", "--pace", "1.0", "--chunk-ms", "100"])
    assert faults_from_args(ns) == Faults.fast(pace=1.0, chunk_ms=100)


def test_help_states_each_default_in_words() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "None" not in text
    assert "(default: 2.4; unlimited with --fast)" in text
    assert "(default: 0.25; 0 with --fast)" in text
    assert "(default: 200; 0 with --fast)" in text
    assert "(default: 20)" in text
    assert "(default: never)" in text and "(default: every time)" in text
    assert "(default: 1011)" in text and "(default: off)" in text


def test_bad_option_values_are_rejected() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--lifecycle", "sometimes"])


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    "command",
    [["pipecat_telnyx_tts.emulator"], ["pipecat_telnyx_tts.cli", "emulator"]],
    ids=["python-m", "pipecat-telnyx-tts"],
)
def test_a_busy_port_is_one_line_saying_what_to_do_and_exit_1(
    busy_port: int, command: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *command, "--port", str(busy_port)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: port {busy_port} is in use: pick another with --port, or --port 0 for a free one\n"
    )


def test_a_port_out_of_range_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--port", "70000"])
    assert "from 0 to 65535" in capsys.readouterr().err


def test_mp3_encoding_comes_with_a_plain_install() -> None:
    """The emulator answers in MP3 by default; without lameenc every default request failed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(re.match(r"lameenc\b", dep) for dep in project["dependencies"])
    extras = project["optional-dependencies"]
    assert "emulator" in extras, "pip install '.[emulator]' must keep working"
    assert "espeakng-loader>=0.2.4" in extras["speech"]
