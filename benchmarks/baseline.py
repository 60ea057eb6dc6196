"""The comparison point: a Telnyx TTS service that connects once per segment.

This is the design the public Telnyx integrations use (a chunked, HTTP-like stream): for every
segment the sentence aggregator emits, open a socket, send the init frame, the whole text and end
of sequence, then read audio until the server closes. Nothing is prepared ahead, so every segment
pays the WebSocket handshake before its synthesis can even start. It is written from the protocol
alone (plain ``websockets`` and ``json``), sharing no code with the plugin, so that the ratio
measures the design and not a shared helper.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode

from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException


class ConnectPerSegmentTTSService(TTSService):
    """Telnyx TTS with a new socket for each segment; raw PCM at the pipeline's rate."""

    def __init__(self, *, url: str, api_key: str, voice: str, **kwargs: Any) -> None:
        """``voice`` must honour ``linear16`` at the pipeline's rate (a Telnyx NaturalHD voice)."""
        kwargs.setdefault("push_start_frame", True)
        kwargs.setdefault("push_stop_frames", True)
        settings = TTSSettings(model=None, voice=voice, language=None)
        super().__init__(settings=settings, **kwargs)
        self._url = url
        self._api_key = api_key
        self._voice = voice

    def can_generate_metrics(self) -> bool:
        """TTFB metrics, like any pipecat TTS service."""
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Connect, send everything, stream the audio until the server closes the socket."""
        query = urlencode(
            {"voice": self._voice, "audio_format": "linear16", "sample_rate": self.sample_rate}
        )
        try:
            async with connect(
                f"{self._url}?{query}",
                additional_headers={"Authorization": f"Bearer {self._api_key}"},
                max_size=None,
                compression=None,
            ) as ws:
                for message in ({"text": " "}, {"text": text}, {"text": ""}):
                    await ws.send(json.dumps(message))
                await self.start_tts_usage_metrics(text)
                async for raw in ws:
                    data = json.loads(raw)
                    if data.get("error"):
                        yield ErrorFrame(error=f"Telnyx error: {data['error']}")
                        return
                    if data.get("audio"):
                        await self.stop_ttfb_metrics()
                        audio = base64.b64decode(data["audio"])
                        yield TTSAudioRawFrame(audio, self.sample_rate, 1, context_id=context_id)
        except (OSError, WebSocketException) as e:
            yield ErrorFrame(error=f"Telnyx connection failed: {e}")
