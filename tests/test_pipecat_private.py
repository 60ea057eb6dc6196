"""pipecat's private members this package uses still exist in the installed pipecat.

Every use goes through ``pipecat_telnyx_tts.pipecat_private``; a pipecat release that renames or
removes one fails here, naming it, rather than somewhere deep in a turn.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import pipecat_telnyx_tts
from pipecat_telnyx_tts import TelnyxTTSService
from pipecat_telnyx_tts.pipecat_private import PRIVATE_MEMBERS

MEMBERS = [(holder, name) for holder, names in PRIVATE_MEMBERS.items() for name in names]


@pytest.mark.parametrize(("holder", "name"), MEMBERS, ids=[f"{h}.{n}" for h, n in MEMBERS])
def test_the_member_exists_in_the_installed_pipecat(holder: str, name: str) -> None:
    service = TelnyxTTSService(api_key="test-key")
    owner = getattr(service, holder) if holder else service
    assert hasattr(owner, name), f"pipecat no longer has {holder or 'TTSService'}.{name}"


def test_no_module_but_the_adapter_reaches_into_pipecat_privately() -> None:
    """The service may override pipecat's hooks by name, but reads nothing private itself."""
    package = Path(inspect.getfile(pipecat_telnyx_tts)).parent
    reads = [
        "._is_streaming_tokens",
        "._text_aggregator",
        "._turn_context_id",
        "._audio_context_manager",
        "._aggregated_frame_sequencer",
        "._push_sequencer_frames",
        "._handle_aggregated_text",
        "._aggregated_text_frame",
    ]
    offenders = [
        f"{path.name}: {read}"
        for path in package.rglob("*.py")
        if path.name != "pipecat_private.py"
        for read in reads
        if read in path.read_text()
    ]
    assert offenders == []
