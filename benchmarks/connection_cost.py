"""What a call costs in connections: handshakes, sockets held open, and whether a turn waits.

Call shapes (an idle call; user 5 s / bot 8 s; user 3 s / bot 6 s) run as real pipecat pipelines
(``benchmarks.cost_call``, one child process per call) against the emulator in its own process,
with live-like timing: upgrades answered after 1.2 s (a live Telnyx connect, reference §10),
first audio after 250 ms, audio at 2.4x real time, the server's 20 s idle close, the
``inactivity_timeout`` ask honoured up to 120 s. Each call gets its own emulator, so that every
upgrade it records belongs to that call.

Variants are services side by side in one run: a name, a source (a git revision, whose
``pipecat_telnyx_tts`` is unpacked into a temporary directory with ``git archive``, or ``.`` for
this checkout as it is on disk) and constructor arguments. Every call of every variant runs at
the same time, so that all see the same machine.

Measured per call, from the emulator's records: upgrade attempts (handshakes) per minute and per
turn; sockets open (peak, and the time-weighted mean over the call); per turn, TTFA (first
``LLMTextFrame`` into the TTS to first audio out of it, as ``benchmarks.latency`` measures it)
and whether the turn waited for a handshake: the socket that carried its first audio (told by
the marker signal) was answered by the server only after the turn's first text had reached the
TTS.

    python -m benchmarks.connection_cost                      # before (65109ac) and after (.)
    python -m benchmarks.connection_cost --quick               # 2 turns a call, about a minute
    python -m benchmarks.connection_cost --variant warm . '{"some_option": true}'
    python -m benchmarks.connection_cost --fault ignore_inactivity_query=true

Exits 1 when a target is missed by the last variant.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from benchmarks.emulator_host import REPO_ROOT, Connection, EmulatorProcess
from benchmarks.stats import percentiles
from pipecat_telnyx_tts.emulator import Faults, open_sockets

SERVICE = "pipecat_telnyx_tts:TelnyxTTSService"
BEFORE = "65109ac"
"""The last commit before issue 14's connection policy: the always-warm spare."""

IDLE_HANDSHAKES_PER_MINUTE = 1.0
HANDSHAKES_PER_TURN = 1.2
TURN_WAIT_FIRST_TOKEN_S = 0.3
"""The no-wait target holds for LLM first-token delays from this long up."""


@dataclass(frozen=True)
class Shape:
    """One kind of call."""

    name: str
    turns: int = 0
    idle: float = 0.0
    """Length of a call with no turns."""
    user: float = 0.0
    bot: float = 0.0
    typical: bool = False
    """The handshakes-per-turn target is judged on this shape."""


@dataclass(frozen=True)
class Variant:
    """A service to measure: its name, its source, its constructor's extra arguments."""

    name: str
    source: str
    """A git revision, or "." for this checkout as it is on disk."""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CostConfig:
    """What the cost run does."""

    shapes: tuple[Shape, ...] = (
        Shape("idle 60 s", idle=60.0),
        Shape("user 5 s / bot 8 s", turns=5, user=5.0, bot=8.0, typical=True),
        Shape("user 3 s / bot 6 s", turns=6, user=3.0, bot=6.0),
    )
    variants: tuple[Variant, ...] = (Variant("before", BEFORE), Variant("after", "."))
    service: str = SERVICE
    first_token: tuple[float, ...] = (0.3, 0.7)
    """LLM first-token delays, taken in turn."""
    token_interval: float = 0.02
    first_turn_after: float = 1.0
    gap: float = 0.5
    """From the bot's audio played out to the user speaking again."""
    faults: Faults = field(default_factory=lambda: Faults(upgrade_delay=1.2))


QUICK = CostConfig(
    shapes=(
        # Not shorter: the first socket of a call is one handshake, a minute's budget.
        Shape("idle 60 s", idle=60.0),
        Shape("user 5 s / bot 8 s", turns=2, user=5.0, bot=8.0, typical=True),
        Shape("user 3 s / bot 6 s", turns=2, user=3.0, bot=6.0),
    )
)
TINY = CostConfig(
    shapes=(
        Shape("idle", idle=4.0),
        Shape("talk", turns=2, user=0.3, bot=0.6, typical=True),
    ),
    variants=(Variant("head", "HEAD"), Variant("after", ".")),
    first_turn_after=0.2,
    gap=0.1,
    faults=Faults.fast(upgrade_delay=2.0, first_audio_delay=0.05, pace=8.0),
)
"""For the structural test: every code path in seconds; its numbers mean nothing, but the first
turn's text (0.8 s into the call) must wait for the first socket's 2 s handshake, whatever the
service's policy."""


def unpack(revision: str, into: Path) -> Path:
    """``pipecat_telnyx_tts`` as it was at ``revision``, unpacked under ``into``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", revision, "pipecat_telnyx_tts"],
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


async def _run_call(
    config: CostConfig, shape: Shape, variant: Variant, source: Path, seed: int
) -> dict[str, Any]:
    async with EmulatorProcess(signal="marker", faults=config.faults) as emu:
        args = [
            "--url", emu.url, "--source", str(source), "--service", config.service,
            "--kwargs", json.dumps(variant.kwargs), "--idle", str(shape.idle),
            "--turns", str(shape.turns), "--user", str(shape.user), "--bot", str(shape.bot),
            "--first-token", *map(str, config.first_token),
            "--token-interval", str(config.token_interval),
            "--first-turn-after", str(config.first_turn_after), "--gap", str(config.gap),
            "--seed", str(seed),
        ]  # fmt: skip
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.cost_call", *args,
            cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"{variant.name} / {shape.name}: the call exited {proc.returncode}")
        call: dict[str, Any] = json.loads(out)
        connections = await emu.connections()
    if not Path(call["service_file"]).is_relative_to(source):
        raise RuntimeError(
            f"{variant.name}: the service came from {call['service_file']}, not from {source}"
        )
    return _measure(shape, variant, call, connections)


def _measure(
    shape: Shape, variant: Variant, call: dict[str, Any], connections: list[Connection]
) -> dict[str, Any]:
    start, end = call["start"], call["end"]
    minutes = (end - start) / 60
    by_index = {c.index: c for c in connections}
    turns = call["turns"]
    for turn in turns:
        socket = by_index.get(turn["socket"]) if turn["socket"] is not None else None
        answered = socket.answered_at if socket is not None else None
        if turn["text_in"] is None or turn["audio_out"] is None or answered is None:
            turn["ttfa_ms"] = turn["handshake_wait_ms"] = None
            turn["waited"] = None
            continue
        turn["ttfa_ms"] = 1000 * (turn["audio_out"] - turn["text_in"])
        turn["handshake_wait_ms"] = max(0.0, 1000 * (answered - turn["text_in"]))
        turn["waited"] = answered > turn["text_in"]
    sockets = open_sockets(connections, start, end)
    later = [t for t in turns if t["turn"] > 1 and t["first_token_s"] >= TURN_WAIT_FIRST_TOKEN_S]
    return {
        "shape": shape.name,
        "variant": variant.name,
        "typical": shape.typical,
        "idle": not shape.turns,
        "duration_s": round(end - start, 2),
        "turns": len(turns),
        "turns_spoken": sum(t["spoke"] for t in turns),
        "handshakes": len(connections),
        "refused": sum(c.status not in (0, 101) for c in connections),
        "handshakes_per_minute": round(len(connections) / minutes, 2),
        "handshakes_per_turn": round(len(connections) / len(turns), 2) if turns else None,
        "sockets_peak": sockets.peak,
        "sockets_mean": round(sockets.mean, 2),
        "ttfa_ms": percentiles(t["ttfa_ms"] for t in turns if t["ttfa_ms"] is not None),
        "later_turns_that_waited": sum(bool(t["waited"]) for t in later),
        "later_turns_unmeasured": sum(t["waited"] is None for t in later),
        "errors": call["errors"],
        "turn_detail": turns,
    }


async def run_cost(config: CostConfig, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every shape of every variant at once; returns the JSON-ready results."""
    with tempfile.TemporaryDirectory(prefix="cost-") as tmp:
        sources: dict[str, Path] = {}
        for i, variant in enumerate(config.variants):
            if variant.source == ".":
                sources[variant.name] = REPO_ROOT
            else:
                sources[variant.name] = unpack(variant.source, Path(tmp) / str(i))
        progress(
            f"  cost: {len(config.shapes)} shapes x {len(config.variants)} variants, "
            f"about {max(_length(s, config) for s in config.shapes):.0f} s"
        )
        calls = await asyncio.gather(
            *(
                _run_call(config, shape, variant, sources[variant.name], seed)
                for seed, (variant, shape) in enumerate(
                    ((v, s) for v in config.variants for s in config.shapes), start=1
                )
            )
        )
    return {
        "config": {
            **asdict(config),
            "faults": {
                f.name: getattr(config.faults, f.name)
                for f in fields(Faults)
                if getattr(config.faults, f.name) != getattr(Faults(), f.name)
            },
        },
        "calls": list(calls),
    }


def _length(shape: Shape, config: CostConfig) -> float:
    turn = shape.user + max(config.first_token) + shape.bot + config.gap + 1.0
    return shape.idle + (config.first_turn_after + shape.turns * turn if shape.turns else 0)


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Goal:
    """One target of issue 14 for one variant."""

    name: str
    measured: float | None
    goal: str
    met: bool


def goals(results: dict[str, Any], variant: str) -> list[Goal]:
    """The targets, judged on one variant's calls."""
    calls = [c for c in results["calls"] if c["variant"] == variant]
    out: list[Goal] = []
    for call in calls:
        clean = not call["errors"] and call["turns_spoken"] == call["turns"]
        if call["idle"]:
            value = call["handshakes_per_minute"]
            out.append(
                Goal(
                    f"{variant}: {call['shape']}, handshakes a minute",
                    value,
                    f"<= {IDLE_HANDSHAKES_PER_MINUTE:g}",
                    clean and value <= IDLE_HANDSHAKES_PER_MINUTE,
                )
            )
            continue
        if call["typical"]:
            value = call["handshakes_per_turn"]
            out.append(
                Goal(
                    f"{variant}: {call['shape']}, handshakes a turn",
                    value,
                    f"<= {HANDSHAKES_PER_TURN:g}",
                    clean and value is not None and value <= HANDSHAKES_PER_TURN,
                )
            )
        waited = call["later_turns_that_waited"]
        out.append(
            Goal(
                f"{variant}: {call['shape']}, turns after the first that waited for a handshake "
                f"(first token >= {TURN_WAIT_FIRST_TOKEN_S * 1000:.0f} ms)",
                waited,
                "0",
                clean and waited == 0 and call["later_turns_unmeasured"] == 0,
            )
        )
    return out


def _num(value: float | int | None) -> str:
    return "n/a" if value is None else f"{round(value, 2):g}"


def table(results: dict[str, Any]) -> str:
    """A Markdown table of every call, then each variant's targets as PASS/MISS lines."""
    lines = [
        "| shape | variant | min | turns spoken | handshakes | /min | /turn | sockets peak "
        "| sockets mean | TTFA p50 / max ms | later turns waited | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in sorted(results["calls"], key=lambda c: (c["shape"], c["variant"])):
        ttfa = c["ttfa_ms"]
        lines.append(
            f"| {c['shape']} | {c['variant']} | {c['duration_s'] / 60:.2f} "
            f"| {c['turns_spoken']}/{c['turns']} | {c['handshakes']}"
            f"{f' ({refused} refused)' if (refused := c['refused']) else ''} "
            f"| {_num(c['handshakes_per_minute'])} | {_num(c['handshakes_per_turn'])} "
            f"| {c['sockets_peak']} | {_num(c['sockets_mean'])} "
            f"| {_num(ttfa['p50'])} / {_num(ttfa['max'])} | {c['later_turns_that_waited']} "
            f"| {len(c['errors'])} |"
        )
    lines.append("")
    for variant in dict.fromkeys(c["variant"] for c in results["calls"]):
        for g in goals(results, variant):
            lines.append(
                f"{'PASS' if g.met else 'MISS'} {g.name}: {_num(g.measured)} (goal {g.goal})"
            )
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def _fault(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or name not in {f.name for f in fields(Faults)}:
        raise argparse.ArgumentTypeError(f"expected FIELD=JSON with a Faults field, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not JSON") from None


def _variant(words: Sequence[str]) -> Variant:
    if len(words) not in (2, 3):
        raise SystemExit("--variant takes NAME SOURCE [KWARGS_JSON]")
    kwargs = json.loads(words[2]) if len(words) == 3 else {}
    if not isinstance(kwargs, dict):
        raise SystemExit(f"--variant {words[0]}: the arguments must be a JSON object")
    return Variant(words[0], words[1], kwargs)


def config_from_args(argv: list[str] | None = None) -> tuple[CostConfig, str]:
    """The run the command line asks for, and the command that reproduces it."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.connection_cost")
    parser.add_argument("--quick", action="store_true", help="2 turns a call, about a minute")
    parser.add_argument(
        "--variant",
        action="append",
        nargs="+",
        metavar="NAME SOURCE [KWARGS_JSON]",
        help=f"a service to measure: SOURCE a git revision or '.' for this checkout; "
        f"repeatable (default: before {BEFORE}, after .)",
    )
    parser.add_argument("--service", default=SERVICE, help=f"MODULE:CLASS (default {SERVICE})")
    parser.add_argument(
        "--fault", action="append", type=_fault, default=[], metavar="FIELD=JSON",
        help="change one emulator Faults field, e.g. ignore_inactivity_query=true",
    )  # fmt: skip
    ns = parser.parse_args(argv)
    config = QUICK if ns.quick else CostConfig()
    if ns.variant:
        config = replace(config, variants=tuple(_variant(v) for v in ns.variant))
    config = replace(config, service=ns.service, faults=replace(config.faults, **dict(ns.fault)))
    command = "python -m benchmarks.connection_cost " + " ".join(
        json.dumps(a) if " " in a else a for a in (argv if argv is not None else sys.argv[1:])
    )
    return config, command.strip()


def main(argv: list[str] | None = None) -> int:
    """Run, print the table and the targets; 1 when the last variant misses one."""
    config, command = config_from_args(argv)
    results = asyncio.run(run_cost(config))
    print()
    print(f"`{command}`")
    print()
    print(table(results))
    last = config.variants[-1].name
    return 0 if all(g.met for g in goals(results, last)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
