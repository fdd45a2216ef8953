"""Metrics without a server: `voicectl metrics`' quantile arithmetic, and the Grafana
dashboard naming only metrics the agent and livekit-agents define (the live figures:
tests/test_metrics.py)."""

from __future__ import annotations

import json
import math
import re

import pytest

from agent import metrics
from tests.support.project import REPO
from voicectl.metrics_view import quantile

DASHBOARD = REPO / "dashboards" / "voicectl-grafana.json"


def test_quantile_interpolates_like_histogram_quantile() -> None:
    buckets = {10.0: 2.0, 20.0: 6.0, 50.0: 10.0, math.inf: 10.0}
    assert quantile(0.5, buckets) == pytest.approx(17.5)  # rank 5: 3/4 of 10..20
    assert quantile(0.95, buckets) == pytest.approx(46.25)
    assert quantile(0.5, {10.0: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {10.0: 1.0, math.inf: 5.0}) == 10.0  # +Inf: the highest finite bound


def test_dashboard_references_only_metrics_the_agent_exposes() -> None:
    import livekit.agents.telemetry.metrics  # noqa: F401 - registers livekit's families
    from prometheus_client import REGISTRY

    from agent.brain.runtime import DEPENDENCIES

    dash = json.loads(DASHBOARD.read_text())
    assert isinstance(dash["schemaVersion"], int) and dash["title"] and dash["uid"]
    known = metrics.metric_names()
    known |= {name for fam in REGISTRY.collect() if fam.name.startswith("lk_agents_")
              for name in (fam.name, fam.name + "_bucket", fam.name + "_count",
                           fam.name + "_sum")}
    ids, referenced = set(), set()
    for panel in dash["panels"]:
        assert panel["id"] not in ids and {"x", "y", "w", "h"} <= set(panel["gridPos"])
        ids.add(panel["id"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = re.findall(r"\b((?:livekit|voicectl|lk_agents)_[a-z_]+)\b", target["expr"])
            assert names, target["expr"]
            referenced.update(names)
    assert referenced - known == set()
    # the panels cover what the issue asks for
    for name in ("voicectl_ttft_ms_bucket", "livekit_conversation_turns_total",
                 "voicectl_fallbacks_total", "voicectl_circuit_state",
                 "voicectl_memory_sync_backlog", "voicectl_memory_sync_lag_seconds",
                 "livekit_cost_usd_total", "livekit_llm_duration_ms_bucket",
                 "livekit_total_conversation_latency_ms_bucket"):
        assert name in referenced
    assert metrics.DEPENDENCIES == DEPENDENCIES
