"""Command line for the emulator; ``add_arguments`` and ``faults_from_args`` let another CLI
embed the same options."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import signal
import sys
from dataclasses import dataclass, fields, replace

from loguru import logger

from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.server import TelnyxEmulator
from pipecat_telnyx_tts.protocol import VOICES_PATH

KEEP_CONNECTIONS = 64
"""Records a CLI server keeps: enough to inspect, bounded for a server left running for days."""


@dataclass(frozen=True)
class _Option:
    kind: type[int] | type[float] | type[bool] | type[str]
    text: str
    unset: str = ""
    """What the field's None means, said in the help instead of "None"."""


_FAULT_OPTIONS: dict[str, _Option] = {
    "upgrade_delay": _Option(float, "seconds before answering the upgrade"),
    "refuse_status": _Option(
        int, "refuse upgrades with this HTTP status, e.g. 429, 500 or 503", unset="never"
    ),
    "refuse_count": _Option(
        int, "how many upgrade attempts --refuse-status refuses", unset="no limit"
    ),
    "refuse_for": _Option(
        float,
        "seconds to refuse for, from the first refused attempt; with neither limit, "
        "every attempt is refused",
        unset="no limit",
    ),
    "retry_after": _Option(int, "seconds the Retry-After of a --refuse-status 429 asks for"),
    "retry_after_date": _Option(
        bool, "send Retry-After as an HTTP date instead of seconds"
    ),
    "rate_limit": _Option(
        int, "upgrades accepted per API key in any --rate-window; then 429 with Retry-After",
        unset="no limit",
    ),
    "rate_window": _Option(float, "the window of --rate-limit, in seconds"),
    "hang_upgrades": _Option(int, "how many upgrade requests get no HTTP answer at all"),
    "first_audio_delay": _Option(
        float, "seconds before the first audio of each uncached synthesis"
    ),
    "pace": _Option(
        float, "chunk pacing as a multiple of real time: 1.0 real time, 0 unlimited",
        unset="unlimited",
    ),
    "sentence_pause_ms": _Option(
        int, "milliseconds of silence after each sentence end in a synthesis but the last"
    ),
    "inactivity_timeout": _Option(
        float, "idle seconds before the server closes a socket, 0 for never", unset="never"
    ),
    "inactivity_timeout_cap": _Option(
        float, "the longest idle window the inactivity_timeout query parameter gets",
        unset="no cap",
    ),
    "ignore_inactivity_query": _Option(
        bool, "accept the inactivity_timeout query parameter but do not honour it"
    ),
    "chunk_ms": _Option(int, "milliseconds of audio per streamed chunk"),
    "rate_jitter": _Option(
        float, "speak each sentence at the speed times 1 + u, u seeded in [-J, J]; 0 for off"
    ),
    "stall_ms": _Option(
        int, "send nothing for this many milliseconds halfway through each synthesis; 0 for off"
    ),
    "error_after_chunks": _Option(
        int, "send an audio error, then close 1011, after N audio chunks of a synthesis",
        unset="never",
    ),
    "drop_after_chunks": _Option(
        int, "drop the TCP connection after N audio chunks of a synthesis", unset="never"
    ),
    "close_after_chunks": _Option(
        int, "close with --close-code, no error frame, after N audio chunks of a synthesis",
        unset="never",
    ),
    "close_code": _Option(int, "close code of --close-after-chunks"),
    "stall_after_chunks": _Option(
        int, "send nothing more, and do not close, after N audio chunks of a synthesis",
        unset="never",
    ),
    "stop_reading_after_chunks": _Option(
        int, "stop reading the client's frames after N audio chunks of a synthesis",
        unset="never",
    ),
    "fault_count": _Option(
        int, "how many times the five mid-synthesis faults above fire", unset="every time"
    ),
    "frames_after_force": _Option(
        int, "frames of an interrupted synthesis still sent after a force"
    ),
    "keep_open_after_final": _Option(
        bool, "keep the socket open after the final frame that answers end of sequence"
    ),
    "mp3_files": _Option(int, "separately encoded MP3 files per synthesis, for MP3 output"),
    "idle_frame": _Option(
        str, "a raw text frame to send on idle sockets, e.g. '{\"status\": \"ok\"}'",
        unset="none",
    ),
    "idle_frame_after": _Option(float, "seconds from the init frame to the first --idle-frame"),
    "idle_frame_every": _Option(
        float, "seconds between later --idle-frame ticks", unset="once only"
    ),
    "mp3_untagged": _Option(
        bool, "MP3 files without the Info frame that records encoder delay and padding"
    ),
    "inject_after_chunks": _Option(
        int, "audio chunks of the synthesis that go out before --inject-frame's frames"
    ),
}  # fmt: skip
_INJECT_HELP = (
    "a raw text frame to send before the first audio chunk of the next synthesis, once; "
    "repeat for several; for binary frames use Faults.inject_frames from Python (default: none)"
)

_INVALID_VOICE_HELP = (
    "accept the upgrade for this voice, then send 'Invalid voice_id specified' and close; "
    "repeat for several (default: none)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options (server, lifecycle, signal, every ``Faults`` field)."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8765,
        help="port to listen on, 0 for a free one (default: 8765)",
    )
    parser.add_argument(
        "--api-key",
        help="require this key as 'Authorization: Bearer KEY', as Telnyx requires its API key "
        "(default: no key needed, with or without a token)",
    )
    parser.add_argument(
        "--lifecycle",
        choices=[m.value for m in Lifecycle],
        default=Lifecycle.OBSERVED.value,
        help=f"which reading of the protocol to play (default: {Lifecycle.OBSERVED.value})",
    )
    parser.add_argument(
        "--signal",
        choices=[m.value for m in Signal],
        default=Signal.AUTO.value,
        help=f"what the audio sounds like (default: {Signal.AUTO.value})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of chunking and frame order (default: 0)"
    )
    parser.add_argument(
        "--stt-script",
        type=argparse.FileType("r", encoding="utf-8"),
        help="a text file, one line per caller utterance: what the STT endpoint answers for "
        "audio the emulator did not synthesize itself (default: an empty transcript)",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"],
        help="log level (default: INFO)",
    )
    group = parser.add_argument_group(
        "faults", "Latency and failures to inject; the defaults are live-like timing."
    )
    group.add_argument(
        "--fast",
        action="store_true",
        default=argparse.SUPPRESS,
        help="start from no injected latency: no delays, unlimited pace, no sentence pauses",
    )
    realistic, fast = Faults(), Faults.fast()
    for f in fields(Faults):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "inject_frames":
            group.add_argument(
                "--inject-frame", dest="inject_frames", action="append",
                default=argparse.SUPPRESS, metavar="RAW", help=_INJECT_HELP,
            )  # fmt: skip
            continue
        if f.name == "invalid_voices":
            group.add_argument(
                "--invalid-voice", dest="invalid_voices", action="append",
                default=argparse.SUPPRESS, metavar="VOICE", help=_INVALID_VOICE_HELP,
            )  # fmt: skip
            continue
        option = _FAULT_OPTIONS[f.name]
        default = _shown(getattr(realistic, f.name), option)
        fast_value = getattr(fast, f.name)
        if fast_value != getattr(realistic, f.name):
            default += f"; {_shown(fast_value, option)} with --fast"
        help_text = f"{option.text} (default: {default})"
        if option.kind is bool:
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, type=option.kind, default=argparse.SUPPRESS, help=help_text)


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError("a port is a number from 0 to 65535")
    return port


def _shown(value: object, option: _Option) -> str:
    if value is None:
        return option.unset
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def faults_from_args(ns: argparse.Namespace) -> Faults:
    """The ``Faults`` the parsed options ask for: ``--fast`` or live-like timing, then every
    option given."""
    base = Faults.fast() if getattr(ns, "fast", False) else Faults()
    given = {f.name: getattr(ns, f.name) for f in fields(Faults) if hasattr(ns, f.name)}
    return replace(base, **given)


def emulator_from_args(ns: argparse.Namespace, *, keep_connections: int | None) -> TelnyxEmulator:
    """The emulator the parsed options describe (not started)."""
    emulator = TelnyxEmulator(
        host=ns.host,
        port=ns.port,
        api_key=ns.api_key,
        lifecycle=ns.lifecycle,
        faults=faults_from_args(ns),
        signal=ns.signal,
        seed=ns.seed,
        keep_connections=keep_connections,
    )
    script = getattr(ns, "stt_script", None)
    if script is not None:
        with script:
            emulator.stt.script.extend([line.strip() for line in script if line.strip()])
    return emulator


def main(argv: list[str] | None = None, prog: str = "python -m pipecat_telnyx_tts.emulator") -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local emulator of Telnyx's TTS and STT WebSockets and voice list.",
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=ns.log_level)
    status = 0
    # KeyboardInterrupt only where signal handlers cannot be installed (not on POSIX).
    with contextlib.suppress(KeyboardInterrupt):
        status = asyncio.run(_serve(ns))
    return status


async def _serve(ns: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    emulator = emulator_from_args(ns, keep_connections=KEEP_CONNECTIONS)
    try:
        await emulator.start()
    except OSError as e:
        print(f"error: {_cannot_listen(ns.host, ns.port, e)}", file=sys.stderr, flush=True)
        return 1
    try:
        # stdout, one fact a line: scripts read the first line for the URL to connect to.
        print(f"Telnyx TTS emulator listening on {emulator.url}", flush=True)
        key = "send --api-key as a bearer token" if ns.api_key else "no API key needed"
        print(f"Voice list at {emulator.http_url}{VOICES_PATH} ({key})", flush=True)
        print(f"Speech-to-text at {emulator.stt_url} (same key)", flush=True)
        await stop.wait()
    finally:
        await emulator.stop()
    return 0


def _cannot_listen(host: str, port: int, error: OSError) -> str:
    """What to change when the emulator cannot listen, in one line."""
    if error.errno == errno.EADDRINUSE:
        return f"port {port} is in use: pick another with --port, or --port 0 for a free one"
    reason = error.strerror or str(error)
    return f"cannot listen on {host}:{port} ({reason}): check --host and --port"
