"""A Telnyx phone agent on one key: Telnyx hears the caller, an LLM on Telnyx answers, Telnyx
speaks.

Run it with pipecat's development runner, which serves the TeXML webhook (``POST /``) and the media
WebSocket (``/ws``) that Telnyx connects to::

    python bot.py -t telnyx --proxy your-subdomain.ngrok.io

Everything that differs between deployments comes from the environment (or a ``.env`` file next
to this script): see ``.env.example``. One line switches the voice (``TTS_VOICE``), another the
TTS service (``TTS_SERVICE``), another the STT service (``STT_SERVICE``: Telnyx by default,
Deepgram's own API as the alternative). ``run_call`` takes stand-ins for the STT and the LLM so
the test suite drives this very pipeline over a real socket without any cloud service.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.runner.types import RunnerArguments, WebSocketRunnerArguments
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.telnyx import TelnyxFrameSerializer
from pipecat.transports.base_transport import BaseTransport
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from pipecat_telnyx_tts import DEFAULT_URL, TelnyxSTTService, TelnyxTTSService
from pipecat_telnyx_tts.stt_protocol import DEFAULT_STT_URL

PHONE_RATE = 8000
"""Telnyx media streams carry 8 kHz audio; the whole pipeline runs at that rate, so the TTS asks
for 8 kHz directly and nothing is resampled on the way out."""

SYSTEM_PROMPT = (
    "You are a friendly voice assistant answering a phone call. Your words are spoken aloud, "
    "so answer in one to three short sentences of plain text: no lists, no markdown, no emoji."
)
GREETING_INSTRUCTION = "The caller has just been connected. Greet them in one short sentence."

TTS_KEYS = {
    "telnyx": "TELNYX_API_KEY",
    "cartesia": "CARTESIA_API_KEY",
    "elevenlabs": "ELEVENLABS_API_KEY",
    "deepgram": "DEEPGRAM_API_KEY",
}
"""The TTS services ``TTS_SERVICE`` can name, and the variable holding each one's key."""

STT_KEYS = {"telnyx": "TELNYX_API_KEY", "deepgram": "DEEPGRAM_API_KEY"}
"""The STT services ``STT_SERVICE`` can name, and the variable holding each one's key."""


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable to set."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or not value.strip():
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _number(env: Mapping[str, str], name: str) -> float | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None


@dataclass(frozen=True)
class AgentConfig:
    """Everything a call needs, read once from the environment (see ``.env.example``)."""

    telnyx_api_key: str = ""
    deepgram_api_key: str = ""
    llm_base_url: str = "https://api.telnyx.com/v2/ai"
    llm_model: str = "meta-llama/Meta-Llama-3.1-70B-Instruct"
    llm_api_key: str = ""
    """Empty: the Telnyx key, since Telnyx serves the LLM too."""
    system_prompt: str = SYSTEM_PROMPT
    stt_service: str = "telnyx"
    stt_engine: str = "Deepgram"
    """Telnyx's ``transcription_engine``, in Telnyx's case (Telnyx STT only)."""
    stt_model: str = ""
    """Empty: the engine's default (nova-3 on Telnyx's Deepgram, nova-3-general on Deepgram's)."""
    stt_language: str = "en"
    telnyx_stt_url: str = DEFAULT_STT_URL
    tts_service: str = "telnyx"
    tts_api_key: str = ""
    """The key of the chosen TTS service (``TELNYX_API_KEY`` for Telnyx)."""
    tts_voice: str = ""
    """Empty: each service's default voice (``Telnyx.NaturalHD.astra`` for Telnyx)."""
    tts_speed: float | None = None
    tts_language: str = ""
    telnyx_tts_url: str = DEFAULT_URL
    hang_up_on_end: bool = True
    """Hang the call up through Telnyx's API when the pipeline ends (needs the Telnyx key)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AgentConfig:
        """Read the settings; unknown services and malformed numbers fail here, not mid-call."""
        env = os.environ if env is None else env
        service = env.get("TTS_SERVICE", "telnyx").strip().lower() or "telnyx"
        if service not in TTS_KEYS:
            raise ConfigError(f"TTS_SERVICE must be one of {', '.join(TTS_KEYS)}, not {service!r}")
        stt = env.get("STT_SERVICE", "telnyx").strip().lower() or "telnyx"
        if stt not in STT_KEYS:
            raise ConfigError(f"STT_SERVICE must be one of {', '.join(STT_KEYS)}, not {stt!r}")
        return cls(
            telnyx_api_key=env.get("TELNYX_API_KEY", ""),
            deepgram_api_key=env.get("DEEPGRAM_API_KEY", ""),
            llm_base_url=env.get("LLM_BASE_URL") or cls.llm_base_url,
            llm_model=env.get("LLM_MODEL") or cls.llm_model,
            llm_api_key=env.get("LLM_API_KEY", ""),
            system_prompt=env.get("SYSTEM_PROMPT") or cls.system_prompt,
            stt_service=stt,
            stt_engine=env.get("STT_ENGINE") or cls.stt_engine,
            stt_model=env.get("STT_MODEL") or cls.stt_model,
            telnyx_stt_url=env.get("TELNYX_STT_URL") or cls.telnyx_stt_url,
            stt_language=env.get("STT_LANGUAGE") or cls.stt_language,
            tts_service=service,
            tts_api_key=env.get(TTS_KEYS[service], ""),
            tts_voice=env.get("TTS_VOICE", "").strip(),
            tts_speed=_number(env, "TTS_SPEED"),
            tts_language=env.get("TTS_LANGUAGE", "").strip(),
            telnyx_tts_url=env.get("TELNYX_TTS_URL") or cls.telnyx_tts_url,
            hang_up_on_end=_flag(env.get("HANG_UP_ON_END"), True),
        )

    def missing(self) -> list[str]:
        """The environment variables a real call needs that are not set."""
        keys = {"TELNYX_API_KEY": self.telnyx_api_key, "DEEPGRAM_API_KEY": self.deepgram_api_key}
        needed = {STT_KEYS[self.stt_service]: keys[STT_KEYS[self.stt_service]]}
        if self.tts_service == "telnyx" or not self.llm_api_key or self.hang_up_on_end:
            needed["TELNYX_API_KEY"] = self.telnyx_api_key
        needed[TTS_KEYS[self.tts_service]] = self.tts_api_key
        if self.tts_service in ("cartesia", "elevenlabs"):
            # Neither has a default voice; their voice ids are opaque, so no guess is made.
            needed["TTS_VOICE"] = self.tts_voice
        return [name for name, value in needed.items() if not value]


# --------------------------------------------------------------------------- services


def make_stt(config: AgentConfig) -> FrameProcessor:
    """Telnyx STT on the same key (Deepgram's models on Telnyx's GPUs by default), or Deepgram's
    own API; both take the 8 kHz phone audio as it is."""
    if config.stt_service == "telnyx":
        return TelnyxSTTService(
            api_key=config.telnyx_api_key,
            url=config.telnyx_stt_url,
            settings=TelnyxSTTService.Settings(
                engine=config.stt_engine,
                model=config.stt_model or None,
                language=config.stt_language or None,
            ),
        )
    from pipecat.services.deepgram.stt import DeepgramSTTService

    return DeepgramSTTService(
        api_key=config.deepgram_api_key,
        settings=DeepgramSTTService.Settings(
            model=config.stt_model or "nova-3-general", language=config.stt_language
        ),
    )


def make_llm(config: AgentConfig) -> FrameProcessor:
    """Telnyx's OpenAI-compatible inference API, so one Telnyx key covers the LLM and the TTS."""
    from pipecat.services.openai.llm import OpenAILLMService

    return OpenAILLMService(
        api_key=config.llm_api_key or config.telnyx_api_key,
        base_url=config.llm_base_url,
        # The system prompt lives on the LLM service (pipecat 1.9+), not in the context.
        settings=OpenAILLMService.Settings(
            model=config.llm_model, system_instruction=config.system_prompt
        ),
    )


def make_tts(config: AgentConfig) -> FrameProcessor:
    """The TTS named by ``TTS_SERVICE``; others are imported only when chosen."""
    voice = config.tts_voice or None
    if config.tts_service == "telnyx":
        return TelnyxTTSService(
            api_key=config.tts_api_key,
            url=config.telnyx_tts_url,
            settings=TelnyxTTSService.Settings(
                voice=voice or "Telnyx.NaturalHD.astra",
                speed=config.tts_speed,
                language=config.tts_language or None,
            ),
        )
    if config.tts_service == "cartesia":
        from pipecat.services.cartesia.tts import CartesiaTTSService

        return CartesiaTTSService(
            api_key=config.tts_api_key,
            settings=CartesiaTTSService.Settings(voice=voice) if voice else None,
        )
    if config.tts_service == "elevenlabs":
        from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

        return ElevenLabsTTSService(
            api_key=config.tts_api_key,
            settings=ElevenLabsTTSService.Settings(voice=voice) if voice else None,
        )
    if config.tts_service == "deepgram":
        from pipecat.services.deepgram.tts import DeepgramTTSService

        return DeepgramTTSService(
            api_key=config.tts_api_key,
            settings=DeepgramTTSService.Settings(voice=voice) if voice else None,
        )
    raise ConfigError(f"TTS_SERVICE must be one of {', '.join(TTS_KEYS)}")


# --------------------------------------------------------------------------- the call


async def create_phone_transport(
    runner_args: RunnerArguments, config: AgentConfig
) -> FastAPIWebsocketTransport:
    """Read Telnyx's ``connected`` and ``start`` messages and wrap the socket in a transport.

    The runner's own ``create_transport`` does the same but always hangs up through Telnyx's
    API at the end; building it here lets ``HANG_UP_ON_END`` turn that off.
    """
    if not isinstance(runner_args, WebSocketRunnerArguments):
        raise ConfigError("this bot answers Telnyx phone calls: run it with '-t telnyx'")
    provider, call = await parse_telephony_websocket(runner_args.websocket)
    if provider != "telnyx" or not call.stream_id:
        raise ConfigError(f"expected a Telnyx media stream, got {provider!r}")
    logger.info(f"Call {call.call_id} from {call.from_number} to {call.to_number}")
    serializer = TelnyxFrameSerializer(
        stream_id=call.stream_id,
        call_control_id=call.call_id,
        outbound_encoding=call.get("outbound_encoding", "PCMU"),
        inbound_encoding="PCMU",
        api_key=config.telnyx_api_key,
        params=TelnyxFrameSerializer.InputParams(auto_hang_up=config.hang_up_on_end),
    )
    return FastAPIWebsocketTransport(
        websocket=runner_args.websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )


def create_worker(
    transport: BaseTransport,
    config: AgentConfig,
    *,
    stt: FrameProcessor,
    llm: FrameProcessor,
    tts: FrameProcessor,
    idle_timeout_secs: float | None = None,
) -> PipelineWorker:
    """The conversation pipeline, at 8 kHz end to end.

    Barge-in: Silero VAD runs in the user aggregator; when the caller starts talking its turn-start
    strategy broadcasts an ``InterruptionFrame`` (pipecat 1.14 interrupts by default), which makes
    the TTS stop its synthesis and the serializer send Telnyx a ``clear``.
    """
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=PHONE_RATE,
            audio_out_sample_rate=PHONE_RATE,
            enable_metrics=True,
            enable_usage_metrics=True,
        ),
        enable_rtvi=False,
        idle_timeout_secs=idle_timeout_secs,
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(_transport: BaseTransport, _client: Any) -> None:
        # "developer": an instruction in the conversation, as pipecat's own aggregators add them.
        context.add_message({"role": "developer", "content": GREETING_INSTRUCTION})
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: BaseTransport, _client: Any) -> None:
        logger.info("Caller hung up")
        await worker.cancel(reason="caller hung up")

    return worker


async def run_call(
    runner_args: RunnerArguments,
    config: AgentConfig,
    *,
    stt: FrameProcessor | None = None,
    llm: FrameProcessor | None = None,
    tts: FrameProcessor | None = None,
) -> None:
    """Serve one call until the caller hangs up; stand-ins replace the cloud services in tests."""
    transport = await create_phone_transport(runner_args, config)
    worker = create_worker(
        transport,
        config,
        stt=stt or make_stt(config),
        llm=llm or make_llm(config),
        tts=tts or make_tts(config),
        idle_timeout_secs=runner_args.pipeline_idle_timeout_secs,
    )
    runner = WorkerRunner(
        handle_sigint=runner_args.handle_sigint, handle_sigterm=runner_args.handle_sigterm
    )
    await runner.add_workers(worker)
    await runner.run()


async def bot(runner_args: RunnerArguments) -> None:
    """Entry point of pipecat's runner: called once per call."""
    await run_call(runner_args, AgentConfig.from_env())


def load_runner(env_file: Path) -> Callable[[argparse.ArgumentParser], None]:
    """Pipecat's runner ``main``, with ``env_file`` filling in only what the shell has not set.

    A copied ``.env.example`` has empty ``KEY=`` lines, which must not hide keys exported in the
    shell. Importing the runner also loads a ``.env`` of its own choosing (the first one above
    pipecat's install, or above the working directory) with override, so the environment as it
    stood is put back after that import.
    """
    from dotenv import load_dotenv

    load_dotenv(env_file, override=False)
    before = dict(os.environ)
    from pipecat.runner.run import main

    os.environ.update(before)
    return main


def _check_environment() -> None:
    """Fail at start-up, not when the first call rings, if a key is missing."""
    try:
        config = AgentConfig.from_env()
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    missing = config.missing()
    if missing:
        raise SystemExit(f"error: set {', '.join(missing)} (in the environment or .env)")


class _CheckingParser(argparse.ArgumentParser):
    """The runner's parser, checking the environment once the command line is read: ``--help``
    exits while parsing, so it works before any key is set."""

    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        parsed = super().parse_args(*args, **kwargs)
        _check_environment()
        return parsed


if __name__ == "__main__":
    main = load_runner(Path(__file__).with_name(".env"))
    main(_CheckingParser(description="A Telnyx phone agent on pipecat's development runner."))
