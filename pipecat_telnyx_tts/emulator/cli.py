"""Command line for the emulator; ``add_arguments`` and ``faults_from_args`` let another CLI
embed the same options."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import fields

from loguru import logger

from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.server import TelnyxEmulator

KEEP_CONNECTIONS = 64
"""Records a CLI server keeps: enough to inspect, bounded for a server left running for days."""

_FAULT_OPTIONS: dict[str, tuple[type[int] | type[float], str]] = {
    "upgrade_delay": (float, "seconds before answering the upgrade"),
    "first_audio_delay": (float, "seconds before the first audio of each uncached synthesis"),
    "pace": (float, "chunk pacing as a multiple of real time (1.0 real time; 0 unlimited)"),
    "inactivity_timeout": (float, "idle seconds before the server closes a socket (0: never)"),
    "error_after_chunks": (int, "send an audio error after N audio chunks of a synthesis"),
    "drop_after_chunks": (int, "drop the TCP connection after N audio chunks of a synthesis"),
    "fault_count": (int, "how many times the two faults above fire (default: every time)"),
    "frames_after_force": (int, "frames of an interrupted synthesis still sent after a force"),
    "chunk_ms": (int, "milliseconds of audio per streamed chunk"),
}
_INJECT_HELP = (
    "a raw text frame to send before the first audio chunk of the next synthesis, once; "
    "repeat for several (binary frames: use Faults.inject_frames from Python)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options (server, lifecycle, signal, every ``Faults`` field)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--api-key", help="accept only this bearer token (default: any)")
    parser.add_argument(
        "--lifecycle", choices=[m.value for m in Lifecycle], default=Lifecycle.OBSERVED.value
    )
    parser.add_argument("--signal", choices=[m.value for m in Signal], default=Signal.AUTO.value)
    parser.add_argument("--seed", type=int, default=0, help="seed of chunking and frame order")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"],
    )
    defaults = Faults()
    group = parser.add_argument_group("faults")
    for f in fields(Faults):
        if f.name == "inject_frames":
            group.add_argument(
                "--inject-frame", dest="inject_frames", action="append", default=[],
                metavar="RAW", help=_INJECT_HELP,
            )  # fmt: skip
            continue
        value = getattr(defaults, f.name)
        kind, text = _FAULT_OPTIONS[f.name]
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=value,
            help=f"{text} (default: {value})",
        )


def faults_from_args(ns: argparse.Namespace) -> Faults:
    """The ``Faults`` the parsed options ask for."""
    return Faults(**{f.name: getattr(ns, f.name) for f in fields(Faults)})


def emulator_from_args(ns: argparse.Namespace, *, keep_connections: int | None) -> TelnyxEmulator:
    """The emulator the parsed options describe (not started)."""
    return TelnyxEmulator(
        host=ns.host,
        port=ns.port,
        api_key=ns.api_key,
        lifecycle=ns.lifecycle,
        faults=faults_from_args(ns),
        signal=ns.signal,
        seed=ns.seed,
        keep_connections=keep_connections,
    )


def main(argv: list[str] | None = None, prog: str = "python -m pipecat_telnyx_tts.emulator") -> int:
    """Run the emulator until SIGINT or SIGTERM; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local emulator of Telnyx's TTS WebSocket.",
    )
    add_arguments(parser)
    ns = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=ns.log_level)
    # KeyboardInterrupt only where signal handlers cannot be installed (not on POSIX).
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(ns))
    return 0


async def _serve(ns: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    emulator = emulator_from_args(ns, keep_connections=KEEP_CONNECTIONS)
    async with emulator:
        print(f"Telnyx TTS emulator listening on {emulator.url}", flush=True)
        await stop.wait()
