"""Turn latency over the agent's event log: the `turn` events' TTFT per mode, fast on gigabytes.

Two readers give the same figures. The reference (`scan_slow`) reads a line with `json.loads`
when it names a turn event (`"event": "turn"`, any spacing) and counts it as skipped when it
cannot be read as one. The fast reader (`scan`) trusts a line in the writer's exact compact
shape (``{"ts":N,"event":"turn","mode":"M","path":"P","ttft_ms":T,...}``, no further ``{`` on
it, ending in ``}``, no NUL byte): it takes mode and TTFT from their place; every other line
that could be a turn goes through the reference. What it trusts: a line of exactly the
writer's shape is valid JSON. Two implementations make that decision per line: the C scanner
(`voicectl.logs._turnscan`, threads over the mapped file, figures returned as sorted series) and,
where it was not built, one compiled regex over 8 MB blocks in forked processes.

`whole_file` keeps a summary cache (`save_cache`): the figures of the log up to its last
complete line, with the file's identity (device, inode, hashes of its first and last covered
64 KB). The next run reads only what was appended; a rotated, truncated or rewritten log is
read again from the start.

Windows (`--since` / `--until`) are byte ranges found by bisection, as the log is appended in
time order (the assumption `agent.events.find_since` makes too).
"""

from __future__ import annotations

import functools
import gc
import json
import math
import mmap
import os
import pickle
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

from agent.events import EVENTS
from voicectl.logs.turnhist import Series, TurnHist

#: A line that names a turn event, as the reference reader decides which lines to read.
MENTION = re.compile(rb'"event"\s*:\s*"turn"')
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_TS = rb"[1-9][0-9]*\.[0-9]+"
# The rest of a line holds no "{" and the line ends in "}": both scans are fast loops in sre.
_CLEAN = rb"(?=[^{]*\n)[^\n]*\}"
_SPAN = rb'[a-z_]+","path":"[a-z_]+","ttft_ms":[-0-9.eEnul+]+'


@functools.cache
def fast_pattern() -> re.Pattern[bytes]:
    """Per line: group 1 = mode..ttft of a trusted turn line; group 2 = a line needing the
    reference (not a clean writer line of another event). Clean lines of other events: no
    match. Compiled on first use: the C scanner does without it."""
    return re.compile(
        rb'\n(?:\{"ts":' + _TS + rb',"event":"turn","mode":"(' + _SPAN + rb")[,}]" + _CLEAN
        + rb"(?=\n)"
        + rb'|(?!\{"ts":' + _TS + rb',"event":"(?!turn")' + _CLEAN + rb"\n)([^\n]*))"
    )


_TS_HEAD = re.compile(rb'\s*\{"ts":(' + _NUMBER.pattern + rb")[,}]")

_first, _second = itemgetter(0), itemgetter(1)

try:  # the same decision per line as fast_pattern(), in C (optional: see pyproject.toml)
    from voicectl.logs._turnscan import scan as native_scan
except ImportError:  # pragma: no cover - no compiler when installed
    native_scan = None

BLOCK = 8 << 20
PARALLEL_MIN = 64 << 20


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def read_turn(raw: bytes | str) -> dict | None:
    """The turn record of a line; None when the line is not about a turn.

    Raises ValueError when the line names a turn event but is not a readable one.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if not MENTION.search(raw):
        return None
    try:
        record = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(record, dict) or not _is_number(record.get("ts")):
        raise ValueError("not an event record")
    if record.get("event") not in EVENTS:
        raise ValueError("unknown event")
    if record["event"] != "turn":
        return None
    ttft = record.get("ttft_ms", False)
    if not isinstance(record.get("mode"), str) or not (ttft is None or _is_number(ttft)):
        raise ValueError("turn without mode or ttft_ms")
    return record


def count_line(hist: TurnHist, raw: bytes, n: int = 1) -> None:
    """Count one raw line (n times) the reference way."""
    try:
        record = read_turn(raw)
    except ValueError:
        hist.skipped += n
        return
    if record is not None:
        hist.add(record["mode"], record.get("ttft_ms"), n)


# -- the fast reader


def _fold(raw: Counter, hist: TurnHist) -> TurnHist:
    """Add the regex's trusted spans (mode..ttft_ms -> turns) to `hist`."""
    modes: dict[bytes, str] = {}
    tokens: dict[bytes, float | None | bool] = {}
    for span, n in raw.items():
        if not span:
            continue
        cut = span.find(b'"')
        mode = modes.get(span[:cut]) or modes.setdefault(span[:cut], span[:cut].decode())
        tok = span[span.rfind(b":") + 1:]
        value = tokens.get(tok, False)
        if value is False:
            value = tokens[tok] = _token_value(tok)
        if value is True:  # not a JSON number: the reference cannot read the line either
            hist.skipped += n
        else:
            hist.add(mode, value, n)
    return hist


def _token_value(tok: bytes) -> float | None | bool:
    """The ttft_ms token's value: None for null, True when the reference would reject it."""
    if tok == b"null":
        return None
    if not _NUMBER.fullmatch(tok):
        return True
    value = float(tok)
    return value if math.isfinite(value) else True


def _scan_block(buf: bytes, start: int, end: int, raw: Counter, hist: TurnHist) -> None:
    """Lines of buf[start:end]: buf[start] and buf[end - 1] are newlines.

    The regex would trust NUL bytes inside a line of the writer's shape: lines holding one go
    to the reference, the stretches between them to the regex.
    """
    pos = start
    nul = buf.find(b"\x00", start, end)
    while nul >= 0:
        line_start = buf.rfind(b"\n", start, nul)
        line_end = buf.find(b"\n", nul, end)
        if line_start > pos:
            _fast(buf, pos, line_start + 1, raw, hist)
        count_line(hist, buf[line_start + 1:line_end])
        pos = line_end
        nul = buf.find(b"\x00", line_end, end)
    _fast(buf, pos, end, raw, hist)


def _fast(buf: bytes, lo: int, hi: int, raw: Counter, hist: TurnHist) -> None:
    """The lines of buf[lo:hi] through the regex (the reader without the C scanner)."""
    _count(fast_pattern().findall(buf, lo, hi), raw, hist)


def _count(matches: list[tuple[bytes, bytes]], raw: Counter, hist: TurnHist) -> None:
    """Trusted spans into `raw` (C loops only); the few other lines through the reference."""
    raw.update(map(_first, matches))
    for _, line in filter(_second, matches):
        count_line(hist, line)


def _scan_range(path: Path, lo: int, hi: int) -> TurnHist:
    """Fast reading of the lines in [lo, hi) without the C scanner; lo is a line start."""
    hist, raw = TurnHist(), Counter()
    carry = b""
    with path.open("rb", buffering=0) as fh:
        fh.seek(lo)
        left = hi - lo
        while left > 0:
            block = fh.read(min(BLOCK, left))
            if not block:
                break
            left -= len(block)
            first, last = block.find(b"\n"), block.rfind(b"\n")
            if first < 0:
                carry += block
                continue
            count_line(hist, carry + block[:first])
            if last > first:
                _scan_block(block, first, last + 1, raw, hist)
            carry = block[last + 1:]
    if carry:
        count_line(hist, carry)
    return _fold(raw, hist).settled()


def _scan_native(path: Path, lo: int, hi: int, threads: int) -> TurnHist:
    """The C scanner over [lo, hi) of the mapped file in one call, on `threads` threads: no
    Python object per trusted line. Only the range is mapped."""
    hist = TurnHist()
    base = lo - lo % mmap.ALLOCATIONGRANULARITY
    with path.open("rb") as fh:
        hi = min(hi, os.fstat(fh.fileno()).st_size)
        if hi <= lo:
            return hist
        with mmap.mmap(fh.fileno(), hi - base, offset=base, access=mmap.ACCESS_READ) as mm:
            series, no_ttft, skipped, refs = native_scan(mm, lo - base, hi - base, threads)
    hist.series = {mode: Series.from_bytes(*pair) for mode, pair in series.items()}
    hist.no_ttft.update(no_ttft)
    hist.skipped = skipped
    for line in refs:
        count_line(hist, line)
    return hist.settled()


def scan_slow(path: Path | str, lo: int = 0, hi: int | None = None) -> TurnHist:
    """The reference: every line of [lo, hi) through `read_turn`."""
    hist = TurnHist()
    for line in _lines(Path(path), lo, hi):
        count_line(hist, line)
    return hist


def _lines(path: Path, lo: int, hi: int | None) -> Iterator[bytes]:
    with path.open("rb") as fh:
        fh.seek(lo)
        left = (hi if hi is not None else os.fstat(fh.fileno()).st_size) - lo
        for line in fh:
            if left <= 0:
                break
            left -= len(line)
            yield line.rstrip(b"\n")


def _split_points(path: Path, lo: int, hi: int, parts: int) -> list[int]:
    """Line starts cutting [lo, hi) into about equal parts."""
    points = [lo]
    with path.open("rb") as fh:
        for i in range(1, parts):
            fh.seek(max(points[-1], lo + (hi - lo) * i // parts))
            fh.readline()
            pos = fh.tell()
            if points[-1] < pos < hi:
                points.append(pos)
    return [*points, hi]


def _workers(size: int) -> int:
    """How many parts to read [lo, hi) in: one per CPU (at most 8) for large ranges."""
    if size < PARALLEL_MIN:
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8, size // (PARALLEL_MIN // 2)))


def scan(path: Path | str, lo: int = 0, hi: int | None = None) -> TurnHist:
    """Fast reading of [lo, hi) (a line start, default the whole file), in parallel when the
    range is large: threads of the C scanner, else forked processes running the regex."""
    path = Path(path)
    if hi is None:
        hi = path.stat().st_size
    if hi <= lo:
        return TurnHist()
    parts = _workers(hi - lo)
    if native_scan is not None:
        try:
            return _scan_native(path, lo, hi, parts)
        except OSError:  # not mappable, or truncated by another program while read: read it
            pass
    if not hasattr(os, "fork") or threading.active_count() > 1:
        parts = 1  # forking a threaded process is unsafe
    points = _split_points(path, lo, hi, parts)
    enabled = gc.isenabled()
    gc.disable()  # millions of short-lived tuples: collection passes only cost time here
    try:
        children = [_fork_scan(path, a, b) for a, b in zip(points[1:-1], points[2:], strict=True)]
        hist = _scan_range(path, points[0], points[1])
        for pid, fd, a, b in children:
            hist.merge(_collect(pid, fd, path, a, b))
    finally:
        if enabled:
            gc.enable()
    return hist


def _fork_scan(path: Path, lo: int, hi: int) -> tuple[int, int, int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: scan, send the result, leave without cleanup handlers
        code = 0
        try:
            os.close(read_fd)
            data = pickle.dumps(_scan_range(path, lo, hi), pickle.HIGHEST_PROTOCOL)
            with os.fdopen(write_fd, "wb") as out:
                out.write(data)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(write_fd)
    return pid, read_fd, lo, hi


def _collect(pid: int, fd: int, path: Path, lo: int, hi: int) -> TurnHist:
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if status == 0 and data:
        return pickle.loads(data)
    return _scan_range(path, lo, hi)  # the child failed: do its part here


# -- windows and rows


def _record_ts(line: bytes) -> float | None:
    m = _TS_HEAD.match(line)
    if m:
        return float(m.group(1))
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    ts = record.get("ts") if isinstance(record, dict) else None
    return float(ts) if _is_number(ts) else None


def _first_ts_from(fh, off: int, size: int) -> tuple[int, float | None]:
    """(line start >= off, ts of the first readable record from there) ; ts None at the end."""
    fh.seek(max(off - 1, 0))
    if off > 0:
        fh.readline()  # the rest of the line holding off - 1
    start = fh.tell()
    while fh.tell() < size:
        ts = _record_ts(fh.readline())
        if ts is not None:
            return start, ts
    return start, None


def offset_of(path: Path, when: float | None, default: int) -> int:
    """The first line start whose record (or the next readable one) is at or after `when`."""
    if when is None:
        return default
    size = path.stat().st_size
    with path.open("rb") as fh:
        lo, hi = 0, size
        while lo < hi:
            mid = (lo + hi) // 2
            start, ts = _first_ts_from(fh, mid, size)
            if ts is None or ts >= when:
                hi = mid
            else:
                lo = max(start + 1, mid + 1)
        return _first_ts_from(fh, lo, size)[0]


def window(path: Path, since: float | None, until: float | None) -> tuple[int, int]:
    """The byte range of records with since <= ts < until."""
    size = path.stat().st_size
    lo = offset_of(path, since, 0)
    hi = offset_of(path, until, size)
    return lo, max(lo, hi)


def last_turns(path: Path, lo: int, hi: int, limit: int | None) -> list[dict]:
    """The last `limit` readable turns of [lo, hi) (all when None), oldest first."""
    if limit is None:
        return [r for r in map(_quiet_turn, _lines(path, lo, hi)) if r is not None]
    rows: list[dict] = []
    for line in _lines_backwards(path, lo, hi):
        if len(rows) >= limit:
            break
        record = _quiet_turn(line)
        if record is not None:
            rows.append(record)
    return rows[::-1]


def _quiet_turn(line: bytes) -> dict | None:
    try:
        return read_turn(line)
    except ValueError:
        return None


def _lines_backwards(path: Path, lo: int, hi: int, block: int = 1 << 16) -> Iterator[bytes]:
    with path.open("rb") as fh:
        end, carry = hi, b""
        while end > lo:
            start = max(lo, end - block)
            fh.seek(start)
            parts = (fh.read(end - start) + carry).split(b"\n")
            carry = parts[0] if start > lo else b""
            yield from reversed(parts[1:] if start > lo else parts)
            end = start
        if carry:
            yield carry


def turn_rows(records: Iterable[dict]) -> list[dict]:
    """The JSON shape of turn rows."""
    keys = ("ts", "mode", "path", "ttft_ms", "total_ms", "fallback")
    return [{k: r.get(k) for k in keys} for r in records]


# -- the summary cache: what a previous run read, so the next one reads only what was appended

CACHE_VERSION = 1
_PROBE = 1 << 16


def _digest(fh, start: int, end: int) -> str:
    import hashlib

    fh.seek(start)
    return hashlib.sha1(fh.read(end - start)).hexdigest()


def _identity(fh, end: int) -> dict[str, object]:
    st = os.fstat(fh.fileno())
    return {
        "version": CACHE_VERSION, "dev": st.st_dev, "ino": st.st_ino, "end": end,
        "head": _digest(fh, 0, min(end, _PROBE)), "tail": _digest(fh, max(0, end - _PROBE), end),
    }


def load_cache(cache: Path, path: Path) -> tuple[int, TurnHist] | None:
    """(covered bytes, their figures) when `cache` describes the start of `path` as it is now."""
    try:
        blob = cache.read_bytes()
        header, _, body = blob.partition(b"\n")
        meta = json.loads(header)
        with path.open("rb") as fh:
            end = meta["end"]
            if os.fstat(fh.fileno()).st_size < end or _identity(fh, end) != meta["identity"]:
                return None
        hist = TurnHist(skipped=meta["skipped"], no_ttft=Counter(meta["no_ttft"]))
        pos = 0
        for mode, n in meta["modes"].items():
            hist.series[mode] = Series.from_bytes(body[pos:pos + 8 * n],
                                                  body[pos + 8 * n:pos + 16 * n])
            pos += 16 * n
        return end, hist
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_cache(cache: Path, path: Path, end: int, hist: TurnHist) -> None:
    """Remember the figures of path[:end] (end: a line boundary); best effort."""
    try:
        with path.open("rb") as fh:
            identity = _identity(fh, end)
        body, modes = [], {}
        for mode, series in hist.settled().series.items():
            modes[mode] = len(series.values)
            body += [series.values.tobytes(), series.counts.tobytes()]
        meta = {"identity": identity, "end": end, "skipped": hist.skipped,
                "no_ttft": dict(hist.no_ttft), "modes": modes}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        tmp.write_bytes(json.dumps(meta).encode() + b"\n" + b"".join(body))
        os.replace(tmp, cache)
    except OSError:
        pass


def _complete_end(path: Path, size: int) -> int:
    """Offset just past the last newline (the last line may still be being written)."""
    with path.open("rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - _PROBE)
            fh.seek(start)
            cut = fh.read(pos - start).rfind(b"\n")
            if cut >= 0:
                return start + cut + 1
            pos = start
    return 0


def whole_file(path: Path, cache: Path | None) -> TurnHist:
    """Figures of the whole file, reading only what the cache does not cover yet."""
    size = path.stat().st_size
    end = _complete_end(path, size)
    cached = load_cache(cache, path) if cache is not None else None
    start, hist = cached if cached is not None else (0, TurnHist())
    if end > start:
        hist.merge(scan(path, start, end))
        if cache is not None:
            save_cache(cache, path, end, hist)
    if size > end:
        hist.merge(scan(path, end, size))  # the unfinished last line, never cached
    return hist


@dataclass
class TurnReport:
    """The turns of a window: figures over all of them, the last few as rows."""

    hist: TurnHist
    rows: list[dict]
    span: tuple[int, int]


def turn_report(
    path: Path, since: float | None, until: float | None, limit: int | None,
    cache: Path | None = None,
) -> TurnReport:
    """Figures and rows of the turns with since <= ts < until (limit: rows kept, None = all)."""
    if not path.exists():
        return TurnReport(TurnHist(), [], (0, 0))
    lo, hi = window(path, since, until)
    if since is None and until is None:
        hist = whole_file(path, cache)
    else:
        hist = scan(path, lo, hi)
    return TurnReport(hist, last_turns(path, lo, hi, limit), (lo, hi))
