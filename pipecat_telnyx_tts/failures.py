"""Connect failures as the policy sees them, and as a person should read them.

Shared by every Telnyx socket this package opens (TTS and STT): ``classify_connect_error`` turns
what ``websockets`` raised into a :class:`~pipecat_telnyx_tts.policy.Failure`, ``check_ws_url``
refuses a URL that can never connect before anything is attempted, and ``error_category`` gives
pipecat the category that decides whether it writes the service off.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pipecat.utils.errors import ErrorCategory
from websockets.exceptions import InvalidStatus, InvalidURI

from pipecat_telnyx_tts.policy import Failure, Kind, classify_status


def check_ws_url(url: str) -> None:
    """Raise ValueError, saying what to fix, unless the URL is ``ws://`` or ``wss://`` + host."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(
            f"url {url!r} is not a WebSocket URL: give wss://host/path "
            "(Telnyx: wss://api.telnyx.com/v2/text-to-speech/speech) or ws://127.0.0.1:PORT/... "
            "for the local emulator"
        )


def classify_connect_error(error: Exception, *, wall: float) -> Failure:
    """What a failed handshake says about the next one. ``wall`` is ``time.time()``."""
    if isinstance(error, InvalidStatus):
        response = error.response
        return classify_status(response.status_code, response.headers.get("Retry-After"), wall=wall)
    if isinstance(error, InvalidURI):
        return Failure(Kind.PERMANENT)
    # Refused, reset, unreachable, timed out, a broken HTTP answer: may all pass.
    return Failure(Kind.TRANSIENT)


def error_category(failure: Failure) -> ErrorCategory:
    """pipecat's category for a failure: permanent ones make pipecat write the service off."""
    match failure.kind, failure.status:
        case Kind.PERMANENT, 401:
            return ErrorCategory.AUTHENTICATION
        case Kind.PERMANENT, 403:
            return ErrorCategory.AUTHORIZATION
        case Kind.PERMANENT, _:
            return ErrorCategory.INVALID_REQUEST
        case Kind.RATE_LIMITED, _:
            return ErrorCategory.RATE_LIMIT
        case _, status if status is not None and status >= 500:
            return ErrorCategory.SERVER
        case _:
            return ErrorCategory.CONNECTIVITY
