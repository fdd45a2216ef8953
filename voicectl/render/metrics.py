"""`voicectl metrics` for people: the summary of metrics_view as lines and small tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from voicectl.metrics_view import LATENCY

_STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _section(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=None,
                 header_style="dim", pad_edge=False)


def metrics_report(doc: dict[str, Any], console: Console | None = None) -> None:
    """Turns, latency, circuits, fallbacks, memory sync, usage, cost and jobs."""
    console = console or Console()
    t = doc["turns"]
    console.print(f"[bold]agent metrics[/]  {doc['url']}", highlight=False)
    console.print(f"turns {t['total']} ({t['fallback']} with a fallback) · active conversations "
                  f"{doc['active_conversations']}", highlight=False)
    if t["by_mode_path"]:
        table = _section("turns by mode / path")
        for col in ("MODE", "PATH", "TURNS", "FALLBACK"):
            table.add_column(col, justify="right" if col in ("TURNS", "FALLBACK") else "left")
        for row in t["by_mode_path"]:
            table.add_row(row["mode"], row["path"], str(row["count"]), str(row["fallback"]))
        console.print(table)
    rows = [(f"TTFT {mode}", s) for mode, s in doc["ttft_ms"].items()]
    rows += [(LATENCY[key][1], s) for key, s in doc["latency_ms"].items()]
    if rows:
        table = _section("latency (ms)")
        for col in ("", "COUNT", "P50", "P95", "MEAN"):
            table.add_column(col, justify="left" if not col else "right")
        for label, s in rows:
            table.add_row(label, str(s["count"]), _ms(s["p50"]), _ms(s["p95"]), _ms(s["mean"]))
        console.print(table)
    circuits = " · ".join(f"{dep} [{_STATE_STYLE.get(st, '')}]{st}[/]"
                          for dep, st in doc["circuits"].items()) or "-"
    console.print(f"circuits   {circuits}", highlight=False)
    fallbacks = ", ".join(f"{f['reason']} ({f['stage']}) {f['count']}"
                          for f in doc["fallbacks"]) or "none"
    console.print(f"fallbacks  {fallbacks}", highlight=False)
    ms = doc["memory_sync"]
    console.print(f"memory sync  backlog {ms['backlog']} · lag {ms['lag_seconds']:.1f} s · "
                  f"delivered {ms['delivered']} · failed {ms['failed']}", highlight=False)
    u = doc["usage"]
    console.print(f"usage  LLM {u['llm_input_tokens']:,} in / {u['llm_output_tokens']:,} out "
                  f"tokens · STT {u['stt_audio_seconds']:.1f} s audio · TTS "
                  f"{u['tts_characters']:,} chars", highlight=False)
    cost = doc["cost_usd"]
    parts = ", ".join(f"{k} ${v:.4f}" for k, v in cost.items() if k != "total")
    console.print(f"cost   ${cost['total']:.4f}" + (f" ({parts})" if parts else ""),
                  highlight=False)
    if doc["jobs"]:
        jobs = ", ".join(f"{k} {v}" for k, v in doc["jobs"].items())
        console.print(f"jobs   {jobs}", highlight=False)
