"""``pipecat-telnyx-tts``: hear the service offline, speak text to a WAV, list voices, emulate.

User errors (no key, a refused key, an unreachable server, a bad voice id) end with one line saying
what to fix and a non-zero exit status, never a traceback. Progress goes to stderr, results to
stdout, so ``--json`` output can be piped. Pipecat is imported only by the commands that speak,
after logging is set up, so that its import-time banner never shows without ``-v``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from pipecat_telnyx_tts.common import DEFAULT_RATE, DEFAULT_VOICE, counted
from pipecat_telnyx_tts.emulator import add_arguments as add_emulator_arguments
from pipecat_telnyx_tts.emulator import main as emulator_main
from pipecat_telnyx_tts.protocol import VOICES_PATH
from pipecat_telnyx_tts.voices import PROVIDERS, TELNYX_MODELS, VoiceIdError, family_of

if TYPE_CHECKING:
    from pipecat_telnyx_tts.demo import SpeakResult

DEFAULT_API_URL = "https://api.telnyx.com"
VOICE_PROVIDERS = ("telnyx", *PROVIDERS)
"""What ``voices --provider`` takes: Telnyx's own models, then every other provider."""
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
HTTP_TIMEOUT_S = 15.0


class CliError(Exception):
    """Ends the command with this message and exit status 1."""


def _say_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _configure_logging(verbose: bool) -> list[str]:
    """Quiet by default: pipecat's own error lines would repeat the one this CLI prints.

    Without ``-v``, warnings are held and returned, to be shown only if the command succeeds: a
    failed command ends with the one line that says what to fix, and the warnings that led to
    it (a voice list that could not be fetched from a server that is down) only repeat it.
    """
    logger.remove()
    held: list[str] = []
    if verbose:
        logger.add(sys.stderr, level="DEBUG")
    else:
        logger.add(
            held.append,
            level="WARNING",
            filter={"": "WARNING", "pipecat": "CRITICAL"},
            format="{level}: {message}",
        )
    return held


# --------------------------------------------------------------------------- demo and say


def _positive_rate(value: str) -> int:
    rate = int(value)
    if rate <= 0:
        raise argparse.ArgumentTypeError("the sample rate must be a positive number of Hz")
    return rate


def _add_speech_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "-o", "--output", default=default_out, help=f"WAV file to write (default: {default_out})"
    )
    parser.add_argument(
        "--voice", default=DEFAULT_VOICE, help=f"Provider.Model.VoiceId (default: {DEFAULT_VOICE})"
    )
    parser.add_argument(
        "--rate",
        type=_positive_rate,
        default=DEFAULT_RATE,
        help=f"output sample rate in Hz, e.g. 8000 for phone audio (default: {DEFAULT_RATE})",
    )
    parser.add_argument(
        "--url",
        help="TTS WebSocket URL (default: Telnyx with a key, the embedded emulator without one)",
    )
    parser.add_argument("--api-key", help="Telnyx API v2 key (default: $TELNYX_API_KEY)")
    parser.add_argument(
        "--no-voice-check",
        dest="check_voice_list",
        action="store_false",
        help="speak with --voice even if the voice list lacks it (one cloned for your account)",
    )


def _report(result: SpeakResult) -> None:
    print(
        f"Wrote {result.path}: {result.audio_seconds:.1f} s of audio at {result.sample_rate} Hz, "
        f"{counted(len(result.sentences), 'sentence')}."
    )
    if result.first_audio_ms is not None:
        print(
            f"Time to first audio: {result.first_audio_ms:.0f} ms "
            "(reply's first text into the TTS -> first audio frame out of it)."
        )


def _run_speech(coro: Coroutine[Any, Any, SpeakResult]) -> int:
    from pipecat_telnyx_tts.demo import SpeakError

    try:
        result = asyncio.run(coro)
    except SpeakError as e:
        raise CliError(str(e)) from None
    _report(result)
    return EXIT_OK


def _cmd_demo(ns: argparse.Namespace) -> int:
    from pipecat_telnyx_tts.demo import run_demo

    return _run_speech(
        run_demo(
            ns.output,
            voice=ns.voice,
            sample_rate=ns.rate,
            url=ns.url,
            api_key=ns.api_key,
            check_voice_list=ns.check_voice_list,
            notify=_say_to_stderr,
        )
    )


def _cmd_say(ns: argparse.Namespace) -> int:
    from pipecat_telnyx_tts.demo import speak

    text = sys.stdin.read() if ns.text == "-" else ns.text
    return _run_speech(
        speak(
            text,
            ns.output,
            voice=ns.voice,
            sample_rate=ns.rate,
            speed=ns.speed,
            url=ns.url,
            api_key=ns.api_key,
            check_voice_list=ns.check_voice_list,
            notify=_say_to_stderr,
        )
    )


# --------------------------------------------------------------------------- voices


def fetch_voices(
    api_url: str, api_key: str | None, provider: str | None = None
) -> list[dict[str, Any]]:
    """``GET {api_url}/v2/text-to-speech/voices``, with the key as a bearer token if there is
    one (the emulator needs none); raises ``CliError`` saying what to fix.

    ``api_url`` may also be the voice list's own URL, or the TTS WebSocket's URL (the one
    ``--url`` takes), whose host serves the list too; the emulator prints both when it starts.
    """
    query = f"?{urllib.parse.urlencode({'provider': provider})}" if provider else ""
    if urllib.parse.urlsplit(api_url).scheme.lower() in ("ws", "wss"):
        from pipecat_telnyx_tts.voice_list import rest_base  # imports aiohttp: only when needed

        api_url = rest_base(api_url)
    base = api_url.rstrip("/").removesuffix(VOICES_PATH)
    url = base + VOICES_PATH + query
    headers = {"Accept": "application/json", "User-Agent": "pipecat-telnyx-tts"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace")[:300].strip()
        refused_key = (
            "the API key was refused: check TELNYX_API_KEY or --api-key (a Telnyx API v2 key)"
            if api_key
            else "this server needs an API key: set TELNYX_API_KEY or pass --api-key"
        )
        hint = {
            401: refused_key,
            403: "this API key is not allowed to list voices",
            404: f"no voice list at {url}: check --api-url",
        }.get(e.code, "unexpected answer")
        raise CliError(f"HTTP {e.code} from {url}: {hint}. {detail}".strip()) from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CliError(f"cannot reach {url} ({reason}): check --api-url and your network") from None
    try:
        voices = json.loads(body)["voices"]
    except (ValueError, KeyError, TypeError):
        raise CliError(f"unexpected answer from {url}: no 'voices' list in it") from None
    if not isinstance(voices, list):
        raise CliError(f"unexpected answer from {url}: 'voices' is not a list")
    return [normalise_voice(v) for v in voices if isinstance(v, dict)]


def normalise_voice(item: dict[str, Any]) -> dict[str, Any]:
    """Clients report ``id`` where the docs say ``voice_id``; both become ``voice_id``."""
    voice = dict(item)
    if "voice_id" not in voice and "id" in voice:
        voice["voice_id"] = voice.pop("id")
    return voice


def _language_matches(voice: dict[str, Any], wanted: str) -> bool:
    """``en`` matches ``en-US`` and ``en-GB``; ``en-us`` matches ``en-US``."""
    language = str(voice.get("language") or "").lower()
    wanted = wanted.lower()
    return language == wanted or language.startswith(wanted + "-")


_COLUMNS = ("voice_id", "name", "provider", "language", "gender", "audio")


def audio_of(voice_id: str) -> str:
    """What the service gets from the voice, from the providers table: raw ``pcm``, or ``mp3
    only`` (decoded, at some CPU and first-audio cost); ``-`` where the plugin cannot tell."""
    try:
        family = family_of(voice_id)
    except VoiceIdError:
        return "-"
    if family is None:
        return "-"
    if not family.websocket:
        return "none (403 on the WebSocket)"
    return "pcm" if family.pcm else "mp3 only"


def format_table(voices: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one voice a line; ``voice_id`` is what ``--voice`` takes, and the
    ``AUDIO`` column says which voices answer in MP3 only."""
    rows = [
        [str(v.get(c) or "") for c in _COLUMNS[:-1]] + [audio_of(str(v.get("voice_id") or ""))]
        for v in voices
    ]
    header = [c.upper() for c in _COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _sort_key(voice: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(voice.get(c) or "").lower() for c in ("provider", "language", "voice_id"))


def _is_telnyx(api_url: str) -> bool:
    host = urllib.parse.urlsplit(api_url).hostname or ""
    return host == "telnyx.com" or host.endswith(".telnyx.com")


def _cmd_voices(ns: argparse.Namespace) -> int:
    provider = ns.provider.lower() if ns.provider else None
    if provider is not None and provider not in VOICE_PROVIDERS:
        raise CliError(
            f"unknown provider {ns.provider!r}: use one of {', '.join(sorted(VOICE_PROVIDERS))}"
        )
    key = ns.api_key or os.environ.get("TELNYX_API_KEY")
    # Only Telnyx is known to need a key; an emulator started without --api-key needs none,
    # and a server that does need one answers 401, which fetch_voices explains.
    if not key and _is_telnyx(ns.api_url):
        raise CliError(
            "listing Telnyx's voices needs a Telnyx API key: set TELNYX_API_KEY or pass "
            "--api-key (the local emulator needs none: --api-url http://127.0.0.1:8765)"
        )
    voices = fetch_voices(ns.api_url, key, provider)
    if ns.language:
        voices = [v for v in voices if _language_matches(v, ns.language)]
    voices.sort(key=_sort_key)
    if ns.json:
        print(json.dumps(voices, indent=2))
    elif voices:
        print(format_table(voices))
        _say_to_stderr(
            f"{counted(len(voices), 'voice')}; pass the VOICE_ID to --voice or Settings(voice=...)"
        )
    else:
        _say_to_stderr("no voice matches those filters")
    return EXIT_OK


# --------------------------------------------------------------------------- providers


def _provider_rows() -> list[list[str]]:
    rows = []
    families = [(f"{f.name}.<voice>", f) for f in TELNYX_MODELS.values()]
    # Azure ids have no model segment (see VoiceId.parse).
    families += [
        (f"{key}.<voice>" if key == "azure" else f"{key}.<model>.<voice>", f)
        for key, f in PROVIDERS.items()
    ]
    for prefix, family in families:
        notes = []
        formats = ", ".join(sorted(family.formats))
        rates = " ".join(str(r) for r in family.sample_rates)
        if not family.websocket:
            notes.append("not served on the WebSocket (403)")
        if not family.honours_format:
            # The accepted values and the audio that comes back differ: say both, side by side,
            # or the columns read as what the voice sends.
            answer = "always MP3" + (f" at {family.mp3_rate} Hz" if family.mp3_rate else "")
            notes.append(f"{answer}, whatever is asked; the service decodes and resamples it")
            formats += " accepted (answers mp3)"
            if family.mp3_rate:
                rates += f" accepted (answers {family.mp3_rate})"
        if family.speed_key:
            notes.append(f"Settings(speed=) sets {family.speed_key}")
        rows.append(
            [
                prefix,
                family.name,
                formats,
                rates,
                str(family.default_rate),
                family.delivery.value,
                ", ".join(sorted(family.settings_keys)) or "-",
                "; ".join(notes) or "-",
            ]
        )
    return rows


PROVIDER_COLUMNS = (
    "Voice ids",
    "Provider",
    "audio_format",
    "Sample rates (Hz)",
    "Default rate",
    "Delivery",
    "voice_settings keys",
    "Notes",
)


def providers_table(markdown: bool = False) -> str:
    """What each provider accepts, from the same table the service and the emulator use."""
    rows = _provider_rows()
    if markdown:
        lines = ["| " + " | ".join(PROVIDER_COLUMNS) + " |"]
        lines.append("|" + "---|" * len(PROVIDER_COLUMNS))
        for row in rows:
            cells = [f"`{row[0]}`", *row[1:]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)
    return "\n\n".join(
        "\n".join(
            f"{name + ':':21}{value}" for name, value in zip(PROVIDER_COLUMNS, row, strict=True)
        )
        for row in rows
    )


def _cmd_providers(ns: argparse.Namespace) -> int:
    print(providers_table(markdown=ns.markdown))
    return EXIT_OK


# --------------------------------------------------------------------------- emulator


def _cmd_emulator(ns: argparse.Namespace) -> int:
    return emulator_main(ns.emulator_argv, prog="pipecat-telnyx-tts emulator")


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The full command line; ``emulator`` takes the emulator's own options."""
    parser = argparse.ArgumentParser(
        prog="pipecat-telnyx-tts",
        description="Telnyx text-to-speech for Pipecat: demo, speak to WAV, list voices, "
        "run the local emulator.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show pipecat's debug log")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="speak a scripted agent reply to a WAV and print the time to first audio",
        description="Speak a scripted multi-sentence agent reply through TelnyxTTSService in a "
        "Pipecat pipeline. Without TELNYX_API_KEY it uses the embedded emulator.",
    )
    _add_speech_options(demo, "demo.wav")
    demo.set_defaults(func=_cmd_demo)

    say = commands.add_parser(
        "say",
        help="speak TEXT to a WAV file",
        description="Speak TEXT through TelnyxTTSService to a WAV file. Without TELNYX_API_KEY "
        "it uses the embedded emulator.",
    )
    say.add_argument("text", metavar="TEXT", help="what to say; '-' reads it from stdin")
    _add_speech_options(say, "speech.wav")
    say.add_argument(
        "--speed", type=float, help="speaking rate, e.g. 1.2 (for voices that have one)"
    )
    say.set_defaults(func=_cmd_say)

    voices = commands.add_parser(
        "voices",
        help="list Telnyx TTS voices (Telnyx needs an API key, the emulator does not)",
        description="List the voices of Telnyx's text-to-speech API, or of the emulator's "
        "(--api-url as the emulator prints it when it starts).",
    )
    voices.add_argument(
        "--provider",
        help=f"only this provider: one of {', '.join(sorted(VOICE_PROVIDERS))} (default: all)",
    )
    voices.add_argument("--language", help="only this language, e.g. en or en-GB (default: all)")
    voices.add_argument("--json", action="store_true", help="print JSON instead of a table")
    voices.add_argument(
        "--api-key",
        help="Telnyx API v2 key; not needed for an emulator started without --api-key "
        "(default: $TELNYX_API_KEY)",
    )
    voices.add_argument(
        "--api-url",
        default=DEFAULT_API_URL,
        help="REST base URL, the voice list's own URL or the TTS WebSocket's URL, e.g. the "
        f"emulator's http://127.0.0.1:8765 (default: {DEFAULT_API_URL})",
    )
    voices.set_defaults(func=_cmd_voices)

    providers = commands.add_parser(
        "providers",
        help="what each Telnyx TTS provider accepts (formats, rates, voice_settings)",
        description="What each Telnyx TTS provider accepts on the WebSocket, as this plugin "
        "knows it (no API call).",
    )
    providers.add_argument("--markdown", action="store_true", help="print a Markdown table")
    providers.set_defaults(func=_cmd_providers)

    emulator = commands.add_parser(
        "emulator",
        help="serve the local Telnyx TTS emulator",
        description="Serve a local emulator of Telnyx's TTS WebSocket and voice list.",
    )
    add_emulator_arguments(emulator)
    emulator.set_defaults(func=_cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (console-script entry point)."""
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    held: list[str] = []
    if ns.command == "emulator":
        # The emulator parses its own options again and sets up its own logging.
        ns.emulator_argv = args[args.index("emulator") + 1 :]
    else:
        held = _configure_logging(ns.verbose)
    try:
        status: int = ns.func(ns)
    except CliError as e:
        _say_to_stderr(f"error: {e}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _say_to_stderr("interrupted")
        return EXIT_INTERRUPTED
    for warning in held:
        _say_to_stderr(warning.rstrip("\n"))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
