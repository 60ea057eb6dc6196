"""The Telnyx emulator in a child process, steered over its standard input and output.

Why a child process: the client under test must not share an event loop or a CPU budget with the
server it talks to. In one loop, every millisecond the emulator spends encoding and pacing audio
would be counted as the plugin's latency, and its CPU as the plugin's CPU.

Why a control channel: the barge-in runs change faults between turns and need the emulator's
receive timestamps. Those are ``time.perf_counter()`` values; on Linux that clock is
CLOCK_MONOTONIC, shared by every process, so the parent can subtract its own timestamps from them
(the child reports the clock it uses, and the parent refuses any other).

Protocol: the child prints one JSON line ``{"url": ..., "clock": ...}``, then answers each JSON
line it reads with one JSON line. Commands: ``{"op": "faults", "set": {field: value}}``,
``{"op": "records"}``, ``{"op": "lag"}``, ``{"op": "stop"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from loguru import logger

from benchmarks.stats import percentiles
from pipecat_telnyx_tts.emulator import (
    ConnectionRecord,
    Faults,
    TelnyxEmulator,
    add_arguments,
    emulator_from_args,
)
from pipecat_telnyx_tts.protocol import EndMessage, ForceMessage, InitMessage, TextMessage

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_CLOCK = "clock_gettime(CLOCK_MONOTONIC)"
_FAULT_FIELDS = frozenset(f.name for f in fields(Faults))
_MAX_ANSWER_BYTES = 256 << 20
"""Records of a few hundred sockets, each with its frame times, come back as one line."""


# --------------------------------------------------------------------------- the child


def _kind(message: object) -> str:
    match message:
        case InitMessage():
            return "init"
        case ForceMessage():
            return "force"
        case EndMessage():
            return "end"
        case TextMessage():
            return "text"
    return "invalid"


def _summary(record: ConnectionRecord) -> dict[str, Any]:
    """What the benchmarks read from a connection: small, JSON-friendly, no audio bytes."""
    params = record.params
    return {
        "index": record.index,
        "status": record.status,
        "opened_at": record.opened_at,
        "answered_at": record.answered_at,
        "closed_at": record.closed_at,
        "idle_timeout": record.idle_timeout,
        "voice": params.resolved_voice() if params else None,
        "sample_rate": params.sample_rate if params else None,
        "audio_format": params.audio_format if params else None,
        "received": [
            [
                f.t,
                _kind(f.message),
                getattr(f.message, "text", None),
                bool(getattr(f.message, "flush", False)),
            ]
            for f in record.received
        ],
        "syntheses": [
            {
                "text": s.text,
                "started_at": s.started_at,
                "first_audio_at": s.first_audio_at,
                "finished_at": s.finished_at,
                "chunks_sent": s.chunks_sent,
                "audio_seconds": s.audio_seconds,
                "cached": s.cached,
                "forced": s.forced,
                "mp3": s.mp3,
                "sample_rate": s.sample_rate,
                "words": [[w.word, w.start, w.end] for w in s.words],
                "words_source": s.words_source,
            }
            for s in record.syntheses
        ],
        "audio_sent_at": [f.t for f in record.sent if getattr(f.message, "audio", None)],
    }


class _LoopLag:
    """How late the emulator's own event loop wakes up: when it is busy, pacing slips, and a
    benchmark must not blame the client for the server's lateness."""

    TICK_S = 0.01

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.TICK_S)
            self.samples.append(1000 * (time.perf_counter() - before - self.TICK_S))

    def take(self) -> dict[str, float | int | None]:
        samples, self.samples = self.samples, []
        return percentiles(samples)


def _answer(emu: TelnyxEmulator, lag: _LoopLag, command: dict[str, Any]) -> dict[str, Any]:
    match command.get("op"):
        case "faults":
            changes: dict[str, Any] = command.get("set", {})
            unknown = set(changes) - _FAULT_FIELDS
            if unknown:
                return {"error": f"unknown fault fields {sorted(unknown)}"}
            for name, value in changes.items():
                setattr(emu.faults, name, value)
            return {"ok": True}
        case "records":
            return {"connections": [_summary(r) for r in emu.connections]}
        case "lag":
            return {"loop_lag_ms": lag.take()}
    return {"error": f"unknown command {command!r}"}


def _reply(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def _serve(ns: argparse.Namespace) -> None:
    emu = emulator_from_args(ns, keep_connections=ns.keep_connections)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    lag = _LoopLag()
    ticker = asyncio.create_task(lag.run())
    async with emu:
        _reply({"url": emu.url, "clock": time.get_clock_info("perf_counter").implementation})
        while line := await reader.readline():
            command = json.loads(line)
            if command.get("op") == "stop":
                break
            _reply(_answer(emu, lag, command))
    ticker.cancel()
    _reply({"ok": True})


def main(argv: list[str] | None = None) -> int:
    """Serve until told to stop or until the parent closes our standard input."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator_host")
    add_arguments(parser)
    parser.add_argument("--keep-connections", type=int, default=None)
    parser.add_argument("--cpu", type=int, default=None, help="run on this CPU only")
    ns = parser.parse_args(argv)
    if ns.cpu is not None:
        os.sched_setaffinity(0, {ns.cpu})
    logger.remove()
    logger.add(sys.stderr, level=ns.log_level)
    asyncio.run(_serve(ns))
    return 0


# --------------------------------------------------------------------------- the parent's side


@dataclass
class Synthesis:
    """One synthesis as the emulator recorded it (see ``SynthesisRecord``)."""

    text: str
    started_at: float
    first_audio_at: float | None
    finished_at: float | None
    chunks_sent: int
    audio_seconds: float
    cached: bool
    forced: bool
    mp3: bool
    sample_rate: int
    words: list[tuple[str, float, float]]
    """(word, start, end): seconds from the start of this synthesis's PCM, before MP3 encoding;
    which words a caller heard follows from how much audio was played before a barge-in."""
    words_source: str
    """"signal" (exact, tone and marker) or "espeak" (espeak-ng's word events)."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Synthesis:
        words = [(word, start, end) for word, start, end in data["words"]]
        return cls(**(data | {"words": words}))


@dataclass
class Connection:
    """One socket as the emulator saw it; times are perf_counter values, our clock too."""

    index: int
    status: int
    opened_at: float
    answered_at: float | None
    closed_at: float | None
    idle_timeout: float | None
    voice: str | None
    sample_rate: int | None
    audio_format: str | None
    received: list[tuple[float, str, str | None, bool]]
    syntheses: list[Synthesis]
    audio_sent_at: list[float]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Connection:
        return cls(
            index=data["index"],
            status=data["status"],
            opened_at=data["opened_at"],
            answered_at=data["answered_at"],
            closed_at=data["closed_at"],
            idle_timeout=data["idle_timeout"],
            voice=data["voice"],
            sample_rate=data["sample_rate"],
            audio_format=data["audio_format"],
            received=[(t, kind, text, flush) for t, kind, text, flush in data["received"]],
            syntheses=[Synthesis.from_json(s) for s in data["syntheses"]],
            audio_sent_at=data["audio_sent_at"],
        )

    def first(self, kind: str) -> float | None:
        """When the first client frame of ``kind`` (init, text, force, end) arrived."""
        return next((t for t, k, _, _ in self.received if k == kind), None)

    @property
    def text(self) -> str:
        """Everything the client sent to be spoken on this socket."""
        return "".join(text or "" for _, kind, text, _ in self.received if kind == "text")


class EmulatorProcess:
    """``async with EmulatorProcess(signal=..., faults=...) as emu:`` runs the child."""

    def __init__(
        self,
        *,
        signal: str,
        faults: Faults,
        keep_connections: int | None = None,
        seed: int = 0,
        cpu: int | None = None,
    ) -> None:
        """``cpu`` pins the emulator, and the threads it starts, to one CPU."""
        self._args = ["--port", "0", "--signal", signal, "--seed", str(seed)]
        self._args += ["--log-level", "WARNING"]
        if keep_connections is not None:
            self._args += ["--keep-connections", str(keep_connections)]
        if cpu is not None:
            self._args += ["--cpu", str(cpu)]
        self._faults = faults
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.url = ""
        self.pid = 0

    async def __aenter__(self) -> Self:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.emulator_host",
            *self._args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
            limit=_MAX_ANSWER_BYTES,
        )
        self.pid = self._proc.pid
        hello = await self._read()
        if hello.get("clock") != SHARED_CLOCK:
            raise RuntimeError(
                f"the emulator's perf_counter is {hello.get('clock')!r}, not {SHARED_CLOCK}: "
                "its timestamps cannot be compared with ours"
            )
        self.url = hello["url"]
        defaults = Faults()
        await self.set_faults(
            **{
                f.name: getattr(self._faults, f.name)
                for f in fields(Faults)
                if getattr(self._faults, f.name) != getattr(defaults, f.name)
            }
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(self._call({"op": "stop"}), 5)
            await asyncio.wait_for(proc.wait(), 5)
        except (TimeoutError, BrokenPipeError, ConnectionResetError, RuntimeError):
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    async def set_faults(self, **changes: Any) -> None:
        """Change faults; they apply to whatever the emulator does next."""
        answer = await self._call({"op": "faults", "set": changes})
        if "error" in answer:
            raise ValueError(answer["error"])

    async def connections(self) -> list[Connection]:
        """Every connection the emulator kept a record of."""
        answer = await self._call({"op": "records"})
        return [Connection.from_json(c) for c in answer["connections"]]

    async def loop_lag(self) -> dict[str, Any]:
        """Percentiles of the emulator's event-loop lag since the previous call."""
        answer = await self._call({"op": "lag"})
        lag: dict[str, Any] = answer["loop_lag_ms"]
        return lag

    async def _call(self, command: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            proc = self._proc
            if proc is None or proc.stdin is None:
                raise RuntimeError("the emulator process is not running")
            proc.stdin.write((json.dumps(command) + "\n").encode())
            await proc.stdin.drain()
            return await self._read()

    async def _read(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited (see its messages above)")
        answer: dict[str, Any] = json.loads(line)
        return answer


if __name__ == "__main__":
    raise SystemExit(main())
