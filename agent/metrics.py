"""Prometheus metrics of the voice agent, correct across the worker's job processes.

Where the figures come from:

- the event log: every `turn`, `fallback`, `circuit`, `memory_sync`, `job` and `startup`
  record any EventWriter of the process writes is shown to `observe_event` (`install()` adds
  it as an `agent.events` listener), so the brain and resilience code make no metrics calls;
- livekit-agents' per-turn figures: `ChatMessage.metrics` of `conversation_item_added`
  (llm_node_ttft, tts_node_ttfb, transcription_delay, end_of_turn_delay, e2e_latency) and the
  cumulative usage of `session_usage_updated` (tokens, TTS characters, STT audio seconds),
  through `attach_session_metrics(session)`; never the deprecated `metrics_collected`;
- the main process: `start_main_process()` samples the memory outbox (backlog, lag) and drops
  the live gauges of job processes that died without saying so.

Serving: livekit-agents' AgentServer serves `/metrics` itself (`prometheus_port`), collecting
every process's files from `PROMETHEUS_MULTIPROC_DIR` (prometheus-client multiprocess mode).
`prepare_multiprocess()` sets that directory up; the AgentServer empties it when it starts.
prometheus_client is imported lazily here, so that call can come first.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from prometheus_client import CollectorRegistry

    from agent.config import Settings

log = logging.getLogger("agent.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The breakers of agent.brain.runtime (DEPENDENCIES there): their state series exist from
#: the start.
DEPENDENCIES = ("llm", "letta", "preresponse")
#: voicectl_circuit_state values.
CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
#: Milliseconds: from a local stub's few ms to a slow cloud turn.
MS_BUCKETS = (5, 10, 25, 50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000,
              10000, 20000)
SAMPLE_SECONDS = 5.0

#: ChatMessage.metrics key (seconds) -> histogram attribute of AgentMetrics.
USER_FIGURES = {"transcription_delay": "stt", "end_of_turn_delay": "eou"}
ASSISTANT_FIGURES = {"llm_node_ttft": "llm", "tts_node_ttfb": "tts", "e2e_latency": "e2e"}


# --------------------------------------------------------------------------- multiprocess mode


def metrics_dir(settings: Settings) -> Path:
    """Where the worker's processes keep their metric files."""
    return settings.paths.metrics


def prepare_multiprocess(settings: Settings) -> Path:
    """Turn on prometheus-client's multiprocess mode for this process and the ones it starts.

    Sets PROMETHEUS_MULTIPROC_DIR (an inherited value wins: job processes keep their
    parent's) and creates the directory. Values are file-backed only if the variable is set
    when a value is created; if prometheus_client was imported already (livekit.agents imports
    it) its value class is switched here, so call this before any metric records anything.
    Never empties the directory: AgentServer does that when it starts (main process only).
    """
    path = Path(os.environ.get(MULTIPROC_ENV) or metrics_dir(settings))
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None and values.ValueClass is values.MutexValue:
        values.ValueClass = values.get_value_class()
        if _metrics is not None:
            log.warning("metrics were created before multiprocess mode: they stay in memory")
    return path


def multiprocess_enabled() -> bool:
    return MULTIPROC_ENV in os.environ


_FILE_PID = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def sweep_dead_processes(path: Path | str | None = None) -> list[int]:
    """Drop the live gauges (active conversations, breaker state) of processes that are gone.

    Without this a job process that crashed mid-session would count as active forever.
    Returns the pids swept.
    """
    from prometheus_client import multiprocess

    folder = Path(path or os.environ.get(MULTIPROC_ENV) or "")
    if not folder.is_dir():
        return []
    dead: set[int] = set()
    for entry in os.listdir(folder):
        match = _FILE_PID.match(entry)
        if match and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(folder))
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- the metric set


@dataclass(frozen=True)
class Prices:
    """USD prices of the cost counters (from config)."""

    llm_input_per_mtok: float = 0.0
    llm_output_per_mtok: float = 0.0
    stt_per_minute: float = 0.0
    tts_per_mchar: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Prices:
        return cls(
            llm_input_per_mtok=settings.price_llm_input_per_mtok,
            llm_output_per_mtok=settings.price_llm_output_per_mtok,
            stt_per_minute=settings.price_stt_per_minute,
            tts_per_mchar=settings.price_tts_per_mchar,
        )


class AgentMetrics:
    """The agent's metric families, registered in one registry (default: the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        reg = REGISTRY if registry is None else registry

        def hist(name: str, doc: str, labels: Iterable[str] = ()) -> Histogram:
            return Histogram(name, doc, list(labels), buckets=MS_BUCKETS, registry=reg)

        # livekit-agents per-turn figures (the seed's names)
        self.llm = hist("livekit_llm_duration_ms", "LLM node time to first token (llm_node_ttft)")
        self.tts = hist("livekit_tts_duration_ms", "TTS node time to first audio (tts_node_ttfb)")
        self.stt = hist("livekit_stt_duration_ms",
                        "Final transcript after end of speech (transcription_delay)")
        self.eou = hist("livekit_eou_delay_ms", "End of speech to end of turn (end_of_turn_delay)")
        self.e2e = hist("livekit_total_conversation_latency_ms",
                        "User stopped speaking to agent started speaking (e2e_latency)")
        self.tokens = Counter("livekit_llm_tokens", "LLM tokens", ["model", "type"], registry=reg)
        self.stt_seconds = Counter("livekit_stt_audio_seconds", "Seconds of audio transcribed",
                                   ["model"], registry=reg)
        self.tts_chars = Counter("livekit_tts_characters", "Characters synthesized", ["model"],
                                 registry=reg)
        self.cost = Counter("livekit_cost_usd", "Cost at the configured prices (USD)",
                            ["service"], registry=reg)
        self.turns = Counter("livekit_conversation_turns", "Agent replies",
                             ["mode", "path", "fallback"], registry=reg)
        self.active = Gauge("livekit_active_conversations", "Sessions running now",
                            registry=reg, multiprocess_mode="livesum")
        # the brain and its resilience, from the event log
        self.ttft = hist("voicectl_ttft_ms", "Time to first text of a reply", ["mode", "path"])
        self.turn_ms = hist("voicectl_turn_duration_ms", "Whole reply time", ["mode", "path"])
        self.fallbacks = Counter("voicectl_fallbacks", "Fallbacks (stage: path, reply, midstream)",
                                 ["reason", "stage"], registry=reg)
        self.circuit = Gauge("voicectl_circuit_state",
                             "Circuit breaker state: 0 closed, 1 half-open, 2 open (worst process)",
                             ["dependency"], registry=reg, multiprocess_mode="livemax")
        self.transitions = Counter("voicectl_circuit_transitions", "Circuit state changes",
                                   ["dependency", "to"], registry=reg)
        self.sync_ms = hist("voicectl_memory_sync_duration_ms",
                            "Delivery attempts of queued turns to Letta", ["result"])
        self.backlog = Gauge("voicectl_memory_sync_backlog", "Turns waiting for Letta",
                             registry=reg, multiprocess_mode="mostrecent")
        self.lag = Gauge("voicectl_memory_sync_lag_seconds",
                         "Age of the oldest turn waiting for Letta (0: none waiting)",
                         registry=reg, multiprocess_mode="mostrecent")
        self.jobs = Counter("voicectl_jobs", "Job requests (accepted or rejected)", ["result"],
                            registry=reg)
        self.startup_failures = Counter("voicectl_startup_failures", "Job starts that failed",
                                        ["stage"], registry=reg)
        for dep in DEPENDENCIES:
            self.circuit.labels(dependency=dep).set(0)
        self.prices = Prices()
        self.default_model = "unknown"

    def configure(self, prices: Prices, default_model: str) -> None:
        """Prices of the cost counters; the model of turns whose event names none."""
        self.prices = prices
        self.default_model = default_model or "unknown"

    # -- cost

    def add_llm_tokens(self, model: str, input_tokens: float, output_tokens: float) -> None:
        model = model or "unknown"
        if input_tokens > 0:
            self.tokens.labels(model=model, type="input").inc(input_tokens)
        if output_tokens > 0:
            self.tokens.labels(model=model, type="output").inc(output_tokens)
        cost = (input_tokens * self.prices.llm_input_per_mtok
                + output_tokens * self.prices.llm_output_per_mtok) / 1e6
        if cost > 0:
            self.cost.labels(service="llm").inc(cost)

    def add_stt_seconds(self, model: str, seconds: float) -> None:
        if seconds <= 0:
            return
        self.stt_seconds.labels(model=model or "unknown").inc(seconds)
        if (cost := seconds / 60 * self.prices.stt_per_minute) > 0:
            self.cost.labels(service="stt").inc(cost)

    def add_tts_chars(self, model: str, chars: float) -> None:
        if chars <= 0:
            return
        self.tts_chars.labels(model=model or "unknown").inc(chars)
        if (cost := chars / 1e6 * self.prices.tts_per_mchar) > 0:
            self.cost.labels(service="tts").inc(cost)

    # -- events

    def observe_event(self, record: dict[str, Any]) -> None:
        """Update the metrics from one event-log record."""
        handler = _HANDLERS.get(str(record.get("event")))
        if handler is not None:
            handler(self, record)

    def _turn(self, r: dict[str, Any]) -> None:
        mode, path = str(r.get("mode") or "unknown"), str(r.get("path") or "unknown")
        fallback = "true" if r.get("fallback") else "false"
        self.turns.labels(mode=mode, path=path, fallback=fallback).inc()
        if _number(r.get("ttft_ms")):
            self.ttft.labels(mode=mode, path=path).observe(r["ttft_ms"])
        if _number(r.get("total_ms")):
            self.turn_ms.labels(mode=mode, path=path).observe(r["total_ms"])
        tokens_in, tokens_out = r.get("prompt_tokens"), r.get("completion_tokens")
        if _number(tokens_in) or _number(tokens_out):
            self.add_llm_tokens(str(r.get("model") or self.default_model),
                                tokens_in if _number(tokens_in) else 0,
                                tokens_out if _number(tokens_out) else 0)

    def _fallback(self, r: dict[str, Any]) -> None:
        stage = r.get("stage") or ("path" if r.get("from_path") else "reply")
        self.fallbacks.labels(reason=str(r.get("reason")), stage=str(stage)).inc()

    def _circuit(self, r: dict[str, Any]) -> None:
        dep, to = str(r.get("dependency")), str(r.get("to"))
        self.transitions.labels(dependency=dep, to=to).inc()
        if to in CIRCUIT_STATES:
            self.circuit.labels(dependency=dep).set(CIRCUIT_STATES[to])

    def _memory_sync(self, r: dict[str, Any]) -> None:
        if _number(r.get("ms")):
            self.sync_ms.labels(result="ok" if r.get("ok") else "failed").observe(r["ms"])
        if _number(r.get("pending")):
            self.backlog.set(r["pending"])
            if r["pending"] == 0:
                self.lag.set(0)

    def _job(self, r: dict[str, Any]) -> None:
        self.jobs.labels(result="accepted" if r.get("accepted") else "rejected").inc()

    def _startup(self, r: dict[str, Any]) -> None:
        if r.get("phase") == "failed":
            self.startup_failures.labels(stage=str(r.get("stage") or "unknown")).inc()


_HANDLERS: dict[str, Callable[[AgentMetrics, dict[str, Any]], None]] = {
    "turn": AgentMetrics._turn,
    "fallback": AgentMetrics._fallback,
    "circuit": AgentMetrics._circuit,
    "memory_sync": AgentMetrics._memory_sync,
    "job": AgentMetrics._job,
    "startup": AgentMetrics._startup,
}


def _number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


_metrics: AgentMetrics | None = None
_lock = threading.Lock()
#: What configure() was given before the metric set existed.
_config: dict[str, Any] = {}


def get_metrics() -> AgentMetrics:
    """This process's metric set, created on first use (in the global registry)."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                m = AgentMetrics()
                if _config:
                    m.configure(_config["prices"], _config["model"])
                _metrics = m
    return _metrics


def configure(settings: Settings) -> None:
    """Prices and model name from config, for the metric set now or when it is created."""
    _config.update(prices=Prices.from_settings(settings), model=settings.llm_model)
    if _metrics is not None:
        _metrics.configure(_config["prices"], _config["model"])


def metric_names(registry: CollectorRegistry | None = None) -> set[str]:
    """Every sample name the agent's metric set exposes (e.g. `voicectl_ttft_ms_bucket`)."""
    from prometheus_client import CollectorRegistry

    reg = registry or CollectorRegistry()
    if registry is None:
        AgentMetrics(reg)
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",),
                "gauge": ("",)}
    names: set[str] = set()
    for family in reg.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


# --------------------------------------------------------------------------- event listener


def observe_event(record: dict[str, Any]) -> None:
    """The event-log listener: the metric set is created by the first event it needs."""
    if str(record.get("event")) in _HANDLERS:
        get_metrics().observe_event(record)


def install(settings: Settings | None = None) -> None:
    """Feed every event this process writes to the metrics (idempotent).

    Cheap at import time: no metric exists until the first event that needs one (the main
    process must not write metric files before AgentServer empties the directory).
    """
    from agent import events

    if settings is not None:
        configure(settings)
    events.add_listener(observe_event)


def uninstall() -> None:
    from agent import events

    events.remove_listener(observe_event)


# --------------------------------------------------------------------------- session hook


class SessionMetrics:
    """livekit-agents' per-turn figures and usage of one AgentSession."""

    def __init__(self, session: Any, metrics: AgentMetrics) -> None:
        self.session = session
        self.metrics = metrics
        self._usage: dict[tuple[str, str, str], dict[str, float]] = {}
        self._closed = False
        metrics.active.inc()
        session.on("conversation_item_added", self.on_item_added)
        session.on("session_usage_updated", self.on_usage_updated)
        session.on("close", self.on_close)

    def on_item_added(self, ev: Any) -> None:
        item = getattr(ev, "item", None)
        figures = getattr(item, "metrics", None)
        if not figures:
            return
        role = getattr(item, "role", None)
        keys = USER_FIGURES if role == "user" else ASSISTANT_FIGURES if role == "assistant" else {}
        for key, attr in keys.items():
            value = figures.get(key)
            if _number(value) and value >= 0:
                getattr(self.metrics, attr).observe(value * 1000.0)

    def on_usage_updated(self, ev: Any) -> None:
        """Counters move by what grew since the last update (usage is cumulative)."""
        for usage in getattr(getattr(ev, "usage", None), "model_usage", None) or ():
            kind = getattr(usage, "type", "")
            model = getattr(usage, "model", "") or getattr(usage, "provider", "")
            key = (kind, getattr(usage, "provider", ""), model)
            if kind == "llm_usage":
                d = self._delta(key, usage, ("input_tokens", "output_tokens"))
                self.metrics.add_llm_tokens(model, d["input_tokens"], d["output_tokens"])
            elif kind == "stt_usage":
                d = self._delta(key, usage, ("audio_duration",))
                self.metrics.add_stt_seconds(model, d["audio_duration"])
            elif kind == "tts_usage":
                d = self._delta(key, usage, ("characters_count",))
                self.metrics.add_tts_chars(model, d["characters_count"])

    def _delta(self, key: tuple[str, str, str], usage: Any, fields: tuple[str, ...]
               ) -> dict[str, float]:
        last = self._usage.setdefault(key, {})
        out = {}
        for name in fields:
            now = float(getattr(usage, name, 0) or 0)
            out[name] = max(0.0, now - last.get(name, 0.0))
            last[name] = max(now, last.get(name, 0.0))
        return out

    def on_close(self, _ev: Any = None) -> None:
        self.close()

    def close(self) -> None:
        """The session is over: it stops counting as active (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.metrics.active.dec()
        for event, fn in (("conversation_item_added", self.on_item_added),
                          ("session_usage_updated", self.on_usage_updated),
                          ("close", self.on_close)):
            with contextlib.suppress(Exception):
                self.session.off(event, fn)


def attach_session_metrics(session: Any, settings: Settings | None = None) -> SessionMetrics:
    """Count an AgentSession as active until it closes, and record its per-turn figures
    and usage. Call once per session, right after creating it."""
    if settings is not None:
        configure(settings)
    return SessionMetrics(session, get_metrics())


# --------------------------------------------------------------------------- main process


def sample_outbox(outbox: Any, metrics: AgentMetrics | None = None) -> tuple[int, float]:
    """Set backlog and lag from the memory outbox (an agent.memory_sync.Outbox)."""
    m = metrics or get_metrics()
    pending = outbox.pending_count()
    oldest = outbox.oldest_pending() if pending else None
    lag = max(0.0, time.time() - oldest.created) if oldest is not None else 0.0
    m.backlog.set(pending)
    m.lag.set(lag)
    return pending, lag


class MainProcessMetrics:
    """A daemon thread of the worker's main process: outbox backlog and lag, dead-process
    sweep, every `interval` seconds."""

    def __init__(self, settings: Settings, interval: float = SAMPLE_SECONDS) -> None:
        self.settings = settings
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._outbox: Any = None

    def start(self) -> MainProcessMetrics:
        get_metrics()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._outbox is not None:
            with contextlib.suppress(Exception):
                self._outbox.close()

    def tick(self) -> None:
        try:
            if self._outbox is None:
                from agent.memory.outbox import Outbox

                self._outbox = Outbox(self.settings.paths.outbox)
            sample_outbox(self._outbox)
        except Exception:  # noqa: BLE001 - metrics must not take the worker down
            log.debug("outbox sample failed", exc_info=True)
        if multiprocess_enabled():
            try:
                sweep_dead_processes()
            except Exception:  # noqa: BLE001
                log.debug("dead-process sweep failed", exc_info=True)

    def _run(self) -> None:
        while True:
            self.tick()
            if self._stop.wait(self.interval):
                return


_main_process: MainProcessMetrics | None = None


def start_main_process(settings: Settings, interval: float = SAMPLE_SECONDS
                       ) -> MainProcessMetrics:
    """Start the main process's sampler once (later calls return the running one)."""
    global _main_process
    if _main_process is None:
        _main_process = MainProcessMetrics(settings, interval).start()
    return _main_process


__all__ = [
    "AgentMetrics",
    "MainProcessMetrics",
    "Prices",
    "SessionMetrics",
    "attach_session_metrics",
    "configure",
    "get_metrics",
    "install",
    "metric_names",
    "metrics_dir",
    "observe_event",
    "prepare_multiprocess",
    "sample_outbox",
    "start_main_process",
    "sweep_dead_processes",
    "uninstall",
]
