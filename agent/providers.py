"""Model providers from config: STT, TTS, the session LLM, the brain's LLM client, VAD.

Every base URL can be overridden; empty values fall back to OPENAI_BASE_URL and then to the
provider's default endpoint. Plugins are imported inside the functions (import cost, optional
extras). Nothing here downloads a model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from agent.config import ConfigError, Settings
from agent.local import LOCAL_STT_PROVIDERS, LOCAL_TTS_PROVIDERS

if TYPE_CHECKING:  # pragma: no cover
    from livekit.agents import llm, stt, tts, vad

    from agent.clients.llm import LLMClient

#: A placeholder key for OpenAI-compatible local servers that need none (the SDK insists).
NO_KEY = "no-key"


def llm_base_url(settings: Settings) -> str | None:
    """Base URL of the fast LLM: LLM_BASE_URL, else OPENAI_BASE_URL, else OpenAI's."""
    return settings.llm_base_url or settings.openai_base_url or None


def api_key(settings: Settings) -> str:
    """The OpenAI-compatible API key (a placeholder for local servers that need none)."""
    return settings.openai_api_key or os.environ.get("OPENAI_API_KEY") or NO_KEY


def brain_llm(settings: Settings) -> LLMClient:
    """The brain's own streaming client of the fast LLM (pooled per process and loop)."""
    from agent.clients.llm import llm_client

    return llm_client(llm_base_url(settings), api_key(settings))


def reasoning_kwargs(model: str) -> dict[str, Any]:
    """Request options that keep reasoning models fast enough for voice."""
    name = model.rsplit("/", 1)[-1]
    if name == "gpt-5" or name.startswith(("gpt-5-", "o3", "o4")):
        return {"reasoning_effort": "minimal"}
    return {}


def build_session_llm(settings: Settings) -> llm.LLM:
    """The LLM handed to AgentSession (the brain's llm_node makes its own calls)."""
    from livekit.plugins import openai as lk_openai

    return lk_openai.LLM(
        model=settings.llm_model,
        api_key=api_key(settings),
        base_url=llm_base_url(settings) or "https://api.openai.com/v1",
        max_retries=0,
    )


def build_stt(settings: Settings) -> stt.STT:
    """Deepgram, or any OpenAI-compatible transcription endpoint."""
    provider = settings.stt_provider.lower()
    if provider in LOCAL_STT_PROVIDERS:  # faster-whisper on this machine (local mode)
        from agent.local.providers import build_stt as build_local_stt

        return build_local_stt(settings)
    if provider == "deepgram":
        from livekit.plugins import deepgram

        kwargs: dict[str, Any] = {"api_key": settings.deepgram_api_key or NO_KEY}
        if settings.stt_model:
            kwargs["model"] = settings.stt_model
        if settings.stt_base_url:
            kwargs["base_url"] = settings.stt_base_url
        return deepgram.STT(**kwargs)
    if provider in ("openai", "openai-compatible", "local"):
        from livekit.plugins import openai as lk_openai

        kwargs = {"api_key": api_key(settings)}
        if settings.stt_model:
            kwargs["model"] = settings.stt_model
        base = settings.stt_base_url or settings.openai_base_url
        if base:
            kwargs["base_url"] = base
        return lk_openai.STT(**kwargs)
    raise ConfigError(f"STT_PROVIDER={settings.stt_provider!r} must be deepgram or openai")


def build_tts(settings: Settings) -> tts.TTS:
    """OpenAI (voice OPENAI_TTS_VOICE), Cartesia (optional extra) or OpenAI-compatible."""
    provider = settings.tts_provider.lower()
    if provider in LOCAL_TTS_PROVIDERS:  # piper or espeak-ng on this machine (local mode)
        from agent.local.providers import build_tts as build_local_tts

        return build_local_tts(settings)
    if provider in ("openai", "openai-compatible", "local"):
        from livekit.plugins import openai as lk_openai

        kwargs: dict[str, Any] = {"api_key": api_key(settings), "voice": settings.openai_tts_voice}
        if settings.tts_model:
            kwargs["model"] = settings.tts_model
        base = settings.tts_base_url or settings.openai_base_url
        if base:
            kwargs["base_url"] = base
        return lk_openai.TTS(**kwargs)
    if provider == "cartesia":
        try:
            from livekit.plugins import cartesia  # type: ignore[attr-defined]
        except ImportError as exc:
            raise ConfigError(
                "TTS_PROVIDER=cartesia needs the optional extra: pip install 'voicectl[cartesia]'"
            ) from exc
        kwargs = {"api_key": settings.cartesia_api_key or NO_KEY}
        if settings.tts_model:
            kwargs["model"] = settings.tts_model
        if settings.tts_base_url:
            kwargs["base_url"] = settings.tts_base_url
        return cartesia.TTS(**kwargs)
    raise ConfigError(f"TTS_PROVIDER={settings.tts_provider!r} must be openai or cartesia")


def load_vad() -> vad.VAD:
    """Silero VAD (the ONNX model ships inside the plugin: no download)."""
    from livekit.plugins import silero

    return silero.VAD.load()
