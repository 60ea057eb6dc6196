"""What ``cli`` and ``demo`` share, kept free of pipecat: the CLI shows these in its help and
imports pipecat (with ``demo``) only for the commands that speak."""

from __future__ import annotations

DEFAULT_VOICE = "Telnyx.NaturalHD.astra"
DEFAULT_RATE = 24000


def counted(n: int, noun: str) -> str:
    """``1 sentence``, ``2 sentences``: for the regular nouns progress lines count."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
