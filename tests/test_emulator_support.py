"""Shared helpers for the emulator tests: a raw websockets client, as a Telnyx client would use.

Named ``test_emulator_*`` only so that it sits with the tests it serves; it holds no tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from pipecat_telnyx_tts.emulator import TelnyxEmulator
from pipecat_telnyx_tts.protocol import (
    AudioMessage,
    ClientMessage,
    ConnectParams,
    EndMessage,
    FinalMessage,
    InitMessage,
    ServerMessage,
    TextMessage,
    encode_client,
    parse_server,
)

AUTH = {"Authorization": "Bearer k"}
VOICE = "Telnyx.NaturalHD.astra"
SENTENCE = "Hello there, this is the emulator speaking."


def ws_url(server: TelnyxEmulator | str, voice: str | None = VOICE, **params: Any) -> str:
    """The socket URL with its query; ``server`` is an emulator or its bare WebSocket URL."""
    base = server if isinstance(server, str) else server.url
    return f"{base}?{ConnectParams(voice=voice, **params).to_query()}"


@asynccontextmanager
async def open_socket(
    server: TelnyxEmulator | str,
    voice: str | None = VOICE,
    *,
    init: bool = True,
    settings: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    **params: Any,
) -> AsyncIterator[ClientConnection]:
    """A connected socket, past the init frame unless ``init`` is False."""
    async with connect(
        ws_url(server, voice, **params),
        additional_headers=AUTH if headers is None else headers,
        open_timeout=10,
        close_timeout=2,
    ) as ws:
        if init:
            await send(ws, InitMessage(settings))
        yield ws


async def send(ws: ClientConnection, *messages: ClientMessage) -> None:
    for message in messages:
        await ws.send(encode_client(message))


async def speak(ws: ClientConnection, text: str = SENTENCE) -> None:
    """One turn: the text, flushed, then end of sequence."""
    await send(ws, TextMessage(text, flush=True), EndMessage())


def parse(raw: str | bytes) -> ServerMessage:
    """Parse a server frame, checking the one thing the parser tolerates: a ``type`` key."""
    assert "type" not in json.loads(raw), raw
    return parse_server(raw)


async def receive(ws: ClientConnection, timeout: float = 5.0) -> ServerMessage:
    async with asyncio.timeout(timeout):
        return parse(await ws.recv())


async def receive_all(ws: ClientConnection, timeout: float = 10.0) -> list[ServerMessage]:
    """Every frame until the server closes (cleanly or not)."""
    messages: list[ServerMessage] = []
    async with asyncio.timeout(timeout):
        try:
            async for raw in ws:
                messages.append(parse(raw))
        except ConnectionClosed:
            pass
    return messages


async def receive_until_final(ws: ClientConnection, timeout: float = 5.0) -> list[ServerMessage]:
    messages: list[ServerMessage] = []
    async with asyncio.timeout(timeout):
        while not messages or not isinstance(messages[-1], FinalMessage):
            messages.append(parse(await ws.recv()))
    return messages


async def silent_for(ws: ClientConnection, seconds: float) -> bool:
    """True when nothing arrives for ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await ws.recv()
    except TimeoutError:
        return True
    return False


async def drain(ws: ClientConnection, quiet: float = 0.3) -> list[ServerMessage]:
    """Frames until none arrives for ``quiet`` seconds."""
    messages: list[ServerMessage] = []
    while True:
        try:
            async with asyncio.timeout(quiet):
                messages.append(parse(await ws.recv()))
        except TimeoutError:
            return messages


def audio_of(messages: list[ServerMessage]) -> bytes:
    return b"".join(audio_chunks(messages))


def audio_chunks(messages: list[ServerMessage]) -> list[bytes]:
    """The non-empty audio payloads, in arrival order."""
    return [m.audio for m in messages if isinstance(m, AudioMessage) and m.audio]


def audio_frames(messages: list[ServerMessage]) -> list[AudioMessage]:
    return [m for m in messages if isinstance(m, AudioMessage) and m.audio]


def text_frames(messages: list[ServerMessage]) -> list[AudioMessage]:
    return [m for m in messages if isinstance(m, AudioMessage) and m.text is not None]


async def refused(url: str, headers: dict[str, str] | None = None) -> InvalidStatus:
    """The refusal of an upgrade to ``url``; fails the test if it is accepted."""
    try:
        async with connect(url, additional_headers=AUTH if headers is None else headers):
            pass
    except InvalidStatus as e:
        return e
    raise AssertionError(f"upgrade to {url} was accepted")
