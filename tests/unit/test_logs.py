"""`voicectl logs`: service logs (tail, multiplex, time windows, grep, follow) and the event
log's views (--ttft, --circuit), on real files, in this process (the CLI: test_logs_cli.py)."""

from __future__ import annotations

import io
import json
import mmap
import os
import random
import re
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from agent.events import EventWriter
from tests.support.logs import (
    append,
    home_settings,
    keeper_line,
    log_home,
    stamp,
    turn,
    write_events,
    write_log,
)
from tests.support.project import wait_for
from voicectl.errors import UsageError
from voicectl.logs import ttft
from voicectl.logs.command import circuit_timeline, line_time, parse_when, run_logs
from voicectl.logs.follow import Follower

NOW = time.time()


@pytest.fixture(autouse=True)
def _fresh_now():
    """Windows like --since 1m are relative to the clock: NOW is when each test starts."""
    global NOW
    NOW = time.time()


# -- helpers


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return log_home(tmp_path)


@pytest.fixture
def settings(home: Path, tmp_path: Path):
    return home_settings(home, tmp_path)


class Run:
    """run_logs with captured stdout and stderr."""

    def __init__(self, settings, colour: bool = False) -> None:
        self.settings = settings
        self.colour = colour

    def __call__(self, *services: str, **kw) -> tuple[str, str]:
        out, err = io.StringIO(), io.StringIO()
        console = Console(file=out, width=200, color_system="standard" if self.colour else None,
                          force_terminal=self.colour)
        run_logs(self.settings, list(services), console=console, out=out, err=err, **kw)
        return out.getvalue(), err.getvalue()


@pytest.fixture
def run(settings) -> Run:
    return Run(settings)


# -- input


@pytest.mark.parametrize("text, ago", [
    ("10m", 600), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("45s", 45),
])
def test_durations(text, ago):
    assert parse_when(text, now=NOW) == pytest.approx(NOW - ago)


def test_iso_times_local_and_with_offset():
    assert parse_when("2026-11-21T13:05:00+00:00") == datetime.fromisoformat(
        "2026-11-21T13:05:00+00:00").timestamp()
    assert parse_when("2026-11-21T13:05:00Z") == parse_when("2026-11-21T13:05:00+00:00")
    assert parse_when("2026-11-21 13:05") == datetime(2026, 11, 21, 13, 5).timestamp()


@pytest.mark.parametrize("kw, needle", [
    ({"grep": "["}, "--grep '['"),
    ({"since": "3x"}, "--since '3x'"),
    ({"until": "yesterday"}, "--until 'yesterday'"),
    ({"since": "10"}, "--since '10'"),
    ({"ttft": True, "circuit": True}, "exclude each other"),
    ({"follow": True, "until": "1h"}, "--until cannot be used with --follow"),
    ({"lines": "many"}, "-n 'many'"),
    ({"lines": -3}, "must not be negative"),
    ({"since": "1h", "until": "2h"}, "--until must be later than --since"),
    ({"ttft": True, "grep": "x"}, "--grep filters service logs"),
])
def test_bad_input_is_a_usage_error(run, kw, needle):
    with pytest.raises(UsageError) as info:
        run(**kw)
    assert needle in str(info.value)
    assert info.value.code == 2
    assert "\n" not in str(info.value)


def test_unknown_service_is_a_usage_error(run):
    with pytest.raises(UsageError, match="unknown service 'nosuch'"):
        run("nosuch")


def test_line_times_we_recognise():
    t = datetime(2026, 11, 21, 13, 5, 1).timestamp()
    assert line_time("[voicectl 2026-11-21T13:05:01] agent: started pid 1") == t
    assert line_time("2026-11-21 13:05:01.500 UTC [88] LOG:  ready") == datetime.fromisoformat(
        "2026-11-21T13:05:01.500+00:00").timestamp()
    assert line_time('{"message": "x", "timestamp": "2026-11-21T13:05:01.25+00:00"}') == \
        datetime.fromisoformat("2026-11-21T13:05:01.25+00:00").timestamp()
    assert line_time("2026-11-21T13:05:01Z INFO livekit") == datetime.fromisoformat(
        "2026-11-21T13:05:01+00:00").timestamp()
    assert line_time("INFO:     Uvicorn running") is None


# -- service logs


def test_last_n_lines_of_one_service_without_prefix(home, run):
    write_log(home, "agent", [keeper_line(NOW - 100 + i, "agent", f"line {i}") for i in range(100)])
    out, _ = run("agent", lines=3)
    assert out.splitlines() == [keeper_line(NOW - 100 + i, "agent", f"line {i}")
                                for i in (97, 98, 99)]
    out, _ = run("agent")
    assert len(out.splitlines()) == 50  # the default
    out, _ = run("agent", lines="all")
    assert len(out.splitlines()) == 100
    out, _ = run("agent", lines=0)
    assert out == ""


def test_services_are_multiplexed_by_time_with_name_prefixes(home, run):
    write_log(home, "agent", [keeper_line(NOW - 50, "agent", "a1"),
                              keeper_line(NOW - 30, "agent", "a2")])
    write_log(home, "letta", [keeper_line(NOW - 40, "letta", "l1"),
                              "a line without a time",
                              keeper_line(NOW - 20, "letta", "l2")])
    out, _ = run(lines="all")
    assert out.splitlines() == [
        f"agent | {keeper_line(NOW - 50, 'agent', 'a1')}",
        f"letta | {keeper_line(NOW - 40, 'letta', 'l1')}",
        "letta | a line without a time",
        f"agent | {keeper_line(NOW - 30, 'agent', 'a2')}",
        f"letta | {keeper_line(NOW - 20, 'letta', 'l2')}",
    ]
    out, _ = run("letta", "agent", lines=1)  # one line per service, still merged by time
    assert [line.split(" | ")[0] for line in out.splitlines()] == ["agent", "letta"]


def test_prefixes_are_coloured_on_a_terminal(home, settings):
    write_log(home, "agent", [keeper_line(NOW, "agent", "hello")])
    write_log(home, "web", [keeper_line(NOW, "web", "hello")])
    out, _ = Run(settings, colour=True)()
    assert "\x1b[36magent |\x1b[0m" in out and "\x1b[33mweb   |\x1b[0m" in out


def test_since_and_until_with_durations_and_iso_times(home, run):
    times = [NOW - 3 * 3600, NOW - 90 * 60, NOW - 30 * 60, NOW - 5 * 60]
    write_log(home, "agent", [keeper_line(t, "agent", f"at {i}") for i, t in enumerate(times)])
    texts = lambda out: [line.rsplit(" ", 1)[-1] for line in out.splitlines()]  # noqa: E731
    assert texts(run("agent", since="1h")[0]) == ["2", "3"]
    assert texts(run("agent", until="1h")[0]) == ["0", "1"]
    assert texts(run("agent", since="2h", until="10m")[0]) == ["1", "2"]
    assert texts(run("agent", since=stamp(NOW - 100 * 60))[0]) == ["1", "2", "3"]
    assert texts(run("agent", since=stamp(NOW - 100 * 60), until=stamp(NOW - 60 * 60))[0]) \
        == ["1"]
    assert texts(run("agent", since="1h", lines=1)[0]) == ["3"]


def test_lines_without_a_time_take_their_older_neighbours(home, run):
    old, new = NOW - 7200, NOW - 60
    write_log(home, "agent", [
        json.dumps({"message": "old", "timestamp": datetime.fromtimestamp(old).astimezone()
                    .isoformat()}),
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        json.dumps({"message": "new", "timestamp": datetime.fromtimestamp(new).astimezone()
                    .isoformat()}),
        "ValueError: after the new line",
    ])
    out, _ = run("agent", since="1h")
    assert out.splitlines()[1:] == ["ValueError: after the new line"]
    assert '"new"' in out.splitlines()[0]
    out, _ = run("agent", until="1h")
    assert out.splitlines()[1:] == ["Traceback (most recent call last):", '  File "x.py", line 1']


def test_grep_filters_lines(home, run):
    write_log(home, "agent", [keeper_line(NOW - 9 + i, "agent", word)
                              for i, word in enumerate(["ok", "ERROR one", "ok", "failed", "ok"])])
    out, _ = run("agent", grep="ERROR|fail")
    assert [line.split(": ", 1)[1] for line in out.splitlines()] == ["ERROR one", "failed"]
    out, _ = run("agent", grep="ok", lines=1)
    assert len(out.splitlines()) == 1


def test_json_is_one_document_of_service_ts_line(home, run):
    write_log(home, "agent", [keeper_line(NOW - 5, "agent", "one"), "two"])
    write_log(home, "livekit", [keeper_line(NOW - 3, "livekit", "three")])
    out, _ = run(json_out=True)
    doc = json.loads(out)
    assert [(d["service"], d["line"].rsplit(" ", 1)[-1]) for d in doc] == [
        ("agent", "one"), ("agent", "two"), ("livekit", "three")]
    assert doc[1]["ts"] == doc[0]["ts"] == pytest.approx(int(NOW - 5))


def test_no_logs_yet_is_a_note_not_an_error(run):
    out, err = run()
    assert out == "" and "no service logs" in err
    out, _ = run(json_out=True)
    assert json.loads(out) == []


# -- follow


class Following:
    """run_logs(follow=True) in a thread, stopped by an event."""

    def __init__(self, run: Run, *services: str, **kw) -> None:
        self.stop = threading.Event()
        self.out, self.err = io.StringIO(), io.StringIO()
        console = Console(file=self.out, width=200, color_system=None)
        self.thread = threading.Thread(target=run_logs, args=(run.settings, list(services)),
                                       kwargs=dict(follow=True, console=console, out=self.out,
                                                   err=self.err, stop=self.stop, poll=0.02, **kw))

    def __enter__(self) -> Following:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()

    def wait_for(self, text: str) -> str:
        return wait_for(lambda: text in self.out.getvalue() and self.out.getvalue(), timeout=10)


def test_follow_prints_appended_lines_and_survives_truncation_and_rotation(home, run):
    path = write_log(home, "agent", [keeper_line(NOW, "agent", "before")])
    with Following(run, "agent") as f:
        f.wait_for("before")
        append(path, "appended one", "appended two")
        f.wait_for("appended two")
        path.write_text("")  # truncated (copytruncate), then written again
        append(path, "after truncation")
        f.wait_for("after truncation")
        append(path, "last of the old file")
        path.rename(path.with_suffix(".log.1"))  # rotated: a new file takes the name
        append(path, "in the new file")
        out = f.wait_for("in the new file")
    lines = out.splitlines()
    assert lines == [keeper_line(NOW, "agent", "before"), "appended one", "appended two",
                     "after truncation", "last of the old file", "in the new file"]
    assert "truncated" in f.err.getvalue() and "rotated" in f.err.getvalue()


def test_follow_waits_for_a_log_that_does_not_exist_yet_and_prints_json_lines(home, run):
    with Following(run, "web", "agent", json_out=True, grep="keep") as f:
        time.sleep(0.1)
        write_log(home, "web", ["keep me", "drop me"])
        append(home / "logs" / "agent.log", "keep this too")
        f.wait_for("keep this too")
    docs = [json.loads(line) for line in f.out.getvalue().splitlines()]
    assert [(d["service"], d["line"]) for d in docs] == [("web", "keep me"),
                                                         ("agent", "keep this too")]


def test_follower_reads_a_partial_line_once_complete(tmp_path):
    path = tmp_path / "x.log"
    path.write_bytes(b"old\n")
    follower = Follower(path)
    assert follower.poll() == []
    with path.open("ab") as fh:
        fh.write(b"half")
    assert follower.poll() == []
    with path.open("ab") as fh:
        fh.write(b" done\nnext\n")
    assert follower.poll() == [b"half done", b"next"]
    follower.close()


def test_follow_turns_prints_new_turns(home, settings, run):
    write_events(settings.events_path, [turn(NOW - 10, "hybrid", 100.0)])
    with Following(run, ttft=True, json_out=True, lines=5) as f:
        f.wait_for('"ttft_ms": 100.0')
        EventWriter(settings.events_path).emit(
            "turn", mode="letta", path="letta", ttft_ms=250.5, total_ms=900.0, fallback=False)
        out = f.wait_for("250.5")
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["mode"], r["ttft_ms"]) for r in rows] == [("hybrid", 100.0), ("letta", 250.5)]


# -- --ttft


def test_ttft_stats_match_a_hand_computation(settings, run):
    records = [turn(NOW - 100 + i, "hybrid", v) for i, v in enumerate([300, 100, 500, 200, 400])]
    records += [turn(NOW - 50, "letta", 1000.0), turn(NOW - 40, "letta", None)]
    write_events(settings.events_path, records + [
        {"ts": NOW - 30, "event": "memory_sync", "ok": True, "ms": 5, "pending": 0}])
    out, err = run(ttft=True, json_out=True, lines=3)
    doc = json.loads(out)
    assert err == ""
    # sorted hybrid: 100 200 300 400 500; p95 at rank 3.8 = 400 + 0.8 * 100, p99 at 3.96
    assert doc["stats"]["hybrid"] == {"count": 5, "p50": 300.0, "p95": 480.0, "p99": 496.0,
                                      "max": 500.0, "no_ttft": 0}
    assert doc["stats"]["letta"] == {"count": 1, "p50": 1000.0, "p95": 1000.0, "p99": 1000.0,
                                     "max": 1000.0, "no_ttft": 1}
    assert doc["total"] == 7 and doc["skipped"] == 0
    assert [(t["mode"], t["ttft_ms"]) for t in doc["turns"]] == [
        ("hybrid", 400), ("letta", 1000.0), ("letta", None)]
    assert set(doc["turns"][0]) == {"ts", "mode", "path", "ttft_ms", "total_ms", "fallback"}
    out, _ = run(ttft=True, json_out=True, lines="all")
    assert len(json.loads(out)["turns"]) == 7
    table, _ = run(ttft=True)
    assert "Turns (last 7 of 7)" in table
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines()]
    assert ["hybrid", "5", "300.0", "480.0", "496.0", "500.0", "0"] in cells


def test_ttft_counts_corrupt_lines_and_never_crashes(settings, run):
    good = [turn(NOW - 10 + i, "hybrid", 100.0 + i) for i in range(3)]
    corrupt = ['{"ts":1,"event":"turn","mode":"hyb', "not json at all, \"event\": \"turn\"",
               '{"ts":"x","event":"turn","mode":"hybrid","ttft_ms":1}',
               '{"ts":5,"event":"turn","ttft_ms":3}', "\x00\x00\x00"]
    write_events(settings.events_path, good, corrupt)
    with settings.events_path.open("a") as fh:
        fh.write('{"ts":9,"event":"turn","mode":"hybrid","path":"hy')  # a partial last line
    out, err = run(ttft=True, json_out=True)
    doc = json.loads(out)
    assert doc["stats"]["hybrid"]["count"] == 3
    assert doc["skipped"] == 5  # lines naming no turn event (the NUL line) are not counted
    assert "skipped 5 unreadable lines" in err


def test_a_write_after_a_torn_line_starts_a_fresh_line(settings, run):
    """A writer that crashed mid-record left no newline: the next record is not swallowed."""
    from agent.events import ReadStats, read_events

    write_events(settings.events_path, [turn(NOW - 10 + i, "hybrid", 100.0 + i) for i in range(2)])
    with settings.events_path.open("a") as fh:
        fh.write('{"ts":9,"event":"turn","mode":"hybrid","path":"hy')  # the crash
    writer = EventWriter(settings.events_path)
    try:
        writer.emit("turn", mode="hybrid", path="hybrid", ttft_ms=150.0, total_ms=300.0,
                    fallback=False, ts=NOW - 1)
        writer.emit("turn", mode="hybrid", path="hybrid", ttft_ms=160.0, total_ms=300.0,
                    fallback=False, ts=NOW)
    finally:
        writer.close()
    stats = ReadStats()
    ttfts = [r["ttft_ms"] for r in read_events(settings.events_path, stats)]
    assert ttfts == [100.0, 101.0, 150.0, 160.0] and stats.skipped == 1
    out, _ = run(ttft=True, json_out=True)
    doc = json.loads(out)
    assert doc["stats"]["hybrid"]["count"] == 4 and doc["skipped"] == 1


def test_missing_event_log_is_an_empty_result_with_a_note(run):
    out, err = run(ttft=True, json_out=True)
    doc = json.loads(out)
    assert doc["turns"] == [] and doc["stats"] == {} and "no event log" in doc["note"]
    assert "no event log" in err
    out, err = run(circuit=True)
    assert "no event log" in err


def test_ttft_window_by_since_and_until(settings, run):
    write_events(settings.events_path,
                 [turn(NOW - 7200, "hybrid", 1.0), turn(NOW - 3000, "hybrid", 2.0),
                  turn(NOW - 1000, "hybrid", 3.0), turn(NOW - 10, "hybrid", 4.0)])
    stats = lambda **kw: json.loads(run(ttft=True, json_out=True, **kw)[0])  # noqa: E731
    assert stats(since="1h")["stats"]["hybrid"]["count"] == 3
    doc = stats(since="1h", until="10m")
    assert (doc["stats"]["hybrid"]["count"], doc["stats"]["hybrid"]["max"]) == (2, 3.0)
    assert stats(until="1h")["stats"]["hybrid"]["max"] == 1.0
    assert stats(since="1m")["total"] == 1


# -- the fast reader gives exactly the reference's figures


def odd_corpus(rng: random.Random, n: int = 3000) -> bytes:
    """Writer lines mixed with every kind of odd line, ending in a partial line."""
    out: list[bytes] = []
    ts = 1_763_700_000.0
    for i in range(n):
        ts += rng.uniform(0.01, 2)
        ttft_ms = rng.choice([round(rng.uniform(50, 900), 2), rng.randint(1, 900), None,
                              round(rng.uniform(0, 1e6), rng.randint(0, 9)), 0.0, -0.0, 1e-7])
        r = turn(round(ts, 6), rng.choice(["hybrid", "letta", "a_mode_with_a_long_name"]),
                 ttft_ms, errors=[], turn=f"{i:x}", source="voice")
        compact = json.dumps(r, separators=(",", ":")).encode()
        kind = rng.random()
        if kind < 0.6:
            out.append(compact)
        elif kind < 0.65:
            out.append(json.dumps(r).encode())  # spaces
        elif kind < 0.68:
            out.append(json.dumps(dict(reversed(list(r.items()))),
                                  separators=(",", ":")).encode())  # reordered keys
        elif kind < 0.7:
            out.append(json.dumps({**r, "mode": "hÿbrid"}, ensure_ascii=rng.random() < 0.5,
                                  separators=(",", ":")).encode())  # unicode
        elif kind < 0.72:
            out.append(compact[:-1] + b',"meta":{"a":1}}')  # nested object
        elif kind < 0.74:
            out.append(compact[:-1] + b',"errors2":["x {y} z"]}')  # brace in a string
        elif kind < 0.77:
            out.append(compact[: rng.randint(1, len(compact) - 1)])  # short write
        elif kind < 0.8:  # short write, the next record appended on the same line
            out.append(compact[: rng.randint(1, len(compact) - 1)] + compact)
        elif kind < 0.82:
            out.append(compact[:20] + b"\x00\x00" + compact[22:])
        elif kind < 0.84:
            bad = rng.choice([b"01.5", b"1.", b"NaN", b"Infinity", b"1e999", b"-", b"nul", b"1e5"])
            out.append(compact.replace(b'"ttft_ms":', b'"ttft_ms":' + bad + b',"x":', 1))
        elif kind < 0.86:
            out.append(rng.choice([b"[1, 2]", b'"turn"', b"", b"   ", b'{"event":"turn"}',
                                   b'{"ts":1,"event":"bogus","x":{"event":"turn"}}',
                                   b'{"ts":1.5,"event":"turn","mode":7,"ttft_ms":1}',
                                   b'{"ts":1,"event":"turn","x":' + b"[" * 5000]))
        elif kind < 0.88:
            out.append(compact + b"\r")  # CRLF
        elif kind < 0.9:
            out.append(b'{"ts":%.6f,"event":"fallback","reason":"x","turn":"ab' % ts)
        elif kind < 0.92:
            out.append(b'{"ts":%.6f,"event":"job","ro' % ts + compact)
        else:
            out.append(json.dumps({"ts": ts, "event": "memory_sync", "ok": True, "ms": 1.5,
                                   "pending": 0}, separators=(",", ":")).encode())
    return b"\n".join(out) + b"\n" + compact[:40]


def figures(hist: ttft.TurnHist) -> tuple:
    return hist.counts(), dict(+hist.no_ttft), hist.skipped, hist.stats()


def require_c_scanner() -> None:
    """The C scanner is part of the install (`pip install -e .` builds it): its tests fail,
    never skip, when the build did not happen."""
    assert ttft.native_scan is not None, (
        "voicectl.logs._turnscan is not built: pip install -v -e . (needs a C compiler and "
        "Python headers)")


@pytest.fixture(params=["native", "regex"])
def fast_path(request, monkeypatch):
    """Run a test with the C scanner and with the regex fallback."""
    if request.param == "regex":
        monkeypatch.setattr(ttft, "native_scan", None)
    else:
        require_c_scanner()
    return request.param


def _long_token(line: bytes) -> bool:
    """A writer-shaped turn line whose ttft_ms token is over the C scanner's 8 bytes."""
    m = re.search(rb'"ttft_ms":([^,}]*)', line)
    return m is not None and len(m.group(1)) > 8


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_native_scanner_decides_each_line_as_the_regex(seed):
    # lines with a NUL byte go to the reference before the regex sees them (ttft._scan_block)
    lines = odd_corpus(random.Random(seed)).split(b"\n")
    buf = b"\n" + b"\n".join(line for line in lines if b"\0" not in line) + b"\n"
    require_c_scanner()
    matches = ttft.fast_pattern().findall(buf, 0, len(buf))
    regex_refs = [m[1] for m in matches if m[1]]
    regex_hist = ttft._fold(Counter(m[0] for m in matches if m[0]), ttft.TurnHist())
    for line in regex_refs:
        ttft.count_line(regex_hist, line)
    for threads in (1, 2, 5):
        series, no_ttft, skipped, refs = ttft.native_scan(buf, 0, len(buf), threads)
        # the same lines for the reference, in order, plus the trusted ones it cannot count
        assert [r for r in refs if not _long_token(r)] == [r for r in regex_refs
                                                          if not _long_token(r)]
        extra = len(refs) - len(regex_refs)
        assert extra > 20 and extra == sum(1 for r in refs if _long_token(r)) - sum(
            1 for r in regex_refs if _long_token(r))
        native = ttft.TurnHist(no_ttft=Counter(no_ttft), skipped=skipped)
        for mode, pair in series.items():
            native.add_series(mode, ttft.Series.from_bytes(*pair))
            assert list(native.series[mode].values) == sorted(set(native.series[mode].values))
        for line in refs:
            ttft.count_line(native, line)
        assert figures(native) == figures(regex_hist)
        assert native.turns > 1000 and len(refs) > 50


def test_many_modes_and_long_mode_names_equal_the_reference(tmp_path, fast_path, monkeypatch):
    # 40 modes sharing their first 8 bytes: past 32 a thread of the C scanner sends the lines
    # of further modes to the reference, and the figures stay the same
    rng = random.Random(9)
    path = tmp_path / "events.jsonl"
    write_events(path, [turn(NOW + i, f"mode_number_{rng.randrange(40)}",
                             round(rng.uniform(1, 500), 2)) for i in range(4000)])
    reference = ttft.scan_slow(path)
    assert len(reference.stats()) == 40
    assert figures(ttft.scan(path)) == figures(reference)
    monkeypatch.setattr(ttft, "_workers", lambda size: 4)
    assert figures(ttft.scan(path)) == figures(reference)


def test_many_distinct_values_equal_the_reference(tmp_path, fast_path, monkeypatch):
    # 60,000 distinct TTFTs: the C scanner's table grows past 2 MB (huge pages) and merges
    path = tmp_path / "events.jsonl"
    write_events(path, [turn(NOW + i, ("hybrid", "letta")[i % 2], i / 100 + 0.01)
                        for i in range(60_000)])
    reference = ttft.scan_slow(path)
    monkeypatch.setattr(ttft, "_workers", lambda size: 2)
    assert figures(ttft.scan(path)) == figures(reference)
    assert reference.stats()["letta"]["count"] == 30_000


def test_a_log_truncated_while_being_read_is_read_again_not_a_crash(tmp_path, monkeypatch):
    # another program truncating the log under the C scanner's mapping raises SIGBUS: the
    # scanner turns it into OSError, and scan() reads what the file holds now
    require_c_scanner()
    path = tmp_path / "events.jsonl"
    write_events(path, [turn(NOW + i, "hybrid", 1.0 + i % 7) for i in range(50_000)])
    size = path.stat().st_size
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert ttft.native_scan(mm, 0, size, 2)[0]["hybrid"]
        os.truncate(path, 4096)
        for threads in (1, 2, 4):
            with pytest.raises(OSError, match="shorter"):
                ttft.native_scan(mm, 0, size, threads)
    write_events(path, [turn(NOW + i, "letta", 2.0 + i % 5) for i in range(50_000)])
    real = ttft.native_scan

    def truncated_meanwhile(buf, lo, hi, threads):
        os.truncate(path, 8192)
        return real(buf, lo, hi, threads)

    monkeypatch.setattr(ttft, "native_scan", truncated_meanwhile)
    hist = ttft.scan(path)
    assert figures(hist) == figures(ttft.scan_slow(path)) and 0 < hist.turns < 100


def test_the_c_scanner_is_built():
    require_c_scanner()
    from voicectl.logs import turnhist

    assert turnhist.native_merge is not None


@pytest.mark.parametrize("native", [True, False])
def test_series_merge_adds_equal_values_and_keeps_order(monkeypatch, native):
    from voicectl.logs import turnhist

    if not native:
        monkeypatch.setattr(turnhist, "native_merge", None)
    else:
        require_c_scanner()
    rng = random.Random(4)
    a = Counter(rng.choice([0.5, 1.0, 2.25, 3.0, -1.5, 7.0]) for _ in range(200))
    b = Counter(rng.choice([1.0, 2.0, 2.25, 9.5]) for _ in range(300))
    merged = ttft.Series.from_counts(a).merged(ttft.Series.from_counts(b))
    assert merged.as_dict() == dict(a + b)
    assert list(merged.values) == sorted(a.keys() | b.keys())
    empty = ttft.Series()
    assert empty.merged(merged) is merged and merged.merged(empty) is merged
    assert merged.stats()["count"] == 500 and merged.stats()["max"] == 9.5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fast_reader_equals_the_json_reference(tmp_path, monkeypatch, seed, fast_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(odd_corpus(random.Random(seed)))
    reference = ttft.scan_slow(path)
    assert reference.skipped > 50 and reference.turns > 1000
    assert figures(ttft.scan(path)) == figures(reference)
    monkeypatch.setattr(ttft, "BLOCK", 4096)  # many blocks, lines across their edges
    assert figures(ttft.scan(path)) == figures(reference)
    monkeypatch.setattr(ttft, "_workers", lambda size: 3)  # forked workers, merged
    assert figures(ttft.scan(path)) == figures(reference)


def test_windows_are_byte_ranges_matching_the_timestamps(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(odd_corpus(random.Random(7)))
    records = [r for r in map(ttft._quiet_turn, path.read_bytes().split(b"\n")) if r]
    since, until = records[300]["ts"], records[900]["ts"]
    lo, hi = ttft.window(path, since, until)
    inside = ttft.scan_slow(path, lo, hi)
    assert inside.turns == sum(1 for r in records if since <= r["ts"] < until)
    assert figures(ttft.scan(path, lo, hi)) == figures(inside)
    assert ttft.window(path, None, None) == (0, path.stat().st_size)


def test_summary_cache_follows_appends_and_notices_a_new_file(tmp_path):
    path, cache = tmp_path / "events.jsonl", tmp_path / "cache" / "ttft.bin"
    write_events(path, [turn(NOW + i, "hybrid", float(i)) for i in range(10)])
    first = ttft.whole_file(path, cache)
    assert cache.exists() and figures(first) == figures(ttft.scan_slow(path))
    with path.open("a") as fh:
        fh.write(json.dumps(turn(NOW + 20, "letta", 7.0)) + "\n")
        fh.write('{"ts":1,"event":"turn","mo')  # unfinished: read, never cached
    second = ttft.whole_file(path, cache)
    assert figures(second) == figures(ttft.scan_slow(path))
    assert ttft.load_cache(cache, path)[1].turns == 11
    path.rename(tmp_path / "old.jsonl")  # rotated: the cache describes another file
    write_events(path, [turn(NOW, "letta", 1.0)])
    assert figures(ttft.whole_file(path, cache)) == figures(ttft.scan_slow(path))
    path.write_text("")  # truncated
    assert ttft.whole_file(path, cache).turns == 0


# -- --circuit


def test_circuit_timeline_with_open_durations(settings, run):
    t0 = NOW - 1000
    c = lambda dt, dep, a, b, n: {"ts": t0 + dt, "event": "circuit", "dependency": dep,  # noqa: E731
                                  "from": a, "to": b, "failures": n}
    write_events(settings.events_path, [
        c(0, "letta", "closed", "open", 3), turn(t0 + 1, "letta", 5.0),
        c(30, "letta", "open", "half_open", 3), c(31, "letta", "half_open", "open", 4),
        c(61.5, "letta", "open", "half_open", 4), c(62, "letta", "half_open", "closed", 0),
        c(900, "openai", "closed", "open", 3),
    ], ['{"ts":5,"event":"circuit","dependency":"le'])
    out, err = run(circuit=True, json_out=True)
    doc = json.loads(out)
    assert doc["skipped"] == 1 and "skipped 1 unreadable lines" in err
    rows = doc["transitions"]
    assert [(r["dependency"], r["from"], r["to"]) for r in rows][:3] == [
        ("letta", "closed", "open"), ("letta", "open", "half_open"),
        ("letta", "half_open", "open")]
    opens = [(r["dependency"], r["open_s"], r["still_open"]) for r in rows if "open_s" in r]
    assert opens[:2] == [("letta", 30.0, False), ("letta", 30.5, False)]
    assert opens[2][0] == "openai" and opens[2][2] is True and opens[2][1] >= 99
    table, _ = run(circuit=True)
    assert "circuit: letta" in table and "circuit: openai" in table
    assert "closed → open" in table and "30.5s" in table and "so far" in table


def test_circuit_timeline_closes_a_period_opened_again():
    rows = circuit_timeline([
        {"ts": 10.0, "dependency": "x", "from": "closed", "to": "open", "failures": 3},
        {"ts": 15.0, "dependency": "x", "from": "open", "to": "closed", "failures": 0},
    ], now=100.0)
    assert rows[0]["open_s"] == 5.0 and "open_s" not in rows[1]
