"""Every use of pipecat's private members, in one place.

pipecat 1.14's ``TTSService`` has no public way to do a few things this service needs (know the
turn in progress, finish its text at stop, replace the sentence aggregator, know which context is
playing). Each such use goes through a function here, and ``PRIVATE_MEMBERS`` lists what they
touch, so that ``tests/test_pipecat_private.py`` fails naming the member when a pipecat release
renames or removes one.
"""

from __future__ import annotations

from typing import Any

from pipecat.services.tts_service import TTSService

PRIVATE_MEMBERS: dict[str, tuple[str, ...]] = {
    "": (
        "_is_streaming_tokens",
        "_text_aggregator",
        "_turn_context_id",
        "_audio_context_manager",
        "_handle_aggregated_text",
        "_aggregated_text_frame",
        "_aggregated_frame_sequencer",
        "_push_sequencer_frames",
        "_handle_interruption",
        "_update_settings",
        "_call_event_handler",
        "_refresh_audio_context",
    ),
    "_audio_context_manager": ("playing_context_id",),
    "_text_aggregator": ("language", "flush"),
    "_aggregated_frame_sequencer": ("finalize", "clear"),
}
"""Private (or undocumented) members used: on a ``TTSService`` itself (key ``""``), or on the
object it holds under the key. ``_handle_interruption`` and ``_update_settings`` are overridden;
``_call_event_handler`` fires the connection events."""


def streams_tokens(service: TTSService) -> bool:
    """Whether the service gets LLM tokens as they come (``TextAggregationMode.TOKEN``)."""
    return bool(service._is_streaming_tokens)


def replace_text_aggregator(service: TTSService, make: Any) -> None:
    """Swap the sentence aggregator for ``make(language=...)`` (1.14 takes none in __init__)."""
    service._text_aggregator = make(language=service._text_aggregator.language)


def turn_context_id(service: TTSService) -> str | None:
    """The audio context of the LLM turn in progress, if any."""
    return service._turn_context_id


def keep_turn_context_alive(service: TTSService) -> None:
    """Restart pipecat's idle wait on the audio context of the LLM turn in progress, if it has
    one (pipecat itself does so only when a new segment of text reaches synthesis)."""
    if service._turn_context_id:
        service._refresh_audio_context(service._turn_context_id)


def playing_context_id(service: TTSService) -> str | None:
    """The audio context whose frames the base is releasing downstream now."""
    return service._audio_context_manager.playing_context_id


async def finish_turn_text(service: TTSService, context_id: str) -> None:
    """pipecat 1.14's own end-of-turn steps (``_handle_llm_response_end``), less pushing the
    frame: the aggregator's remaining text goes to synthesis and the turn's frames are released."""
    remaining = await service._text_aggregator.flush()
    if remaining:
        await service._handle_aggregated_text(service._aggregated_text_frame(remaining))
    finalized = await service._aggregated_frame_sequencer.finalize(context_id)
    await service._push_sequencer_frames(finalized, context_id)


def forget_unplayed_text(service: TTSService, context_id: str) -> None:
    """Drop the text pipecat still holds for a context, so that ending the context does not
    record it as spoken (pipecat force-completes a context's remaining words when it ends, as
    its own interruption path clears them)."""
    keep = set(service.get_audio_contexts()) - {context_id}
    service._aggregated_frame_sequencer.clear(keep_contexts=keep)
