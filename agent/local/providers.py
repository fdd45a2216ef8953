"""The livekit STT and TTS plugins of local mode, built from the models `agent.local` finds.

`agent.providers` builds these when STT_PROVIDER / TTS_PROVIDER name a local provider; the
plugin modules (`agent.local.stt`, `agent.local.tts`) load numpy and livekit, so they are
imported when a plugin is built.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from agent.config import Settings
from agent.local import (
    LOCAL_EXTRA_HINT,
    LOCAL_STT_PROVIDERS,
    LOCAL_TTS_PROVIDERS,
    PIPER_EXTRA_HINT,
    piper_voice_files,
    require,
    threads,
    whisper_model_dir,
)

if TYPE_CHECKING:  # pragma: no cover
    from livekit.agents import stt, tts


def build_stt(settings: Settings) -> stt.STT:
    """faster-whisper STT (STT_PROVIDER=whisper)."""
    require("stt", LOCAL_EXTRA_HINT)
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
    require("tts", PIPER_EXTRA_HINT)
    from agent.local.tts import PiperTTS

    model, config = piper_voice_files(settings)
    return PiperTTS(model_path=model, config_path=config, threads=threads(settings))


def prewarm_models(settings: Settings) -> dict[str, float]:
    """Load the local STT and TTS models into this process (the worker's prewarm step).

    Blocking; the plugins built later reuse what is loaded here. Returns load times (ms).
    """
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


__all__ = ["build_stt", "build_tts", "prewarm_models"]
