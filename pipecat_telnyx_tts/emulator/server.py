"""A local stand-in for ``wss://api.telnyx.com/v2/text-to-speech/speech`` over real sockets.

This module holds the server's life and its records; ``admission`` decides each upgrade and
``play`` runs each accepted socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from http import HTTPStatus
from types import TracebackType
from typing import Self, TypeVar

from loguru import logger
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response
from websockets.protocol import State

from pipecat_telnyx_tts.emulator import admission
from pipecat_telnyx_tts.emulator.config import Faults, Lifecycle, Signal
from pipecat_telnyx_tts.emulator.connection import EmulatorConnection, connection_class
from pipecat_telnyx_tts.emulator.play import CacheKey, Socket
from pipecat_telnyx_tts.emulator.records import ConnectionRecord
from pipecat_telnyx_tts.emulator.stt_socket import SttSide, SttSocket
from pipecat_telnyx_tts.protocol import (
    SPEECH_PATH,
    VOICES_PATH,
    ClientMessage,
    EndMessage,
    ForceMessage,
    InitMessage,
    Rejection,
    TextMessage,
)
from pipecat_telnyx_tts.stt_protocol import TRANSCRIPTION_PATH

CLOSE_TIMEOUT = 2.0
"""Seconds to wait for a client's closing handshake; bounds shutdown too."""

T = TypeVar("T")


# websockets logs request headers, the bearer token among them, at DEBUG; this logger never does.
_WS_LOGGER = logging.getLogger("pipecat_telnyx_tts.emulator.websockets")
_WS_LOGGER.setLevel(logging.INFO)


class TelnyxEmulator:
    """The Telnyx TTS WebSocket and voice list, served locally.

    Use as ``async with TelnyxEmulator(...) as emu:``; ``emu.url`` is the WebSocket URL. ``faults``
    and ``lifecycle`` may be changed while it runs: the lifecycle is read when a socket opens,
    faults when they take effect. ``connections`` records every upgrade attempt; with
    ``keep_connections`` set, only that many of the most recent ones are kept (a long-running
    server would otherwise keep every frame it ever sent).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        lifecycle: Lifecycle | str = Lifecycle.OBSERVED,
        faults: Faults | None = None,
        signal: Signal | str = Signal.AUTO,
        seed: int = 0,
        keep_connections: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self._lifecycle = Lifecycle(lifecycle)
        self.faults = faults if faults is not None else Faults()
        self._signal = Signal(signal)
        self.seed = seed
        self.keep_connections = keep_connections
        self.connections: list[ConnectionRecord] = []
        self._upgrades = 0
        self._pending: weakref.WeakKeyDictionary[ServerConnection, ConnectionRecord] = (
            weakref.WeakKeyDictionary()
        )
        self._open: set[EmulatorConnection] = set()
        self._cache: set[CacheKey] = set()
        self._refusals = admission.InjectedRefusals()
        self._rate_limit = admission.RateLimit()
        self._server: Server | None = None
        self._closing = asyncio.Event()
        self.stt = SttSide(keep=keep_connections)
        """The STT endpoint's knobs, faults, known audio, script and session records."""

    @property
    def lifecycle(self) -> Lifecycle:
        """The reading new sockets follow; sockets already open keep theirs."""
        return self._lifecycle

    @lifecycle.setter
    def lifecycle(self, value: Lifecycle | str) -> None:
        self._lifecycle = Lifecycle(value)

    @property
    def signal(self) -> Signal:
        """The audio signal new sockets get."""
        return self._signal

    @signal.setter
    def signal(self, value: Signal | str) -> None:
        self._signal = Signal(value)

    # ------------------------------------------------------------------ life

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen; ``port`` then holds the real port (useful with port 0)."""
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        self._closing.clear()
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            compression=None,
            # The upgrade delay fault may exceed any fixed handshake timeout; stop() bounds
            # shutdown instead, by aborting whatever is still open.
            open_timeout=None,
            close_timeout=CLOSE_TIMEOUT,
            create_connection=connection_class(self._open),
            logger=_WS_LOGGER,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        # DEBUG: the command line announces the URLs itself, on stdout where scripts read them.
        logger.debug(f"Telnyx TTS emulator listening on {self.url}")

    async def stop(self) -> None:
        """Close every socket (1001 to open ones) and stop listening, within a few seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        self._closing.set()
        server.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT + 1):
                await server.wait_closed()
        except TimeoutError:
            logger.warning("emulator shutdown: aborting connections that did not close in time")
            for connection in list(self._open):
                connection.transport.abort()
            with suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await server.wait_closed()
        now = time.perf_counter()
        for record in self.connections:
            if record.closed_at is None:
                record.closed_at = now
        logger.info("Telnyx TTS emulator stopped")

    @property
    def url(self) -> str:
        """The WebSocket URL, without a query string."""
        return f"ws://{self._netloc}{SPEECH_PATH}"

    @property
    def stt_url(self) -> str:
        """The STT WebSocket URL, without a query string."""
        return f"ws://{self._netloc}{TRANSCRIPTION_PATH}"

    @property
    def http_url(self) -> str:
        """The HTTP base URL; the voice list is at ``http_url + VOICES_PATH``."""
        return f"http://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # ------------------------------------------------------------------ test helpers

    async def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.01
    ) -> T:
        """Poll ``predicate`` until it returns something truthy, and return that."""
        deadline = time.perf_counter() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.perf_counter() >= deadline:
                name = getattr(predicate, "__qualname__", repr(predicate))
                raise TimeoutError(
                    f"emulator: {name} still false after {timeout} s; {self._summary()}"
                )
            await asyncio.sleep(interval)

    def received_messages(self, conn_index: int | None = None) -> list[ClientMessage]:
        """Parsed client messages in arrival order, of one connection or of all."""
        return [
            frame.message
            for record in self.connections
            if conn_index is None or record.index == conn_index
            for frame in record.received
            if isinstance(frame.message, InitMessage | TextMessage | ForceMessage | EndMessage)
        ]

    def _summary(self) -> str:
        if not self.connections:
            return "no connection was made"
        parts = [
            f"#{r.index} {r.status} {'open' if r.closed_at is None else f'closed {r.close_code}'}"
            f" rx {len(r.received)} tx {len(r.sent)} syntheses {len(r.syntheses)}"
            for r in self.connections
        ]
        return "connections: " + "; ".join(parts)

    # ------------------------------------------------------------------ HTTP

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        path, _, query = request.path.partition("?")
        if path == VOICES_PATH:
            return admission.voices_response(connection, request.headers, query, self.api_key)
        self._upgrades += 1
        record = ConnectionRecord(
            index=self._upgrades,
            path=path,
            query=query,
            params=None,
            headers=admission.redacted(request.headers),
            status=0,
            opened_at=time.perf_counter(),
        )
        self.connections.append(record)
        if self.keep_connections is not None:
            del self.connections[: -max(self.keep_connections, 1)]
        self._pending[connection] = record
        if admission.take_hang(self.faults):
            logger.info(f"emulator: leaving upgrade #{record.index} unanswered")
            await admission.hang(connection, self._closing)
            # The handshake wants a response; the connection is gone, so it is never sent, and
            # the record keeps status 0.
            return connection.respond(503, "")
        delay = self.faults.upgrade_delay
        if delay > 0:
            with suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
        faults = self.faults
        refusal: Rejection | None
        retry_after: int | None = None
        if self._closing.is_set():
            refusal = Rejection(503, "the server is shutting down")
        else:
            refusal = self._refusals.take(faults)
            if refusal is not None and refusal.status == HTTPStatus.TOO_MANY_REQUESTS:
                retry_after = faults.retry_after
            if refusal is None and path == TRANSCRIPTION_PATH:
                # STT parameters are checked on the open socket, as Telnyx answers them.
                refusal = admission.check_auth(request.headers, self.api_key)
            elif refusal is None:
                record.params, refusal = admission.admit(path, query, request.headers, self.api_key)
            if refusal is None:
                key = admission.bearer_token(request.headers)
                retry_after = self._rate_limit.take(key, faults)
                if retry_after is not None:
                    refusal = Rejection(
                        429,
                        f"more than {faults.rate_limit} connections in "
                        f"{faults.rate_window:g} s; retry later",
                    )
        if refusal is None:
            return None
        logger.info(f"emulator: refused upgrade #{record.index}: {refusal.status} {refusal.reason}")
        return admission.refusal_response(
            connection, refusal, retry_after, as_date=faults.retry_after_date
        )

    def _process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> None:
        record = self._pending.get(connection)
        if record is None:
            return
        if connection.protocol.state is State.CONNECTING:
            record.status = response.status_code
            record.answered_at = time.perf_counter()
        if response.status_code != 101:
            del self._pending[connection]
            record.closed_at = time.perf_counter()

    # ------------------------------------------------------------------ WebSocket

    async def _handle(self, ws: ServerConnection) -> None:
        if not isinstance(ws, EmulatorConnection):
            raise TypeError(f"the emulator cannot serve a {type(ws).__name__}")
        record = self._pending.pop(ws)
        logger.info(f"emulator: socket #{record.index} open: {record.path}?{record.query}")
        socket: Socket | SttSocket
        if record.path == TRANSCRIPTION_PATH:
            socket = SttSocket(ws, record, self.stt)
        else:
            socket = Socket(
                ws,
                record,
                faults=lambda: self.faults,
                lifecycle=self.lifecycle,
                signal=self.signal,
                seed=self.seed,
                cache=self._cache,
                on_render=self.stt.library.add_request,
            )
        try:
            await socket.run()
        finally:
            if ws.state is not State.CLOSED:
                await ws.close()
            record.closed_at = time.perf_counter()
            record.close_code, record.close_reason = _close_info(ws)
            logger.info(
                f"emulator: socket #{record.index} closed: "
                f"{record.close_code} {record.close_reason!r}"
            )


# --------------------------------------------------------------------------- helpers


def _close_info(ws: ServerConnection) -> tuple[int, str]:
    """The closing handshake's code and reason, as the side that started it gave them."""
    protocol = ws.protocol
    if protocol.close_rcvd_then_sent or protocol.close_sent is None:
        frame = protocol.close_rcvd
    else:
        frame = protocol.close_sent
    if frame is None:
        return 1006, ""
    return frame.code, frame.reason
