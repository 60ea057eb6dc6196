"""Shared machinery for the fault matrix and the hostile-input tests: drive the service in a real
pipecat pipeline against the emulator under a time bound, capture everything it logs, and check
the invariants every cell must keep whatever went wrong.

Named ``test_fault_*`` only so that it sits with the tests it serves; it holds no tests.

The invariants, and why each one matters to a voice agent:

- bounded: the pipeline ends within ``BOUND_S``; a hung TTS holds the whole call.
- contexts end: every ``TTSStartedFrame`` is closed by its ``TTSStoppedFrame`` or cut by an
  ``InterruptionFrame``, and no context ends by pipecat's own silence timeout
  (``stop_frame_timeout_s``): a context left open holds every frame queued behind it.
- no stale audio: with the emulator's marker signal every sample names the socket it came from,
  so a context's audio must come from one socket that served no other context, and nothing of a
  context may be played after its stop frame or after an interruption that cut it.
- no silent loss: every text given to the service is synthesized by the emulator, or reached
  the wire of a turn that failed loudly (an ``ErrorFrame``), or is named in a warning; every
  sample a turn's socket sent is played, and a synthesis the server cut short comes with an
  ``ErrorFrame``.
- no leaks: afterwards no audio context, lane, socket or task of the service is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import ConnectionRecord, TelnyxEmulator
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    EndMessage,
    ErrorMessage,
    FinalMessage,
    ForceMessage,
    TextMessage,
)
from tests.service_helpers import run

BOUND_S = 15.0
"""Upper bound on one cell's pipeline. The longest legitimate cell takes about 3 s; the
service's own longest timers are 10 s (``RESPONSE_TIMEOUT_S``, ``CONNECT_TIMEOUT_S``). A cell
that reaches 15 s has outlived every timer that could have rescued it: it is hung, not slow."""

SETTLE_S = 5.0
"""How long sockets may take to close after the pipeline has ended (the client's closing
handshake is bounded at 2 s)."""

Director = Callable[[TelnyxEmulator, TelnyxTTSService], Awaitable[None]]
"""Runs beside the pipeline and changes the emulator or service when the conversation reaches a
given point, judged from what the emulator saw (not from wall-clock sleeps)."""


@dataclass(frozen=True)
class LogLine:
    """One loguru record, reduced to what the checks read."""

    level: str
    no: int
    message: str


@dataclass
class Outcome:
    """What one pipeline run produced."""

    down: list[Frame]
    up: list[Frame]
    logs: list[LogLine]
    elapsed: float

    def errors(self) -> list[ErrorFrame]:
        """ErrorFrames that went upstream."""
        return [f for f in self.up if isinstance(f, ErrorFrame)]

    def warnings(self) -> list[str]:
        """Messages logged at WARNING or above."""
        return [line.message for line in self.logs if line.no >= logger.level("WARNING").no]

    def logged(self, needle: str) -> list[str]:
        """Every captured message, at any level, that contains ``needle``."""
        return [line.message for line in self.logs if needle in line.message]


@contextlib.contextmanager
def captured_logs() -> Iterator[list[LogLine]]:
    """Collect every loguru record, TRACE included: pipecat reports some orphans only there."""
    lines: list[LogLine] = []

    def sink(message: Any) -> None:
        record = message.record
        lines.append(LogLine(record["level"].name, record["level"].no, record["message"]))

    sink_id = logger.add(sink, level="TRACE", format="{message}")
    try:
        yield lines
    finally:
        logger.remove(sink_id)


async def drive(
    tts: TelnyxTTSService,
    emu: TelnyxEmulator,
    frames: Sequence[Frame],
    *,
    director: Director | None = None,
    rate: int = 16000,
    bound: float = BOUND_S,
) -> Outcome:
    """Run ``frames`` through ``tts`` in a real pipeline, bounded, with logs captured.

    A director that has not finished when the pipeline ends means the scenario never reached
    the point it was waiting for: that is reported, since the cell would test nothing.
    """
    with captured_logs() as logs:
        task = asyncio.create_task(director(emu, tts)) if director else None
        start = time.perf_counter()
        try:
            down, up = await asyncio.wait_for(run(tts, frames, rate), bound)
        except TimeoutError:
            raise AssertionError(
                f"the pipeline did not end within {bound} s: something hangs; {emu._summary()}"
            ) from None
        finally:
            elapsed = time.perf_counter() - start
            missed = task is not None and not task.done()
            if task is not None and missed:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        assert not missed, "the scenario's director never reached its cue"
        if task is not None:
            task.result()
    return Outcome(list(down), list(up), list(logs), elapsed)


# ----------------------------------------------------------------------------- emulator views


def wire_text(conn: ConnectionRecord) -> str:
    """Everything a socket carried as text, joined."""
    return "".join(f.message.text for f in conn.received if isinstance(f.message, TextMessage))


def synthesized_text(emu: TelnyxEmulator) -> str:
    """Every synthesis the emulator started, across sockets, joined with newlines."""
    return "\n".join(s.text for c in emu.connections for s in c.syntheses)


def conn_with(emu: TelnyxEmulator, needle: str) -> ConnectionRecord | None:
    """The socket whose client text contains ``needle``."""
    needle = needle.strip()
    return next((c for c in emu.connections if needle in wire_text(c)), None)


def forced(conn: ConnectionRecord) -> bool:
    """Whether the client sent ``force`` on this socket."""
    return any(isinstance(f.message, ForceMessage) for f in conn.received)


async def cue(emu: TelnyxEmulator, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait for the emulator to reach a state; a director's only way of telling time."""
    return await emu.wait_for(predicate, timeout=timeout, interval=0.005)


# ----------------------------------------------------------------------------- the invariants


def markers(frame: TTSAudioRawFrame) -> set[int]:
    """The emulator's marker signal: every sample is the index of the socket it came from."""
    return set(np.frombuffer(frame.audio, dtype=np.int16).tolist())


def check_contexts_end(out: Outcome, tts: TelnyxTTSService) -> None:
    """Every context that started was stopped or interrupted, none by pipecat's timeout."""
    started: dict[str, int] = {}
    stopped: dict[str, int] = {}
    cuts = [i for i, f in enumerate(out.down) if isinstance(f, InterruptionFrame)]
    for i, f in enumerate(out.down):
        if isinstance(f, TTSStartedFrame):
            assert f.context_id not in started, f"context {f.context_id} started twice"
            started[f.context_id or ""] = i
        elif isinstance(f, TTSStoppedFrame):
            assert f.context_id in started, f"TTSStoppedFrame for unknown context {f.context_id}"
            assert f.context_id not in stopped, f"context {f.context_id} stopped twice"
            stopped[f.context_id or ""] = i
    for context_id, at in started.items():
        if context_id in stopped:
            continue
        assert any(c > at for c in cuts), (
            f"context {context_id} started and never stopped or interrupted "
            f"({len(started)} started, {len(stopped)} stopped)"
        )
    timeouts = out.logged("time out on audio context")
    assert not timeouts, f"a context ended by pipecat's stop_frame_timeout_s: {timeouts}"
    orphans = out.logged("unable to append") + out.logged("unable to remove")
    assert not orphans, f"orphaned audio context operations: {orphans}"
    crashes = out.logged("unexpected exception")
    assert not crashes, f"a task of the service crashed: {crashes}"
    assert tts.get_audio_contexts() == [], "an audio context outlived the pipeline"
    assert not tts._sockets.turns, f"turn sockets outlived the pipeline: {list(tts._sockets.turns)}"
    assert not tts._sockets.spares, "spare sockets outlived the pipeline"


def check_no_stale_audio(out: Outcome, allowed: frozenset[int] = frozenset()) -> dict[str, int]:
    """Each context plays one socket's audio, in its own window; returns context -> socket.

    ``allowed`` are sample values injected on purpose (raw frames), accepted in any context.
    """
    window: dict[str, tuple[int, int]] = {}
    for i, f in enumerate(out.down):
        if isinstance(f, TTSStartedFrame):
            window[f.context_id or ""] = (i, len(out.down))
        elif isinstance(f, TTSStoppedFrame) and f.context_id in window:
            window[f.context_id or ""] = (window[f.context_id or ""][0], i)
    cuts = [i for i, f in enumerate(out.down) if isinstance(f, InterruptionFrame)]
    socket_of: dict[str, int] = {}
    context_of: dict[int, str] = {}
    for i, f in enumerate(out.down):
        if not isinstance(f, TTSAudioRawFrame):
            continue
        context_id = f.context_id or ""
        assert context_id in window, f"audio frame {i} belongs to no started context"
        begin, end = window[context_id]
        assert begin < i < end, f"audio of context {context_id} outside its start/stop window"
        assert not any(begin < c < i for c in cuts), (
            f"stale audio: frame {i} of context {context_id} played after the interruption "
            "that cut that context"
        )
        found = markers(f) - allowed
        if not found:
            continue
        assert len(found) == 1, f"one audio frame mixes sockets {sorted(found)}"
        [socket] = found
        assert socket_of.setdefault(context_id, socket) == socket, (
            f"context {context_id} played audio of sockets {socket_of[context_id]} and {socket}"
        )
        assert context_of.setdefault(socket, context_id) == context_id, (
            f"socket #{socket} played in contexts {context_of[socket]} and {context_id}"
        )
    return socket_of


def check_delivery(out: Outcome, emu: TelnyxEmulator, rate: int) -> None:
    """Everything a turn's socket sent was played, and no turn was cut short in silence.

    Sockets a barge-in abandoned (they got ``force``) are exempt: dropping their audio is the
    point. Counting marker samples makes this exact, whatever the framing on either side.
    """
    played: dict[int, int] = {}
    for f in out.down:
        if isinstance(f, TTSAudioRawFrame):
            values, counts = np.unique(np.frombuffer(f.audio, dtype=np.int16), return_counts=True)
            for value, count in zip(values.tolist(), counts.tolist(), strict=True):
                played[value] = played.get(value, 0) + count
    for conn in emu.connections:
        if conn.params is None or forced(conn):
            continue
        sent = sum(
            int(np.count_nonzero(np.frombuffer(f.message.audio, dtype=np.int16) == conn.index))
            for f in conn.sent
            if isinstance(f.message, AudioMessage | FinalMessage) and f.message.audio
        )
        sent_s = sent / (conn.params.sample_rate or rate)
        played_s = played.get(conn.index, 0) / rate
        assert played_s == pytest.approx(sent_s, abs=0.01), (
            f"socket #{conn.index}: the server sent {sent_s:.3f} s of audio, "
            f"{played_s:.3f} s was played"
        )
        synthesized = sum(s.audio_seconds for s in conn.syntheses if not s.forced)
        if sent_s < synthesized - 0.01:
            assert out.errors(), (
                f"socket #{conn.index}: {sent_s:.2f} s of {synthesized:.2f} s synthesized was "
                "sent, and no ErrorFrame says the turn was cut short"
            )


def texts_given(frames: Sequence[Frame]) -> list[str]:
    """The non-blank texts handed to the service, in order."""
    out = []
    for f in frames:
        if isinstance(f, LLMTextFrame | TTSSpeakFrame) and f.text.strip():
            out.append(f.text.strip())
    return out


def check_no_silent_loss(
    out: Outcome,
    emu: TelnyxEmulator,
    frames: Sequence[Frame],
    *,
    dropped_by_barge_in: Sequence[str] = (),
) -> None:
    """Every text is synthesized, or failed loudly, or is named in a warning.

    Text that was still in pipecat's aggregator when a barge-in came is dropped by design and
    is listed in ``dropped_by_barge_in``.
    """
    synthesized = synthesized_text(emu)
    on_wire = {c.index: wire_text(c) for c in emu.connections}
    warnings = "\n".join(out.warnings())
    lost = []
    for text in texts_given(frames):
        if text in synthesized or text in {t.strip() for t in dropped_by_barge_in}:
            continue
        if any(text in w for w in on_wire.values()) and out.errors():
            continue
        if text in warnings:
            continue
        lost.append(text)
    assert not lost, (
        f"text lost without an error or a warning naming it: {lost}; "
        f"errors {[e.error for e in out.errors()]}; warnings {out.warnings()}"
    )


def check_wire(emu: TelnyxEmulator) -> None:
    """The client never sent a frame the server could not parse, nor text after its end.

    ``{"text": ""}`` is end of sequence: it may appear once per socket, as its last text.
    """
    for conn in emu.connections:
        bad = [f.raw for f in conn.received if f.message is None]
        assert not bad, f"socket #{conn.index}: the client sent frames the server refused: {bad}"
        invalid = [
            f.raw
            for f in conn.sent
            if isinstance(f.message, ErrorMessage) and "Invalid message" in f.message.error
        ]
        assert not invalid, f"socket #{conn.index}: the server answered Invalid message"
        messages = [f.message for f in conn.received]
        ends = [i for i, m in enumerate(messages) if isinstance(m, EndMessage)]
        assert len(ends) <= 1, f"socket #{conn.index}: end of sequence sent {len(ends)} times"
        if ends:
            after = [m for m in messages[ends[0] :] if isinstance(m, TextMessage)]
            assert not after, f"socket #{conn.index}: text after end of sequence: {after}"


async def check_no_leaks(emu: TelnyxEmulator) -> None:
    """Every connection is closed and no task of the service is left once the pipeline ended.

    Connections are counted at the TCP level, from accept to close, on the emulator's side:
    the connection records cannot tell a client that left during a slow upgrade (the server
    still answers 101 to nobody and never runs the socket) from one that stayed.
    """
    try:
        await emu.wait_for(lambda: not emu._open, timeout=SETTLE_S)
    except TimeoutError:
        raise AssertionError(
            f"{len(emu._open)} TCP connections left open after the pipeline ended; {emu._summary()}"
        ) from None
    left = [
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done() and "telnyx-" in t.get_name() and "emulator" not in t.get_name()
    ]
    assert not left, f"tasks of the service outlived the pipeline: {left}"


@dataclass
class Expect:
    """What a cell must end with, besides the invariants every cell keeps."""

    errors: Sequence[str] = ()
    """Substrings each expected ErrorFrame matches (in any order); empty means no ErrorFrame."""
    extra_errors_ok: bool = False
    """Whether further ErrorFrames (a silent context's report, a second refusal) are allowed."""
    usable: bool = True
    spoken_last: str | None = None
    """A text whose audio must reach the pipeline from its own socket (the service recovered)."""
    dropped_by_barge_in: Sequence[str] = ()
    permanent_hint: str | None = None
    """For refusals: what the permanent ErrorFrame must tell the user to fix."""
    allowed_markers: frozenset[int] = field(default_factory=frozenset)


async def check_all(
    out: Outcome,
    emu: TelnyxEmulator,
    tts: TelnyxTTSService,
    frames: Sequence[Frame],
    expect: Expect,
    rate: int = 16000,
) -> None:
    """Every invariant, then the cell's own expectations."""
    check_contexts_end(out, tts)
    socket_of = check_no_stale_audio(out, expect.allowed_markers)
    check_no_silent_loss(out, emu, frames, dropped_by_barge_in=expect.dropped_by_barge_in)
    check_delivery(out, emu, rate)
    check_wire(emu)
    await check_no_leaks(emu)
    errors = [e.error for e in out.errors()]
    for needle in expect.errors:
        assert any(needle in e for e in errors), f"expected an error with {needle!r}: {errors}"
    if not expect.extra_errors_ok:
        assert len(errors) == len(expect.errors), f"unexpected errors: {errors}"
    assert tts.is_usable is expect.usable, f"is_usable {tts.is_usable}; errors {errors}"
    if expect.permanent_hint is not None:
        permanent = [e for e in out.errors() if e.exception is not None]
        assert permanent, f"no ErrorFrame carries the exception: {errors}"
        assert any(expect.permanent_hint in e.error for e in permanent), errors
    if expect.spoken_last is not None:
        conn = conn_with(emu, expect.spoken_last)
        assert conn is not None, f"{expect.spoken_last!r} never reached the wire"
        assert conn.index in socket_of.values(), (
            f"{expect.spoken_last!r} was sent on socket #{conn.index} but none of its audio "
            "was played"
        )
