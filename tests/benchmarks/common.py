"""Timing helpers shared by the benchmarks: wall time of commands, medians and ratios."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Sequence


def time_command(argv: Sequence[str], runs: int, **kwargs) -> list[float]:
    """Wall seconds of each of `runs` runs of a command (one warm-up run first)."""
    subprocess.run(argv, capture_output=True, check=False, **kwargs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False, **kwargs)
        times.append(time.perf_counter() - start)
    return times


def percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
