"""TTFT figures of many turns: per mode, the distinct values ascending with their turn counts.

A `Series` is two flat arrays (float64 values, int64 counts), so that a gigabyte of events
folds into a few hundred kilobytes that sort, merge, cache and give percentiles cheaply. The C
scanner (`voicectl.logs._turnscan`) returns series and merges them; without it Python does the same.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import accumulate

try:
    from voicectl.logs._turnscan import merge as native_merge
except ImportError:  # pragma: no cover - no compiler when installed
    native_merge = None

PERCENTILES = (50, 95, 99)


@dataclass(slots=True)
class Series:
    """Distinct TTFT values of one mode, ascending, and how many turns had each."""

    values: array = field(default_factory=lambda: array("d"))
    counts: array = field(default_factory=lambda: array("q"))

    @classmethod
    def from_bytes(cls, values: bytes, counts: bytes) -> Series:
        series = cls()
        series.values.frombytes(values)
        series.counts.frombytes(counts)
        return series

    @classmethod
    def from_counts(cls, counts: Mapping[float, int]) -> Series:
        items = sorted(counts.items())
        return cls(array("d", (v for v, _ in items)), array("q", (n for _, n in items)))

    def merged(self, other: Series) -> Series:
        """Both series as one: equal values add their counts."""
        if not other.values:
            return self
        if not self.values:
            return other
        if native_merge is not None:
            return Series.from_bytes(*native_merge(self.values, self.counts,
                                                   other.values, other.counts))
        both = dict(zip(self.values, self.counts, strict=True))
        for value, n in zip(other.values, other.counts, strict=True):
            both[value] = both.get(value, 0) + n
        return Series.from_counts(both)

    def as_dict(self) -> dict[float, int]:
        return dict(zip(self.values, self.counts, strict=True))

    def stats(self, no_ttft: int = 0) -> dict[str, float | int | None]:
        """count, p50, p95, p99 (linear interpolation), max and the turns without a TTFT."""
        out: dict[str, float | int | None] = {"count": sum(self.counts)}
        if not self.values:
            out.update({f"p{p}": None for p in PERCENTILES}, max=None)
        else:
            cum = list(accumulate(self.counts))
            out.update({f"p{p}": round(percentile(self.values, cum, p), 3) for p in PERCENTILES})
            out["max"] = self.values[-1]
        out["no_ttft"] = no_ttft
        return out


def percentile(values: array, cum: list[int], pct: float) -> float:
    """Linear-interpolated percentile of sorted distinct values; cum = running counts."""
    n = cum[-1]
    rank = (n - 1) * pct / 100
    low = math.floor(rank)
    below = values[bisect_right(cum, low)]
    above = values[bisect_right(cum, min(low + 1, n - 1))]
    return below + (above - below) * (rank - low)


@dataclass
class TurnHist:
    """TTFT series per mode, turns without a TTFT, lines that could not be read."""

    series: dict[str, Series] = field(default_factory=dict)
    no_ttft: Counter = field(default_factory=Counter)
    skipped: int = 0
    _pending: dict[str, Counter] = field(default_factory=dict, repr=False)

    def add(self, mode: str, ttft: float | None, n: int = 1) -> None:
        """n turns of one mode (one value, or None for a turn without a TTFT)."""
        if ttft is None:
            self.no_ttft[mode] += n
            return
        counts = self._pending.get(mode)
        if counts is None:
            counts = self._pending[mode] = Counter()
        counts[float(ttft)] += n

    def add_series(self, mode: str, series: Series) -> None:
        self.series[mode] = self.series.get(mode, Series()).merged(series)

    def settled(self) -> TurnHist:
        """Itself, with the single values added one by one folded into the series."""
        for mode, counts in self._pending.items():
            self.add_series(mode, Series.from_counts(counts))
        self._pending.clear()
        return self

    def merge(self, other: TurnHist) -> None:
        for mode, series in other.settled().series.items():
            self.add_series(mode, series)
        self.no_ttft.update(other.no_ttft)
        self.skipped += other.skipped

    def counts(self) -> dict[str, dict[float, int]]:
        """{mode: {ttft: turns}} of the modes with a TTFT."""
        return {m: s.as_dict() for m, s in self.settled().series.items() if s.values}

    @property
    def turns(self) -> int:
        self.settled()
        return sum(sum(s.counts) for s in self.series.values()) + sum(self.no_ttft.values())

    def stats(self) -> dict[str, dict[str, float | int | None]]:
        """count, p50, p95, p99, max (and turns without a TTFT) per mode."""
        self.settled()
        modes = sorted(set(self.series) | set(self.no_ttft))
        return {m: self.series.get(m, Series()).stats(self.no_ttft[m]) for m in modes}
