"""The HTTP side of an upgrade: who gets a socket, who gets which refusal, and who gets no answer
at all; and the voice list, which shares the bearer check.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Response

from pipecat_telnyx_tts.emulator.catalogue import voice_list
from pipecat_telnyx_tts.emulator.config import Faults
from pipecat_telnyx_tts.emulator.records import REDACTED
from pipecat_telnyx_tts.protocol import (
    SPEECH_PATH,
    ConnectParams,
    ProtocolError,
    Rejection,
    check_connect,
)


def check_auth(headers: Headers, api_key: str | None) -> Rejection | None:
    """Without a key set, everyone is let in, so that a first try (curl, the CLI) needs no made-up
    key; with one, 401 unless there is exactly one bearer credential and it is that key, as
    Telnyx answers a missing or wrong API key."""
    if api_key is None:
        return None
    values = headers.get_all("Authorization")
    if len(values) != 1:
        return Rejection(401, "send exactly one 'Authorization: Bearer <API key>' header")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return Rejection(401, "the Authorization header must be 'Bearer <API key>'")
    if not hmac.compare_digest(token, api_key):
        return Rejection(401, "the API key is not valid")
    return None


def admit(
    path: str, query: str, headers: Headers, api_key: str | None
) -> tuple[ConnectParams | None, Rejection | None]:
    """The parsed parameters of an upgrade request, and the refusal Telnyx would answer it with
    (404, 401, 400 or 403), or None to accept it."""
    if path != SPEECH_PATH:
        return None, Rejection(404, f"no such endpoint: {path}")
    refusal = check_auth(headers, api_key)
    if refusal is not None:
        return None, refusal
    try:
        params = ConnectParams.from_query(query)
    except ProtocolError as e:
        return None, Rejection(400, str(e))
    return params, check_connect(params)


class InjectedRefusals:
    """The ``refuse_*`` faults, which need to remember when their window opened.

    Counts live in ``Faults`` itself (decremented as they fire); the ``refuse_for`` window lives
    here, from the first refused attempt. When the window is over the fault is spent: the
    emulator sets ``refuse_status`` back to None, and setting it again opens a new window.
    """

    def __init__(self) -> None:
        self._since: float | None = None

    def take(self, faults: Faults) -> Rejection | None:
        """The refusal for this upgrade attempt, if the faults call for one."""
        status = faults.refuse_status
        if status is None:
            self._since = None
            return None
        if faults.refuse_count is not None and faults.refuse_count <= 0:
            return None
        if faults.refuse_for is not None:
            now = time.perf_counter()
            if self._since is None:
                self._since = now
            elif now - self._since >= faults.refuse_for:
                faults.refuse_status = None
                self._since = None
                return None
        if faults.refuse_count is not None:
            faults.refuse_count -= 1
        return Rejection(status, _describe(status))


class RateLimit:
    """``Faults.rate_limit``: the upgrades each key was let in with inside the window."""

    def __init__(self) -> None:
        self._accepted: dict[str, deque[float]] = {}

    def take(self, key: str, faults: Faults) -> int | None:
        """Count this upgrade against ``key`` and return None, or return the whole seconds
        until the key may upgrade again, without counting it."""
        limit = faults.rate_limit
        if limit is None:
            self._accepted.clear()
            return None
        now = time.perf_counter()
        accepted = self._accepted.setdefault(key, deque())
        while accepted and now - accepted[0] >= faults.rate_window:
            accepted.popleft()
        if len(accepted) >= limit:
            free_at = accepted[-limit] + faults.rate_window if limit > 0 else now + 1
            return max(1, math.ceil(free_at - now))
        accepted.append(now)
        return None


def bearer_token(headers: Headers) -> str:
    """The credential a request presents, checked or not: what a rate limit counts per."""
    values = headers.get_all("Authorization")
    if len(values) != 1:
        return ""
    return values[0].strip().partition(" ")[2].strip()


def take_hang(faults: Faults) -> bool:
    """Whether this upgrade request goes unanswered (``hang_upgrades``, counted down)."""
    if faults.hang_upgrades <= 0:
        return False
    faults.hang_upgrades -= 1
    return True


async def hang(connection: ServerConnection, closing: asyncio.Event) -> None:
    """Answer nothing until the client gives up or the emulator stops; then the TCP connection
    is gone, so that the response the handshake goes on to make is never sent."""
    stopping = asyncio.ensure_future(closing.wait())
    waiters: list[asyncio.Future[Any]] = [stopping, connection.connection_lost_waiter]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    connection.transport.abort()
    await asyncio.shield(connection.connection_lost_waiter)


def refusal_response(
    connection: ServerConnection,
    refusal: Rejection,
    retry_after: int | None = None,
    as_date: bool = False,
) -> Response:
    """The refusal as Telnyx's REST error JSON, with ``Retry-After`` when ``retry_after`` is
    given: seconds, or with ``as_date`` the HTTP date that many seconds from now, rounded up."""
    response = json_response(connection, refusal.status, error_body(refusal))
    if retry_after is not None:
        if as_date:
            response.headers["Retry-After"] = formatdate(
                math.ceil(time.time()) + retry_after, usegmt=True
            )
        else:
            response.headers["Retry-After"] = str(retry_after)
    return response


def voices_response(
    connection: ServerConnection, headers: Headers, query: str, api_key: str | None
) -> Response:
    """``GET /v2/text-to-speech/voices[?provider=...]``, behind the same bearer check."""
    refusal = check_auth(headers, api_key)
    if refusal is not None:
        return refusal_response(connection, refusal)
    provider = parse_qs(query).get("provider", [None])[0]
    return json_response(connection, 200, voice_list(provider))


def redacted(headers: Headers) -> dict[str, str]:
    """Request headers as recorded: the Authorization credential is replaced by ``REDACTED``."""
    out: dict[str, str] = {}
    for name, value in headers.raw_items():
        if name.lower() == "authorization":
            scheme, space, _ = value.strip().partition(" ")
            value = f"{scheme} {REDACTED}" if space else REDACTED
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def error_body(rejection: Rejection) -> dict[str, Any]:
    """Telnyx's REST error shape."""
    title = HTTPStatus(rejection.status).phrase
    return {"errors": [{"title": title, "detail": rejection.reason}]}


def json_response(connection: ServerConnection, status: int, body: dict[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


def _describe(status: int) -> str:
    match status:
        case HTTPStatus.TOO_MANY_REQUESTS:
            return "too many requests; retry later"
        case HTTPStatus.SERVICE_UNAVAILABLE:
            return "the service is temporarily unavailable"
        case _:
            return HTTPStatus(status).description or HTTPStatus(status).phrase
