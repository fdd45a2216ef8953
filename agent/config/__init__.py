"""Settings for voicectl and the agent: the one place configuration names and defaults live.

Each field's metadata names its environment variable; `secret` fields are masked whenever
they are shown. The fields are grouped by who reads them (see the comments in `Settings`);
their order is the order of `voicectl config`. Where the values come from (environment,
`.env`, defaults) is `agent.config.loading`; what local mode changes, `agent.config.local_mode`.
This package must stay cheap to import (standard library only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.state_paths import StatePaths

#: Hosts that mean "this machine" (a Letta URL on one of them is managed by default)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"}
#: LIVEKIT_SERVER values
LIVEKIT_SERVER_MODES = ("auto", "binary", "embedded")
#: TURN_DETECTION values: livekit-agents' own choice, or a fixed mode it takes
TURN_DETECTION_MODES = ("auto", "vad", "stt")
#: livekit-server offers no job to a worker reporting a load at or above this (its target load)
SERVER_TARGET_LOAD = 0.7


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line for the user."""


def _f(env: str, default: object, help: str, *, secret: bool = False, note: str = "") -> object:
    return field(default=default,
                 metadata={"env": env, "secret": secret, "help": help, "note": note})


@dataclass(frozen=True)
class Settings:
    """Effective configuration. Attribute names are the lower-case environment names.

    Groups say who reads them: "both" for settings the control plane (voicectl) and the agent
    share, "agent" and "control plane" for one side's own. Within a group, a "control plane
    only" comment marks the settings that only say how voicectl runs the services.
    """

    # ---- LiveKit (both: where the server is and its keys)
    livekit_url: str = _f("LIVEKIT_URL", "ws://127.0.0.1:7880", "LiveKit server URL")
    livekit_api_key: str = _f("LIVEKIT_API_KEY", "devkey", "LiveKit API key", secret=True)
    livekit_api_secret: str = _f(
        "LIVEKIT_API_SECRET", "secret", "LiveKit API secret", secret=True
    )
    # control plane only: how voicectl runs and installs livekit-server
    livekit_server_bin: str = _f(
        "LIVEKIT_SERVER_BIN", "livekit-server", "livekit-server binary (path or name on PATH)"
    )
    livekit_release_url: str = _f(
        "VOICECTL_LIVEKIT_RELEASE_URL", "",
        "where install livekit downloads from (default: LiveKit's GitHub release)"
    )
    livekit_server: str = _f(
        "LIVEKIT_SERVER", "auto", "auto | binary | embedded: the livekit-server binary when "
        "found (auto), always (binary), or voicectl's embedded dev server"
    )
    # ---- Letta (both: the server and the agent the voice agent talks to, how new agents are made)
    # control plane only: whether voicectl runs Letta itself
    letta_mode: str = _f(
        "LETTA_MODE", "", "managed | external (default: managed for a loopback URL)"
    )
    # both
    letta_server_url: str = _f("LETTA_SERVER_URL", "http://127.0.0.1:8283", "Letta server URL")
    letta_api_key: str = _f("LETTA_API_KEY", "", "Letta API key (Letta Cloud)", secret=True)
    letta_agent_id: str = _f("LETTA_AGENT_ID", "", "Letta agent id used by the voice agent")
    letta_agent_name: str = _f(
        "LETTA_AGENT_NAME", "voice-assistant", "Letta agent name, used when no id is set"
    )
    # control plane only: the managed Letta's Postgres and virtual environment
    letta_pg_port: int = _f("LETTA_PG_PORT", 8284, "port of the managed Postgres")
    letta_venv: str = _f(
        "LETTA_VENV", "", "virtual environment of the managed Letta (default <state>/letta/venv)"
    )
    # both: the models of new Letta agents (voicectl letta and the agent create them)
    letta_llm_model: str = _f("LETTA_LLM_MODEL", "gpt-5-mini", "model of new Letta agents")
    letta_embedding_model: str = _f(
        "LETTA_EMBEDDING_MODEL", "text-embedding-3-small", "embedding model of new Letta agents"
    )
    letta_embedding_dim: int = _f("LETTA_EMBEDDING_DIM", 1536, "embedding dimension")
    # ---- Model providers (agent; voicectl's doctor checks the keys)
    openai_api_key: str = _f("OPENAI_API_KEY", "", "OpenAI (or compatible) API key", secret=True)
    openai_base_url: str = _f("OPENAI_BASE_URL", "", "OpenAI-compatible base URL")
    llm_model: str = _f("LLM_MODEL", "gpt-5-mini", "fast model of the hybrid path")
    llm_base_url: str = _f("LLM_BASE_URL", "", "base URL of the fast LLM (default OPENAI_BASE_URL)")
    preresponse_model: str = _f("PRERESPONSE_MODEL", "gpt-4o-mini", "model of the filler reply")
    fast_preresponse: bool = _f("FAST_PRERESPONSE", False, "speak a short filler first")
    preresponse_timeout_seconds: float = _f(
        "PRERESPONSE_TIMEOUT_SECONDS", 2.0, "longest wait for the filler reply"
    )
    deepgram_api_key: str = _f("DEEPGRAM_API_KEY", "", "Deepgram API key", secret=True)
    stt_provider: str = _f("STT_PROVIDER", "deepgram", "deepgram | openai")
    stt_model: str = _f("STT_MODEL", "", "STT model (provider default when empty)")
    stt_base_url: str = _f("STT_BASE_URL", "", "base URL of an OpenAI-compatible STT")
    tts_provider: str = _f("TTS_PROVIDER", "openai", "openai | cartesia")
    tts_model: str = _f("TTS_MODEL", "", "TTS model (provider default when empty)")
    tts_base_url: str = _f("TTS_BASE_URL", "", "base URL of an OpenAI-compatible TTS")
    openai_tts_voice: str = _f("OPENAI_TTS_VOICE", "nova", "voice of the OpenAI TTS")
    cartesia_api_key: str = _f("CARTESIA_API_KEY", "", "Cartesia API key", secret=True)
    # ---- Local mode: every model on this machine, no cloud keys (agent/local/; the control
    # plane runs the llm and embeddings services from the GGUF and port settings)
    local_mode: bool = _f(
        "LOCAL_MODE", False, "local whisper STT, piper TTS, LLM and embeddings services"
    )
    local_stt_model: str = _f(
        "LOCAL_STT_MODEL", "", "faster-whisper model directory (default: bundled tiny.en)"
    )
    local_stt_window_seconds: float = _f(
        "LOCAL_STT_WINDOW_SECONDS", 10.0, "whisper window for short utterances (30: standard)"
    )
    local_tts_voice: str = _f(
        "LOCAL_TTS_VOICE", "", "piper voice .onnx file (default: bundled en_US-joe-medium)"
    )
    local_llm_gguf: str = _f(
        "LOCAL_LLM_GGUF", "", "GGUF file the llm service serves (default: bundled gemma-3-270m)"
    )
    local_llm_port: int = _f("LOCAL_LLM_PORT", 8090, "port of the managed local LLM server")
    local_llm_ctx: int = _f("LOCAL_LLM_CTX", 2048, "context length of the local LLM")
    local_llm_max_tokens: int = _f("LOCAL_LLM_MAX_TOKENS", 96, "longest local reply, in tokens")
    local_llm_chat_template: str = _f(
        "LOCAL_LLM_CHAT_TEMPLATE", "auto", "auto | transcript | model | a llama.cpp template name"
    )
    local_embeddings_port: int = _f(
        "LOCAL_EMBEDDINGS_PORT", 8091, "port of the local embeddings server (Letta)"
    )
    local_threads: int = _f("LOCAL_THREADS", 0, "CPU threads per local model (0: all cores)")
    ollama_url: str = _f("OLLAMA_URL", "", "Ollama server for the LLM instead of the llm service")
    # ---- Agent (the worker; the control plane reads its name and health port)
    agent_name: str = _f("AGENT_NAME", "letta-voice-agent", "agent name for explicit dispatch")
    agent_http_port: int = _f("AGENT_HTTP_PORT", 8081, "worker health server port")
    agent_load_threshold: float = _f(
        "AGENT_LOAD_THRESHOLD", 0.7,
        "worker CPU load (0-1] at which the worker reports itself full and declines jobs",
        note="The worker reports its CPU load to LiveKit every 2.5 s. livekit-server offers no "
        "job to a worker at load 0.7 or more, whatever this setting says, so a higher value "
        "only hides the problem: the worker calls itself available while it receives nothing. "
        "The load is the whole machine's CPU (cgroup where one applies): when it stays "
        "high, give the worker more CPU or run it on another machine.",
    )
    turn_detection: str = _f(
        "TURN_DETECTION", "auto",
        "auto | vad | stt: how the agent decides the caller finished a turn",
        note="auto lets livekit-agents choose: with its on-device end-of-turn model installed "
        "(livekit-local-inference, a dependency) it waits 0.3 s after the end of speech when "
        "the words sound finished and up to 2.5 s when they do not; measured here, a plain "
        "question was often judged unfinished (2.1 s more than vad, "
        "tests/benchmarks/bench_room_latency.py). vad ends the turn on the end of speech "
        "(0.5 s later), never waiting on the words: faster, and it cuts in on a caller who "
        "pauses mid-sentence. stt ends it on the STT's endpointing.",
    )
    endpointing_min_delay: str = _f(
        "ENDPOINTING_MIN_DELAY_SECONDS", "",
        "wait after the end of speech before a turn may end (empty: livekit's own)",
        note="livekit-agents' own: 0.5 s, 0.3 s with its end-of-turn model. Each 0.1 s here is "
        "0.1 s more silence before every reply; 0 answers as soon as the VAD has heard the "
        "end of speech and the transcript is in, and cuts in on a caller who pauses.",
    )
    endpointing_max_delay: str = _f(
        "ENDPOINTING_MAX_DELAY_SECONDS", "",
        "longest wait when the end-of-turn model hears an unfinished turn (empty: livekit's)",
        note="livekit-agents' own: 3.0 s, 2.5 s with its end-of-turn model (TURN_DETECTION=auto).",
    )
    use_hybrid_streaming: bool = _f(
        "USE_HYBRID_STREAMING", True, "stream replies from the LLM, sync Letta in background"
    )
    voice_idle_timeout_seconds: float = _f(
        "VOICE_IDLE_TIMEOUT_SECONDS", 300.0, "end a silent session after this long"
    )
    # ---- Reliability (agent: retries, circuits, memory sync, the prompt)
    circuit_failure_threshold: int = _f(
        "CIRCUIT_FAILURE_THRESHOLD", 3, "consecutive failures that open a circuit"
    )
    circuit_reset_seconds: float = _f(
        "CIRCUIT_RESET_SECONDS", 30.0, "time an open circuit waits before one trial"
    )
    retry_attempts: int = _f("RETRY_ATTEMPTS", 2, "retries after a failed attempt")
    retry_base_delay_seconds: float = _f(
        "RETRY_BASE_DELAY_SECONDS", 2.0, "first retry delay; doubles each retry"
    )
    request_timeout_seconds: float = _f("REQUEST_TIMEOUT_SECONDS", 10.0, "timeout per attempt")
    turn_deadline_seconds: float = _f(
        "TURN_DEADLINE_SECONDS", 20.0, "no retry starts past this point of a turn"
    )
    retry_jitter: float = _f("RETRY_JITTER", 0.2, "± fraction of random jitter on retry delays")
    health_probe_interval_seconds: float = _f(
        "HEALTH_PROBE_INTERVAL_SECONDS", 5.0, "background health probe period per dependency"
    )
    memory_refresh_seconds: float = _f(
        "MEMORY_REFRESH_SECONDS", 30.0, "refresh period of the cached Letta core memory"
    )
    memory_sync_base_delay_seconds: float = _f(
        "MEMORY_SYNC_BASE_DELAY_SECONDS", 1.0, "first retry delay of the memory outbox"
    )
    memory_sync_max_delay_seconds: float = _f(
        "MEMORY_SYNC_MAX_DELAY_SECONDS", 30.0, "longest retry delay of the memory outbox"
    )
    memory_sync_timeout_seconds: float = _f(
        "MEMORY_SYNC_TIMEOUT_SECONDS", 60.0, "timeout of one turn delivery to Letta (it thinks)"
    )
    hybrid_history_messages: int = _f(
        "HYBRID_HISTORY_MESSAGES", 20, "recent conversation messages in the hybrid prompt"
    )
    agent_instructions: str = _f(
        "AGENT_INSTRUCTIONS", "", "system prompt of the voice agent (built-in default when empty)"
    )
    # ---- Observability (agent: its Prometheus port, which the control plane shows)
    metrics_port: int = _f("METRICS_PORT", 9100, "agent Prometheus port")
    # agent: prices for the cost counters (USD; list prices of the default models: set your own)
    price_llm_input_per_mtok: float = _f(
        "PRICE_LLM_INPUT_PER_MTOK", 0.25, "LLM price per million input tokens (USD)"
    )
    price_llm_output_per_mtok: float = _f(
        "PRICE_LLM_OUTPUT_PER_MTOK", 2.0, "LLM price per million output tokens (USD)"
    )
    price_stt_per_minute: float = _f(
        "PRICE_STT_PER_MINUTE", 0.0077, "STT price per minute of audio (USD)"
    )
    price_tts_per_mchar: float = _f(
        "PRICE_TTS_PER_MCHAR", 15.0, "TTS price per million characters (USD)"
    )
    # ---- Control plane only: web console, state directory, command overrides, restart/stop
    web_port: int = _f("WEB_PORT", 9000, "web console port")
    web_host: str = _f("WEB_HOST", "127.0.0.1", "web console bind address")
    voicectl_home: str = _f("VOICECTL_HOME", "", "state directory (default .voicectl/)")
    voicectl_livekit_cmd: str = _f("VOICECTL_LIVEKIT_CMD", "", "replaces the LiveKit command")
    voicectl_postgres_cmd: str = _f("VOICECTL_POSTGRES_CMD", "", "replaces the Postgres command")
    voicectl_letta_cmd: str = _f("VOICECTL_LETTA_CMD", "", "replaces the Letta server command")
    voicectl_agent_cmd: str = _f("VOICECTL_AGENT_CMD", "", "replaces the agent worker command")
    voicectl_web_cmd: str = _f("VOICECTL_WEB_CMD", "", "replaces the web console command")
    voicectl_llm_cmd: str = _f("VOICECTL_LLM_CMD", "", "replaces the local LLM server command")
    voicectl_embeddings_cmd: str = _f(
        "VOICECTL_EMBEDDINGS_CMD", "", "replaces the local embeddings server command"
    )
    restart_backoff_seconds: float = _f(
        "VOICECTL_RESTART_BACKOFF_SECONDS", 1.0, "first delay before restarting a crashed service"
    )
    restart_max_fast_crashes: int = _f(
        "VOICECTL_MAX_FAST_CRASHES", 5, "fast crashes in a row after which restarts stop"
    )
    restart_fast_crash_seconds: float = _f(
        "VOICECTL_FAST_CRASH_SECONDS", 10.0, "a crash this soon after start counts as fast"
    )
    stop_grace_seconds: float = _f(
        "VOICECTL_STOP_GRACE_SECONDS", 10.0, "time between SIGTERM and SIGKILL on stop"
    )

    # ---- Not settings: where each value came from, and the project they belong to
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    env_file: Path | None = field(default=None, compare=False, repr=False)
    project_dir: Path = field(default=Path("."), compare=False, repr=False)

    @property
    def home(self) -> Path:
        """The state directory (absolute)."""
        if self.voicectl_home:
            return Path(self.voicectl_home).expanduser().resolve()
        return (self.project_dir / ".voicectl").resolve()

    @property
    def paths(self) -> StatePaths:
        """Where each piece of state lives below `home`."""
        return StatePaths(self.home)

    @property
    def events_path(self) -> Path:
        return self.paths.events

    @property
    def livekit_port(self) -> int:
        return urlsplit(self.livekit_url).port or 7880

    @property
    def livekit_http_url(self) -> str:
        parts = urlsplit(self.livekit_url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}"

    @property
    def letta_port(self) -> int:
        return urlsplit(self.letta_server_url).port or 8283

    @property
    def letta_managed(self) -> bool:
        """Whether voicectl runs Letta itself (an explicit mode wins, else loopback URL)."""
        if self.letta_mode:
            return self.letta_mode == "managed"
        return (urlsplit(self.letta_server_url).hostname or "") in LOOPBACK_HOSTS

    def endpointing_delays(self) -> dict[str, float]:
        """livekit-agents' `endpointing` options from the two settings (empty: its own)."""
        out: dict[str, float] = {}
        for key, attr in (("min_delay", "endpointing_min_delay"),
                          ("max_delay", "endpointing_max_delay")):
            raw = getattr(self, attr).strip()
            if not raw:
                continue
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not value >= 0:
                raise ConfigError(f"{env_name(attr)}={raw!r} is not a number of seconds >= 0")
            out[key] = value
        return out

    def env_for_children(self) -> dict[str, str]:
        """The effective values as environment variables, for processes we start."""
        out = {}
        for f in config_fields():
            value = getattr(self, f.name)
            out[f.metadata["env"]] = _render(value)
        out["VOICECTL_HOME"] = str(self.home)
        return out


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def config_fields() -> list[dataclasses.Field]:
    """The configurable fields, in declaration order."""
    return [f for f in dataclasses.fields(Settings) if "env" in f.metadata]


def env_name(attr: str) -> str:
    """Environment variable name of a settings attribute."""
    return Settings.__dataclass_fields__[attr].metadata["env"]


def mask(value: str) -> str:
    """Show a secret without revealing it: length class and last two characters at most."""
    if not value:
        return ""
    if len(value) <= 8:
        return "*" * len(value)
    return f"{value[:2]}…{value[-2:]} ({len(value)} chars)"
