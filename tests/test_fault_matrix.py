"""The fault matrix: every emulator fault, at three moments of a conversation, under both
lifecycle readings, through TelnyxTTSService in a real pipecat pipeline over loopback sockets.

Moments:

- ``first_turn``: the fault is there from the start and hits the conversation's first turn.
- ``mid_turn``: the fault strikes a turn part way, after its first sentence went out and
  while the LLM is still to send the rest (for refusals: the server starts refusing then).
- ``barge_in``: a turn is interrupted and the fault is around the interruption: on the
  interrupted socket, on the spare behind it, or on the turn that follows.

Every cell keeps the invariants of ``test_fault_support`` (bounded, contexts end, no stale
audio, no silent loss, no leaks, a valid wire) and its own ending: recoverable faults leave the
service usable and a later turn speaks; 401/403/400 leave it unusable with an ErrorFrame that
carries the exception and says what to fix. Each cell also checks, from the emulator's records,
that its fault really struck where the cell says: a cell whose fault missed would prove nothing.

Timing: directors change faults on cues read from the emulator's records; sleeps between frames
only order things that take milliseconds (unpaced syntheses, refused upgrades), with hundreds of
ms to spare, so a loaded machine slows the matrix down without changing its verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSUpdateSettingsFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame
from test_fault_support import (
    Director,
    Expect,
    check_all,
    conn_with,
    cue,
    drive,
    forced,
    wire_text,
)

from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.emulator import ConnectionRecord, Faults, TelnyxEmulator
from pipecat_telnyx_tts.protocol import ForceMessage, TextMessage
from tests.service_helpers import llm_turn, make_tts

FAULTS = [
    "error",
    "drop",
    "inactivity",
    "slow_upgrade",
    "slow_first_audio",
    "http401",
    "http403",
    "http400",
]
MOMENTS = ["first_turn", "mid_turn", "barge_in"]
LIFECYCLES = ["observed", "documented"]

A = ("Alpha one is here. ", "Alpha two follows.")
LONG = ("This is a long answer that will be interrupted. ", "It goes on and on for a while. ")
KEEP = ("Keep one. ", "Keep two. ", "Keep three. ", "Keep four. ")
B1, B_HELD, B2 = "Bravo first sentence. ", "Then", " more words follow."
Z = "Zulu is the last turn."

INACTIVITY_S = 0.5
"""The emulator's idle timeout in the inactivity cells, while the service, asking for nothing,
believes the documented 20 s until it sees a close."""
SLOW_UPGRADE_S = 1.0
"""Longer than a spare takes to be ready (milliseconds), shorter than CONNECT_TIMEOUT_S."""
SLOW_FIRST_AUDIO_S = 1.5
"""Long enough to be seen; below pipecat's default stop_frame_timeout_s (3 s) so the cells do
not depend on the service raising it (first audio after 3 s is test_service's subject)."""
PAUSE_S = 0.6
"""The LLM's pause inside a mid-turn turn, between its first sentence and the rest."""

Hit = Callable[[TelnyxEmulator], None]


@dataclass
class Cell:
    """One scenario: what the emulator does, what the pipeline is sent, what must come out."""

    frames: list[Frame]
    expect: Expect
    hit: Hit
    """Asserts, from the emulator's records, that the fault struck where the cell says."""
    faults: Faults = field(default_factory=Faults.fast)
    director: Director | None = None
    emulator: dict[str, Any] = field(default_factory=dict)
    voice: str = "Telnyx.NaturalHD.astra"
    forced_voice: str | None = None
    """Set after construction: the constructor refuses Ultra voices, and this gets one past it,
    as a voice the account lost access to would."""
    trust_idle: bool = False
    """The service asks for no idle window, so the emulator's own (shorter) one applies."""


def barge_faults() -> Faults:
    """Paced so that the interrupted turn is still streaming when the barge-in comes, with the
    server still sending 50 frames after the force, as it may have them in flight."""
    return Faults.fast(pace=4.0, chunk_ms=40, frames_after_force=50)


def mid_turn(*during_pause: Frame) -> list[Frame]:
    """A turn whose first sentence goes out, then the LLM pauses, then the rest comes.

    In SENTENCE mode pipecat emits a sentence once the next word starts, so ``B_HELD`` is what
    releases ``B1``, and is itself held until the rest arrives.
    """
    return [
        LLMFullResponseStartFrame(),
        LLMTextFrame(B1),
        LLMTextFrame(B_HELD),
        *during_pause,
        SleepFrame(PAUSE_S),
        LLMTextFrame(B2),
        LLMFullResponseEndFrame(),
    ]


def barge(after: Sequence[Frame], wait: float = 0.3, gap: float = 0.0) -> list[Frame]:
    """A long turn, cut after ``wait`` seconds, then ``after`` once ``gap`` has passed.

    With no gap the next turn starts while the server is still sending the frames it had in
    flight at the force: the moment stale audio could leak into the new turn.
    """
    pause = [SleepFrame(gap)] if gap else []
    return [*llm_turn(*LONG), SleepFrame(wait), InterruptionFrame(), *pause, *after]


def the(emu: TelnyxEmulator, text: str) -> ConnectionRecord:
    """The socket that carried ``text``; failing if none did."""
    conn = conn_with(emu, text)
    assert conn is not None, f"no socket carried {text!r}: {emu._summary()}"
    return conn


def first_text_at(conn: ConnectionRecord) -> float:
    """When the socket's first text frame arrived."""
    return next(f.t for f in conn.received if isinstance(f.message, TextMessage))


def turn_over(emu: TelnyxEmulator, text: str) -> bool:
    """Whether the socket that carried ``text`` has closed."""
    conn = conn_with(emu, text)
    return conn is not None and conn.closed_at is not None


# ----------------------------------------------------------------------------- recoverable


def mid_synthesis(kind: str, moment: str) -> Cell:
    """An error frame (then close 1011) or an abrupt TCP drop after the first audio chunk."""
    expected = "Error in audio response" if kind == "error" else "connection ended before the"
    close_code = 1011 if kind == "error" else 1006

    def arm(faults: Faults) -> None:
        if kind == "error":
            faults.error_after_chunks = 1
        else:
            faults.drop_after_chunks = 1
        faults.fault_count = 1

    def hits(text: str) -> Hit:
        def hit(emu: TelnyxEmulator) -> None:
            assert emu.faults.fault_count == 0, "the fault never fired"
            conn = the(emu, text)
            assert conn.close_code == close_code, f"the fault missed {text!r}: {emu._summary()}"

        return hit

    if moment == "first_turn":
        faults = Faults.fast()
        arm(faults)
        return Cell(
            frames=[*llm_turn(*A), SleepFrame(0.3), *llm_turn(Z)],
            faults=faults,
            expect=Expect(errors=[expected], spoken_last=Z),
            hit=hits(A[0]),
        )
    if moment == "mid_turn":

        async def director(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
            await cue(emu, lambda: turn_over(emu, A[1]))
            arm(emu.faults)

        return Cell(
            frames=[*llm_turn(*A), SleepFrame(0.3), *mid_turn(), SleepFrame(0.3), *llm_turn(Z)],
            director=director,
            expect=Expect(errors=[expected], spoken_last=Z),
            hit=hits(B1),
        )

    async def barge_director(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
        await cue(emu, lambda: (c := conn_with(emu, LONG[0])) and forced(c))
        arm(emu.faults)

    return Cell(
        # The gap lets the director arm the fault for the next turn only.
        frames=barge([*llm_turn(*A), SleepFrame(0.3), *llm_turn(Z)], gap=0.3),
        faults=barge_faults(),
        director=barge_director,
        expect=Expect(errors=[expected], spoken_last=Z, dropped_by_barge_in=LONG),
        hit=hits(A[0]),
    )


def closed_idle(conn: ConnectionRecord) -> bool:
    """Whether the server closed this socket for inactivity."""
    return conn.close_reason == "inactivity timeout"


def inactivity(moment: str) -> Cell:
    """The server closes sockets idle for INACTIVITY_S, while the service keeps its spares for
    60 s, as if Telnyx's idle timeout were shorter than the service believes."""
    # Unpaced: paced replies would outlast the idle timeout (streaming out is not activity)
    # and be cut, which is test_fault_findings' subject.
    faults = Faults.fast(inactivity_timeout=INACTIVITY_S)
    if moment == "first_turn":
        # The spare connected at start dies before the first turn would have taken it.
        def hit_spare(emu: TelnyxEmulator) -> None:
            spare = emu.connections[0]
            assert closed_idle(spare) and not wire_text(spare), emu._summary()

        return Cell(
            frames=[SleepFrame(2 * INACTIVITY_S), *llm_turn(*A), SleepFrame(0.3), *llm_turn(Z)],
            faults=faults,
            trust_idle=True,
            expect=Expect(spoken_last=Z),
            hit=hit_spare,
        )
    if moment == "mid_turn":
        # The LLM pauses mid-turn for longer than the idle timeout: the turn's own socket dies.
        def hit_turn(emu: TelnyxEmulator) -> None:
            assert closed_idle(the(emu, B1)), emu._summary()

        return Cell(
            frames=[
                *llm_turn(*A),
                SleepFrame(0.3),
                *mid_turn(SleepFrame(2 * INACTIVITY_S)),
                SleepFrame(0.3),
                *llm_turn(Z),
            ],
            faults=faults,
            trust_idle=True,
            expect=Expect(errors=["inactivity timeout"], spoken_last=Z),
            hit=hit_turn,
        )

    # The spare waiting behind the interrupted turn dies of idleness before the barge-in. The
    # interrupted turn's own socket stays alive only because the LLM is still sending it text
    # (audio streaming out is not activity to the emulator).
    def hit_behind(emu: TelnyxEmulator) -> None:
        interrupted = the(emu, KEEP[0])
        force_at = next(f.t for f in interrupted.received if f.message == ForceMessage())
        assert any(
            closed_idle(c) and not wire_text(c) and (c.closed_at or 0) < force_at
            for c in emu.connections
        ), emu._summary()

    async def caller_speaks(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
        # The caller starts speaking while the bot does (the spare for the next turn is opened
        # then), and the barge-in is confirmed only later.
        await cue(emu, lambda: conn_with(emu, KEEP[0]) is not None)
        await tts.queue_frame(VADUserStartedSpeakingFrame())

    streaming = [LLMFullResponseStartFrame()]
    for text in KEEP:
        streaming += [LLMTextFrame(text), SleepFrame(0.6 * INACTIVITY_S)]
    return Cell(
        frames=[*streaming, InterruptionFrame(), *llm_turn(*A), SleepFrame(0.3), *llm_turn(Z)],
        faults=faults,
        director=caller_speaks,
        trust_idle=True,
        expect=Expect(spoken_last=Z, dropped_by_barge_in=KEEP),
        hit=hit_behind,
    )


def slow_upgrade(moment: str) -> Cell:
    """The answer to every upgrade takes SLOW_UPGRADE_S: longer than a turn waits to start."""

    def waited(text: str) -> Hit:
        def hit(emu: TelnyxEmulator) -> None:
            conn = the(emu, text)
            # The emulator answers no sooner than the delay, so text can only have come after.
            assert first_text_at(conn) - conn.opened_at >= SLOW_UPGRADE_S, emu._summary()

        return hit

    if moment == "first_turn":
        # The first turn takes the spare while it is still in its handshake.
        return Cell(
            frames=[*llm_turn(*A), SleepFrame(0.1), *llm_turn(Z)],
            faults=Faults.fast(upgrade_delay=SLOW_UPGRADE_S),
            expect=Expect(spoken_last=Z),
            hit=waited(A[0]),
        )
    if moment == "mid_turn":
        # The first spare was quick; the next is slow, and the second turn's text, its pause
        # and its end all arrive while its socket is still in its handshake.
        async def director(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
            await cue(emu, lambda: emu.connections and emu.connections[0].status == 101)
            emu.faults.upgrade_delay = SLOW_UPGRADE_S

        return Cell(
            frames=[
                SleepFrame(0.2),
                *llm_turn(*A),
                SleepFrame(0.1),
                *mid_turn(),
                SleepFrame(0.1),
                *llm_turn(Z),
            ],
            director=director,
            expect=Expect(spoken_last=Z),
            hit=waited(B1),
        )

    # The barge-in comes while the interrupted turn's socket is still in its handshake: its
    # text must never reach the server.
    def hit_handshake(emu: TelnyxEmulator) -> None:
        assert conn_with(emu, LONG[0]) is None, "the abandoned turn's text reached the server"
        waited(A[0])(emu)

    faults = barge_faults()
    faults.upgrade_delay = SLOW_UPGRADE_S
    return Cell(
        frames=barge([*llm_turn(*A), SleepFrame(0.1), *llm_turn(Z)]),
        faults=faults,
        expect=Expect(spoken_last=Z, dropped_by_barge_in=LONG),
        hit=hit_handshake,
    )


def first_audio_waits(emu: TelnyxEmulator, text: str) -> bool:
    """Whether the synthesis of ``text`` waited SLOW_FIRST_AUDIO_S for its first audio."""
    [synthesis] = [s for c in emu.connections for s in c.syntheses if text.strip() in s.text]
    assert synthesis.first_audio_at is not None, f"{text!r} got no audio"
    return synthesis.first_audio_at - synthesis.started_at >= SLOW_FIRST_AUDIO_S


def slow_first_audio(moment: str) -> Cell:
    """Uncached syntheses wait SLOW_FIRST_AUDIO_S for their first audio."""
    if moment == "first_turn":

        def hit_slow(emu: TelnyxEmulator) -> None:
            assert first_audio_waits(emu, A[0])

        return Cell(
            frames=[*llm_turn(A[0]), SleepFrame(0.1), *llm_turn(Z)],
            faults=Faults.fast(first_audio_delay=SLOW_FIRST_AUDIO_S),
            expect=Expect(spoken_last=Z),
            hit=hit_slow,
        )
    if moment == "mid_turn":
        # The turn's first sentence plays at once; the rest is slow: a gap in mid-turn.
        async def director(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
            await cue(
                emu,
                lambda: any(
                    s.first_audio_at for c in emu.connections for s in c.syntheses
                    if B1.strip() in s.text
                ),
            )  # fmt: skip
            emu.faults.first_audio_delay = SLOW_FIRST_AUDIO_S

        def hit_gap(emu: TelnyxEmulator) -> None:
            assert not first_audio_waits(emu, B1)
            assert first_audio_waits(emu, B2)

        return Cell(
            frames=[*mid_turn(), SleepFrame(0.1), *llm_turn(Z)],
            director=director,
            expect=Expect(spoken_last=Z),
            hit=hit_gap,
        )

    # The barge-in comes while the interrupted turn still waits for its first audio.
    def hit_waiting(emu: TelnyxEmulator) -> None:
        interrupted = the(emu, LONG[0])
        force_at = next(f.t for f in interrupted.received if f.message == ForceMessage())
        first = interrupted.syntheses[0]
        assert force_at < first.started_at + SLOW_FIRST_AUDIO_S, emu._summary()

    faults = barge_faults()
    faults.first_audio_delay = SLOW_FIRST_AUDIO_S
    return Cell(
        frames=barge([*llm_turn(Z)], wait=0.5),
        faults=faults,
        expect=Expect(spoken_last=Z, dropped_by_barge_in=LONG),
        hit=hit_waiting,
    )


# ----------------------------------------------------------------------------- refusals

HINTS = {
    "http401": (401, "TELNYX_API_KEY"),
    "http403": (403, "choose another voice"),
    "http400": (400, "check the voice id"),
}
BAD_VOICE = {"http403": "Telnyx.Ultra.x", "http400": "Acme.Model.voice"}


def refusal(kind: str, moment: str) -> Cell:
    """The upgrade is refused: a bad key (401), a voice not on the WebSocket (403), a voice
    the server does not know (400). Only the user can fix these: the service must say what to
    fix, become unusable, stop connecting, and name every text it then does not speak.

    Mid-session the refusal starts the way it would in life: the key is revoked server-side
    (401), the account loses the voice (403, set on the service's settings directly), or the
    user's own settings update names an unknown voice (400).
    """
    status, hint = HINTS[kind]
    expect = Expect(
        errors=[f"HTTP {status}"], extra_errors_ok=True, usable=False, permanent_hint=hint
    )

    def hit(emu: TelnyxEmulator) -> None:
        refused = [c.status for c in emu.connections if c.status not in (0, 101)]
        assert refused and set(refused) == {status}, emu._summary()
        # The socket a turn was taking and the spare behind it may both meet the refusal;
        # after that the service must stop trying.
        assert len(refused) <= 2, f"the service kept connecting after a refusal: {refused}"

    if moment == "first_turn":
        cell = Cell(frames=[*llm_turn(*A), SleepFrame(0.3), *llm_turn(Z)], expect=expect, hit=hit)
        if kind == "http401":
            cell.emulator = {"api_key": "the-right-key"}
        elif kind == "http400":
            cell.voice = BAD_VOICE[kind]
        else:
            cell.forced_voice = BAD_VOICE[kind]
        return cell

    def start_refusing(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
        if kind == "http401":
            emu.api_key = "rotated-key"
        elif kind == "http403":
            tts._settings.voice = BAD_VOICE[kind]

    update: list[Frame] = []
    if kind == "http400":
        delta = TelnyxTTSService.Settings(voice=BAD_VOICE[kind])
        update = [TTSUpdateSettingsFrame(delta=delta)]

    if moment == "mid_turn":
        # The refusal starts once the turn's first sentence is out; that turn keeps its open
        # socket, the refusal meets the next connection the service makes.
        async def director(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
            await cue(emu, lambda: conn_with(emu, B1))
            start_refusing(emu, tts)

        return Cell(
            frames=[
                *llm_turn(*A),
                SleepFrame(0.3),
                *mid_turn(*update),
                SleepFrame(0.3),
                *llm_turn(Z),
                SleepFrame(0.3),
            ],
            director=director,
            expect=expect,
            hit=hit,
        )

    # The refusal starts during the turn that is then interrupted; the turns after the
    # barge-in meet it.
    async def barge_director(emu: TelnyxEmulator, tts: TelnyxTTSService) -> None:
        await cue(emu, lambda: conn_with(emu, LONG[0]))
        start_refusing(emu, tts)

    expect.dropped_by_barge_in = LONG
    return Cell(
        frames=barge([*update, *llm_turn(*A), SleepFrame(0.3), *llm_turn(Z), SleepFrame(0.3)]),
        faults=barge_faults(),
        director=barge_director,
        expect=expect,
        hit=hit,
    )


def build(fault: str, moment: str) -> Cell:
    """The cell for a fault at a moment."""
    if fault in ("error", "drop"):
        return mid_synthesis(fault, moment)
    if fault == "inactivity":
        return inactivity(moment)
    if fault == "slow_upgrade":
        return slow_upgrade(moment)
    if fault == "slow_first_audio":
        return slow_first_audio(moment)
    return refusal(fault, moment)


@pytest.mark.parametrize("lifecycle", LIFECYCLES)
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_fault_matrix(
    fault: str, moment: str, lifecycle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One cell: the fault at the moment, under the lifecycle; every invariant, then its ending."""
    cell = build(fault, moment)
    if cell.trust_idle:
        monkeypatch.setattr(TelnyxTTSService, "INACTIVITY_TIMEOUT_S", None)
    async with TelnyxEmulator(
        lifecycle=lifecycle, signal="marker", faults=cell.faults, **cell.emulator
    ) as emu:
        tts = make_tts(emu, voice=cell.voice)
        if cell.forced_voice is not None:
            tts._settings.voice = cell.forced_voice
        out = await drive(tts, emu, cell.frames, director=cell.director)
        cell.hit(emu)
        await check_all(out, emu, tts, cell.frames, cell.expect)
