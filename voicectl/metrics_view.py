"""`voicectl metrics`: a summary of the agent's live Prometheus endpoint.

Fetches `/metrics` (stdlib HTTP), parses it with prometheus_client's parser (imported when
used: the CLI starts fast) and sums up turns, TTFT percentiles per mode (estimated from the
histogram buckets as Prometheus' histogram_quantile does), the latency breakdown, breaker
states, fallbacks, the memory-sync backlog and lag, usage and cost.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from voicectl.errors import UsageError, VoicectlError

if TYPE_CHECKING:
    from agent.config import Settings

FETCH_TIMEOUT = 5.0
QUANTILES = (0.5, 0.95)
STATE_NAMES = {0: "closed", 1: "half_open", 2: "open"}
#: Summary key -> (histogram of livekit-agents' per-turn figures, what it shows).
LATENCY = {
    "end_of_turn": ("livekit_eou_delay_ms", "end of turn"),
    "stt_delay": ("livekit_stt_duration_ms", "STT delay"),
    "llm_ttft": ("livekit_llm_duration_ms", "LLM node TTFT"),
    "tts_ttfb": ("livekit_tts_duration_ms", "TTS node TTFB"),
    "e2e": ("livekit_total_conversation_latency_ms", "end to end"),
}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def default_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.metrics_port}/metrics"


def normalize_url(url: str) -> str:
    """An http(s) URL of the metrics page (a bare host:port gets http:// and /metrics)."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url {url!r} is not an http URL")
    path = parts.path if parts.path not in ("", "/") else "/metrics"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> str:
    """The exposition text at `url`; VoicectlError (one line) when it cannot be had."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http(s) only
            return resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise VoicectlError(f"metrics: {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VoicectlError(
            f"metrics: cannot reach {url} ({reason}); is the agent running? (voicectl status)"
        ) from None


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition text."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        return [
            Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except ValueError as exc:
        raise VoicectlError(f"metrics: the page is not Prometheus text: {exc}") from None


# --------------------------------------------------------------------------- summarising


def _select(samples: Iterable[Sample], name: str) -> list[Sample]:
    return [s for s in samples if s.name == name]


def _total(samples: Iterable[Sample], name: str, **match: str) -> float:
    return sum(s.value for s in samples if s.name == name
               and all(s.labels.get(k) == v for k, v in match.items()))


def _by(samples: Iterable[Sample], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = defaultdict(float)
    for s in _select(samples, name):
        out[tuple(s.labels.get(k, "") for k in keys)] += s.value
    return dict(out)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # the highest finite bound, as Prometheus answers
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def histogram(samples: Iterable[Sample], name: str, group: str | None = None
              ) -> dict[str, dict[str, Any]]:
    """count, mean, p50, p95 of a histogram, summed over every label but `group`."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    for s in samples:
        key = s.labels.get(group, "") if group else ""
        if s.name == name + "_bucket":
            buckets[key][float(s.labels["le"])] += s.value
        elif s.name == name + "_sum":
            sums[key] += s.value
    out = {}
    for key, b in sorted(buckets.items()):
        count = b.get(math.inf, max(b.values(), default=0.0))
        if count <= 0:
            continue
        stats: dict[str, Any] = {"count": int(count), "mean": _round(sums[key] / count)}
        for q in QUANTILES:
            stats[f"p{round(q * 100)}"] = _round(quantile(q, b))
        out[key] = stats
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """The figures `voicectl metrics` shows, as one JSON-able document."""
    turns = _by(samples, "livekit_conversation_turns_total", "mode", "path", "fallback")
    by_mode_path: dict[tuple[str, str], dict[str, Any]] = {}
    for (mode, path, fallback), n in sorted(turns.items()):
        row = by_mode_path.setdefault((mode, path), {"mode": mode, "path": path, "count": 0,
                                                     "fallback": 0})
        row["count"] += int(n)
        if fallback == "true":
            row["fallback"] += int(n)
    circuits = {dep: STATE_NAMES.get(int(v), str(v)) for (dep,), v in
                sorted(_max_by(samples, "voicectl_circuit_state", "dependency").items())}
    fallbacks = [{"reason": r, "stage": st, "count": int(n)} for (r, st), n in
                 sorted(_by(samples, "voicectl_fallbacks_total", "reason", "stage").items())
                 if n > 0]
    sync = histogram(samples, "voicectl_memory_sync_duration_ms", "result")
    tokens = _by(samples, "livekit_llm_tokens_total", "type")
    cost = {svc: round(n, 6) for (svc,), n in
            sorted(_by(samples, "livekit_cost_usd_total", "service").items())}
    return {
        "turns": {
            "total": int(sum(turns.values())),
            "fallback": int(sum(n for k, n in turns.items() if k[2] == "true")),
            "by_mode_path": list(by_mode_path.values()),
        },
        "active_conversations": int(_total(samples, "livekit_active_conversations")),
        "ttft_ms": histogram(samples, "voicectl_ttft_ms", "mode"),
        "latency_ms": {key: stats for key, (name, _) in LATENCY.items()
                       if (stats := histogram(samples, name).get(""))},
        "circuits": circuits,
        "fallbacks": fallbacks,
        "memory_sync": {
            "backlog": int(_total(samples, "voicectl_memory_sync_backlog")),
            "lag_seconds": round(_total(samples, "voicectl_memory_sync_lag_seconds"), 1),
            "delivered": sync.get("ok", {}).get("count", 0),
            "failed": sync.get("failed", {}).get("count", 0),
        },
        "usage": {
            "llm_input_tokens": int(tokens.get(("input",), 0)),
            "llm_output_tokens": int(tokens.get(("output",), 0)),
            "stt_audio_seconds": round(_total(samples, "livekit_stt_audio_seconds_total"), 2),
            "tts_characters": int(_total(samples, "livekit_tts_characters_total")),
        },
        "cost_usd": {**cost, "total": round(sum(cost.values()), 6)},
        "jobs": {k[0]: int(v) for k, v in sorted(_by(samples, "voicectl_jobs_total",
                                                         "result").items())},
    }


def _max_by(samples: Iterable[Sample], name: str, *keys: str) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for s in _select(samples, name):
        key = tuple(s.labels.get(k, "") for k in keys)
        out[key] = max(out.get(key, s.value), s.value)
    return out


def metrics_summary(settings: Settings, url: str | None = None) -> dict[str, Any]:
    """The summary of the agent's live metrics, with the `url` it was read from.

    An unreachable or unreadable endpoint raises VoicectlError (the CLI prints one line and
    exits 1).
    """
    target = normalize_url(url) if url else default_url(settings)
    return {"url": target, **summarize(parse(fetch(target)))}


__all__ = ["LATENCY", "default_url", "fetch", "histogram", "metrics_summary", "normalize_url",
           "parse", "quantile", "summarize"]
