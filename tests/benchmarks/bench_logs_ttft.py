"""`voicectl logs --ttft --json` over a large event log, against `grep -c` and `jq`.

Generates an event log (default 1 GiB: ~70% turn events with realistic TTFT spread, circuit,
memory_sync, startup, job and fallback events, ~0.1% corrupt lines) in a temporary directory,
then times in one run:
  grep -c '"event":"turn"'                  the bar: `logs --ttft` keeps pace with grep
  voicectl logs --ttft --json, cold         no summary cache: every byte read
  voicectl logs --ttft --json, warm         the summary cache of the previous run is valid
  voicectl logs --ttft --json, appended     warm, after 1% more events were appended
  jq computing the same figures             count, p50, p95, p99, max of ttft_ms per mode
and checks that voicectl's figures equal jq's. Targets (issue 5): at most 2x grep's time, cold
and warm; at least 5x faster than jq, cold. Exit 1 when a target is not met.

Run: python -m tests.benchmarks.bench_logs_ttft [--size-mb N] [--runs N] [--no-jq]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.common import median

GREP_RATIO_TARGET = 2.0
JQ_SPEEDUP_TARGET = 5.0
BLOCK_LINES = 200_000

JQ_PROGRAM = r"""
def pct(p): length as $n | (($n - 1) * p / 100) as $k | ($k | floor) as $f
  | .[$f] + (.[[$f + 1, $n - 1] | min] - .[$f]) * ($k - $f);
[inputs | fromjson? | select(type == "object" and .event == "turn"
   and (.mode | type) == "string" and (.ttft_ms | type) == "number") | [.mode, .ttft_ms]]
| group_by(.[0])
| map({key: .[0][0], value: (map(.[1]) | sort
       | {count: length, p50: pct(50), p95: pct(95), p99: pct(99), max: .[-1]})})
| from_entries
"""


# -- the event log


def _turn(rng: random.Random, ts: float) -> dict:
    mode = "hybrid" if rng.random() < 0.75 else "letta"
    path = rng.choices([mode, "direct", "fallback"], [0.9, 0.06, 0.04])[0]
    fallback = path == "fallback"
    ttft = round(rng.lognormvariate(5.6, 0.45), 2)
    return {
        "ts": ts, "event": "turn", "mode": mode, "path": path, "ttft_ms": ttft,
        "total_ms": round(ttft + rng.uniform(300, 4000), 2), "fallback": fallback,
        "fallback_reason": "timeout" if fallback else "", "main_ttft_ms": ttft,
        "preresponse": rng.random() < 0.2, "interrupted": rng.random() < 0.05,
        "chars": rng.randint(5, 400), "errors": ["letta: ReadTimeout('timed out')"]
        if fallback else [], "turn": f"{rng.getrandbits(96):024x}", "source": "voice",
    }


def _other(rng: random.Random, ts: float) -> dict:
    kind = rng.choices(["memory_sync", "job", "startup", "circuit", "fallback"],
                       [0.4, 0.2, 0.15, 0.15, 0.1])[0]
    fields: dict[str, object] = {
        "memory_sync": {"ok": rng.random() < 0.95, "ms": round(rng.uniform(5, 400), 2),
                        "pending": rng.randint(0, 5)},
        "job": {"room": f"room-{rng.randint(1, 500)}", "accepted": True, "reason": ""},
        "startup": {"phase": rng.choice(["prewarm", "connect", "session"]),
                    "elapsed_ms": round(rng.uniform(10, 3000), 2)},
        "circuit": {"dependency": "letta", "from": "closed", "to": "open", "failures": 3},
        "fallback": {"reason": "timeout", "stage": "reply", "path": "fallback",
                     "turn": f"{rng.getrandbits(96):024x}", "errors": []},
    }[kind]
    return {"ts": ts, "event": kind, **fields}


def _corrupt(rng: random.Random, line: str, next_line: str) -> str:
    kind = rng.random()
    if kind < 0.5:  # a short write, the next record appended on the same line
        return line[: rng.randint(1, len(line) - 1)] + next_line
    if kind < 0.8:  # a short write alone
        return line[: rng.randint(1, len(line) - 1)]
    if kind < 0.9:
        return "Traceback (most recent call last): turn handler returned None"
    return "\x00" * rng.randint(1, 64)


def make_block(seed: int = 5, lines: int = BLOCK_LINES) -> bytes:
    """A block of event lines as the agent's writer produces them, with rare corrupt ones."""
    rng = random.Random(seed)
    ts = 1_763_700_000.0
    out = []
    for _ in range(lines):
        ts += rng.uniform(0.05, 3.0)
        record = _turn(rng, round(ts, 6)) if rng.random() < 0.7 else _other(rng, round(ts, 6))
        out.append(json.dumps(record, separators=(",", ":")))
    for i in range(len(out) - 1):
        if rng.random() < 0.001:
            out[i] = _corrupt(rng, out[i], out[i + 1])
    return ("\n".join(out) + "\n").encode()


def write_log(path: Path, size: int, block: bytes) -> tuple[int, int]:
    """Repeat `block` up to about `size` bytes, cut at a line end: (bytes, lines) written."""
    written = lines = 0
    with path.open("wb") as fh:
        while written < size:
            piece = block[: size - written] if size - written < len(block) else block
            if len(piece) < len(block):
                piece = piece[: piece.rfind(b"\n") + 1]
                if not piece:
                    break
            fh.write(piece)
            written += len(piece)
            lines += piece.count(b"\n")
    return written, lines


# -- timing


def _time(argv: list[str], env: dict | None = None, before=None) -> tuple[float, str]:
    if before is not None:
        before()
    start = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if res.returncode not in (0, 1):
        raise RuntimeError(f"{argv[0]} exited {res.returncode}: {res.stderr[-500:]}")
    return elapsed, res.stdout


def _timed(argv: list[str], runs: int, env: dict | None = None, before=None
           ) -> tuple[float, str]:
    results = [_time(argv, env, before) for _ in range(runs)]
    return median([t for t, _ in results]), results[-1][1]


def voicectl_argv() -> list[str]:
    """The real CLI when it has `logs`, else the library entry point behind it."""
    probe = subprocess.run([sys.executable, "-m", "voicectl.cli", "logs", "--help"],
                           capture_output=True, check=False)
    if probe.returncode == 0:
        return [sys.executable, "-m", "voicectl.cli", "logs", "--ttft", "--json"]
    code = ("import sys; from agent.config.loading import load_settings; "
            "from voicectl.logs.command import run_logs; "
            "sys.exit(run_logs(load_settings(), ttft=True, json_out=True))")
    return [sys.executable, "-c", code]


def _same(ours: dict, jq: dict) -> bool:
    if set(ours) != set(jq):
        return False
    for mode, s in jq.items():
        for key in ("count", "p50", "p95", "p99", "max"):
            if abs(float(ours[mode][key]) - float(s[key])) > 1e-3:
                return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-jq", action="store_true", help="skip the jq comparison")
    args = parser.parse_args(argv)
    jq = None if args.no_jq else shutil.which("jq")
    if jq is None and not args.no_jq:
        print("jq not found (apt-get install -y jq): skipping the jq comparison")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ttft-"))
    try:
        return _run(tmp, args.size_mb << 20, args.runs, jq)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(home: Path, size: int, runs: int, jq: str | None) -> int:
    log = home / "events.jsonl"
    start = time.perf_counter()
    block = make_block()
    written, lines = write_log(log, size, block)
    print(f"event log: {written / 2**20:.0f} MiB, {lines:,} lines, generated in "
          f"{time.perf_counter() - start:.1f}s")
    env = {**os.environ, "VOICECTL_HOME": str(home), "VOICECTL_ENV_FILE": str(home / ".env")}
    cache = home / "cache"
    _time(["grep", "-c", '"event":"turn"', str(log)])  # page cache warm-up
    grep_s, grep_out = _timed(["grep", "-c", '"event":"turn"', str(log)], runs)
    cmd = voicectl_argv()
    drop = lambda: shutil.rmtree(cache, ignore_errors=True)  # noqa: E731
    cold_s, out = _timed(cmd, runs, env, before=drop)
    ours = json.loads(out)
    warm_s, _ = _timed(cmd, runs, env)
    with log.open("ab") as fh:
        fh.write(block[: max(1, size // 100)].rsplit(b"\n", 1)[0] + b"\n")
    appended_s, out2 = _time(cmd, env)
    warm2_s, _ = _timed(cmd, runs, env)
    rows = [("grep -c", grep_s), ("voicectl cold", cold_s), ("voicectl warm", warm_s),
            ("voicectl +1% appended", appended_s), ("voicectl warm again", warm2_s)]
    jq_s = None
    if jq is not None:
        jq_s, jq_out = _time([jq, "-R", "-n", "-c", JQ_PROGRAM, str(home / "events.jsonl")])
        rows.append(("jq", jq_s))
        same = _same(json.loads(out2)["stats"], json.loads(jq_out))
    print(f"turn lines (grep): {int(grep_out):,}; turns read: {ours['total']:,}; "
          f"skipped: {ours['skipped']:,}; command: {' '.join(cmd[:4])} ...")
    print(f"{'':24} {'seconds':>8} {'x grep':>8}" + (f" {'jq / it':>8}" if jq_s else ""))
    for name, secs in rows:
        print(f"{name:<24} {secs:8.3f} {secs / grep_s:8.2f}"
              + (f" {jq_s / secs:8.1f}" if jq_s else ""))
    cold_ok = cold_s <= GREP_RATIO_TARGET * grep_s
    warm_ok = warm_s <= GREP_RATIO_TARGET * grep_s
    print(f"target <= {GREP_RATIO_TARGET}x grep: cold {cold_s / grep_s:.2f}x -> "
          f"{'met' if cold_ok else 'NOT met'}; warm {warm_s / grep_s:.2f}x -> "
          f"{'met' if warm_ok else 'NOT met'}")
    ok = cold_ok and warm_ok
    if jq_s is not None:
        fast = jq_s >= JQ_SPEEDUP_TARGET * cold_s
        print(f"target >= {JQ_SPEEDUP_TARGET}x faster than jq (cold): {jq_s / cold_s:.1f}x -> "
              f"{'met' if fast else 'NOT met'}; figures equal to jq's: {same}")
        ok = ok and fast and same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
