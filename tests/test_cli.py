"""``pipecat-telnyx-tts``: each command through ``main``, against the emulator over loopback.

``main`` is synchronous (it runs its own event loop), so it is called in a thread while the
emulator serves from the test's loop.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import wave
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from loguru import logger

from pipecat_telnyx_tts import emulator
from pipecat_telnyx_tts.cli import format_table, main, normalise_voice, providers_table
from pipecat_telnyx_tts.emulator import Faults, TelnyxEmulator

ROOT = Path(__file__).resolve().parents[1]
BANNER = "ᓚᘏᗢ"
"""What pipecat's import-time banner ("ᓚᘏᗢ Pipecat 1.x ...") looks like."""


def process_env() -> dict[str, str]:
    """A child process as a new user runs it: this checkout, no key, a known terminal width."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "100",
    }
    env.pop("TELNYX_API_KEY", None)
    return env


def run_process(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=process_env(),
        cwd=ROOT,
        timeout=timeout,
    )


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``main`` reconfigures loguru for the process; later tests get the default back."""
    yield
    logger.remove()
    logger.add(sys.stderr)


async def run(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


# --------------------------------------------------------------------------- voices


async def test_voices_prints_a_table_filtered_by_language(capsys):
    async with TelnyxEmulator(api_key="k", faults=Faults.fast()) as emu:
        status = await run(
            "voices", "--api-url", emu.http_url, "--api-key", "k", "--language", "en-GB"
        )
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["VOICE_ID", "NAME", "PROVIDER", "LANGUAGE", "GENDER", "AUDIO"]
    assert len(lines) > 2
    assert all(line.split()[3] == "en-GB" for line in lines[1:])
    assert f"{len(lines) - 1} voices" in err
    audio = {line.split()[0]: line.split(maxsplit=5)[5] for line in lines[1:]}
    # KokoroTTS answers MP3 whatever is asked: the listing says so, where a user picks a voice.
    assert audio["Telnyx.KokoroTTS.bf_emma"] == "mp3 only"
    assert audio["azure.en-GB-RyanNeural"] == "pcm"


async def test_voices_takes_the_websocket_url_the_emulator_prints_first(capsys):
    async with TelnyxEmulator(faults=Faults.fast()) as emu:
        assert emu.url.startswith("ws://") and emu.url.endswith("/v2/text-to-speech/speech")
        status = await run("voices", "--api-url", emu.url, "--provider", "rime")
    out, err = capsys.readouterr()
    assert status == 0, err
    assert "Rime.Mist.cove" in out


async def test_voices_json_for_one_provider_takes_the_key_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("TELNYX_API_KEY", "k")
    async with TelnyxEmulator(api_key="k", faults=Faults.fast()) as emu:
        status = await run("voices", "--api-url", emu.http_url, "--provider", "rime", "--json")
    voices = json.loads(capsys.readouterr().out)
    assert status == 0
    assert voices and {v["provider"] for v in voices} == {"rime"}
    assert {"voice_id", "name", "language", "gender"} <= set(voices[0])


async def test_voices_without_a_key_says_how_to_give_one(capsys, monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    assert await run("voices") == 1
    err = capsys.readouterr().err
    assert "set TELNYX_API_KEY or pass --api-key" in err
    assert "Traceback" not in err


async def test_voices_without_a_key_from_a_server_that_wants_one_says_to_give_one(
    capsys, monkeypatch
):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    async with TelnyxEmulator(api_key="right", faults=Faults.fast()) as emu:
        status = await run("voices", "--api-url", emu.http_url)
    err = capsys.readouterr().err
    assert status == 1
    assert "HTTP 401" in err and "needs an API key" in err and "--api-key" in err


async def test_voices_of_an_unknown_provider_lists_the_known_ones(capsys, monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    assert await run("voices", "--provider", "nosuch") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "unknown provider 'nosuch'" in err
    assert "aws, azure, elevenlabs, fishaudio, inworld, minimax, resemble, rime, telnyx" in err


async def test_voices_with_a_refused_key_says_the_key_is_wrong(capsys):
    async with TelnyxEmulator(api_key="right", faults=Faults.fast()) as emu:
        status = await run("voices", "--api-url", emu.http_url, "--api-key", "wrong")
    err = capsys.readouterr().err
    assert status == 1
    assert "HTTP 401" in err and "API key was refused" in err
    assert "Traceback" not in err


async def test_voices_from_an_unreachable_url_names_the_url(capsys):
    assert await run("voices", "--api-url", "http://127.0.0.1:9", "--api-key", "k") == 1
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9/v2/text-to-speech/voices" in err
    assert "--api-url" in err


def test_the_id_field_some_clients_report_is_read_as_voice_id():
    voice = normalise_voice({"id": "Rime.Mist.cove", "name": "Cove", "provider": "rime"})
    assert voice == {"voice_id": "Rime.Mist.cove", "name": "Cove", "provider": "rime"}
    header, row = format_table([voice]).splitlines()
    assert row.split() == ["Rime.Mist.cove", "Cove", "rime", "pcm"]
    assert header.index("NAME") == row.index("Cove")


# --------------------------------------------------------------------------- say and demo


async def test_say_writes_a_wav_and_reports_progress(tmp_path, capsys):
    out = tmp_path / "hello.wav"
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        status = await run(
            "say", "Hello there. This is a test.", "-o", str(out),
            "--url", emu.url, "--api-key", "k", "--rate", "16000",
        )  # fmt: skip
    stdout, stderr = capsys.readouterr()
    assert status == 0
    with wave.open(str(out), "rb") as wav:
        assert wav.getframerate() == 16000
        assert wav.getnframes() > 16000 * 1.0
    assert f"Wrote {out}" in stdout and "16000 Hz" in stdout
    assert re.search(r"Time to first audio: \d+ ms", stdout)
    assert "sentence 1: Hello there." in stderr and "sentence 2: This is a test." in stderr


async def test_say_reads_text_from_stdin(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("From stdin."))
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        status = await run(
            "say", "-", "-o", str(tmp_path / "s.wav"), "--url", emu.url, "--api-key", "k"
        )
    assert status == 0
    assert "sentence 1: From stdin." in capsys.readouterr().err


async def test_demo_without_a_key_says_it_uses_the_emulator(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    # The embedded emulator keeps live-like time; this test need not wait it out.
    monkeypatch.setattr(emulator, "TelnyxEmulator", partial(TelnyxEmulator, faults=Faults.fast()))
    out = tmp_path / "demo.wav"
    assert await run("demo", "-o", str(out)) == 0
    stdout, stderr = capsys.readouterr()
    assert "TELNYX_API_KEY is not set: using the embedded Telnyx emulator" in stderr
    assert out.stat().st_size > 24000 * 2 * 5
    assert "4 sentences" in stdout


def test_say_in_a_new_process_counts_in_good_english_and_shows_no_pipecat_banner(tmp_path):
    out = tmp_path / "one.wav"
    result = run_process("-m", "pipecat_telnyx_tts.cli", "say", "Hello there.", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert re.search(r": [\d.]+ s of audio at 24000 Hz, 1 sentence\.$", result.stdout, re.M)
    assert "Speaking 12 characters" in result.stderr
    assert BANNER not in result.stderr + result.stdout


async def test_say_with_a_bad_voice_fails_with_what_to_fix(tmp_path, capsys):
    status = await run("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--voice", "astra")
    err = capsys.readouterr().err
    assert status == 1
    assert "error: voice id 'astra' must have three parts" in err
    assert "Traceback" not in err


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def cli_process(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The CLI in a process of its own, run from a thread so an emulator on this loop serves."""
    return await asyncio.to_thread(
        run_process, "-m", "pipecat_telnyx_tts.cli", *argv, timeout=timeout
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The failed command's only error line, which must be its last, with nothing that would
    send the user waiting for a retry or reading a traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], result.stderr
    assert "retrying" not in result.stderr
    assert "Traceback" not in result.stderr and "WARNING" not in result.stderr
    return errors[0]


@pytest.mark.parametrize("command", ["say", "demo"])
async def test_a_refused_connection_says_nothing_listens_there(tmp_path, command):
    url = f"ws://127.0.0.1:{closed_port()}/v2/text-to-speech/speech"
    text = ["Hello there."] if command == "say" else []
    result = await cli_process(command, *text, "-o", str(tmp_path / "x.wav"), "--url", url)
    line = one_error_line(result)
    assert line == (
        f"error: cannot connect to {url} (connection refused): check the URL and that the "
        "server is running"
    )
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize("command", ["say", "demo"])
async def test_a_wrong_path_says_which_path_serves_speech(tmp_path, command):
    text = ["Hello there."] if command == "say" else []
    async with TelnyxEmulator(faults=Faults.fast()) as emu:
        url = emu.url.replace("/v2/text-to-speech/speech", "/v2/tts")
        result = await cli_process(command, *text, "-o", str(tmp_path / "x.wav"), "--url", url)
        answers = {(c.path, c.status) for c in emu.connections}
    line = one_error_line(result)
    assert line.startswith(f"error: no TTS WebSocket at {url} (HTTP 404): check the URL's path")
    assert "/v2/text-to-speech/speech" in line
    assert answers == {("/v2/tts", 404)}


async def test_a_server_refusing_with_503_ends_the_run_without_promising_a_retry(tmp_path):
    async with TelnyxEmulator(faults=Faults.fast(refuse_status=503)) as emu:
        result = await cli_process("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--url", emu.url)
    line = one_error_line(result)
    assert line.startswith("error: Telnyx TTS connection failed with HTTP 503")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/v2/text-to-speech/speech", "ws:///x"])
async def test_a_url_that_is_not_a_websocket_url_is_refused_before_connecting(tmp_path, url):
    result = await cli_process("say", "Hi.", "-o", str(tmp_path / "x.wav"), "--url", url)
    line = one_error_line(result)
    assert line.startswith(f"error: {url!r} is not a WebSocket URL: give ws://HOST")
    # Refused up front: nothing else was printed, not even the progress line.
    assert result.stderr.splitlines() == [line]


@pytest.mark.parametrize("command", ["say", "demo"])
async def test_an_unlisted_voice_names_the_close_one_and_the_flag_that_skips_the_check(
    tmp_path, command
):
    text = ["Hi."] if command == "say" else []
    out = tmp_path / "x.wav"
    async with TelnyxEmulator(faults=Faults.fast()) as emu:
        argv = [command, *text, "-o", str(out), "--url", emu.url]
        result = await cli_process(*argv, "--voice", "Telnyx.NaturalHD.astar")
        spoken = len(emu.connections)
    line = one_error_line(result)
    assert "did you mean 'Telnyx.NaturalHD.astra'?" in line
    assert line.endswith("pass --no-voice-check)")
    assert spoken == 0, "refused before any socket was opened"
    assert not out.exists()


async def test_no_voice_check_speaks_an_unlisted_voice_as_asked(tmp_path):
    out = tmp_path / "x.wav"
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        result = await cli_process(
            "say", "Hi there.", "-o", str(out), "--url", emu.url,
            "--voice", "Telnyx.NaturalHD.astar", "--no-voice-check",
        )  # fmt: skip
        voices = {c.params.voice for c in emu.connections if c.params}
    assert result.returncode == 0, result.stderr
    assert "Telnyx.NaturalHD.astar is not in the voice list: trying it anyway" in result.stderr
    assert "error" not in result.stderr
    assert voices == {"Telnyx.NaturalHD.astar"}
    assert out.stat().st_size > 44


async def test_warnings_of_a_run_that_succeeds_are_shown_after_it(tmp_path):
    out = tmp_path / "x.wav"
    async with TelnyxEmulator(signal="tone", faults=Faults.fast()) as emu:
        result = await cli_process(
            "say", "Hi there.", "-o", str(out), "--url", emu.url,
            "--voice", "Telnyx.KokoroTTS.af_heart", "--speed", "1.2",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith("WARNING: ") and "has no speed setting; speed=1.2 is ignored" in last


async def test_usage_errors_exit_2(capsys):
    assert await run("say") == 2
    assert await run("say", "x", "--rate", "-5") == 2
    assert "positive" in capsys.readouterr().err


# --------------------------------------------------------------------------- providers


def test_the_readme_providers_table_is_the_one_the_code_prints():
    readme = (ROOT / "README.md").read_text()
    assert providers_table(markdown=True) in readme, (
        "README's providers table is stale: paste `pipecat-telnyx-tts providers --markdown`"
    )


async def test_providers_lists_every_family_with_what_it_accepts(capsys):
    assert await run("providers") == 0
    out = capsys.readouterr().out
    assert "Telnyx.KokoroTTS.<voice>" in out and "always MP3 at 22050 Hz" in out
    # What Kokoro accepts is not what it sends back; the table says both.
    assert "linear16, mp3 accepted (answers mp3)" in out
    assert "24000 accepted (answers 22050)" in out
    assert "azure.<voice>" in out and "aws.<model>.<voice>" in out
    assert "not served on the WebSocket (403)" in out


# --------------------------------------------------------------------------- emulator


async def test_the_emulator_command_prints_its_voice_list_which_needs_no_key(capsys, monkeypatch):
    monkeypatch.delenv("TELNYX_API_KEY", raising=False)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipecat_telnyx_tts.cli",
        "emulator", "--port", "0", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=process_env(),
        cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            first = (await process.stdout.readline()).decode()
            second = (await process.stdout.readline()).decode()
        match = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/", first)
        assert match, first
        voices_url = f"http://127.0.0.1:{match.group(1)}/v2/text-to-speech/voices"
        assert second == f"Voice list at {voices_url} (no API key needed)\n"
        # The URL as printed, and no key: what a new user would try.
        assert await run("voices", "--api-url", voices_url, "--provider", "rime") == 0
        assert "Rime.Mist.cove" in capsys.readouterr().out
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(15):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --------------------------------------------------------------------------- help


def option_helps(help_text: str) -> dict[str, str]:
    """Each option line of an argparse help text (``-o OUTPUT, --output OUTPUT``) with its help,
    empty when it has none; help wraps onto lines indented deeper than the options."""
    helps: dict[str, str] = {}
    option: str | None = None
    for line in help_text.splitlines():
        entry = re.match(r"^  (-\S.*?)(?: {2,}(\S.*))?$", line)
        if entry:
            option = entry.group(1)
            helps[option] = entry.group(2) or ""
        elif option is not None and re.match(r"^ {3,}\S", line):
            helps[option] = f"{helps[option]} {line.strip()}".strip()
        else:
            option = None
    return helps


@pytest.mark.parametrize(
    "argv",
    [
        ["pipecat_telnyx_tts.cli"],
        ["pipecat_telnyx_tts.cli", "demo"],
        ["pipecat_telnyx_tts.cli", "say"],
        ["pipecat_telnyx_tts.cli", "voices"],
        ["pipecat_telnyx_tts.cli", "providers"],
        ["pipecat_telnyx_tts.cli", "emulator"],
        ["pipecat_telnyx_tts.emulator"],
    ],
    ids=lambda argv: " ".join(argv).replace("pipecat_telnyx_tts.", ""),
)
def test_help_explains_every_option_once_and_shows_no_pipecat_banner(argv):
    result = run_process("-m", *argv, "--help")
    assert result.returncode == 0, result.stderr
    assert BANNER not in result.stdout + result.stderr
    assert result.stderr == ""
    text = result.stdout
    assert "(default: None)" not in text
    helps = option_helps(text)
    assert "-h, --help" in helps and len(helps) > 1, text
    assert not [option for option, help in helps.items() if not help], text
    doubled = {option: help for option, help in helps.items() if help.count("default:") > 1}
    assert not doubled
