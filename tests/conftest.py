"""Fixtures every test gets."""

from __future__ import annotations

import pytest

from pipecat_telnyx_tts import policy


@pytest.fixture(autouse=True)
def fresh_handshake_limiters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with the process's handshake limiters new: an emulator port that a
    later test reuses must not inherit an earlier test's 429s."""
    monkeypatch.setattr(policy, "_LIMITERS", {})
